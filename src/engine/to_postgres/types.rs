//! The documented mapping of MySQL/MariaDB column types to PostgreSQL types (docs/mysql-to-postgres.md),
//! chosen so that every MySQL value has a PostgreSQL value that means the same — never a silent
//! change of data — and what kind of value conversion each needs.

use super::mysql_ddl::MyColumn;

/// How a MySQL value of a column becomes a PostgreSQL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Integers of every width, signed or not (the PostgreSQL type is wide enough).
    Integer,
    /// `DECIMAL` → `numeric`.
    Decimal,
    /// `FLOAT` → `real`, `DOUBLE` → `double precision`.
    Float,
    /// `BIT(n)` → `bit(n)`.
    Bit { bits: u32 },
    /// `DATE` → `date`; a zero date has no PostgreSQL value.
    Date,
    /// `DATETIME` → `timestamp`: the wall-clock value as stored.
    DateTime,
    /// `TIMESTAMP` → `timestamptz`: a point in time (MySQL stores it in UTC).
    Timestamp,
    /// `TIME` → `interval` (MySQL's range, −838:59:59 to 838:59:59, is not a time of day).
    Time,
    /// `YEAR` → `smallint`.
    Year,
    /// Character types → `varchar`/`text`, in UTF-8 whatever the MySQL character set.
    Text,
    /// Binary types → `bytea`.
    Bytes,
    /// `ENUM` → `text` with a check of the allowed values.
    Enum,
    /// `SET` → `text`, the members comma-separated as MySQL shows them.
    Set,
    /// `JSON` (MySQL 8), or MariaDB's `LONGTEXT … CHECK (json_valid(…))` → `jsonb`.
    Json,
    /// Spatial types → `bytea` holding MySQL's internal value (a 4-byte SRID, then WKB).
    Spatial,
    /// MariaDB `UUID` → `uuid`.
    Uuid,
    /// MariaDB `INET4`/`INET6` → `inet`.
    Inet,
}

/// A column's PostgreSQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// As written in `CREATE TABLE`.
    pub pg_type: String,
    pub kind: Kind,
    /// What the reader of the report should know (a narrowing, a left-out detail).
    pub note: Option<String>,
}

fn mapped(pg_type: impl Into<String>, kind: Kind) -> Mapped {
    Mapped {
        pg_type: pg_type.into(),
        kind,
        note: None,
    }
}

/// The PostgreSQL type of `column` of MySQL table `table`.
///
/// # Errors
/// A type the mapping has no counterpart for, naming the table, column and type and what to do.
pub fn map_type(table: &str, column: &MyColumn) -> Result<Mapped, String> {
    let params = column.params.as_deref().unwrap_or_default();
    let numbers: Vec<u32> = params.split(',').filter_map(|p| p.trim().parse().ok()).collect();
    let first = numbers.first().copied();
    let precision = |default: u32| first.unwrap_or(default).min(6);
    let unsigned = column.unsigned;
    let m = match column.type_name.as_str() {
        // Unsigned values need the next wider type; BIGINT UNSIGNED needs numeric.
        "tinyint" | "bool" | "boolean" => mapped("smallint", Kind::Integer),
        "smallint" if unsigned => mapped("integer", Kind::Integer),
        "smallint" => mapped("smallint", Kind::Integer),
        "mediumint" => mapped("integer", Kind::Integer),
        "int" | "integer" if unsigned => mapped("bigint", Kind::Integer),
        "int" | "integer" => mapped("integer", Kind::Integer),
        "bigint" if unsigned && column.auto_increment => Mapped {
            note: Some(format!(
                "{table}.{}: BIGINT UNSIGNED AUTO_INCREMENT became bigint (an identity): a value above \
                 9223372036854775807 stops the load or the replica",
                column.name
            )),
            ..mapped("bigint", Kind::Integer)
        },
        "bigint" if unsigned => mapped("numeric(20,0)", Kind::Integer),
        "bigint" => mapped("bigint", Kind::Integer),
        "decimal" | "numeric" | "dec" | "fixed" => {
            let (p, s) = (first.unwrap_or(10), numbers.get(1).copied().unwrap_or(0));
            mapped(format!("numeric({p},{s})"), Kind::Decimal)
        }
        "float" if first.is_some_and(|p| p > 24) && numbers.len() == 1 => mapped("double precision", Kind::Float),
        "float" => mapped("real", Kind::Float),
        "double" | "real" => mapped("double precision", Kind::Float),
        "bit" => {
            let bits = first.unwrap_or(1);
            mapped(format!("bit({bits})"), Kind::Bit { bits })
        }
        "date" => mapped("date", Kind::Date),
        "datetime" => mapped(format!("timestamp({})", precision(0)), Kind::DateTime),
        "timestamp" => mapped(format!("timestamptz({})", precision(0)), Kind::Timestamp),
        "time" => mapped(format!("interval({})", precision(0)), Kind::Time),
        "year" => mapped("smallint", Kind::Year),
        // A CHAR value comes back from MySQL without its padding: varchar keeps it as read.
        "char" | "varchar" => match first {
            Some(length) if length > 0 => mapped(format!("varchar({length})"), Kind::Text),
            _ => mapped("text", Kind::Text),
        },
        "tinytext" | "text" | "mediumtext" | "longtext" if column.json_checked => mapped("jsonb", Kind::Json),
        "tinytext" | "text" | "mediumtext" | "longtext" => mapped("text", Kind::Text),
        "json" => mapped("jsonb", Kind::Json),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => mapped("bytea", Kind::Bytes),
        "enum" => mapped("text", Kind::Enum),
        "set" => mapped("text", Kind::Set),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" => Mapped {
            note: Some(format!(
                "{table}.{}: {} became bytea holding MySQL's value (4 bytes of SRID, then WKB); with PostGIS, \
                 ST_GeomFromWKB(substring(value from 5)) reads it",
                column.name, column.type_name
            )),
            ..mapped("bytea", Kind::Spatial)
        },
        "uuid" => mapped("uuid", Kind::Uuid),
        "inet4" | "inet6" => mapped("inet", Kind::Inet),
        other => {
            return Err(format!(
                "table {table}, column {}: MySQL type {other} has no PostgreSQL counterpart in cairn's mapping \
                 (docs/mysql-to-postgres.md); leave the table out of the copy (exclude-tables) or change the \
                 column's type",
                column.name
            ));
        }
    };
    Ok(m)
}

