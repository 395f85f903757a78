//! A selective restore of a MySQL full copy (`cairn restore --table … [--rename-table OLD=NEW]`):
//! only the chosen tables — their definitions, indexes, the foreign keys among them, their
//! triggers and rows — into a target that may hold everything else already. The chosen tables
//! must not exist there (or are restored under new names beside the live ones); nothing else in
//! the target is touched.

use std::collections::{BTreeMap, BTreeSet};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::schema::{Object, Schema, TableDef};
use super::target::MysqlTarget;
use super::{quote_ident, quote_literal};

/// A name as MySQL quotes it.
fn identifier(text: &str) -> Option<(String, &str)> {
    crate::engine::sql_name::identifier(text, '`')
}
use crate::engine::{RestoreInput, RestoreReport, SourceError};
use crate::repo::reader::{StoredFile, data_files};

type Key = (String, String);

/// What a selection takes of a copy's schema.
pub(super) struct Selected {
    /// The chosen tables under their new names, their triggers, their databases.
    pub schema: Schema,
    /// The chosen tables by the copy's names.
    pub keys: BTreeSet<Key>,
    /// Chosen tables restored under another name.
    pub renamed: BTreeMap<Key, String>,
    /// Foreign keys and objects left out, one line each.
    pub left_out: Vec<String>,
    /// Tables a kept foreign key references that are not restored: the target must have them.
    pub needs: Vec<(Key, String)>,
}

/// The part of `schema` that `input.selection` chooses.
///
/// # Errors
/// A selection that chooses nothing, or renames a table it does not choose.
pub(super) fn select(input: &RestoreInput, schema: &Schema) -> Result<Selected, SourceError> {
    let selection = &input.selection;
    let copy = &input.manifests[0].copy.id;
    if selection.into_schema.is_some() {
        return Err(SourceError::Unsupported(
            "--into-schema is for PostgreSQL copies; a MySQL/MariaDB table goes into another database with \
             --rename-db FROM=TO, or beside the live one with --rename-table OLD=NEW"
                .into(),
        ));
    }
    let chosen: Vec<&TableDef> = schema
        .tables
        .iter()
        .filter(|t| selection.selected(&t.database, &t.name))
        .collect();
    if chosen.is_empty() {
        let names: Vec<String> = schema
            .tables
            .iter()
            .take(20)
            .map(|t| format!("{}.{}", t.database, t.name))
            .collect();
        return Err(SourceError::Unsupported(format!(
            "the selection (--table / --exclude-table) chooses no table of copy {copy}; it has {}{}",
            names.join(", "),
            if schema.tables.len() > 20 { ", …" } else { "" }
        )));
    }
    for (old, _) in &selection.renames {
        let renames_one = chosen.iter().any(|t| match old.split_once('.') {
            Some((d, n)) => d == t.database && n == t.name,
            None => old == &t.name,
        });
        if !renames_one {
            return Err(SourceError::Unsupported(format!(
                "--rename-table {old}=…: {old} is not among the tables restored"
            )));
        }
    }
    let keys: BTreeSet<Key> = chosen.iter().map(|t| (t.database.clone(), t.name.clone())).collect();
    let mut new_names = BTreeSet::new();
    for table in &chosen {
        let name = selection.name_of(&table.database, &table.name);
        if !new_names.insert((table.database.clone(), name.clone())) {
            return Err(SourceError::Unsupported(format!(
                "--rename-table: two restored tables would both be {}.{name}",
                table.database
            )));
        }
    }
    let renamed: BTreeMap<Key, String> = chosen
        .iter()
        .map(|t| {
            (
                (t.database.clone(), t.name.clone()),
                selection.name_of(&t.database, &t.name),
            )
        })
        .filter(|((_, old), new)| old != new)
        .collect();
    let new_name = |database: &str, table: &str| {
        renamed
            .get(&(database.to_string(), table.to_string()))
            .cloned()
            .unwrap_or_else(|| table.to_string())
    };
    let mut left_out = Vec::new();
    let mut needs = Vec::new();
    let mut tables = Vec::new();
    for table in &chosen {
        let name = new_name(&table.database, &table.name);
        let mut foreign_keys = Vec::new();
        for key in &table.foreign_keys {
            match referenced(key, &table.database) {
                Some(to) if keys.contains(&to) => {
                    let to_name = new_name(&to.0, &to.1);
                    foreign_keys.push(rename_key(key, &table.name, &name, Some((&to.1, &to_name))));
                }
                Some(to) if selection.keep_foreign_keys => {
                    needs.push((to, format!("{}.{name}", table.database)));
                    foreign_keys.push(rename_key(key, &table.name, &name, None));
                }
                None if selection.keep_foreign_keys => foreign_keys.push(rename_key(key, &table.name, &name, None)),
                _ => left_out.push(format!(
                    "foreign key of {}.{name} (it references a table that is not restored; --keep-foreign-keys \
                     keeps it when the target has that table): {}",
                    table.database,
                    key.trim_start_matches("ADD ")
                )),
            }
        }
        tables.push(TableDef {
            database: table.database.clone(),
            name: name.clone(),
            create: rename_create(&table.create, &table.name, &name),
            indexes: table.indexes.clone(),
            foreign_keys,
        });
    }
    // Triggers of tables restored under their own name come along; a trigger's name is the
    // database's, so one of a renamed table would meet the live table's.
    let mut objects: Vec<Object> = Vec::new();
    for object in &schema.objects {
        let table = (object.kind == "trigger")
            .then(|| trigger_table(&object.create, &object.database))
            .flatten();
        match table {
            Some(key) if keys.contains(&key) && !renamed.contains_key(&key) => objects.push(object.clone()),
            _ => left_out.push(format!("{} {}.{}", object.kind, object.database, object.name)),
        }
    }
    let databases: BTreeSet<&String> = tables.iter().map(|t| &t.database).collect();
    Ok(Selected {
        schema: Schema {
            databases: schema
                .databases
                .iter()
                .filter(|d| databases.contains(&d.name))
                .cloned()
                .collect(),
            tables,
            objects,
            sql_mode: schema.sql_mode.clone(),
            time_zone: schema.time_zone.clone(),
        },
        keys,
        renamed,
        left_out,
        needs,
    })
}

