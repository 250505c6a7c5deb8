//! Load for fault tests: workers that send keyed chat requests back to back and record how each
//! ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::helpers::hello;

/// How one request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub key: String,
    /// Which server (by the caller's numbering) it was sent to.
    pub server: usize,
    /// 0 when no answer came (the connection failed).
    pub status: u16,
    /// The OpenAI error code of an error answer.
    pub code: Option<String>,
    pub at: Instant,
}

/// Workers sending requests until stopped.
#[derive(Default)]
pub struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// A worker that sends keyed requests to `base` back to back; it gives up when the server
    /// stops answering at all (a killed process).
    pub fn add_worker(&mut self, base: &str, server: usize, token: &str, name: &str) {
        let (base, token, name) = (base.to_owned(), token.to_owned(), name.to_owned());
        let (stop, outcomes) = (Arc::clone(&self.stop), Arc::clone(&self.outcomes));
        self.workers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let key = format!("{name}-{n}");
                let sent = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", &key)
                    .json(&hello())
                    .send()
                    .await;
                let (status, code) = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        let code = body["error"]["code"].as_str().map(str::to_owned);
                        (status, code)
                    }
                    Err(_) => (0, None),
                };
                outcomes.lock().unwrap().push(Outcome {
                    key,
                    server,
                    status,
                    code,
                    at: Instant::now(),
                });
                if status == 0 {
                    break;
                }
            }
        }));
    }

    /// How many requests so far ended as `wanted` says.
    pub fn count(&self, wanted: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| wanted(o))
            .count()
    }

    /// Stops the workers, waits for their last requests, and returns every outcome.
    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await.unwrap();
        }
        let outcomes = self.outcomes.lock().unwrap().clone();
        outcomes
    }
}

/// The keys of the requests that ended with `status`.
pub fn keys_with(outcomes: &[Outcome], status: u16) -> std::collections::BTreeSet<String> {
    outcomes
        .iter()
        .filter(|o| o.status == status)
        .map(|o| o.key.clone())
        .collect()
}

/// The keys of every committed execution.
pub async fn committed_keys(pool: &sqlx::PgPool) -> std::collections::BTreeSet<String> {
    sqlx::query_scalar("SELECT execution_key FROM executions WHERE state = 'COMMITTED'")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}
