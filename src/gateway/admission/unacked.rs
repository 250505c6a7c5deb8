//! An admission whose COMMIT was sent but never answered: the connection failed in the round
//! trip that carried it, so the server may have committed the holds or not. Assuming a rollback
//! would leak a committed hold — reserved on the agent and DISPATCHED under this replica, which
//! is alive, so the reconciler never settles it — and admit the call a second time. Every way
//! that admits (the batch, a batch of one, the single pipelined way, the general way) hands its
//! failed holds here instead: [`resolve`] looks their executions up (their ids are made in the
//! replica, before the insert) once the failed transaction has surely ended, and answers each
//! hold whose execution exists [`Batched::Reserved`], exactly as decided, to be dispatched and
//! settled as usual; only a hold that was not written is answered [`Batched::Alone`] and admitted
//! again.
//!
//! While the lookup cannot be answered (the database is down), it is retried, as a settlement is
//! (`gateway::settlement`): only this replica can settle such a hold while it lives. The caller
//! waits; a caller that goes away meanwhile does not stop the lookup (it runs in a task of its
//! own), and a committed hold nobody claims is released by its dropped [`Answer`]. Only a shutdown
//! past its drain timeout gives up: the holds are then answered Alone and whatever was committed
//! stays DISPATCHED under this replica, which deregisters (or whose heartbeat goes stale), so the
//! reconciler (`cluster::reconciler`) releases it as `replica_lost` — late, never lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::super::call_types::Reservation;
use super::super::error::is_unavailable;
use super::super::Books;
use super::batch::{Answer, Batched};
use crate::store::executions;

/// Whether `e`, from the round trip that carried a transaction's COMMIT, leaves its outcome
/// unknown: the connection failed instead of the server answering. A server error (a constraint,
/// a deadlock) means the transaction was rolled back.
pub(super) fn outcome_unknown(e: &sqlx::Error) -> bool {
    !matches!(e, sqlx::Error::Database(_)) || is_unavailable(e)
}

/// What became of the members of a transaction whose COMMIT went unanswered, `decided` as the
/// transaction decided them: each hold committed is answered Reserved, each not written Alone;
/// any other answer is kept.
pub(super) async fn resolve(books: &Arc<Books>, decided: Vec<Batched>) -> Vec<Answer> {
    let held: Vec<(Uuid, Uuid)> = decided
        .iter()
        .filter_map(|d| match d {
            Batched::Reserved(r) => Some((r.hold.agent_id.0, r.hold.execution_id)),
            _ => None,
        })
        .collect();
    if held.is_empty() {
        return answers(books, decided, &HashSet::new());
    }
    let members = decided.len();
    let task = tokio::spawn({
        let books = Arc::clone(books);
        async move {
            let committed = committed(&books, &held).await.unwrap_or_default();
            answers(&books, decided, &committed)
        }
    });
    // Unanswered only if the task panicked (it writes nothing): as a batch whose writer panicked.
    task.await.unwrap_or_else(|_| {
        (0..members)
            .map(|_| Answer::new(Batched::Alone, None))
            .collect()
    })
}

/// A single way's hold whose transaction failed with `e` in the round trip of its COMMIT: the
/// reservation when it was committed after all, else `e`.
pub(super) async fn one(
    books: &Arc<Books>,
    reservation: Reservation,
    e: sqlx::Error,
) -> Result<Reservation, sqlx::Error> {
    if !outcome_unknown(&e) {
        return Err(e);
    }
    let id = reservation.hold.execution_id;
    tracing::warn!(execution_id = %id, error = %e, "an admission's commit went unanswered: looking its hold up");
    let decided = vec![Batched::Reserved(Box::new(reservation))];
    match resolve(books, decided).await.pop().map(Answer::take) {
        Some(Batched::Reserved(r)) => Ok(*r),
        _ => Err(e),
    }
}

fn answers(books: &Arc<Books>, decided: Vec<Batched>, committed: &HashSet<Uuid>) -> Vec<Answer> {
    decided
        .into_iter()
        .map(|d| match d {
            Batched::Reserved(r) if committed.contains(&r.hold.execution_id) => {
                tracing::warn!(execution_id = %r.hold.execution_id, "committed although unacknowledged: dispatched as decided");
                Answer::new(Batched::Reserved(r), Some(Arc::clone(books)))
            }
            Batched::Reserved(_) => Answer::new(Batched::Alone, None),
            other => Answer::new(other, None),
        })
        .collect()
}

/// The executions of `held` ((agent, execution) ids) that exist, retried until answered or the
/// drain timeout passes (`None`).
async fn committed(books: &Books, held: &[(Uuid, Uuid)]) -> Option<HashSet<Uuid>> {
    let mut agents: Vec<Uuid> = held.iter().map(|h| h.0).collect();
    agents.sort_unstable();
    agents.dedup();
    let ids: Vec<Uuid> = held.iter().map(|h| h.1).collect();
    let mut delay = Duration::from_millis(50);
    loop {
        let found = match books.pool.acquire().await {
            Ok(mut conn) => executions::existing_once_agents_free(&mut conn, &agents, &ids).await,
            Err(e) => Err(e),
        };
        let e = match found {
            Ok(found) => return Some(found),
            Err(e) => e,
        };
        if books.drain_expired.is_cancelled() {
            tracing::error!(error = %e, holds = ids.len(), "unacknowledged holds not looked up before the drain timeout: the reconciler will release what was committed");
            return None;
        }
        tracing::warn!(error = %e, "looking unacknowledged holds up: retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = books.drain_expired.cancelled() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