/// The values of an `ENUM`/`SET` type's parameters (`'a','b c',''`), unquoted.
///
/// # Errors
/// A parameter that is not a quoted string.
pub fn enum_values(params: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (value, after) = mysql_string(rest).ok_or_else(|| format!("an enum value that is not a string: {rest}"))?;
        values.push(value);
        rest = after.trim_start().strip_prefix(',').unwrap_or(after).trim_start();
    }
    Ok(values)
}

/// A MySQL string literal at the start of `text` (`'it''s'`, `'a\\nb'`), unescaped, and what
/// follows it.
pub fn mysql_string(text: &str) -> Option<(String, &str)> {
    let mut chars = text.char_indices();
    if chars.next()?.1 != '\'' {
        return None;
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if text[i + 1..].starts_with('\'') => {
                out.push('\'');
                chars.next();
            }
            '\'' => return Some((out, &text[i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                out.push(match escaped {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '0' => '\0',
                    'Z' => '\x1a',
                    'b' => '\x08',
                    other => other,
                });
            }
            other => out.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(type_name: &str, params: Option<&str>, unsigned: bool) -> MyColumn {
        MyColumn {
            name: "c".into(),
            type_name: type_name.into(),
            params: params.map(str::to_string),
            unsigned,
            nullable: true,
            ..MyColumn::default()
        }
    }

    fn pg(type_name: &str, params: Option<&str>, unsigned: bool) -> String {
        map_type("t", &col(type_name, params, unsigned)).unwrap().pg_type
    }

    #[test]
    fn every_mysql_value_fits_the_postgres_type() {
        assert_eq!(pg("tinyint", Some("3"), true), "smallint");
        assert_eq!(pg("tinyint", Some("1"), false), "smallint");
        assert_eq!(pg("smallint", None, true), "integer");
        assert_eq!(pg("mediumint", None, true), "integer");
        assert_eq!(pg("int", Some("10"), true), "bigint");
        assert_eq!(pg("int", None, false), "integer");
        assert_eq!(pg("bigint", Some("20"), true), "numeric(20,0)");
        assert_eq!(pg("decimal", Some("65,30"), false), "numeric(65,30)");
        assert_eq!(pg("decimal", None, false), "numeric(10,0)");
        assert_eq!(pg("float", None, false), "real");
        assert_eq!(pg("float", Some("53"), false), "double precision");
        assert_eq!(pg("double", None, false), "double precision");
        assert_eq!(pg("bit", Some("64"), false), "bit(64)");
        assert_eq!(pg("datetime", Some("6"), false), "timestamp(6)");
        assert_eq!(pg("datetime", None, false), "timestamp(0)");
        assert_eq!(pg("timestamp", Some("6"), false), "timestamptz(6)");
        assert_eq!(pg("time", Some("6"), false), "interval(6)");
        assert_eq!(pg("year", Some("4"), false), "smallint");
        assert_eq!(pg("char", Some("10"), false), "varchar(10)");
        assert_eq!(pg("longtext", None, false), "text");
        assert_eq!(pg("varbinary", Some("300"), false), "bytea");
        assert_eq!(pg("enum", Some("'a','b'"), false), "text");
        assert_eq!(pg("json", None, false), "jsonb");
        assert_eq!(pg("uuid", None, false), "uuid");
        assert_eq!(pg("inet6", None, false), "inet");
        let mut json = col("longtext", None, false);
        json.json_checked = true;
        assert_eq!(map_type("t", &json).unwrap().pg_type, "jsonb");
        assert!(map_type("t", &col("point", None, false)).unwrap().note.is_some());
    }

    #[test]
    fn a_type_without_a_counterpart_is_refused_by_name() {
        let err = map_type("shop.items", &col("vector", Some("3"), false)).unwrap_err();
        assert!(
            err.contains("shop.items") && err.contains("column c") && err.contains("vector"),
            "{err}"
        );
    }

    #[test]
    fn enum_values_are_unquoted_as_mysql_wrote_them() {
        assert_eq!(
            enum_values("'a','b c','','it''s','back\\\\slash'").unwrap(),
            ["a", "b c", "", "it's", "back\\slash"]
        );
        assert!(enum_values("a,b").is_err());
    }
}
