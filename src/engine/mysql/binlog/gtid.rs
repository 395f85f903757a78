//! Global transaction ids of MySQL (`uuid:sequence`) and MariaDB (`domain-server-sequence`),
//! and GTID states: the set of transactions a server has applied.

use std::collections::BTreeMap;
use std::fmt;

/// One transaction's global id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtid {
    /// `domain-server-sequence`; standalone transactions are one statement without BEGIN.
    Mariadb {
        domain: u32,
        server: u32,
        sequence: u64,
        standalone: bool,
    },
    /// `uuid:number`.
    Mysql { uuid: String, number: u64 },
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::Mariadb {
                domain,
                server,
                sequence,
                ..
            } => write!(f, "{domain}-{server}-{sequence}"),
            Gtid::Mysql { uuid, number } => write!(f, "{uuid}:{number}"),
        }
    }
}

impl Gtid {
    /// Parses one GTID as a user writes it: `0-1-42` (MariaDB) or `uuid:42` (MySQL).
    ///
    /// # Errors
    /// A sentence saying what was expected.
    pub fn parse(text: &str) -> Result<Gtid, String> {
        let text = text.trim();
        if let Some((uuid, number)) = text.rsplit_once(':') {
            let number = number
                .parse()
                .map_err(|_| format!("{text:?}: expected uuid:number for a MySQL GTID"))?;
            return Ok(Gtid::Mysql {
                uuid: uuid.to_ascii_lowercase(),
                number,
            });
        }
        let parts: Vec<&str> = text.split('-').collect();
        match parts.as_slice() {
            [domain, server, sequence] => Ok(Gtid::Mariadb {
                domain: domain.parse().map_err(|_| format!("{text:?}: bad domain id"))?,
                server: server.parse().map_err(|_| format!("{text:?}: bad server id"))?,
                sequence: sequence.parse().map_err(|_| format!("{text:?}: bad sequence number"))?,
                standalone: false,
            }),
            _ => Err(format!(
                "{text:?}: expected a GTID, domain-server-sequence (MariaDB, e.g. 0-1-42) or uuid:number (MySQL)"
            )),
        }
    }

    /// Whether two GTIDs name the same transaction.
    pub fn same(&self, other: &Gtid) -> bool {
        match (self, other) {
            (
                Gtid::Mariadb {
                    domain: d1,
                    server: s1,
                    sequence: n1,
                    ..
                },
                Gtid::Mariadb {
                    domain: d2,
                    server: s2,
                    sequence: n2,
                    ..
                },
            ) => d1 == d2 && s1 == s2 && n1 == n2,
            (Gtid::Mysql { uuid: u1, number: n1 }, Gtid::Mysql { uuid: u2, number: n2 }) => u1 == u2 && n1 == n2,
            _ => false,
        }
    }
}

/// A server's GTID position: MariaDB's last transaction per domain, or MySQL's executed set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState {
    mariadb: BTreeMap<u32, (u32, u64)>,
    mysql: BTreeMap<String, Vec<(u64, u64)>>,
}

impl GtidState {
    /// Reads `@@gtid_binlog_pos` (`0-1-42,1-2-7`) or `@@gtid_executed` (`uuid:1-5:7,uuid2:1-3`).
    ///
    /// # Errors
    /// A sentence naming the part that does not parse.
    pub fn parse(text: &str) -> Result<GtidState, String> {
        let mut state = GtidState::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.contains(':') {
                let mut pieces = part.split(':');
                let uuid = pieces.next().unwrap_or_default().to_ascii_lowercase();
                let intervals = state.mysql.entry(uuid).or_default();
                for interval in pieces {
                    let (low, high) = interval.split_once('-').unwrap_or((interval, interval));
                    let low: u64 = low
                        .parse()
                        .map_err(|_| format!("GTID set {text:?}: bad interval {interval:?}"))?;
                    let high: u64 = high
                        .parse()
                        .map_err(|_| format!("GTID set {text:?}: bad interval {interval:?}"))?;
                    intervals.push((low, high));
                }
            } else {
                match Gtid::parse(part)? {
                    Gtid::Mariadb {
                        domain,
                        server,
                        sequence,
                        ..
                    } => {
                        state.mariadb.insert(domain, (server, sequence));
                    }
                    Gtid::Mysql { .. } => unreachable!("MySQL GTIDs contain ':'"),
                }
            }
        }
        Ok(state)
    }

    /// Records that the transaction `gtid` was applied.
    pub fn add(&mut self, gtid: &Gtid) {
        match gtid {
            Gtid::Mariadb {
                domain,
                server,
                sequence,
                ..
            } => {
                self.mariadb.insert(*domain, (*server, *sequence));
            }
            Gtid::Mysql { uuid, number } => self.insert_interval(uuid, *number, *number),
        }
    }

    /// Adds MySQL transactions `low..=high` of `uuid`, keeping the intervals sorted and joined.
    fn insert_interval(&mut self, uuid: &str, low: u64, high: u64) {
        let intervals = self.mysql.entry(uuid.to_string()).or_default();
        intervals.push((low, high));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(a, b) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *intervals = merged;
    }

    /// Records that every transaction of `later` was applied after those of this state: for
    /// MariaDB its last transaction per domain wins, for MySQL the sets are joined.
    pub fn merge(&mut self, later: &GtidState) {
        for (domain, (server, sequence)) in &later.mariadb {
            self.mariadb.insert(*domain, (*server, *sequence));
        }
        for (uuid, intervals) in &later.mysql {
            for &(low, high) in intervals {
                self.insert_interval(uuid, low, high);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mariadb.is_empty() && self.mysql.is_empty()
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .mariadb
            .iter()
            .map(|(domain, (server, sequence))| format!("{domain}-{server}-{sequence}"))
            .collect();
        for (uuid, intervals) in &self.mysql {
            let mut text = uuid.clone();
            for (low, high) in intervals {
                if low == high {
                    text.push_str(&format!(":{low}"));
                } else {
                    text.push_str(&format!(":{low}-{high}"));
                }
            }
            parts.push(text);
        }
        f.write_str(&parts.join(","))
    }
}