impl Selected {
    /// The tables chosen, and as the target (databases mapped by `map`) has them.
    pub(super) fn restored(&self, map: &BTreeMap<String, String>) -> super::replay::Restored {
        let made = self
            .schema
            .tables
            .iter()
            .map(|t| {
                (
                    map.get(&t.database).cloned().unwrap_or_else(|| t.database.clone()),
                    t.name.clone(),
                )
            })
            .collect();
        super::replay::Restored {
            chosen: self.keys.clone(),
            made,
        }
    }
}

impl MysqlTarget {
    /// The tables a selective restore makes, as the target has them: (database, table).
    ///
    /// # Errors
    /// As [`select`].
    pub(super) fn restored_tables(
        &self,
        input: &RestoreInput,
        schema: &Schema,
        map: &BTreeMap<String, String>,
    ) -> Result<super::replay::Restored, SourceError> {
        Ok(select(input, schema)?.restored(map))
    }

    /// What a selective restore would create, checked against the target (`--dry-run`, and
    /// before a restore).
    ///
    /// # Errors
    /// As [`select`], or a chosen table the target has.
    pub(super) async fn preflight_selected(
        &self,
        input: &RestoreInput,
        schema: &Schema,
        map: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, SourceError> {
        let selected = select(input, schema)?;
        let mut admin = self.admin(false).await?;
        self.check_absent(&mut admin, &selected.schema, map).await?;
        self.check_referenced(&mut admin, &selected.needs, map).await?;
        let mut notes: Vec<String> = selected
            .schema
            .tables
            .iter()
            .map(|t| format!("table {}.{}: absent, restored", map[&t.database], t.name))
            .collect();
        notes.extend(selected.left_out.iter().map(|line| format!("left out: {line}")));
        Ok(notes)
    }

    /// Restores the tables `input.selection` chooses of the full copy whose schema is `schema`.
    ///
    /// # Errors
    /// As [`select`], a chosen table the target has already ([`SourceError::TargetNotEmpty`],
    /// before anything is created), or the server's error.
    pub(super) async fn restore_selected(
        &self,
        input: &RestoreInput,
        schema: &Schema,
        map: &BTreeMap<String, String>,
        files: &[StoredFile],
    ) -> Result<RestoreReport, SourceError> {
        let copy = &input.manifests[0].copy.id;
        let Selected {
            schema: selected,
            keys,
            renamed,
            left_out,
            needs,
        } = select(input, schema)?;
        for line in &left_out {
            tracing::warn!("not restored: {line}");
        }
        let mut admin = self.admin(input.mysql.no_binlog).await?;
        self.check_absent(&mut admin, &selected, map).await?;
        self.check_referenced(&mut admin, &needs, map).await?;
        for database in &selected.databases {
            let name = &map[&database.name];
            admin
                .query_drop(format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {} COLLATE {}",
                    quote_ident(name),
                    database.charset,
                    database.collation
                ))
                .await
                .map_err(|e| self.my.error(&format!("creating database {name}"), e))?;
        }
        let data: Vec<StoredFile> = data_files(files)
            .into_iter()
            .filter(|f| {
                f.data()
                    .is_some_and(|d| keys.contains(&(d.container().to_string(), d.table.clone())))
            })
            .collect();
        let (tables, rows, file_count) = self
            .write(input, &selected, map, data, &mut admin, &renamed)
            .await
            .map_err(|cause| SourceError::Incomplete {
                target: self.label(map),
                cause: Box::new(cause),
            })?;
        for table in &selected.tables {
            tracing::info!(
                "restored {}.{} from copy {copy}",
                map.get(&table.database).unwrap_or(&table.database),
                table.name
            );
        }
        Ok(RestoreReport {
            target: self.my.name.clone(),
            tables,
            rows,
            files: file_count,
            ..Default::default()
        })
    }

