//! Group commit for the money transactions (issue 17, item 1): the admissions (and, separately,
//! the settlements) that arrive while this replica's writers are busy go together in the next
//! transaction — one round trip, one commit and one executor start-up per statement for many
//! decisions, where Postgres's profile showed that per-statement start-up, not the rows, was most
//! of its work.
//!
//! There is no timer. A job submitted while fewer than `writers` batches are in flight starts a
//! writer at once, so a quiet gateway adds nothing; a writer that finishes a batch takes whatever
//! queued meanwhile (up to `max_batch`), so a busy one amortises. Writers are spawned tasks: a
//! caller that goes away (a client disconnect cancels its request) cannot cancel a transaction
//! that carries other callers' jobs; it only stops waiting for its own answer.
//!
//! The batch function gets the jobs in arrival order and must answer one result per job, in the
//! same order. It decides how a failing member is kept from its neighbours (the money batches roll
//! back and run each member alone).
//!
//! Each queue is named for its metrics: `aex_money_wait_seconds{queue}` is what a call spends
//! here (waiting for the batch in flight, then its own), `aex_money_batch_seconds{queue}` what
//! each batch takes. At a steady rate the writer is busy nearly all the time and a call waits
//! about one and a half batches, so these two say how much of a call's latency the money path
//! is, and why.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

type RunBatch<J, R> = dyn Fn(Vec<J>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync;

/// A queue of jobs of type `J` answered with `R`, written in batches by at most `writers`
/// concurrent writers.
pub struct GroupCommit<J, R> {
    inner: Arc<Inner<J, R>>,
}

impl<J, R> Clone for GroupCommit<J, R> {
    fn clone(&self) -> Self {
        GroupCommit {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<J, R> {
    /// The queue's name in the metrics.
    name: &'static str,
    queue: Mutex<Queue<J, R>>,
    writers: usize,
    max_batch: usize,
    run: Box<RunBatch<J, R>>,
}

struct Queue<J, R> {
    waiting: Vec<(J, oneshot::Sender<R>)>,
    running: usize,
}

/// The batch that carried a job ended without answering it (its writer panicked).
#[derive(Debug, thiserror::Error)]
#[error("the batch carrying this job ended without an answer")]
pub struct Unanswered;

impl<J: Send + 'static, R: Send + 'static> GroupCommit<J, R> {
    /// The queue `name`d (for the metrics), whose `run` writes one batch; at most `writers` run
    /// at once, each with at most `max_batch` jobs.
    pub fn new<F, Fut>(name: &'static str, writers: usize, max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        GroupCommit {
            inner: Arc::new(Inner {
                name,
                queue: Mutex::new(Queue {
                    waiting: Vec::new(),
                    running: 0,
                }),
                writers: writers.max(1),
                max_batch: max_batch.max(1),
                run: Box::new(move |jobs| Box::pin(run(jobs))),
            }),
        }
    }

    /// Queues `job`, starts a writer when one is free, and waits for the job's result.
    pub async fn submit(&self, job: J) -> Result<R, Unanswered> {
        let joined = Instant::now();
        let (tx, rx) = oneshot::channel();
        let start_writer = {
            let mut q = self.inner.lock();
            q.waiting.push((job, tx));
            let free = q.running < self.inner.writers;
            if free {
                q.running += 1;
            }
            free
        };
        if start_writer {
            tokio::spawn(write(self.inner.clone()));
        }
        let answer = rx.await.map_err(|_| Unanswered);
        crate::metrics::observe_money_wait(self.inner.name, joined.elapsed());
        answer
    }
}

impl<J, R> Inner<J, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<J, R>> {
        // The queue is only pushed to and drained: a panic cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One writer: batches until the queue is empty.
async fn write<J: Send + 'static, R: Send + 'static>(inner: Arc<Inner<J, R>>) {
    let mut running = Running(Some(inner.clone()));
    loop {
        let batch: Vec<_> = {
            let mut q = inner.lock();
            if q.waiting.is_empty() {
                q.running -= 1;
                running.0 = None;
                return;
            }
            let n = q.waiting.len().min(inner.max_batch);
            q.waiting.drain(..n).collect()
        };
        let started = Instant::now();
        let (jobs, answers): (Vec<J>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
        let results = (inner.run)(jobs).await;
        debug_assert_eq!(results.len(), answers.len(), "one result per job");
        for (answer, result) in answers.into_iter().zip(results) {
            // The caller may have gone away: its result is simply not read.
            let _ = answer.send(result);
        }
        crate::metrics::observe_money_batch(inner.name, started.elapsed());
    }
}

/// Gives the writer's place back if it ends by panicking, and starts another one for the jobs
/// still queued (the panicked batch's callers get [`Unanswered`]).
struct Running<J: Send + 'static, R: Send + 'static>(Option<Arc<Inner<J, R>>>);

impl<J: Send + 'static, R: Send + 'static> Drop for Running<J, R> {
    fn drop(&mut self) {
        let Some(inner) = self.0.take() else { return };
        let restart = {
            let mut q = inner.lock();
            let restart = !q.waiting.is_empty();
            if !restart {
                q.running -= 1;
            }
            restart
        };
        if restart {
            tokio::spawn(write(inner));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_lone_job_is_written_at_once_and_alone() {
        let gc = GroupCommit::new("test", 2, 64, |jobs: Vec<u32>| async move {
            vec![jobs.len(); jobs.len()]
        });
        assert_eq!(gc.submit(7).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn jobs_that_arrive_while_the_writers_are_busy_share_the_next_batch() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let gc = GroupCommit::new("test", 1, 64, move |jobs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                jobs.iter().map(|j| j * 10).collect::<Vec<_>>()
            }
        });
        let first = tokio::spawn({
            let gc = gc.clone();
            async move { gc.submit(1).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let rest: Vec<_> = (2..=9)
            .map(|j| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.submit(j).await.unwrap() })
            })
            .collect();
        assert_eq!(first.await.unwrap(), 10);
        for (j, r) in (2..=9).zip(rest) {
            assert_eq!(r.await.unwrap(), j * 10, "each job gets its own result");
        }
        assert_eq!(
            batches.load(Ordering::SeqCst),
            2,
            "the eight waiting jobs went together"
        );
    }

    #[tokio::test]
    async fn a_batch_is_never_larger_than_max_batch() {
        let largest = Arc::new(AtomicUsize::new(0));
        let seen = largest.clone();
        let gc = GroupCommit::new("test", 1, 3, move |jobs: Vec<u32>| {
            seen.fetch_max(jobs.len(), Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                jobs
            }
        });
        let all: Vec<_> = (0..20)
            .map(|j| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.submit(j).await.unwrap() })
            })
            .collect();
        for (j, r) in (0..20).zip(all) {
            assert_eq!(r.await.unwrap(), j);
        }
        assert!(largest.load(Ordering::SeqCst) <= 3);
    }

    #[tokio::test]
    async fn a_panicking_batch_answers_unanswered_and_the_queue_goes_on() {
        let gc = GroupCommit::new("test", 1, 1, |jobs: Vec<u32>| async move {
            assert!(jobs[0] != 0, "job 0 panics");
            jobs
        });
        assert!(gc.submit(0).await.is_err());
        assert_eq!(gc.submit(5).await.unwrap(), 5);
    }
}
