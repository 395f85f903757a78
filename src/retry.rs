//! The one retry policy: how often, and how long apart, an operation that failed for a reason
//! that may pass (a lock, a writer that got there first, a server still busy) is tried again.
//! The schedules are `backon`'s; each loop asks [`Retry::wait`] before its next attempt.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};

/// The waits left before the next attempts of one operation.
pub struct Retry {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    deadline: Option<Instant>,
    failed: u32,
}

impl Retry {
    /// Up to `retries` more attempts, waits doubling from `first` up to `max`, with jitter so that
    /// contending writers do not retry in step.
    pub fn exponential(first: Duration, max: Duration, retries: usize) -> Self {
        let delays = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_max_times(retries)
            .with_jitter()
            .build();
        Retry {
            delays: Box::new(delays),
            deadline: None,
            failed: 0,
        }
    }

    /// Up to `retries` more attempts, `delay` apart.
    pub fn constant(delay: Duration, retries: usize) -> Self {
        let delays = ConstantBuilder::default()
            .with_delay(delay)
            .with_max_times(retries)
            .build();
        Retry {
            delays: Box::new(delays),
            deadline: None,
            failed: 0,
        }
    }

    /// Attempts `delay` apart until `deadline`.
    pub fn until(deadline: Instant, delay: Duration) -> Self {
        let delays = ConstantBuilder::default().with_delay(delay).without_max_times().build();
        Retry {
            delays: Box::new(delays),
            deadline: Some(deadline),
            failed: 0,
        }
    }

    /// Attempts that failed so far (after the first failure: 1).
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Counts a failed attempt and waits before the next; `false` (without waiting) when the
    /// policy allows no more attempts.
    pub async fn wait(&mut self) -> bool {
        self.failed += 1;
        if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return false;
        }
        match self.delays.next() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_policy_allows_exactly_its_retries() {
        let mut retry = Retry::constant(Duration::from_millis(10), 3);
        let started = Instant::now();
        let mut attempts = 1;
        while retry.wait().await {
            attempts += 1;
        }
        assert_eq!(attempts, 4);
        assert_eq!(retry.failed(), 4);
        assert!(started.elapsed() >= Duration::from_millis(30));

        let mut retry = Retry::exponential(Duration::from_millis(10), Duration::from_millis(40), 5);
        let mut waits = Vec::new();
        loop {
            let before = Instant::now();
            if !retry.wait().await {
                break;
            }
            waits.push(before.elapsed());
        }
        assert_eq!(waits.len(), 5);
        assert!(waits.iter().all(|w| *w >= Duration::from_millis(10)));

        let mut retry = Retry::until(Instant::now(), Duration::from_millis(1));
        assert!(!retry.wait().await, "a deadline that has passed allows no retry");
    }
}
