//! Progress of long work (copies, restores, verifies): bars on a terminal, periodic log lines
//! otherwise, so a run watched by a person or through its logs shows it is moving and how fast.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// The bars of this process, when progress is drawn as bars (see [`draw_bars`]).
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// From now on, progress is drawn as bars on stderr instead of log lines; log lines written
/// through [`BarsWriter`] appear above the bars. Called once, by the command line, when stderr
/// is a terminal.
pub fn draw_bars() -> MultiProgress {
    BARS.get_or_init(MultiProgress::new).clone()
}

/// Writes to stderr without tearing the bars: each write is made with the bars hidden.
#[derive(Debug, Clone)]
pub struct BarsWriter(pub MultiProgress);

impl std::io::Write for BarsWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

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

    /// Logs a line every `every` — or, on a terminal, keeps a bar up to date — until the
    /// returned guard is dropped.
    pub fn report_every(self: &Arc<Self>, every: Duration) -> Reporter {
        let progress = self.clone();
        let Some(bars) = BARS.get() else {
            return Reporter {
                task: tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(every);
                    ticker.tick().await;
                    loop {
                        ticker.tick().await;
                        tracing::info!("{}", progress.line());
                    }
                }),
                bar: None,
            };
        };
        let bar = bars.add(ProgressBar::new(self.total));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {elapsed} (ETA {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(self.what.clone());
        let drawn = bar.clone();
        Reporter {
            task: tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_millis(200));
                loop {
                    ticker.tick().await;
                    progress.draw(&drawn);
                }
            }),
            bar: Some((bar, self.clone())),
        }
    }

    /// Brings `bar` up to date: items done, bytes and rate.
    fn draw(&self, bar: &ProgressBar) {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        bar.set_position(self.items.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{}, {}/s",
            crate::text::bytes(bytes),
            crate::text::bytes((bytes as f64 / seconds) as u64)
        ));
    }
}

/// Stops the periodic lines, or draws the bar a last time and leaves it, when dropped.
#[derive(Debug)]
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: Option<(ProgressBar, Arc<Progress>)>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        if let Some((bar, progress)) = &self.bar {
            progress.draw(bar);
            bar.finish();
        }
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
