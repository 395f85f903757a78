//! Schema of a MySQL copy: databases, tables (with secondary indexes and foreign keys split out,
//! so a restore builds them after the data), views, routines, triggers and events, each with the
//! session settings it was created under.

use serde::{Deserialize, Serialize};

/// A database and its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    pub name: String,
    pub charset: String,
    pub collation: String,
}

/// A table: its definition without deferred keys, and those keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub database: String,
    pub name: String,
    /// `CREATE TABLE` without secondary indexes and foreign keys.
    pub create: String,
    /// `ADD …` clauses for secondary indexes, applied in one `ALTER TABLE` after the data.
    pub indexes: Vec<String>,
    /// `ADD CONSTRAINT … FOREIGN KEY …` clauses, applied after every index exists.
    pub foreign_keys: Vec<String>,
}

/// A view, routine, trigger or event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub database: String,
    /// `view`, `procedure`, `function`, `trigger` or `event`.
    pub kind: String,
    pub name: String,
    pub create: String,
    pub sql_mode: String,
    pub character_set_client: String,
    pub collation_connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl Object {
    /// The session settings it was created under, as one `SET` statement.
    pub fn session_sql(&self) -> String {
        use super::quote_literal;
        format!(
            "SET SESSION sql_mode = {}, SESSION character_set_client = {}, SESSION collation_connection = {}{}",
            quote_literal(&self.sql_mode),
            quote_literal(&self.character_set_client),
            quote_literal(&self.collation_connection),
            self.time_zone
                .as_ref()
                .map(|tz| format!(", SESSION time_zone = {}", quote_literal(tz)))
                .unwrap_or_default()
        )
    }
}

/// Everything but the rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    pub databases: Vec<Database>,
    pub tables: Vec<TableDef>,
    /// In restore order: views, procedures, functions, triggers, events.
    pub objects: Vec<Object>,
    /// The server's global `sql_mode` and `time_zone` when the copy was taken.
    pub sql_mode: String,
    pub time_zone: String,
}

fn is_deferred_index(line: &str) -> bool {
    [
        "KEY `",
        "UNIQUE KEY `",
        "FULLTEXT KEY `",
        "SPATIAL KEY `",
        "INDEX `",
        "UNIQUE INDEX `",
        "VECTOR KEY `",
    ]
    .iter()
    .any(|prefix| line.starts_with(prefix))
}

fn is_foreign_key(line: &str) -> bool {
    line.starts_with("CONSTRAINT `") && line.contains(" FOREIGN KEY ")
}

/// The first column of a key line: `KEY `name` (`col`,…)`.
fn first_key_column(line: &str) -> Option<&str> {
    let open = line.find("(`")?;
    let rest = &line[open + 2..];
    let close = rest.find('`')?;
    Some(&rest[..close])
}

/// Splits `SHOW CREATE TABLE` output into the definition to create before loading and the
/// index and foreign-key clauses to add after. A key whose first column is the AUTO_INCREMENT
/// column stays: the server requires one.
pub fn split_create_table(create: &str) -> (String, Vec<String>, Vec<String>) {
    let lines: Vec<&str> = create.lines().collect();
    let Some(close) = lines.iter().rposition(|l| l.starts_with(')')) else {
        return (create.to_string(), Vec::new(), Vec::new());
    };
    if lines.len() < 3 {
        return (create.to_string(), Vec::new(), Vec::new());
    }
    let auto_increment: Option<String> = lines[1..close]
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with('`') && l.contains(" AUTO_INCREMENT"))
        .and_then(|l| l[1..].split('`').next())
        .map(str::to_string);
    let mut kept = Vec::new();
    let mut indexes = Vec::new();
    let mut foreign_keys = Vec::new();
    for line in &lines[1..close] {
        let entry = line.trim().trim_end_matches(',');
        if is_deferred_index(entry) && first_key_column(entry) != auto_increment.as_deref() {
            indexes.push(format!("ADD {entry}"));
        } else if is_foreign_key(entry) {
            foreign_keys.push(format!("ADD {entry}"));
        } else {
            kept.push(format!("  {entry}"));
        }
    }
    let mut out = String::from(lines[0]);
    out.push('\n');
    out.push_str(&kept.join(",\n"));
    out.push('\n');
    out.push_str(&lines[close..].join("\n"));
    (out, indexes, foreign_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondary_keys_and_foreign_keys_are_split_out() {
        let create = "CREATE TABLE `orders` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `seq` int(11) NOT NULL,\n  \
                      `customer` int(11) DEFAULT NULL,\n  `note` text,\n  PRIMARY KEY (`seq`),\n  KEY `id_key` (`id`),\n  \
                      UNIQUE KEY `u` (`customer`,`seq`),\n  FULLTEXT KEY `ft` (`note`),\n  \
                      CONSTRAINT `fk` FOREIGN KEY (`customer`) REFERENCES `customers` (`id`) ON DELETE CASCADE,\n  \
                      CONSTRAINT `positive` CHECK (`seq` > 0)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
        let (table, indexes, foreign_keys) = split_create_table(create);
        assert_eq!(
            table,
            "CREATE TABLE `orders` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `seq` int(11) NOT NULL,\n  \
             `customer` int(11) DEFAULT NULL,\n  `note` text,\n  PRIMARY KEY (`seq`),\n  KEY `id_key` (`id`),\n  \
             CONSTRAINT `positive` CHECK (`seq` > 0)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        );
        assert_eq!(
            indexes,
            [
                "ADD UNIQUE KEY `u` (`customer`,`seq`)",
                "ADD FULLTEXT KEY `ft` (`note`)"
            ]
        );
        assert_eq!(
            foreign_keys,
            ["ADD CONSTRAINT `fk` FOREIGN KEY (`customer`) REFERENCES `customers` (`id`) ON DELETE CASCADE"]
        );
    }

    #[test]
    fn a_table_of_keys_only_keeps_valid_commas() {
        let create = "CREATE TABLE `t` (\n  `a` int(11) DEFAULT NULL,\n  KEY `ka` (`a`)\n) ENGINE=InnoDB";
        let (table, indexes, _) = split_create_table(create);
        assert_eq!(table, "CREATE TABLE `t` (\n  `a` int(11) DEFAULT NULL\n) ENGINE=InnoDB");
        assert_eq!(indexes, ["ADD KEY `ka` (`a`)"]);
    }
}
