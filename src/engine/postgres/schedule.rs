//! The order of a PostgreSQL restore's data phase: which data file or index each worker takes
//! next, so that a table's indexes and keys are built as soon as all its rows are in, while
//! other tables still load (as pg_restore does).
//!
//! Loading every table and only then building every index was 35 % slower than pg_restore's
//! interleaving on the same dump (docs/benchmarks.md): two index builds side by side contend
//! for memory and the page cache, a build beside a `COPY` much less.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::schema::Entry;
use super::selective::entry_table;
use crate::repo::reader::StoredFile;

/// What a worker does next.
#[derive(Debug)]
pub(super) enum Work {
    /// Load this file of table number `table` (given back to [`Schedule::loaded`]).
    Load { table: usize, file: StoredFile },
    /// Run this post-data entry of table number `table` (given back to [`Schedule::built`]).
    Build { table: usize, entry: Entry },
}

/// One table's part of the schedule.
#[derive(Debug)]
struct Table {
    /// Files not taken yet, largest first.
    files: VecDeque<StoredFile>,
    /// Their stored bytes.
    bytes: u64,
    /// Its files being loaded now.
    loading: usize,
    /// Whether one of its entries is being run: one at a time, since a key takes the table's
    /// exclusive lock (a second build would only wait) and an entry that also sets `CLUSTER ON`
    /// or a replica identity could deadlock with another.
    building: bool,
    /// Its indexes and keys, ready once no file is left or loading.
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct State {
    tables: Vec<Table>,
    ready: VecDeque<(usize, Entry)>,
}

/// The shared schedule of a restore's data phase; clones share it.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    workers: usize,
}

impl Schedule {
    /// A schedule of `files` (data files) for `workers` workers, with those of `entries` (indexes
    /// and keys, which may run in any order) that belong to a table with files; returns the
    /// others, to run after the data phase.
    pub fn new(files: Vec<StoredFile>, entries: Vec<Entry>, workers: usize) -> (Self, Vec<Entry>) {
        let mut by_table: BTreeMap<(String, String), Vec<StoredFile>> = BTreeMap::new();
        for file in files {
            let key = file
                .data()
                .map(|d| (d.container().to_string(), d.table.clone()))
                .unwrap_or_default();
            by_table.entry(key).or_default().push(file);
        }
        let keys: Vec<(String, String)> = by_table.keys().cloned().collect();
        let mut tables: Vec<Table> = by_table
            .into_values()
            .map(|mut files| {
                files.sort_by_key(|f| std::cmp::Reverse(f.file.size));
                Table {
                    bytes: files.iter().map(|f| f.file.size).sum(),
                    files: files.into(),
                    loading: 0,
                    building: false,
                    entries: Vec::new(),
                }
            })
            .collect();
        let mut later = Vec::new();
        for entry in entries {
            let position = entry_table(&entry).and_then(|key| keys.iter().position(|k| *k == key));
            match position {
                Some(index) => tables[index].entries.push(entry),
                None => later.push(entry),
            }
        }
        let state = State {
            tables,
            ready: VecDeque::new(),
        };
        let schedule = Schedule {
            state: Arc::new(Mutex::new(state)),
            changed: Arc::new(Notify::new()),
            workers: workers.max(1),
        };
        (schedule, later)
    }

