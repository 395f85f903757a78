//! The one worker pool of the engines: a queue of work items shared by N workers that each take
//! the next item until none is left, and a join that stops every worker at the first failure.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use super::SourceError;

/// Work items shared by the workers of a pool; clones share the same items.
#[derive(Debug)]
pub struct Queue<T>(Arc<Mutex<VecDeque<T>>>);

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue(self.0.clone())
    }
}

impl<T> Queue<T> {
    pub fn new(items: impl IntoIterator<Item = T>) -> Self {
        Queue(Arc::new(Mutex::new(items.into_iter().collect())))
    }

    /// The next item, or `None` when every item was taken.
    pub fn next(&self) -> Option<T> {
        self.0.lock().expect("work queue lock poisoned").pop_front()
    }

    /// Items not taken yet.
    pub fn len(&self) -> usize {
        self.0.lock().expect("work queue lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs one task per worker (`start` makes each worker's task from what it is given: a
/// connection, or nothing) and waits for all; at the first failure the others are stopped and
/// that failure is returned, so no worker goes on writing after the run has failed.
///
/// # Errors
/// The first worker's error, or [`SourceError::Worker`] for a worker that panicked.
pub async fn run<W, T, Fut>(
    what: &str,
    workers: impl IntoIterator<Item = W>,
    start: impl Fn(W) -> Fut,
) -> Result<Vec<T>, SourceError>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, SourceError>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for worker in workers {
        tasks.spawn(start(worker));
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(value)) => results.push(value),
            Ok(Err(e)) => {
                tasks.abort_all();
                return Err(e);
            }
            Err(source) => {
                tasks.abort_all();
                return Err(SourceError::Worker {
                    what: what.to_string(),
                    source,
                });
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_item_is_taken_once_and_the_first_failure_stops_the_pool() {
        let queue = Queue::new(0..1000u64);
        let sums = run("summing", 0..4, |_| {
            let queue = queue.clone();
            async move {
                let mut sum = 0;
                while let Some(item) = queue.next() {
                    sum += item;
                    tokio::task::yield_now().await;
                }
                Ok(sum)
            }
        })
        .await
        .unwrap();
        assert_eq!(sums.len(), 4);
        assert_eq!(sums.iter().sum::<u64>(), (0..1000).sum::<u64>());

        let failed = run("failing", 0..3, |i| async move {
            if i == 1 {
                return Err(SourceError::Unsupported("worker 1 failed".into()));
            }
            std::future::pending::<()>().await;
            Ok(())
        })
        .await;
        assert!(matches!(failed, Err(SourceError::Unsupported(m)) if m == "worker 1 failed"));

        let panicked = run("panicking", 0..1, |_| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        })
        .await;
        assert!(matches!(panicked, Err(SourceError::Worker { .. })));
    }
}