    /// Refuses, before anything is created, when a kept foreign key references a table the
    /// target lacks.
    async fn check_referenced(
        &self,
        admin: &mut Conn,
        needs: &[(Key, String)],
        map: &BTreeMap<String, String>,
    ) -> Result<(), SourceError> {
        for ((database, table), of) in needs {
            let database = map.get(database).unwrap_or(database);
            let found: Option<u64> = admin
                .query_first(format!(
                    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    quote_literal(database),
                    quote_literal(table)
                ))
                .await
                .map_err(|e| self.my.error("inspecting the target", e))?;
            if found.is_none() {
                return Err(SourceError::Unsupported(format!(
                    "--keep-foreign-keys: a foreign key of {of} references {database}.{table}, which the target \
                     does not have; restore that table too, or leave the key out (without --keep-foreign-keys) — \
                     nothing was restored"
                )));
            }
        }
        Ok(())
    }

    /// Refuses, before anything is created, when the target has any of the tables.
    async fn check_absent(
        &self,
        admin: &mut Conn,
        selected: &Schema,
        map: &BTreeMap<String, String>,
    ) -> Result<(), SourceError> {
        let mut present = Vec::new();
        for table in &selected.tables {
            let database = &map[&table.database];
            let found: Option<u64> = admin
                .query_first(format!(
                    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    quote_literal(database),
                    quote_literal(&table.name)
                ))
                .await
                .map_err(|e| self.my.error("inspecting the target", e))?;
            if found.is_some() {
                present.push(format!("{database}.{}", table.name));
            }
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(SourceError::TargetNotEmpty {
            database: self.my.name.clone(),
            detail: format!(
                "it has {} already; restore beside it under another name (--rename-table OLD=NEW), or drop it \
                 first — nothing was restored",
                present.join(", ")
            ),
        })
    }
}

/// `CREATE TABLE `old` (…` as `CREATE TABLE `new` (…`.
fn rename_create(create: &str, old: &str, new: &str) -> String {
    if old == new {
        return create.to_string();
    }
    let renamed = create.replacen(
        &format!("TABLE {}", quote_ident(old)),
        &format!("TABLE {}", quote_ident(new)),
        1,
    );
    // The constraints left in the definition are checks, whose names MySQL 8 keeps per
    // database: named after the new table, as its foreign keys are.
    let mut out = String::with_capacity(renamed.len());
    let mut rest = renamed.as_str();
    while let Some(at) = rest.find("CONSTRAINT `") {
        out.push_str(&rest[..at + 11]);
        match identifier(&rest[at + 11..]) {
            Some((name, after)) => {
                let name: String = format!("{new}_{name}").chars().take(64).collect();
                out.push_str(&quote_ident(&name));
                rest = after;
            }
            None => {
                rest = &rest[at + 11..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A qualified or plain table name at the start of `text`, with `database` for a plain one.
fn table_name(text: &str, database: &str) -> Option<Key> {
    let (first, rest) = identifier(text)?;
    match rest.strip_prefix('.') {
        Some(rest) => identifier(rest).map(|(table, _)| (first, table)),
        None => Some((database.to_string(), first)),
    }
}

/// The table a foreign key clause references.
fn referenced(key: &str, database: &str) -> Option<Key> {
    let at = key.to_ascii_uppercase().find("REFERENCES ")?;
    table_name(&key[at + 11..], database)
}

/// The table a trigger's `CREATE TRIGGER` is on.
fn trigger_table(create: &str, database: &str) -> Option<Key> {
    let upper = create.to_ascii_uppercase();
    let trigger = upper.find(" TRIGGER ")?;
    let on = upper[trigger..].find(" ON ")? + trigger;
    table_name(&create[on + 4..], database)
}

/// A foreign key clause of table `old`, restored as `new`, whose referenced table is restored
/// as `to` (its old name, its new one) when it is restored too: a constraint's name is the
/// database's, so a renamed table's key is named after the new table (`new_key`); a reference
/// to a renamed table follows it.
fn rename_key(key: &str, old: &str, new: &str, to: Option<(&str, &str)>) -> String {
    let mut key = key.to_string();
    if let Some((to_old, to_new)) = to
        && to_old != to_new
    {
        // `REFERENCES `t`` or `REFERENCES `db`.`t``: the table's part follows it either way.
        for from in [
            format!("REFERENCES {}", quote_ident(to_old)),
            format!(".{} ", quote_ident(to_old)),
        ] {
            let to = from.replace(&quote_ident(to_old), &quote_ident(to_new));
            key = key.replacen(&from, &to, 1);
        }
    }
    if old == new {
        return key;
    }
    let upper = key.to_ascii_uppercase();
    let Some(at) = upper.find("CONSTRAINT ") else {
        return key;
    };
    let Some((name, rest)) = identifier(&key[at + 11..]) else {
        return key;
    };
    let renamed: String = format!("{new}_{name}").chars().take(64).collect();
    format!("{}CONSTRAINT {}{rest}", &key[..at], quote_ident(&renamed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_definitions_follow_the_renamed_tables() {
        assert_eq!(
            rename_create("CREATE TABLE `orders` (\n  `id` int", "orders", "orders_restored"),
            "CREATE TABLE `orders_restored` (\n  `id` int"
        );
        let key = "ADD CONSTRAINT `fk_customer` FOREIGN KEY (`customer_id`) REFERENCES `customers` (`id`)";
        assert_eq!(referenced(key, "shop"), Some(("shop".into(), "customers".into())));
        assert_eq!(
            referenced(
                "ADD CONSTRAINT `f` FOREIGN KEY (`a`) REFERENCES `crm`.`people` (`id`)",
                "shop"
            ),
            Some(("crm".into(), "people".into()))
        );
        assert_eq!(
            rename_key(key, "orders", "orders_0914", Some(("customers", "customers_0914"))),
            "ADD CONSTRAINT `orders_0914_fk_customer` FOREIGN KEY (`customer_id`) REFERENCES `customers_0914` (`id`)"
        );
        assert_eq!(rename_key(key, "orders", "orders", None), key);
        let qualified = "ADD CONSTRAINT `f` FOREIGN KEY (`a`) REFERENCES `crm`.`people` (`id`)";
        assert!(
            rename_key(qualified, "t", "t", Some(("people", "people_0914"))).contains("`crm`.`people_0914` (`id`)"),
            "a qualified reference follows the renamed table"
        );
        assert_eq!(
            rename_create(
                "CREATE TABLE `orders` (\n  `n` int,\n  CONSTRAINT `positive` CHECK (`n` > 0)\n)",
                "orders",
                "orders_0914"
            ),
            "CREATE TABLE `orders_0914` (\n  `n` int,\n  CONSTRAINT `orders_0914_positive` CHECK (`n` > 0)\n)"
        );
        assert_eq!(
            trigger_table(
                "CREATE DEFINER=`root`@`%` TRIGGER `audit_orders` AFTER INSERT ON `orders` FOR EACH ROW INSERT INTO log VALUES (1)",
                "shop"
            ),
            Some(("shop".into(), "orders".into()))
        );
    }
}
