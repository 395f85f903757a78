//! Schema changes between PostgreSQL copies. Logical decoding carries rows, not DDL: a table
//! created, altered or dropped after a full copy would make its chain restore to something the
//! source never was. Each copy records a fingerprint of the source's schema; an incremental
//! compares it before and after it reads the slot, and a difference stops it (or, with
//! `on-ddl = "full"`, makes the run take a full copy).

use tokio_postgres::Client;

use super::Pg;
use crate::engine::SourceError;
use crate::engine::change::{Change, RowChange, Session, Statement, Value};
use crate::repo::status::CopyRecord;

/// The key of the fingerprint in a copy's details.
pub const FINGERPRINT: &str = "schema_fingerprint";

/// What a restore rebuilds from the full copy's schema, hashed: every relation with its kind and
/// name; tables' columns (name, type, nullability, default) and replica identity; indexes,
/// constraints and user triggers by their definitions; functions and views by their text.
/// Run inside a copy's snapshot, the catalog rows are the snapshot's.
const FINGERPRINT_SQL: &str = "
WITH user_ns AS (
  SELECT oid FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema', '_cairn')
     AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'
), parts AS (
  SELECT format('rel %s %s %I.%I %s', c.oid, c.relkind, n.nspname, c.relname, c.relreplident)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relnamespace IN (SELECT oid FROM user_ns) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  UNION ALL
  SELECT format('col %s %s %I %s %s %s', a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace IN (SELECT oid FROM user_ns) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
     AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('idx %s %s', i.indexrelid, pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
   WHERE c.relnamespace IN (SELECT oid FROM user_ns)
  UNION ALL
  SELECT format('con %s %I %s', co.oid, co.conname, pg_get_constraintdef(co.oid))
    FROM pg_constraint co WHERE co.connamespace IN (SELECT oid FROM user_ns)
  UNION ALL
  SELECT format('trg %s %s %s', t.oid, t.tgenabled, pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE NOT t.tgisinternal AND c.relnamespace IN (SELECT oid FROM user_ns)
  UNION ALL
  SELECT format('fn %s %I %s %s', p.oid, p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc))
    FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM user_ns)
  UNION ALL
  SELECT format('view %s %s', c.oid, md5(pg_get_viewdef(c.oid)))
    FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM user_ns) AND c.relkind IN ('v', 'm')
) SELECT md5(coalesce(string_agg(format, E'\\n' ORDER BY format), '')) FROM parts p(format)";

/// The fingerprint of the schema `client` sees.
///
/// # Errors
/// The server's error.
pub async fn fingerprint(pg: &Pg, client: &Client) -> Result<String, SourceError> {
    Ok(client
        .query_one(FINGERPRINT_SQL, &[])
        .await
        .map_err(|e| pg.error("reading the schema's fingerprint", e))?
        .get(0))
}

/// Fails when the schema's fingerprint `now` differs from the one `parent` recorded. A parent
/// without one (taken before fingerprints were recorded) is not compared.
///
/// # Errors
/// [`SourceError::SchemaChanged`] naming the parent.
pub fn check_unchanged(source_name: &str, parent: &CopyRecord, now: &str, when: &str) -> Result<(), SourceError> {
    match parent.details.get(FINGERPRINT).and_then(|f| f.as_str()) {
        Some(recorded) if recorded != now => Err(SourceError::SchemaChanged {
            source_name: source_name.to_string(),
            parent: parent.id.clone(),
            detail: format!(
                "tables, columns, indexes, constraints, triggers, functions or views were created, changed or \
                 dropped {when}"
            ),
        }),
        _ => Ok(()),
    }
}

/// The schema holding cairn's DDL log on a source with `on-ddl = "capture"`; no copy holds it.
pub const CAIRN_SCHEMA: &str = "_cairn";

/// The event trigger that records DDL into the log.
pub const EVENT_TRIGGER: &str = "cairn_ddl";

