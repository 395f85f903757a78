//! Schema of a PostgreSQL copy: pg_dump (on the copy's exported snapshot) for the DDL, split
//! into pre-data and post-data, and the post-data cut into entries so a restore can build
//! indexes in parallel before foreign keys and triggers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::quote_ident;
use crate::engine::{SourceError, SourceUrl};

/// A pg_dump binary and its major version.
#[derive(Debug, Clone)]
pub struct PgDump {
    pub path: PathBuf,
    pub version: String,
    pub major: u32,
}

async fn probe(path: &Path) -> Option<PgDump> {
    let output = Command::new(path).arg("--version").output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    let version = text.split_whitespace().nth(2)?.to_string();
    let major = version.split('.').next()?.parse().ok()?;
    Some(PgDump {
        path: path.to_path_buf(),
        version,
        major,
    })
}

/// The oldest installed pg_dump that can dump a server of `server_major` (pg_dump refuses
/// servers newer than itself).
///
/// # Errors
/// [`SourceError::Tool`] saying which version to install.
pub async fn find_pg_dump(server_major: u32) -> Result<PgDump, SourceError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(explicit) = std::env::var("CAIRN_PG_DUMP") {
        candidates.push(explicit.into());
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            candidates.push(entry.path().join("bin/pg_dump"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("pg_dump")));
    }
    let mut found = Vec::new();
    for candidate in candidates.into_iter().filter(|c| c.is_file()) {
        if let Some(dump) = probe(&candidate).await {
            found.push(dump);
        }
    }
    found.sort_by_key(|d| d.major);
    let seen: Vec<String> = found
        .iter()
        .map(|d| format!("{} ({})", d.path.display(), d.version))
        .collect();
    found
        .into_iter()
        .find(|d| d.major >= server_major)
        .ok_or_else(|| SourceError::Tool {
            tool: "pg_dump".into(),
            detail: format!(
                "the server is PostgreSQL {server_major} and needs pg_dump {server_major} or newer; found {}. \
             Install postgresql-client-{server_major} (or set CAIRN_PG_DUMP to its pg_dump)",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ),
        })
}

/// Which part of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    PreData,
    PostData,
}

