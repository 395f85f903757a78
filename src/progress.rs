//! Periodic progress lines for long work (copies and restores), so a run watched through its
//! logs shows it is moving and how fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts items (chunks, files) and bytes done out of a known number of items.
#[derive(Debug)]
pub struct Progress {
    what: String,
    total: u64,
    items: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
}

impl Progress {
    /// `what` names the work in each line, e.g. "app: copy".
    pub fn new(what: impl Into<String>, total: u64) -> Arc<Progress> {
        Arc::new(Progress {
            what: what.into(),
            total,
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Records one more item of `bytes` bytes done.
    pub fn done(&self, bytes: u64) {
        self.items.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The current line.
    pub fn line(&self) -> String {
        let bytes = self.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{}: {}/{} done, {bytes:.1} MiB in {seconds:.0}s ({:.1} MiB/s)",
            self.what,
            self.items.load(Ordering::Relaxed),
            self.total,
            bytes / seconds
        )
    }

    /// Logs a line every `every` until the returned guard is dropped.
    pub fn report_every(self: &Arc<Self>, every: Duration) -> Reporter {
        let progress = self.clone();
        Reporter(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                tracing::info!("{}", progress.line());
            }
        }))
    }
}

/// Stops the periodic lines when dropped.
#[derive(Debug)]
pub struct Reporter(tokio::task::JoinHandle<()>);

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_items_and_bytes() {
        let progress = Progress::new("app: copy", 4);
        progress.done(1024 * 1024);
        progress.done(1024 * 1024);
        let line = progress.line();
        assert!(line.starts_with("app: copy: 2/4 done, 2.0 MiB in "), "{line}");
    }
}