/// Creates the DDL log on the source (idempotent): a table, the function that records each
/// top-level query once per transaction with the `search_path` it ran under, and the event
/// trigger calling it at the end of every DDL command. The inserts are in the publication, so
/// they reach the slot in order with the rows. While this runs the trigger records nothing.
///
/// # Errors
/// The server's error (event triggers need a superuser).
pub async fn install(pg: &Pg, client: &Client) -> Result<(), SourceError> {
    let sql = format!(
        "BEGIN;
         SET LOCAL cairn.installing = 'on';
         CREATE SCHEMA IF NOT EXISTS {CAIRN_SCHEMA};
         CREATE TABLE IF NOT EXISTS {CAIRN_SCHEMA}.ddl (
           id bigserial PRIMARY KEY,
           at timestamptz NOT NULL DEFAULT clock_timestamp(),
           xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
           search_path text NOT NULL,
           role text NOT NULL,
           tag text NOT NULL,
           command text NOT NULL);
         -- Writes the log with its owner's rights (whoever runs DDL need not be able to write it),
         -- under a fixed search_path, so the caller's cannot redirect anything it calls.
         CREATE OR REPLACE FUNCTION {CAIRN_SCHEMA}.record(path text, who text, command_tag text, query text) RETURNS void
           LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
         BEGIN
           -- A query string of several commands fires once per command: it is recorded once.
           IF NOT EXISTS (SELECT 1 FROM {CAIRN_SCHEMA}.ddl WHERE xid = pg_current_xact_id() AND command = query) THEN
             INSERT INTO {CAIRN_SCHEMA}.ddl (search_path, role, tag, command) VALUES (path, who, command_tag, query);
           END IF;
         END $fn$;
         -- Runs with the rights of whoever ran the DDL, and reads their search_path and query.
         CREATE OR REPLACE FUNCTION {CAIRN_SCHEMA}.record_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
         BEGIN
           IF coalesce(current_setting('cairn.installing', true), '') = 'on' THEN RETURN; END IF;
           PERFORM {CAIRN_SCHEMA}.record(current_setting('search_path'), current_user, tg_tag, current_query());
         END $fn$;
         GRANT USAGE ON SCHEMA {CAIRN_SCHEMA} TO PUBLIC;
         REVOKE ALL ON {CAIRN_SCHEMA}.ddl FROM PUBLIC;
         DO $do$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{EVENT_TRIGGER}') THEN
             CREATE EVENT TRIGGER {EVENT_TRIGGER} ON ddl_command_end EXECUTE FUNCTION {CAIRN_SCHEMA}.record_ddl();
           END IF;
         END $do$;
         COMMIT;"
    );
    client.batch_execute(&sql).await.map_err(|e| {
        pg.error(
            "creating the DDL log (on-ddl = \"capture\" needs a superuser to create an event trigger)",
            e,
        )
    })
}

/// What `install` needs, checked before anything is created: a superuser.
///
/// # Errors
/// [`SourceError::Privilege`] saying so, or the server's error.
pub async fn check_can_install(pg: &Pg, client: &Client) -> Result<String, SourceError> {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                        EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{EVENT_TRIGGER}')"
            ),
            &[],
        )
        .await
        .map_err(|e| pg.error("checking the DDL log", e))?;
    let (superuser, installed): (bool, bool) = (row.get(0), row.get(1));
    if !superuser {
        return Err(SourceError::Privilege {
            database: pg.name.clone(),
            doing: "creating the DDL log (on-ddl = \"capture\")".into(),
            detail: "an event trigger needs a superuser; run the backup as one, or set on-ddl = \"fail\" or \"full\""
                .into(),
        });
    }
    Ok(match installed {
        true => format!("DDL log: event trigger {EVENT_TRIGGER} records DDL into {CAIRN_SCHEMA}.ddl"),
        false => format!("DDL log: the copy creates event trigger {EVENT_TRIGGER} and {CAIRN_SCHEMA}.ddl"),
    })
}

/// Drops a DDL log left from when the source captured DDL; a failure is a warning.
pub async fn uninstall_quietly(pg: &Pg, client: &Client, source_name: &str) {
    let exists = client
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{EVENT_TRIGGER}')"),
            &[],
        )
        .await
        .map(|row| row.get::<_, bool>(0));
    if let Ok(true) = exists {
        match uninstall(pg, client).await {
            Ok(()) => tracing::warn!(
                "{source_name}: DDL capture is not in use: dropped event trigger {EVENT_TRIGGER} and schema {CAIRN_SCHEMA}"
            ),
            Err(e) => {
                tracing::warn!("{source_name}: DDL capture is not in use, but its DDL log could not be dropped: {e}")
            }
        }
    }
}

/// Drops the DDL log and its event trigger, when they exist.
///
/// # Errors
/// The server's error.
pub async fn uninstall(pg: &Pg, client: &Client) -> Result<(), SourceError> {
    client
        .batch_execute(&format!(
            "DROP EVENT TRIGGER IF EXISTS {EVENT_TRIGGER}; DROP SCHEMA IF EXISTS {CAIRN_SCHEMA} CASCADE"
        ))
        .await
        .map_err(|e| pg.error("dropping the DDL log", e))
}

