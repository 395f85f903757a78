//! Accounts, roles and their grants as a copy records them (`users = true`, or a whole MySQL
//! server): the statements that make each one on a target, what a restore is asked to do with
//! them, and what it did. The records hold password hashes: they are stored like every other
//! file of a copy (checksummed, encrypted when encryption is configured) and never printed —
//! only account names leave this module in reports, and server messages about a statement that
//! carries a hash go through [`scrub`].

use serde::{Deserialize, Serialize};

use crate::engine::{RestoreInput, SourceError};
use crate::repo::file_kind::FileKind;
use crate::repo::reader::{files_of, read_text};
use crate::repo::writer::CopyWriter;

/// The path of the accounts file in a copy.
pub const ACCOUNTS_FILE: &str = "users/accounts.json";

/// Which accounts a copy holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountScope {
    /// Every account of the server but its own (root, system accounts): a whole-server copy.
    Server,
    /// The accounts and roles that own or hold grants on the copied database, and the roles
    /// they are members of or that are members of them.
    #[default]
    Database,
}

/// What a copy records of the server's accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accounts {
    pub scope: AccountScope,
    /// In creation order: roles before the accounts granted them.
    pub accounts: Vec<Account>,
    /// PostgreSQL: the copied database's owner, grants and per-database role settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseAccess>,
    /// PostgreSQL: the tablespaces the copied database uses, with their options (objects are
    /// restored into the target's default tablespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<Tablespace>,
}

/// One account or role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The name as statements and reports write it: `` `app`@`%` `` (MySQL), `app` (a role).
    pub name: String,
    /// MySQL: the user and host parts; PostgreSQL: the role name and no host.
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A role (MariaDB `CREATE ROLE`, a PostgreSQL role that cannot log in).
    pub role: bool,
    /// The statements that make it, password hash included.
    pub create: Vec<String>,
    /// PostgreSQL: the statements that set an existing role as the copy has it (`--replace-users`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset: Vec<String>,
    /// The statements that give it what it held, run once every account exists.
    pub grants: Vec<String>,
}

/// PostgreSQL: a database's owner, its grants and its per-database role settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseAccess {
    pub owner: String,
    /// `None`: the default privileges (`CONNECT` and `TEMPORARY` for everyone).
    pub grants: Option<Vec<DatabaseGrant>>,
    /// `ALTER ROLE … IN DATABASE … SET`: role, setting, value.
    pub settings: Vec<(String, String, String)>,
}

/// One privilege on a database; an empty grantee is `PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseGrant {
    pub grantee: String,
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    pub name: String,
    pub options: Vec<String>,
}

/// What a restore is asked to do with a copy's accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsersChoice {
    /// `--with-users` / `--without-users`; `None`: the default.
    pub with: Option<bool>,
    /// `--replace-users`: set accounts the target has as the copy holds them.
    pub replace: bool,
    /// `replica seed`: accounts come along by default.
    pub seeding: bool,
}

impl UsersChoice {
    /// Whether a restore of a copy whose accounts have `scope` creates them: asked for, or by
    /// default when seeding a replica or restoring a whole server as it was (`elsewhere`: under
    /// other database names, or only some tables).
    pub fn wanted(&self, scope: AccountScope, elsewhere: bool) -> bool {
        self.with
            .unwrap_or(self.seeding || (scope == AccountScope::Server && !elsewhere))
    }
}

/// What a restore did with one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountOutcome {
    pub name: String,
    /// `created`, `replaced`, or `kept` (the target has it; `--replace-users` sets it as the copy
    /// holds it).
    pub outcome: &'static str,
    /// Grants the target could not take, by what they name (never their text).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The accounts of `input`'s full copy a restore creates: `None` when the copy holds none or
/// the restore does not want them (`elsewhere`: under other database names, or only some
/// tables).
///
/// # Errors
/// `--with-users` for a copy that holds no accounts, or a damaged accounts file.
pub async fn to_create(input: &RestoreInput, elsewhere: bool) -> Result<Option<Accounts>, SourceError> {
    let Some(accounts) = read(input).await? else {
        if input.users.with == Some(true) {
            return Err(SourceError::Unsupported(format!(
                "--with-users: copy {} holds no accounts; copies record them with users = true in the source's \
                 settings (CAIRN_SOURCES__<NAME>__USERS=true), or of a whole MySQL server",
                input.manifests[0].copy.id
            )));
        }
        return Ok(None);
    };
    Ok(input.users.wanted(accounts.scope, elsewhere).then_some(accounts))
}

