//! The SQL of loading: the `LOAD DATA` column list and the literals of the `INSERT` fallback.

use super::inventory::{Column, Transfer};
use super::quote_ident;

/// Size of one `INSERT` of the fallback.
pub(super) const INSERT_BATCH: usize = 1 << 20;
/// Session of every loading connection: no checks the source already made, times in UTC, bytes
/// as stored, zero dates and explicit zero auto-increment values accepted.
pub(super) const LOAD_SESSION: &str = "SET SESSION foreign_key_checks = 0, SESSION unique_checks = 0, \
    SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', SESSION time_zone = '+00:00', NAMES binary";

/// The `LOAD DATA` column list and `SET` clause for these columns.
pub(super) fn load_columns(columns: &[Column]) -> String {
    if columns.is_empty() {
        return String::new();
    }
    let mut list = Vec::new();
    let mut set = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        match column.transfer {
            Transfer::Bit => {
                list.push(format!("@c{i}"));
                set.push(format!("{} = CAST(@c{i} AS UNSIGNED)", quote_ident(&column.name)));
            }
            Transfer::Textual => {
                list.push(format!("@c{i}"));
                set.push(format!("{} = CONVERT(@c{i} USING utf8mb4)", quote_ident(&column.name)));
            }
            _ => list.push(quote_ident(&column.name)),
        }
    }
    let mut clause = format!(" ({})", list.join(", "));
    if !set.is_empty() {
        clause.push_str(&format!(" SET {}", set.join(", ")));
    }
    clause
}

pub(super) fn hex_literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2 + 3);
    out.push_str("X'");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('\'');
    out
}
