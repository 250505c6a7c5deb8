//! The one way a test waits for something the server does on its own time (a background
//! settlement, a notification, a sampled gauge): poll for the observable effect, bounded, and
//! fail naming what never came. Never a bare sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for an event before failing: generous, because a loaded 2-core machine
/// running the whole suite can be slow, and a wait whose event comes ends at once anyway.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some` and returns that value; fails the test, naming `what`,
/// once `within` has passed without it.
///
/// Checks again after a tenth of the time waited so far (2 ms at first, 50 ms at most): early
/// events are seen promptly, so a time measured around the wait is within about 10% of when the
/// effect became visible, and a long wait does not load the machine.
pub async fn poll<T, F: Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        let waited = started.elapsed();
        assert!(
            waited < within,
            "timed out after {waited:?} waiting for {what}"
        );
        let pause = (waited / 10).clamp(Duration::from_millis(2), Duration::from_millis(50));
        tokio::time::sleep(pause).await;
    }
}
