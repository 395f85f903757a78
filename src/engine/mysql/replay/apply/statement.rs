//! A statement the source logged as text (DDL) applied by the replay's applier: under the
//! session it ran in, with database names mapped, skipped when it touches nothing restored.

use mysql_async::prelude::Queryable;

use super::super::PROGRESS_DATABASE;
use super::super::sql::{dropped_trigger, first_words, rename_references, statement_table};
use super::only::Verdict;
use super::{Applier, ROW_SESSION};
use crate::engine::SourceError;
use crate::engine::change::{Session, Statement};
use crate::engine::mysql::attribution::{is_account_statement, statement_database};
use crate::engine::mysql::statement_text::statement_tables;
use crate::engine::mysql::{quote_ident, quote_literal};

impl Applier<'_> {
    /// Runs a statement the source logged as text (DDL), under the session it ran in.
    pub(super) async fn statement(&mut self, statement: Statement) -> Result<(), SourceError> {
        let Statement {
            at,
            database: schema,
            text,
            session: logged,
            ..
        } = statement;
        let (at, text) = (at.as_str(), text.as_str());
        self.send().await?;
        let Some(source_db) = statement_database(text, &schema, self.databases.keys()) else {
            tracing::debug!(
                "{at}: skipped {} (it touches no restored database)",
                statement_kind(text)
            );
            return Ok(());
        };
        let target_db = self.databases[&source_db].clone();
        if is_account_statement(text) {
            // Only the kind: an account statement may carry a password in clear.
            tracing::info!(
                "{at}: skipped an account or server statement ({})",
                statement_kind(text)
            );
            return Ok(());
        }
        if let Some(only) = &self.only {
            let tables = statement_tables(text, &schema);
            if only.statement(at, text, &tables)? == Verdict::Skip {
                tracing::info!("{at}: skipped (it changes no restored table): {}", first_words(text));
                return Ok(());
            }
        }
        if let Some((database, table)) = statement_table(text)
            && !self
                .filters
                .table_included(database.as_deref().unwrap_or(&source_db), &table)
        {
            tracing::info!(
                "{at}: skipped (table {table} is left out by the copy's filters): {}",
                first_words(text)
            );
            return Ok(());
        }
        if let Some((database, name)) = dropped_trigger(text, &schema) {
            let target = self.databases.get(&database).cloned().unwrap_or(database);
            self.conn
                .exec_drop(
                    format!(
                        "DELETE FROM {PROGRESS_DATABASE}.deferred_triggers WHERE source = ? AND target_databases = ? AND db = ? AND name = ?"
                    ),
                    (&self.source, &self.targets, &target, &name),
                )
                .await
                .map_err(|e| self.my.error("forgetting a dropped trigger", e))?;
            return Ok(());
        }
        for statement in session_of(&target_db, &logged) {
            self.exec(&format!("{at}: preparing the session for a statement"), &statement)
                .await?;
        }
        let text = rename_references(text, self.databases);
        let result = self.conn.query_drop(text.as_str()).await;
        result.map_err(|e| self.error(&format!("{at}: running {}", first_words(&text)), e))?;
        self.exec("restoring the row session", ROW_SESSION).await?;
        self.tables.clear();
        self.statements.clear();
        // Row events already hold what the source's triggers did: a trigger the log creates
        // must be set aside like those that were there when the replay started (by the caller:
        // `triggers::set_aside_triggers`).
        self.trigger_created |= creates_trigger(&text);
        Ok(())
    }
}

/// The statements that put a session where a logged statement ran: its database (as the target
/// names it), `sql_mode`, character sets and time zone.
pub(in crate::engine::mysql::replay) fn session_of(target_db: &str, logged: &Session) -> Vec<String> {
    let mut session = vec![format!("USE {}", quote_ident(target_db))];
    if let Some(mode) = logged.sql_mode {
        session.push(format!("SET SESSION sql_mode = {mode}"));
    }
    if let Some((client, connection, server)) = logged.charset {
        session.push(format!(
            "SET SESSION character_set_client = {client}, SESSION collation_connection = {connection}, SESSION \
             collation_server = {server}"
        ));
    }
    if let Some(zone) = &logged.time_zone {
        session.push(format!("SET SESSION time_zone = {}", quote_literal(zone)));
    }
    session
}

/// The first two words of a statement, upper-cased: what it is, without anything it holds.
pub(in crate::engine::mysql::replay) fn statement_kind(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

/// Whether a statement creates a trigger (`CREATE [OR REPLACE] [DEFINER=…] TRIGGER …`).
pub(in crate::engine::mysql::replay) fn creates_trigger(text: &str) -> bool {
    let words: Vec<String> = text.split_whitespace().take(6).map(str::to_ascii_uppercase).collect();
    words.first().is_some_and(|w| w == "CREATE") && words.iter().any(|w| w == "TRIGGER")
}
