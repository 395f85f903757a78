//! Indexes of a replica's tables as logged DDL changes them: the indexes a changed definition
//! adds (made in PostgreSQL as after a load), and `DROP INDEX` applied as the `ALTER TABLE …
//! DROP INDEX` it is, so the catalog forgets the index too.

use std::collections::BTreeSet;

use super::text::{table_names, words};
use super::{Key, LiveCatalog, Outcome};
use crate::engine::mysql::create_table::parse_table;
use crate::engine::postgres::quote_ident;
use crate::engine::to_postgres::catalog::Definition;
use crate::engine::to_postgres::ddl::{pg_index_name, translate};

impl LiveCatalog {
    /// The indexes the translation of `definition` makes after a load, by PostgreSQL name.
    pub(super) fn index_statements(&self, definition: &Definition) -> Result<Vec<(String, String)>, String> {
        let parsed = parse_table(&definition.create, &definition.added)?;
        let pg = translate(
            &parsed,
            &self.schema_of(&definition.database),
            &|d: &str| self.schema_of(d),
            &mut BTreeSet::new(),
        )?;
        Ok(pg
            .after_load
            .into_iter()
            .filter_map(|statement| {
                let name = statement
                    .strip_prefix("CREATE INDEX ")
                    .or_else(|| statement.strip_prefix("CREATE UNIQUE INDEX "))?
                    .split(" ON ")
                    .next()?
                    .to_string();
                Some((name, statement))
            })
            .collect())
    }

    pub(super) fn index_names(&self, definition: &Definition) -> Result<BTreeSet<String>, String> {
        Ok(self
            .index_statements(definition)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// `DROP INDEX i ON t`: the PostgreSQL index of that name, where the replica has it.
    pub(super) fn drop_index(&mut self, text: &str, session: &str, at: &str) -> Result<Outcome, String> {
        let tokens = words(text, 16);
        let on = tokens
            .iter()
            .position(|(quoted, w)| !quoted && w.eq_ignore_ascii_case("ON"))
            .ok_or("a DROP INDEX without ON")?;
        let index = tokens[..on]
            .iter()
            .rev()
            .find(|(quoted, w)| {
                *quoted
                    || !["DROP", "INDEX", "IF", "EXISTS", "ONLINE", "OFFLINE"]
                        .contains(&w.to_ascii_uppercase().as_str())
            })
            .map(|(_, w)| w.clone())
            .ok_or("a DROP INDEX without a name")?;
        let names = table_names(
            &text[super::text::find_word(text, "ON").unwrap_or(0)..],
            &["ON"],
            session,
        );
        let Some(key) = names.into_iter().next().filter(|k| self.replicated(k)) else {
            return Ok(Outcome::PassOver);
        };
        // As `ALTER TABLE … DROP INDEX`, so that the catalog forgets it too.
        let alter = format!(
            "ALTER TABLE {}.{} DROP INDEX {}",
            crate::engine::mysql::quote_ident(&key.0),
            crate::engine::mysql::quote_ident(&key.1),
            crate::engine::mysql::quote_ident(&index)
        );
        self.alter(&alter, session, at)
    }

    /// `DROP INDEX IF EXISTS` of the PostgreSQL index MySQL index `index` of `key` became.
    pub(super) fn drop_index_sql(&self, key: &Key, index: &str) -> String {
        format!(
            "DROP INDEX IF EXISTS {}.{}",
            quote_ident(&self.schema_of(&key.0)),
            quote_ident(&pg_index_name(&key.1, index))
        )
    }
}