/// A row of the DDL log in the stream, turned into the statement it records: the database
/// field carries the `search_path` it ran under. Other changes of the log are not the source's
/// (none is made but inserts); every other change passes unchanged.
pub fn from_log(change: Change) -> Option<Change> {
    let Change::Rows(rows) = &change else {
        return Some(change);
    };
    if rows.database != CAIRN_SCHEMA || rows.table != "ddl" {
        return Some(change);
    }
    let column = |name: &str| rows.names.iter().position(|n| n == name);
    let (Some(path), Some(command)) = (column("search_path"), column("command")) else {
        return None;
    };
    let role = column("role");
    let text = |values: &[Value], i: usize| match values.get(i) {
        Some(Value::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    // One insert per message: pgoutput sends each row on its own.
    let after = rows.changes.iter().find_map(|c| match c {
        RowChange::Insert { after } => Some(after),
        _ => None,
    })?;
    Some(Change::Statement(Statement {
        at: rows.at.clone(),
        database: text(after, path),
        text: text(after, command),
        session: Session {
            role: role.map(|i| text(after, i)).filter(|r| !r.is_empty()),
            ..Session::default()
        },
        standalone: false,
    }))
}

/// Commands the replay runs as recorded: the result on the target is the source's.
const REPLAYABLE: [&str; 9] = [
    "CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "SECURITY", "IMPORT", "REFRESH",
];

/// The recorded query `text` as the replay runs it inside its transaction: exactly one DDL
/// command, with `CONCURRENTLY` left out (it cannot run in a transaction, and builds the same
/// index). A query of several commands, or a DDL command issued from a function or a `DO`
/// block, records the whole query, which the replay cannot run without repeating its other
/// work: it is refused.
///
/// # Errors
/// A sentence saying why the query cannot be replayed.
pub fn replayable(text: &str) -> Result<String, String> {
    let scanned = scan(text);
    let shown = || text.split_whitespace().take(8).collect::<Vec<_>>().join(" ");
    if scanned.statements > 1 {
        return Err(format!(
            "the DDL was sent in one query with other commands ({}…); send DDL statements one per query",
            shown()
        ));
    }
    let word = |w: &Word| text[w.start..w.end].to_ascii_uppercase();
    let first = scanned.words.first().map(word).unwrap_or_default();
    if !REPLAYABLE.contains(&first.as_str()) {
        return Err(format!(
            "the DDL ran inside a {first} command ({}…), which cannot be replayed by itself",
            shown()
        ));
    }
    // CREATE TABLE … AS (and SELECT INTO) write rows the slot carries before the DDL is
    // recorded, so the replay would meet rows of a table it has not created yet.
    let leading: Vec<String> = scanned.words.iter().take(5).map(word).collect();
    let creates_table = leading.first().is_some_and(|w| w == "CREATE")
        && leading.iter().skip(1).take(3).any(|w| w == "TABLE")
        && !leading.iter().any(|w| w == "TRIGGER" || w == "FUNCTION");
    if creates_table && scanned.words.iter().any(|w| w.depth == 0 && word(w) == "AS") {
        return Err(format!(
            "CREATE TABLE … AS writes rows the replay would meet before the table exists ({}…); create the table, \
             then INSERT … SELECT",
            shown()
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for w in &scanned.words {
        if word(w) == "CONCURRENTLY" {
            out.push_str(&text[from..w.start]);
            from = w.end;
        }
    }
    out.push_str(&text[from..]);
    Ok(out.trim().trim_end_matches(';').trim().to_string())
}

/// Where the words of an SQL text are (with their parenthesis depth), and how many statements
/// it holds, skipping strings, quoted identifiers, dollar-quoted bodies and comments. Works on
/// bytes: word boundaries are ASCII, so they are also character boundaries.
struct Scanned {
    words: Vec<Word>,
    statements: usize,
}

#[derive(Clone, Copy)]
struct Word {
    start: usize,
    end: usize,
    depth: usize,
}

fn scan(text: &str) -> Scanned {
    let bytes = text.as_bytes();
    let find = |from: usize, needle: &[u8]| {
        bytes[from.min(bytes.len())..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|k| from + k)
    };
    let (mut words, mut statements, mut pending) = (Vec::<Word>::new(), 0usize, false);
    // `BEGIN ATOMIC … END` bodies (and CASE … END inside them) hold `;` of their own.
    let (mut depth, mut atomic, mut cases) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if bytes[i..].starts_with(b"--") {
            i = find(i, b"\n").unwrap_or(bytes.len());
        } else if bytes[i..].starts_with(b"/*") {
            let mut nesting = 0usize;
            let mut j = i;
            while j < bytes.len() {
                if bytes[j..].starts_with(b"/*") {
                    nesting += 1;
                    j += 2;
                } else if bytes[j..].starts_with(b"*/") {
                    nesting -= 1;
                    j += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
        } else if c == b'\'' || c == b'"' {
            let escapes = c == b'\'' && i > 0 && bytes[i - 1].eq_ignore_ascii_case(&b'e');
            let mut j = i + 1;
            while j < bytes.len() {
                // A backslash escape (E'…') or a doubled quote is part of the string.
                let escaped = escapes && bytes[j] == b'\\';
                if escaped || (bytes[j] == c && bytes.get(j + 1) == Some(&c)) {
                    j += 2;
                } else if bytes[j] == c {
                    break;
                } else {
                    j += 1;
                }
            }
            pending = true;
            i = j + 1;
        } else if c == b'$'
            && let Some(close) = find(i + 1, b"$")
            && bytes[i + 1..close]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
            && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
        {
            let tag = &bytes[i..=close];
            i = find(close + 1, tag).map(|k| k + tag.len()).unwrap_or(bytes.len());
            pending = true;
        } else if c == b'(' || c == b')' {
            depth = if c == b'(' { depth + 1 } else { depth.saturating_sub(1) };
            pending = true;
            i += 1;
        } else if c == b';' {
            if depth == 0 && atomic == 0 {
                statements += usize::from(pending);
                pending = false;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = bytes[i..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
                .map(|k| i + k)
                .unwrap_or(bytes.len());
            let word = &text[i..end];
            if word.eq_ignore_ascii_case("ATOMIC")
                && words
                    .last()
                    .is_some_and(|w| text[w.start..w.end].eq_ignore_ascii_case("BEGIN"))
            {
                atomic += 1;
            } else if atomic > 0 && word.eq_ignore_ascii_case("CASE") {
                cases += 1;
            } else if atomic > 0 && word.eq_ignore_ascii_case("END") {
                if cases > 0 {
                    cases -= 1;
                } else {
                    atomic -= 1;
                }
            }
            words.push(Word { start: i, end, depth });
            pending = true;
            i = end;
        } else {
            pending |= !c.is_ascii_whitespace();
            i += 1;
        }
    }
    statements += usize::from(pending);
    Scanned { words, statements }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ddl_command_is_replayed_as_recorded() {
        assert_eq!(
            replayable("ALTER TABLE t ADD COLUMN c text DEFAULT 'a;b'; ").unwrap(),
            "ALTER TABLE t ADD COLUMN c text DEFAULT 'a;b'"
        );
        assert_eq!(
            replayable("create index concurrently i on t (v) -- build it; quietly").unwrap(),
            "create index  i on t (v) -- build it; quietly"
        );
        let function = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$";
        assert_eq!(replayable(function).unwrap(), function);
        assert_eq!(
            replayable("/* a; b */ DROP TABLE \"we;ird\"").unwrap(),
            "/* a; b */ DROP TABLE \"we;ird\""
        );
        assert!(replayable("COMMENT ON TABLE t IS E'it''s \\' ; here'").is_ok());
    }

    #[test]
    fn any_text_is_scanned_without_panicking() {
        assert_eq!(
            replayable("CREATE TABLE café (id int)").unwrap(),
            "CREATE TABLE café (id int)"
        );
        assert!(replayable("/* é */ DROP TABLE t").is_ok());
        assert!(replayable("COMMENT ON TABLE t IS 'ünïcödé ;' -- ß").is_ok());
        for text in ["'", "\"", "$$", "$a$ é", "/* é", "E'\\", "é", "$1", ";;", "(((", ")))"] {
            let _ = replayable(text);
        }
        // A trailing comment stays a comment: the statement must end on a line of its own.
        assert!(
            replayable("ALTER TABLE t ADD c int -- why")
                .unwrap()
                .ends_with("-- why")
        );
    }

    #[test]
    fn bodies_and_rules_with_semicolons_are_one_command() {
        assert!(
            replayable("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END")
                .is_ok()
        );
        assert!(replayable("CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)").is_ok());
        assert!(replayable("CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY)").is_ok());
    }

    #[test]
    fn create_table_as_is_refused() {
        assert!(
            replayable("CREATE TABLE copy AS SELECT * FROM t")
                .unwrap_err()
                .contains("INSERT … SELECT")
        );
        assert!(replayable("create unlogged table c as table t").is_err());
        assert!(replayable("CREATE MATERIALIZED VIEW m AS SELECT 1").is_ok());
    }

    #[test]
    fn several_commands_or_ddl_inside_other_commands_are_refused() {
        let err = replayable("CREATE TABLE a (id int); INSERT INTO a VALUES (1)").unwrap_err();
        assert!(err.contains("one per query"), "{err}");
        let err = replayable("DO $$ BEGIN EXECUTE 'CREATE TABLE b (id int)'; END $$").unwrap_err();
        assert!(err.contains("inside a DO command"), "{err}");
        assert!(replayable("SELECT make_tables()").is_err());
    }
}