/// The accounts `input`'s full copy holds, if it holds them.
async fn read(input: &RestoreInput) -> Result<Option<Accounts>, SourceError> {
    // Only the accounts entry is read here: the restore checks the rest of the manifest.
    let mut manifest = input.manifests[0].clone();
    manifest
        .files
        .retain(|f| f.details.get("kind").and_then(|k| k.as_str()) == Some("accounts"));
    let files = files_of(&input.source, &manifest)?;
    let Some(stored) = files.iter().find(|f| f.is(&FileKind::Accounts)) else {
        return Ok(None);
    };
    let text = read_text(&input.destination, stored).await?;
    // serde's message may quote a value, and the values hold hashes: only where it failed.
    serde_json::from_str(&text).map(Some).map_err(|e| {
        SourceError::Damaged(format!(
            "{} does not hold accounts as this cairn writes them ({:?} error at line {}, column {})",
            stored.key,
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// What a dry run says of the copy's accounts: names only.
///
/// # Errors
/// As [`to_create`].
pub async fn preview(input: &RestoreInput, elsewhere: bool) -> Result<Vec<String>, SourceError> {
    let held = read(input).await?;
    let wanted = to_create(input, elsewhere).await?;
    Ok(match (held, wanted) {
        (None, _) => Vec::new(),
        (Some(held), None) => vec![format!(
            "accounts: the copy holds {}; not created (--with-users creates them)",
            crate::text::count(held.accounts.len() as u64, "account")
        )],
        (Some(_), Some(wanted)) => {
            let names: Vec<&str> = wanted.accounts.iter().map(|a| a.name.as_str()).collect();
            vec![format!(
                "accounts: creates those the target lacks ({} kept as they are): {}",
                match input.users.replace {
                    true => "those it has are set as the copy holds them, not",
                    false => "those it has are",
                },
                names.join(", ")
            )]
        }
    })
}

/// Stores `accounts` in the copy `writer` writes.
///
/// # Errors
/// The destination's error.
pub async fn store(writer: &CopyWriter, accounts: &Accounts) -> Result<(), SourceError> {
    if !writer.encrypts() && !accounts.accounts.is_empty() {
        tracing::warn!(
            "the copy's accounts, with their password hashes, are stored compressed but not encrypted: configure \
             [encryption] (docs/configuration.md) so that whoever reads the destination cannot read them"
        );
    }
    let json = serde_json::to_vec(accounts).expect("accounts serialize");
    writer
        .put_file(ACCOUNTS_FILE, std::io::Cursor::new(json), || {
            FileKind::Accounts.into_details()
        })
        .await?;
    Ok(())
}

/// A server's message about a statement that carries a password hash, cut where it starts
/// quoting: servers quote the statement (MySQL's "near '…'", cut to 80 characters, so a hash
/// may appear only in part), a name or a value, and what they quote is never shown.
pub fn scrub(message: &str) -> String {
    let cut = message
        .find(['\'', '"', '`'])
        .into_iter()
        .chain(message.find("0x"))
        .min();
    match cut {
        Some(at) => format!("{}…", message[..at].trim_end()),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_about_an_account_statement_quotes_nothing() {
        let cut = "You have an error in your SQL syntax; check the manual near 'IDENTIFIED BY PASSWORD '*01234567";
        assert_eq!(
            scrub(cut),
            "You have an error in your SQL syntax; check the manual near…"
        );
        assert_eq!(scrub("role \"app\" already exists"), "role…");
        assert_eq!(scrub("bad value 0x2441"), "bad value…");
        assert_eq!(
            scrub("permission denied to create role"),
            "permission denied to create role"
        );
    }

    #[test]
    fn users_come_by_default_with_a_whole_server_or_a_replica() {
        let default = UsersChoice::default();
        assert!(default.wanted(AccountScope::Server, false));
        assert!(!default.wanted(AccountScope::Server, true));
        assert!(!default.wanted(AccountScope::Database, false));
        let seeding = UsersChoice {
            seeding: true,
            ..UsersChoice::default()
        };
        assert!(seeding.wanted(AccountScope::Database, false));
        let without = UsersChoice {
            with: Some(false),
            seeding: true,
            ..UsersChoice::default()
        };
        assert!(!without.wanted(AccountScope::Server, false));
    }
}