    /// The next work for a worker whose last load was of table `last`; waits while there is
    /// nothing to take but loads that may still make indexes ready; `None` when all is taken.
    pub async fn next(&self, last: Option<usize>) -> Option<Work> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is looked at, so a change in between is not missed.
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(work) = state.take(last, self.workers) {
                    return Some(work);
                }
                if state.ready.is_empty() && state.tables.iter().all(|t| t.loading == 0) {
                    return None;
                }
            }
            changed.await;
        }
    }

    /// A load of table `table` ended; its entries become ready when it was the last.
    pub fn loaded(&self, table: usize) {
        let mut state = self.lock();
        let done = &mut state.tables[table];
        done.loading -= 1;
        if done.files.is_empty() && done.loading == 0 {
            let entries = std::mem::take(&mut done.entries);
            state.ready.extend(entries.into_iter().map(|entry| (table, entry)));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// An entry of table `table` was run.
    pub fn built(&self, table: usize) {
        self.lock().tables[table].building = false;
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn take(&mut self, last: Option<usize>, workers: usize) -> Option<Work> {
        let files_left = self.tables.iter().any(|t| !t.files.is_empty());
        // While rows remain, at most all workers but one build: builds side by side are what
        // the interleaving avoids.
        let builders = if files_left {
            workers.saturating_sub(1).max(1)
        } else {
            workers
        };
        let building = self.tables.iter().filter(|t| t.building).count();
        if building < builders
            && let Some(at) = self.ready.iter().position(|(t, _)| !self.tables[*t].building)
            && let Some((table, entry)) = self.ready.remove(at)
        {
            self.tables[table].building = true;
            return Some(Work::Build { table, entry });
        }
        // The table this worker loaded last, so each table tends to have one loader and is
        // finished early; else the largest table nobody loads, else the largest one left.
        let table = last.filter(|&t| !self.tables[t].files.is_empty()).or_else(|| {
            (0..self.tables.len())
                .filter(|&t| !self.tables[t].files.is_empty())
                .max_by_key(|&t| (self.tables[t].loading == 0, self.tables[t].bytes, std::cmp::Reverse(t)))
        })?;
        let chosen = &mut self.tables[table];
        let file = chosen.files.pop_front()?;
        chosen.bytes -= file.file.size;
        chosen.loading += 1;
        Some(Work::Load { table, file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(table: &str, index: u32, size: u64) -> StoredFile {
        crate::repo::reader::test_data_file(("schema", "s"), table, index, size)
    }

    fn index(table: &str) -> Entry {
        Entry {
            kind: "INDEX".into(),
            name: format!("{table}_i"),
            schema: "s".into(),
            sql: format!("CREATE INDEX {table}_i ON s.{table} USING btree (k);"),
        }
    }

    fn name(work: &Work) -> String {
        match work {
            Work::Load { file, .. } => file.key.clone(),
            Work::Build { entry, .. } => entry.name.clone(),
        }
    }

    #[tokio::test]
    async fn a_tables_index_comes_once_its_rows_are_in_and_before_other_tables_rows() {
        let files = vec![file("a", 0, 100), file("a", 1, 90), file("b", 0, 150), file("c", 0, 95)];
        let other = Entry {
            kind: "INDEX".into(),
            name: "elsewhere".into(),
            schema: "s".into(),
            sql: "CREATE INDEX elsewhere ON s.no_rows USING btree (k);".into(),
        };
        let (schedule, later) = Schedule::new(files, vec![index("a"), index("b"), other], 2);
        assert_eq!(later.len(), 1, "an index of a table without files waits for the end");

        // Two workers: the largest tables first, one each.
        let one = schedule.next(None).await.unwrap();
        let two = schedule.next(None).await.unwrap();
        assert_eq!(
            [name(&one), name(&two)],
            ["a/0", "b/0"],
            "largest table first (by bytes left)"
        );
        let Work::Load { table: a, .. } = one else { panic!() };
        let Work::Load { table: b, .. } = two else { panic!() };
        // Worker one stays on its table (c, with more bytes left and no loader, would come
        // first otherwise); b's index is not ready while b is still loading.
        schedule.loaded(a);
        let one = schedule.next(Some(a)).await.unwrap();
        assert_eq!(name(&one), "a/1", "a worker keeps to the table it loaded last");
        schedule.loaded(b);
        let two = schedule.next(Some(b)).await.unwrap();
        assert_eq!(
            name(&two),
            "b_i",
            "an index is taken before more rows once its table is in"
        );
        // While rows remain, one of the two workers at most builds.
        schedule.loaded(a);
        let one = schedule.next(Some(a)).await.unwrap();
        assert_eq!(name(&one), "c/0", "a second build waits while rows remain");
        schedule.built(b);
        let Work::Load { table: c, .. } = one else { panic!() };
        let two = schedule.next(None).await.unwrap();
        assert_eq!(name(&two), "a_i");
        schedule.loaded(c);
        schedule.built(a);
        assert!(schedule.next(Some(c)).await.is_none(), "all taken");
    }

    #[tokio::test]
    async fn a_table_shared_by_two_loaders_builds_only_after_both_and_one_entry_at_a_time() {
        let key = Entry {
            kind: "CONSTRAINT".into(),
            name: "a a_pkey".into(),
            schema: "s".into(),
            sql: "ALTER TABLE ONLY s.a\n    ADD CONSTRAINT a_pkey PRIMARY KEY (id);".into(),
        };
        let (schedule, later) = Schedule::new(vec![file("a", 0, 10), file("a", 1, 9)], vec![key, index("a")], 2);
        assert!(later.is_empty());
        let Some(Work::Load { table, .. }) = schedule.next(None).await else {
            panic!()
        };
        let Some(Work::Load { .. }) = schedule.next(None).await else {
            panic!()
        };
        schedule.loaded(table);
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), schedule.next(Some(table))).await;
        assert!(
            early.is_err(),
            "nothing is built while a file of the table is still loading"
        );
        schedule.loaded(table);
        let first = schedule.next(Some(table)).await.unwrap();
        assert_eq!(name(&first), "a a_pkey");
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), schedule.next(None)).await;
        assert!(second.is_err(), "a table's second entry waits for its first");
        schedule.built(table);
        assert_eq!(name(&schedule.next(None).await.unwrap()), "a_i");
        schedule.built(table);
        assert!(schedule.next(None).await.is_none());
    }

    #[tokio::test]
    async fn an_idle_worker_waits_for_the_index_a_running_load_makes_ready() {
        let (schedule, later) = Schedule::new(vec![file("a", 0, 1)], vec![index("a")], 2);
        assert!(later.is_empty());
        let Some(Work::Load { table, .. }) = schedule.next(None).await else {
            panic!()
        };
        let waiting = tokio::spawn({
            let schedule = schedule.clone();
            async move { schedule.next(None).await.map(|w| name(&w)) }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "nothing to take yet, but a load may make an index ready"
        );
        schedule.loaded(table);
        assert_eq!(waiting.await.unwrap().as_deref(), Some("a_i"));
    }
}
