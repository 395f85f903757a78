//! Which source transactions a full copy's snapshot already holds: the snapshot is recorded as
//! `pg_current_snapshot()` gives it (`xmin:xmax:xip,…`, 64-bit ids), while logical decoding
//! names transactions by 32-bit ids. A decoded transaction visible in the snapshot is in the
//! full copy and must not be applied again; every other one must be.

/// A snapshot as `pg_current_snapshot()` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
    /// The WAL insert position when the snapshot was taken, when recorded: a transaction whose
    /// commit lies at or after it committed after the snapshot, whatever its id says.
    wal_end: Option<u64>,
}

impl Snapshot {
    /// Reads `xmin:xmax:xip1,xip2`.
    ///
    /// # Errors
    /// A sentence naming the text.
    pub fn parse(text: &str) -> Result<Snapshot, String> {
        let bad = || format!("{text:?} is not a snapshot (expected xmin:xmax:xip,…)");
        let mut parts = text.trim().splitn(3, ':');
        let (Some(xmin), Some(xmax), Some(xip)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let number = |t: &str| t.parse::<u64>().map_err(|_| bad());
        let in_progress = xip
            .split(',')
            .filter(|t| !t.is_empty())
            .map(number)
            .collect::<Result<Vec<_>, _>>()?;
        let (xmin, xmax) = (number(xmin)?, number(xmax)?);
        if xmin > xmax {
            return Err(bad());
        }
        Ok(Snapshot {
            xmin,
            xmax,
            in_progress,
            wal_end: None,
        })
    }

    /// The 64-bit id of a 32-bit transaction id seen near this snapshot: a decoded transaction
    /// began within 2^31 transactions of it, so the epoch is the snapshot's, or the one before
    /// or after when the 32-bit id wrapped in between.
    fn widen(&self, xid: u32) -> u64 {
        let epoch = self.xmax >> 32;
        let candidate = (epoch << 32) | u64::from(xid);
        let half = 1u64 << 31;
        if candidate > self.xmax + half && epoch > 0 {
            candidate - (1 << 32)
        } else if candidate + half < self.xmax {
            candidate + (1 << 32)
        } else {
            candidate
        }
    }

    /// This snapshot, taken when the WAL insert position was `wal_end`.
    pub fn ending_at(mut self, wal_end: Option<u64>) -> Snapshot {
        self.wal_end = wal_end;
        self
    }

    /// Whether the transaction `xid` (32-bit, as decoding gives it), whose commit record is at
    /// `commit_lsn`, committed before the snapshot was taken, so the full copy holds its
    /// changes. A commit after the snapshot's WAL position is never held: its 32-bit id may
    /// have wrapped more than 2^31 transactions later.
    pub fn holds(&self, xid: u32, commit_lsn: u64) -> bool {
        if self.wal_end.is_some_and(|end| commit_lsn >= end) {
            return false;
        }
        let xid = self.widen(xid);
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }

    /// Whether the decoded 32-bit id `xid` names the transaction `wanted`, given as a 32-bit
    /// id (`xmin`) or a 64-bit one (`pg_current_xact_id()`).
    pub fn names(&self, xid: u32, wanted: u64) -> bool {
        match u32::try_from(wanted) {
            Ok(short) => xid == short,
            Err(_) => self.widen(xid) == wanted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_before_the_snapshot_are_held_and_the_others_are_not() {
        let snapshot = Snapshot::parse("100:110:103,107").unwrap();
        assert!(snapshot.holds(99, 0));
        assert!(
            snapshot.holds(100, 0) && snapshot.holds(105, 0),
            "committed between xmin and xmax"
        );
        assert!(
            !snapshot.holds(103, 0) && !snapshot.holds(107, 0),
            "in progress at the snapshot"
        );
        assert!(
            !snapshot.holds(110, 0) && !snapshot.holds(200, 0),
            "began after the snapshot"
        );
        assert_eq!(Snapshot::parse("5:5:").unwrap().in_progress, Vec::<u64>::new());
        assert!(Snapshot::parse("5:4:").is_err() && Snapshot::parse("a:b:").is_err());
    }

    #[test]
    fn a_commit_after_the_snapshot_s_wal_position_is_never_held() {
        // An id far past the snapshot widens into the past; the commit's position says better.
        let snapshot = Snapshot::parse("100:110:").unwrap().ending_at(Some(5_000));
        assert!(snapshot.holds(99, 4_999));
        assert!(!snapshot.holds(99, 5_000), "committed after the snapshot: a wrapped id");
        assert!(
            Snapshot::parse("100:110:").unwrap().holds(99, 5_000),
            "no position recorded"
        );
    }

    #[test]
    fn a_transaction_is_named_by_its_short_or_its_full_id() {
        let base = 3u64 << 32;
        let snapshot = Snapshot::parse(&format!("{}:{}:", base + 5, base + 10)).unwrap();
        assert!(snapshot.names(12, 12) && snapshot.names(12, base + 12));
        assert!(!snapshot.names(12, 13) && !snapshot.names(12, (2u64 << 32) + 12));
    }

    #[test]
    fn thirty_two_bit_ids_are_placed_in_the_right_epoch() {
        // The snapshot is in epoch 3, just after the 32-bit counter wrapped.
        let base = 3u64 << 32;
        let snapshot = Snapshot::parse(&format!("{}:{}:", base + 5, base + 10)).unwrap();
        assert!(snapshot.holds(u32::MAX - 2, 0), "from the end of epoch 2: long before");
        assert!(snapshot.holds(7, 0));
        assert!(!snapshot.holds(10, 0) && !snapshot.holds(1_000, 0));
        // Just before a wrap: ids near zero are the next epoch's, after the snapshot.
        let late = (2u64 << 32) + u64::from(u32::MAX) - 10;
        let snapshot = Snapshot::parse(&format!("{late}:{}:", late + 5)).unwrap();
        assert!(!snapshot.holds(3, 0));
        assert!(snapshot.holds(u32::MAX - 20, 0));
    }
}
