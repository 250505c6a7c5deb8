//! Verification that keeps up with a running server: each pass checks only the events appended
//! since the previous one, against the verified head (seq and hash) of their chain, so the
//! ledger status on `/metrics` and the dashboard is minutes fresher than a periodic full walk
//! could afford. The first pass, and every pass after [`ChainWatch::reset`], walks everything.
//!
//! Event ids come from a sequence taken inside each appending transaction, so an event can
//! commit after one with a higher id was already seen. Within a chain that cannot happen (the
//! chain's tail lock serialises its appends), so such a late event shows up as a sequence gap
//! when its chain's next event arrives, and the missing range is then read by `(chain_id, seq)`.
//! A late event whose chain stays silent waits for the next full pass.

use std::collections::HashMap;
use std::time::Instant;

use sqlx::PgPool;

use super::chain_check::check;
use super::encoding::GENESIS_HASH;
use super::verify::{BadEvent, VerifyReport};
use crate::store::chain_events::{self, EventRow};

/// Events a pass reads in one statement (see [`chain_events::page_after_id`]).
const PAGE: i64 = 1_000;

/// After each page a pass pauses PACE times as long as the page took: it spreads its work over
/// five times its length instead of taking Postgres and this replica for itself. A pass reads
/// every event of the last interval (10 s at 1,500 calls/s: 45,000 events), and read at once
/// they held the money path's calls back. bench/ab.sh at 1,500 calls/s open loop, three rounds:
/// p99 13–51 ms paced in pages of 1,000, 43–176 ms in pages of 5,000 at once, 12–30 ms with no
/// verification at all.
const PACE: u32 = 4;

/// Chains seen past a gap in a pass: chain id → (its head before the pass, the highest seq seen).
type Late = HashMap<String, (i64, i64)>;

/// The verified state of every chain seen so far.
#[derive(Debug)]
pub struct ChainWatch {
    /// chain id → (seq, event hash) of its last verified event.
    heads: HashMap<String, (i64, String)>,
    /// Every event with an id at most this was seen by a pass.
    seen_up_to: i64,
    events: u64,
    bad: Option<BadEvent>,
    page: i64,
}

impl Default for ChainWatch {
    fn default() -> Self {
        ChainWatch::with_page(PAGE)
    }
}

impl ChainWatch {
    /// A watch that reads `page` events per statement (tests use small pages).
    pub fn with_page(page: i64) -> Self {
        ChainWatch {
            heads: HashMap::new(),
            seen_up_to: 0,
            events: 0,
            bad: None,
            page: page.max(1),
        }
    }

    /// Forgets everything: the next pass verifies every chain from its first event.
    pub fn reset(&mut self) {
        *self = ChainWatch::with_page(self.page);
    }

    /// Verifies the events appended since the last pass; the report covers every event verified
    /// since the last reset. A bad event stays reported until a reset.
    pub async fn verify_new(&mut self, pool: &PgPool) -> Result<VerifyReport, sqlx::Error> {
        let started = Instant::now();
        if self.bad.is_none() {
            self.pass(pool).await?;
        }
        let elapsed = started.elapsed();
        Ok(VerifyReport {
            ok: self.bad.is_none(),
            chains: u64::try_from(self.heads.len()).unwrap_or(u64::MAX),
            events: self.events,
            first_bad_event: self.bad.clone(),
            // The checkpoint is checked by full verifications, not by this incremental watch.
            checkpoint: None,
            truncation_detectable: false,
            warning: Some(
                "an incremental check: it follows the chains, the checkpoint is left to full \
                 verifications"
                    .to_owned(),
            ),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            events_per_second: (self.events as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
        })
    }

    async fn pass(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        // chain id → (its head before this pass, the highest seq seen past a gap)
        let mut late: Late = HashMap::new();
        loop {
            let started = Instant::now();
            let rows = chain_events::page_after_id(pool, self.seen_up_to, self.page).await?;
            let last_page = i64::try_from(rows.len()).unwrap_or(i64::MAX) < self.page;
            // Hashing a page is milliseconds of CPU (~1.8 µs an event): done on a blocking
            // thread, not on an async worker (a replica beside its Postgres has one), where the
            // calls in flight would wait behind it. The watch goes with it: should that thread
            // panic, `self` is left a new watch, and the next pass verifies every chain afresh.
            let mut watch = std::mem::take(self);
            let (watch, pending, ok) = tokio::task::spawn_blocking(move || {
                let ok = watch.accept_page(rows, &mut late);
                (watch, late, ok)
            })
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
            *self = watch;
            late = pending;
            if !ok || last_page {
                break;
            }
            tokio::time::sleep(started.elapsed() * PACE).await;
        }
        for (chain, (after, until)) in late {
            if self.bad.is_some() {
                break;
            }
            self.fill_gap(pool, &chain, after, until).await?;
        }
        Ok(())
    }

    /// Checks a page of events in id order, noting the chains with a gap in `late`; `false`
    /// once a bad event is found.
    fn accept_page(&mut self, rows: Vec<EventRow>, late: &mut Late) -> bool {
        for row in rows {
            self.seen_up_to = self.seen_up_to.max(row.id);
            let head = self.head(&row.chain_id);
            if row.seq > head + 1 {
                // Events of this chain that committed after an earlier pass had moved on.
                late.entry(row.chain_id.clone())
                    .and_modify(|(_, until)| *until = (*until).max(row.seq))
                    .or_insert((head, row.seq));
            }
            if !self.accept(row) {
                return false;
            }
        }
        true
    }

    fn head(&self, chain: &str) -> i64 {
        self.heads.get(chain).map_or(0, |(seq, _)| *seq)
    }

    /// Checks `row` against its chain's head and advances the head; `false` once a bad event is
    /// found. Events at or below the head were verified before. Events past a gap are left for
    /// [`Self::fill_gap`].
    fn accept(&mut self, row: EventRow) -> bool {
        let (seq, hash) = self
            .heads
            .get(&row.chain_id)
            .cloned()
            .unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
        if row.seq <= seq || row.seq > seq + 1 {
            return true;
        }
        if let Some(problem) = check(&row.view(), seq, &hash) {
            self.bad = Some(BadEvent {
                id: row.id,
                chain_id: row.chain_id,
                seq: row.seq,
                problem,
            });
            return false;
        }
        self.events += 1;
        self.heads.insert(row.chain_id, (row.seq, row.event_hash));
        true
    }

    /// Verifies a chain from its head up to and including `until`; a seq that is really
    /// missing is reported as the gap it is.
    async fn fill_gap(
        &mut self,
        pool: &PgPool,
        chain: &str,
        after: i64,
        until: i64,
    ) -> Result<(), sqlx::Error> {
        let rows = chain_events::chain_range(pool, chain, after, until).await?;
        for row in rows {
            let head = self.head(chain);
            let (id, row_seq) = (row.id, row.seq);
            if row_seq > head + 1 {
                self.bad = Some(BadEvent {
                    id,
                    chain_id: chain.to_owned(),
                    seq: row_seq,
                    problem: format!(
                        "sequence gap: expected seq {} after {head}, found {row_seq}",
                        head + 1
                    ),
                });
                return Ok(());
            }
            if !self.accept(row) {
                return Ok(());
            }
        }
        Ok(())
    }
}
