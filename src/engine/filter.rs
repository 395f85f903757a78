//! Which schemas and tables a copy includes: patterns from the configuration and the command
//! line, matched against names as the server stores them.
//!
//! A pattern is `schema.table`, or `table` for a table of any schema (for schema filters, just
//! the schema); `*` matches any run of characters and `?` one character. The first `.` separates
//! schema from table: match a dot inside a name with `?`.

use serde::{Deserialize, Serialize};

/// Include and exclude patterns of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Filters {
    /// Only these schemas (default: all but the system's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_schemas: Vec<String>,
    /// Not these schemas, nor anything in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_schemas: Vec<String>,
    /// Not these tables (definition and data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// These tables' definitions, but not their rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_table_data: Vec<String>,
}

/// `*` and `?` matching of a whole name.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut resume) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            resume = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            resume += 1;
            ni = resume;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

pub(crate) fn table_matches(pattern: &str, schema: &str, table: &str) -> bool {
    match pattern.split_once('.') {
        Some((s, t)) => glob(s, schema) && glob(t, table),
        None => glob(pattern, table),
    }
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.include_schemas.is_empty()
            && self.exclude_schemas.is_empty()
            && self.exclude_tables.is_empty()
            && self.exclude_table_data.is_empty()
    }

    /// Whether objects of this schema are copied.
    pub fn schema_included(&self, schema: &str) -> bool {
        (self.include_schemas.is_empty() || self.include_schemas.iter().any(|p| glob(p, schema)))
            && !self.exclude_schemas.iter().any(|p| glob(p, schema))
    }

    /// Whether this table (or view, sequence) is copied at all.
    pub fn table_included(&self, schema: &str, table: &str) -> bool {
        self.schema_included(schema) && !self.exclude_tables.iter().any(|p| table_matches(p, schema, table))
    }

    /// Whether this table's rows are copied.
    pub fn data_included(&self, schema: &str, table: &str) -> bool {
        self.table_included(schema, table) && !self.exclude_table_data.iter().any(|p| table_matches(p, schema, table))
    }

    /// These filters with `more` added (command-line patterns on top of configured ones).
    pub fn merged(&self, more: &Filters) -> Filters {
        let join = |a: &Vec<String>, b: &Vec<String>| a.iter().chain(b).cloned().collect();
        Filters {
            include_schemas: join(&self.include_schemas, &more.include_schemas),
            exclude_schemas: join(&self.exclude_schemas, &more.exclude_schemas),
            exclude_tables: join(&self.exclude_tables, &more.exclude_tables),
            exclude_table_data: join(&self.exclude_table_data, &more.exclude_table_data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("log_*", "log_2026", true),
            ("log_*", "audit_log_2026", false),
            ("a?c", "abc", true),
            ("a?c", "abbc", false),
            ("*_tmp", "x_tmp", true),
            ("Sales Dept", "Sales Dept", true),
            ("sales dept", "Sales Dept", false),
            ("", "", true),
            ("*a*b", "xaxxb", true),
        ];
        for (pattern, name, expected) in table {
            assert_eq!(glob(pattern, name), *expected, "{pattern:?} vs {name:?}");
        }
    }

    #[test]
    fn filters_combine_schemas_tables_and_data() {
        let filters = Filters {
            include_schemas: vec!["public".into(), "app_*".into()],
            exclude_schemas: vec!["app_tmp".into()],
            exclude_tables: vec!["public.big_*".into(), "scratch".into()],
            exclude_table_data: vec!["*.audit_log".into()],
        };
        assert!(filters.table_included("public", "orders"));
        assert!(filters.table_included("app_1", "orders"));
        assert!(!filters.schema_included("app_tmp"));
        assert!(!filters.schema_included("other"));
        assert!(!filters.table_included("public", "big_blobs"));
        assert!(
            filters.table_included("app_1", "big_blobs"),
            "the pattern names schema public"
        );
        assert!(
            !filters.table_included("app_1", "scratch"),
            "no schema in the pattern: any schema"
        );
        assert!(filters.table_included("public", "audit_log") && !filters.data_included("public", "audit_log"));
        assert!(Filters::default().data_included("any", "thing"));
    }
}
