//! What a selective restore takes of a copy (`cairn restore --table`, `--exclude-table`,
//! `--rename-table`, `--keep-foreign-keys`): table patterns read as the copy filters read them
//! (`schema.table` or `table`, `*` and `?`), and new names for tables restored beside live ones.

use serde::Serialize;

use super::filter::table_matches;

/// The tables a restore takes, and the names they take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Only these tables (empty: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Not these tables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// A table (`table` or `schema.table`) → the name it is restored under.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renames: Vec<(String, String)>,
    /// Keep foreign keys to tables not restored (the target has them).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_foreign_keys: bool,
    /// PostgreSQL: restore the chosen tables into this schema, beside the live ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub into_schema: Option<String>,
}

impl Selection {
    /// No selection: the whole copy.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
            && self.exclude_tables.is_empty()
            && self.renames.is_empty()
            && self.into_schema.is_none()
    }

    /// Whether table `schema`.`table` of the copy is restored.
    pub fn selected(&self, schema: &str, table: &str) -> bool {
        (self.tables.is_empty() || self.tables.iter().any(|p| table_matches(p, schema, table)))
            && !self.exclude_tables.iter().any(|p| table_matches(p, schema, table))
    }

    /// The name table `schema`.`table` of the copy is restored under.
    pub fn name_of(&self, schema: &str, table: &str) -> String {
        self.renames
            .iter()
            .find(|(old, _)| match old.split_once('.') {
                Some((s, t)) => s == schema && t == table,
                None => old == table,
            })
            .map_or_else(|| table.to_string(), |(_, new)| new.clone())
    }

    /// Reads `OLD=NEW` renames.
    ///
    /// # Errors
    /// A rename that does not read, or a new name with a schema.
    pub fn parse_renames(renames: &[String]) -> Result<Vec<(String, String)>, String> {
        renames
            .iter()
            .map(|rename| match rename.split_once('=') {
                Some((old, new)) if !old.is_empty() && !new.is_empty() && !new.contains('.') => {
                    Ok((old.to_string(), new.to_string()))
                }
                _ => Err(format!(
                    "--rename-table {rename:?}: expected OLD=NEW (OLD as TABLE or SCHEMA.TABLE; NEW a table name, \
                     in the same schema)"
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_chosen_by_pattern_and_renamed_by_name() {
        let selection = Selection {
            tables: vec!["shop.order*".into(), "audit".into()],
            exclude_tables: vec!["shop.orders_old".into()],
            renames: Selection::parse_renames(&["orders=orders_restored".into(), "crm.audit=audit_0914".into()])
                .unwrap(),
            keep_foreign_keys: false,
            into_schema: None,
        };
        assert!(selection.selected("shop", "orders"));
        assert!(selection.selected("shop", "order_lines"));
        assert!(!selection.selected("shop", "orders_old"));
        assert!(!selection.selected("shop", "customers"));
        assert!(selection.selected("crm", "audit"));
        assert_eq!(selection.name_of("shop", "orders"), "orders_restored");
        assert_eq!(selection.name_of("crm", "audit"), "audit_0914");
        assert_eq!(selection.name_of("shop", "audit"), "audit");
        assert!(Selection::parse_renames(&["a=b.c".into()]).is_err());
        assert!(Selection::parse_renames(&["a".into()]).is_err());
        assert!(Selection::default().is_empty() && Selection::default().selected("x", "y"));
    }
}
