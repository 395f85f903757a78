//! The reading of `SHOW CREATE TABLE` texts as MariaDB and MySQL 8 write them.

use super::*;

const EVERY_TYPE: &str = "CREATE TABLE `every_type` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `t_tinyint_u` tinyint(3) unsigned DEFAULT NULL,
  `t_decimal` decimal(65,30) DEFAULT NULL,
  `t_timestamp` timestamp(6) NULL DEFAULT NULL,
  `t_enum` enum('a','b','c d','') DEFAULT NULL,
  `t_set` set('x','y,z') DEFAULT 'x',
  `t_json` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK (json_valid(`t_json`)),
  `t_virtual` bigint(20) GENERATED ALWAYS AS (`t_int` + 1) VIRTUAL,
  `t_stored` varchar(300) GENERATED ALWAYS AS (concat('x',`t_varchar`)) STORED,
  `odd ``name`` here` varchar(10) NOT NULL DEFAULT 'it''s, (odd)' COMMENT 'a, comment',
  `updated` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `b` bit(8) NOT NULL DEFAULT b'101',
  PRIMARY KEY (`id`),
  UNIQUE KEY `pair` (`t_decimal`,`t_enum`),
  KEY `prefix` (`t_json`(10)),
  FULLTEXT KEY `note_text` (`t_stored`),
  CONSTRAINT `orders_customer` FOREIGN KEY (`id`) REFERENCES `other`.`customers` (`id`) ON DELETE CASCADE,
  CONSTRAINT `amount_positive` CHECK (`t_decimal` >= 0)
) ENGINE=InnoDB AUTO_INCREMENT=6 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci";

#[test]
fn columns_keep_their_type_nullability_default_and_generation() {
    let table = parse_table(EVERY_TYPE, &[]).unwrap();
    assert_eq!(table.name, "every_type");
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "t_tinyint_u",
            "t_decimal",
            "t_timestamp",
            "t_enum",
            "t_set",
            "t_json",
            "t_virtual",
            "t_stored",
            "odd `name` here",
            "updated",
            "b"
        ]
    );
    let c = |name: &str| table.columns.iter().find(|c| c.name == name).unwrap();
    assert!(c("id").auto_increment && !c("id").nullable);
    assert_eq!(
        (c("t_tinyint_u").type_name.as_str(), c("t_tinyint_u").unsigned),
        ("tinyint", true)
    );
    assert_eq!(c("t_decimal").params.as_deref(), Some("65,30"));
    assert_eq!(c("t_enum").params.as_deref(), Some("'a','b','c d',''"));
    assert_eq!(c("t_set").default.as_deref(), Some("'x'"));
    assert!(c("t_json").json_checked && c("t_json").other.is_empty());
    assert_eq!(c("t_virtual").generated.as_deref(), Some("`t_int` + 1"));
    assert_eq!(c("t_stored").generated.as_deref(), Some("concat('x',`t_varchar`)"));
    assert_eq!(c("odd `name` here").default.as_deref(), Some("'it''s, (odd)'"));
    assert!(!c("odd `name` here").nullable);
    assert_eq!(c("updated").default.as_deref(), Some("current_timestamp()"));
    assert_eq!(c("updated").other, ["ON UPDATE current_timestamp()"]);
    assert_eq!(c("b").default.as_deref(), Some("b'101'"));
    assert!(c("t_timestamp").nullable);
    assert_eq!(table.charset.as_deref(), Some("utf8mb4"));
    assert_eq!(table.charset_of(c("t_json")), Some("utf8mb4"));
}

#[test]
fn character_sets_come_from_the_column_its_collation_or_the_table() {
    let create = "CREATE TABLE `t` (\n  `a` varchar(10) CHARACTER SET latin1 COLLATE latin1_swedish_ci,\n  \
                  `b` text COLLATE ascii_bin,\n  `c` text\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3 COLLATE=utf8mb3_general_ci";
    let table = parse_table(create, &[]).unwrap();
    let charsets: Vec<Option<&str>> = table.columns.iter().map(|c| table.charset_of(c)).collect();
    assert_eq!(charsets, [Some("latin1"), Some("ascii"), Some("utf8mb3")]);
}

#[test]
fn keys_foreign_keys_and_checks_are_read() {
    let table = parse_table(EVERY_TYPE, &[]).unwrap();
    let kinds: Vec<(&str, IndexKind, bool)> = table
        .indexes
        .iter()
        .map(|i| (i.name.as_str(), i.kind, i.prefixed))
        .collect();
    assert_eq!(
        kinds,
        [
            ("PRIMARY", IndexKind::Primary, false),
            ("pair", IndexKind::Unique, false),
            ("prefix", IndexKind::Plain, true),
            ("note_text", IndexKind::Fulltext, false)
        ]
    );
    assert_eq!(table.indexes[1].columns, ["t_decimal", "t_enum"]);
    let fk = &table.foreign_keys[0];
    assert_eq!(
        (
            fk.name.as_str(),
            fk.references_database.as_deref(),
            fk.references_table.as_str()
        ),
        ("orders_customer", Some("other"), "customers")
    );
    assert_eq!(fk.actions, "ON DELETE CASCADE");
    assert_eq!(table.checks, ["CHECK (`t_decimal` >= 0)"]);
}

#[test]
fn clauses_a_copy_split_off_are_read_too() {
    let create = "CREATE TABLE `orders` (\n  `id` bigint unsigned NOT NULL AUTO_INCREMENT,\n  `customer_id` int NOT NULL,\n  \
                  PRIMARY KEY (`id`)\n) ENGINE=InnoDB";
    let added = [
        "ADD KEY `customer` (`customer_id`)".to_string(),
        "ADD CONSTRAINT `c` FOREIGN KEY (`customer_id`) REFERENCES `customers` (`id`)".to_string(),
    ];
    let table = parse_table(create, &added).unwrap();
    assert_eq!(table.indexes.len(), 2);
    assert_eq!(table.indexes[1].columns, ["customer_id"]);
    assert_eq!(table.foreign_keys[0].references_table, "customers");
    assert_eq!(table.foreign_keys[0].references_database, None);
    // MySQL 8 writes integer types without a display width.
    assert_eq!(table.columns[0].type_name, "bigint");
    assert!(table.columns[0].unsigned && table.columns[0].params.is_none());
}

#[test]
fn mysql_8_invisible_columns_and_srid_are_kept_for_the_report() {
    let create = "CREATE TABLE `t` (\n  `id` int NOT NULL,\n  `hidden` int DEFAULT NULL /*!80023 INVISIBLE */,\n  \
                  `g` point NOT NULL /*!80003 SRID 4326 */,\n  PRIMARY KEY (`id`)\n)";
    let table = parse_table(create, &[]).unwrap();
    assert_eq!(table.columns[1].other, ["/*!80023 INVISIBLE */"]);
    assert_eq!(table.columns[2].other, ["/*!80003 SRID 4326 */"]);
}

#[test]
fn what_is_not_a_create_table_is_refused_with_what_was_expected() {
    assert!(
        parse_table("CREATE VIEW `v` AS SELECT 1", &[])
            .unwrap_err()
            .contains("not a CREATE TABLE")
    );
    let err = parse_table("CREATE TABLE `t` (\n  `a` int,\n  WHATEVER (`a`)\n)", &[]).unwrap_err();
    assert!(err.contains("table t") && err.contains("WHATEVER"), "{err}");
}