/// Runs pg_dump for one section on the exported snapshot and returns SQL that runs without psql.
///
/// # Errors
/// [`SourceError::Tool`] with pg_dump's own message when it fails.
pub async fn dump_section(
    dump: &PgDump,
    url: &SourceUrl,
    snapshot: &str,
    section: Section,
    filter_args: &[String],
) -> Result<String, SourceError> {
    let mut command = Command::new(&dump.path);
    command
        .arg("--schema-only")
        .arg(match section {
            Section::PreData => "--section=pre-data",
            Section::PostData => "--section=post-data",
        })
        .arg(format!("--snapshot={snapshot}"))
        // Subscriptions would connect the restored database to their publishers; tablespaces may
        // not exist where it is restored.
        .arg("--no-subscriptions")
        .arg("--no-tablespaces")
        .args(filter_args)
        .arg("--dbname")
        .arg(url.without_password().as_str())
        .env("PGAPPNAME", "cairn pg_dump")
        .kill_on_drop(true);
    match &url.password {
        Some(password) => command.env("PGPASSWORD", password.expose()),
        None => command.env_remove("PGPASSWORD"),
    };
    let output = command.output().await.map_err(|e| SourceError::Tool {
        tool: dump.path.display().to_string(),
        detail: format!("cannot run it: {e}"),
    })?;
    if !output.status.success() {
        return Err(SourceError::Tool {
            tool: format!("{} {}", dump.path.display(), dump.version),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8(output.stdout).map_err(|_| SourceError::Tool {
        tool: dump.path.display().to_string(),
        detail: "its output is not UTF-8".into(),
    })?;
    Ok(strip_meta_commands(&text))
}

/// Removes psql meta-commands (`\restrict`, `\unrestrict`), which only psql understands.
pub fn strip_meta_commands(sql: &str) -> String {
    sql.lines()
        .filter(|line| !line.starts_with('\\'))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// One object of pg_dump's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// pg_dump's type: `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, `TRIGGER`, …
    pub kind: String,
    pub name: String,
    /// The schema the header names (`-` for objects outside one).
    pub schema: String,
    pub sql: String,
}

/// pg_dump's output cut into the session settings at its top and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub preamble: String,
    pub entries: Vec<Entry>,
}

/// Cuts pg_dump output at its `-- Name: …; Type: …;` headers.
pub fn split(sql: &str) -> Script {
    let mut preamble = String::new();
    let mut entries: Vec<Entry> = Vec::new();
    for line in sql.lines() {
        if let Some(header) = line.strip_prefix("-- Name: ")
            && let Some((name, rest)) = header.split_once("; Type: ")
        {
            let kind = rest.split(';').next().unwrap_or("").to_string();
            let schema = rest
                .split(';')
                .find_map(|part| part.trim().strip_prefix("Schema: "))
                .unwrap_or("-")
                .to_string();
            entries.push(Entry {
                kind,
                name: name.to_string(),
                schema,
                sql: String::new(),
            });
            continue;
        }
        if line.starts_with("--") {
            continue;
        }
        match entries.last_mut() {
            Some(entry) => {
                entry.sql.push_str(line);
                entry.sql.push('\n');
            }
            None => {
                preamble.push_str(line);
                preamble.push('\n');
            }
        }
    }
    for entry in &mut entries {
        entry.sql = entry.sql.trim().to_string();
    }
    entries.retain(|e| !e.sql.is_empty());
    Script { preamble, entries }
}

/// Leaves out what cairn made on the source for its incrementals — the publication named
/// `publication` and the DDL-capture event trigger — so a restored database holds the source's
/// objects, not cairn's bookkeeping (a publication for all tables would also make the restored
/// database refuse updates of tables without a replica identity).
pub fn without_cairn_objects(mut script: Script, publication: Option<&str>) -> Script {
    script.entries.retain(|entry| {
        let ours = match entry.kind.as_str() {
            "PUBLICATION" => Some(entry.name.as_str()) == publication,
            "EVENT TRIGGER" => entry.name == super::ddl::EVENT_TRIGGER,
            _ => false,
        };
        !ours
    });
    script
}

/// Post-data entries in restore phases: indexes and keys (parallel), then index attachments
/// and foreign keys, then everything else in pg_dump's order.
pub fn post_data_phases(script: &Script) -> [Vec<Entry>; 3] {
    let mut phases: [Vec<Entry>; 3] = Default::default();
    for entry in &script.entries {
        let phase = match entry.kind.as_str() {
            "INDEX" | "CONSTRAINT" => 0,
            "INDEX ATTACH" | "FK CONSTRAINT" => 1,
            _ => 2,
        };
        phases[phase].push(entry.clone());
    }
    phases
}

/// Roles named by an ownership or privilege statement of pg_dump: `ALTER … OWNER TO r;`,
/// `GRANT … TO r[, r2];`, `REVOKE … FROM r;`, `ALTER DEFAULT PRIVILEGES FOR ROLE r …`.
fn roles_named(line: &str) -> Option<Vec<String>> {
    let trimmed = line.trim_end_matches(';');
    let list = if line.starts_with("ALTER ") && line.contains(" OWNER TO ") {
        trimmed.rsplit_once(" OWNER TO ")?.1
    } else if line.starts_with("GRANT ") {
        trimmed.rsplit_once(" TO ")?.1.trim_end_matches(" WITH GRANT OPTION")
    } else if line.starts_with("REVOKE ") {
        trimmed.rsplit_once(" FROM ")?.1
    } else if let Some(rest) = line.strip_prefix("ALTER DEFAULT PRIVILEGES FOR ROLE ") {
        rest.split_whitespace().next()?
    } else {
        return None;
    };
    Some(
        list.split(',')
            .map(|r| r.trim())
            .filter(|r| !r.is_empty() && !r.eq_ignore_ascii_case("PUBLIC"))
            .map(|r| {
                if let Some(inner) = r.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                    inner.replace("\"\"", "\"")
                } else {
                    r.to_string()
                }
            })
            .collect(),
    )
}

/// Drops ownership and privilege statements naming roles the target does not have; returns the
/// SQL and the roles that were missing. Each such statement is a single line in pg_dump output.
pub fn keep_known_roles(sql: &str, known: &BTreeSet<String>) -> (String, BTreeSet<String>) {
    let mut missing = BTreeSet::new();
    let mut out = String::with_capacity(sql.len());
    for line in sql.lines() {
        if let Some(roles) = roles_named(line) {
            let unknown: Vec<String> = roles.into_iter().filter(|r| !known.contains(r)).collect();
            if !unknown.is_empty() {
                missing.extend(unknown);
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, missing)
}

/// `"schema"."name"` for messages and statements.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST_DATA: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\n\
        SELECT pg_catalog.set_config('search_path', '', false);\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres\n--\n\n\
        ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\
        --\n-- Name: t_v_idx; Type: INDEX; Schema: public; Owner: postgres\n--\n\nCREATE INDEX t_v_idx ON public.t USING btree (v);\n\n\
        --\n-- Name: p1_k_idx; Type: INDEX ATTACH; Schema: public; Owner: postgres\n--\n\nALTER INDEX public.p_k_idx ATTACH PARTITION public.p1_k_idx;\n\n\
        --\n-- Name: t tr; Type: TRIGGER; Schema: public; Owner: postgres\n--\n\nCREATE TRIGGER tr BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n\n\
        --\n-- Name: c c_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres\n--\n\nALTER TABLE ONLY public.c\n    ADD CONSTRAINT c_id_fkey FOREIGN KEY (id) REFERENCES public.t(id);\n\n\
        --\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n";

    #[test]
    fn post_data_splits_into_ordered_phases() {
        let script = split(&strip_meta_commands(POST_DATA));
        assert!(script.preamble.contains("SET statement_timeout = 0;"));
        assert!(!script.preamble.contains("restrict"));
        let kinds: Vec<&str> = script.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["CONSTRAINT", "INDEX", "INDEX ATTACH", "TRIGGER", "FK CONSTRAINT"]
        );
        assert_eq!(
            script.entries[0].sql,
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);"
        );
        let [first, second, third] = post_data_phases(&script);
        assert_eq!(
            first.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["t t_pkey", "t_v_idx"]
        );
        assert_eq!(
            second.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["INDEX ATTACH", "FK CONSTRAINT"]
        );
        assert_eq!(third.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["TRIGGER"]);
    }

    #[test]
    fn statements_for_missing_roles_are_dropped() {
        let sql = "CREATE TABLE public.t (id integer);\nALTER TABLE public.t OWNER TO app_owner;\n\
                   GRANT SELECT ON TABLE public.t TO reporting, \"Mixed Case\";\nGRANT SELECT ON TABLE public.t TO PUBLIC;\n\
                   REVOKE ALL ON SCHEMA public FROM PUBLIC;\nALTER TABLE public.t OWNER TO postgres;\n";
        let known: BTreeSet<String> = ["postgres", "reporting", "Mixed Case"]
            .into_iter()
            .map(String::from)
            .collect();
        let (kept, missing) = keep_known_roles(sql, &known);
        assert_eq!(missing.into_iter().collect::<Vec<_>>(), ["app_owner"]);
        assert!(!kept.contains("app_owner"));
        assert!(kept.contains("TO reporting, \"Mixed Case\";"));
        assert!(kept.contains("TO PUBLIC;") && kept.contains("FROM PUBLIC;") && kept.contains("OWNER TO postgres;"));
        let only_known: BTreeSet<String> = ["postgres"].into_iter().map(String::from).collect();
        let (kept, missing) = keep_known_roles(sql, &only_known);
        assert!(!kept.contains("reporting"));
        assert_eq!(missing.len(), 3);
    }
}
