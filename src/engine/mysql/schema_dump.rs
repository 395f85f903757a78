//! The schema of a full copy read from the source: databases, tables, views, routines, triggers
//! and events, each with the session it was created under.

use super::*;

pub(super) async fn read_schema(
    my: &My,
    conn: &mut Conn,
    tables: &[inventory::Table],
    filters: &crate::engine::filter::Filters,
) -> Result<schema::Schema, SourceError> {
    conn.query_drop("SET SESSION sql_mode = '', NAMES utf8mb4, SESSION sql_quote_show_create = 1")
        .await
        .map_err(|e| my.error("preparing the schema session", e))?;
    let mut out = schema::Schema::default();
    let (sql_mode, time_zone): (String, String) = conn
        .query_first("SELECT @@GLOBAL.sql_mode, @@GLOBAL.time_zone")
        .await
        .map_err(|e| my.error("reading sql_mode", e))?
        .unwrap_or_default();
    out.sql_mode = sql_mode;
    out.time_zone = time_zone;
    let databases: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA
             WHERE SCHEMA_NAME NOT IN ({}) ORDER BY SCHEMA_NAME",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing databases", e))?;
    for (name, charset, collation) in databases {
        if filters.schema_included(&name) {
            out.databases.push(schema::Database {
                name,
                charset,
                collation,
            });
        }
    }
    let mut all_tables: Vec<(String, String)> = tables.iter().map(|t| (t.database.clone(), t.name.clone())).collect();
    // Tables whose data is left out keep their definition.
    let listed: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'
             AND TABLE_SCHEMA NOT IN ({}) ORDER BY 1, 2",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing tables", e))?;
    for (db, name) in listed {
        if filters.table_included(&db, &name) && !all_tables.contains(&(db.clone(), name.clone())) {
            all_tables.push((db, name));
        }
    }
    all_tables.sort();
    for (db, name) in all_tables {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<(String, String)> = conn
            .query_first(format!("SHOW CREATE TABLE {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading the definition of {qualified}"), e))?;
        let create = row.map(|(_, create)| create).unwrap_or_default();
        let (create, indexes, foreign_keys) = schema::split_create_table(&create);
        out.tables.push(schema::TableDef {
            database: db,
            name,
            create,
            indexes,
            foreign_keys,
        });
    }
    let views: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA NOT IN ({}) ORDER BY 1, 2",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing views", e))?;
    for (db, name) in views.into_iter().filter(|(db, name)| filters.table_included(db, name)) {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE VIEW {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading the definition of view {qualified}"), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: "view".into(),
                name,
                create: row.get(1).unwrap_or_default(),
                sql_mode: String::new(),
                character_set_client: row.get(2).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(3).unwrap_or_else(|| "utf8mb4_general_ci".into()),
                time_zone: None,
            });
        }
    }
    let routines: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES
             WHERE ROUTINE_SCHEMA NOT IN ({}) ORDER BY ROUTINE_TYPE DESC, 1, 3",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing routines", e))?;
    for (db, kind, name) in routines.into_iter().filter(|(db, _, _)| filters.schema_included(db)) {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE {kind} {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading {} {qualified}", kind.to_lowercase()), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: kind.to_lowercase(),
                name,
                sql_mode: row.get(1).unwrap_or_default(),
                create: row.get::<Option<String>, _>(2).flatten().unwrap_or_default(),
                character_set_client: row.get(3).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(4).unwrap_or_else(|| "utf8mb4_general_ci".into()),
                time_zone: None,
            });
        }
    }
    let triggers: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS
             WHERE TRIGGER_SCHEMA NOT IN ({}) ORDER BY 1, EVENT_OBJECT_TABLE, ACTION_ORDER",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing triggers", e))?;
    for (db, name, table) in triggers
        .into_iter()
        .filter(|(db, _, table)| filters.table_included(db, table))
    {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE TRIGGER {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading trigger {qualified} on {table}"), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: "trigger".into(),
                name,
                sql_mode: row.get(1).unwrap_or_default(),
                create: row.get(2).unwrap_or_default(),
                character_set_client: row.get(3).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(4).unwrap_or_else(|| "utf8mb4_general_ci".into()),
                time_zone: None,
            });
        }
    }
    let events: Vec<(String, String)> = conn
        .query(format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA NOT IN ({}) ORDER BY 1, 2",
            inventory::SYSTEM_DATABASES
        ))
        .await
        .map_err(|e| my.error("listing events", e))?;
    for (db, name) in events.into_iter().filter(|(db, _)| filters.schema_included(db)) {
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE EVENT {qualified}"))
            .await
            .map_err(|e| my.error(&format!("reading event {qualified}"), e))?;
        if let Some(row) = row {
            out.objects.push(schema::Object {
                database: db,
                kind: "event".into(),
                name,
                sql_mode: row.get(1).unwrap_or_default(),
                time_zone: row.get(2),
                create: row.get(3).unwrap_or_default(),
                character_set_client: row.get(4).unwrap_or_else(|| "utf8mb4".into()),
                collation_connection: row.get(5).unwrap_or_else(|| "utf8mb4_general_ci".into()),
            });
        }
    }
    Ok(out)
}
