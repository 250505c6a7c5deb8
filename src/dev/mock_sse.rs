//! Server-sent events as the mock streams them: paced, counted, cut or held open on request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::mock_control::MockControl;

/// `total` tokens spread over `chunks` chunks, as evenly as whole words allow.
pub fn spread(total: u64, chunks: u64) -> Vec<u64> {
    let per = total.div_ceil(chunks);
    let mut left = total;
    (0..chunks)
        .map(|_| {
            let n = per.min(left);
            left -= n;
            n
        })
        .collect()
}

/// Counts a streamed answer whose body was dropped before its end: the connection was closed.
struct DropWatch {
    dropped: Arc<AtomicU64>,
    ended: bool,
}

impl DropWatch {
    fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Streams `events` (the first `content` of them the answer's content) with the configured
/// delay between them; counts what was sent; cuts the connection mid-way when told to; after
/// the content, sends keep-alive comments forever when told to hang.
pub fn sse_response(c: &MockControl, mut events: Vec<String>, content: usize) -> Response {
    let delay = Duration::from_millis(c.chunk_delay_ms.load(Ordering::SeqCst));
    let cut = c.cut_after_chunks.load(Ordering::SeqCst);
    let sent = Arc::clone(&c.chunks_sent);
    let events: Box<dyn Iterator<Item = String> + Send> =
        if c.hang_after_content.load(Ordering::SeqCst) {
            events.truncate(content);
            let keep_alive = format!(": {}\n\n", "x".repeat(16 * 1024));
            Box::new(events.into_iter().chain(std::iter::repeat(keep_alive)))
        } else {
            Box::new(events.into_iter())
        };
    let watch = DropWatch {
        dropped: Arc::clone(&c.streams_dropped),
        ended: false,
    };
    let stream = futures::stream::unfold((events, 0u64, watch), move |(mut it, n, mut watch)| {
        let sent = Arc::clone(&sent);
        async move {
            if cut > 0 && n >= cut {
                watch.ended();
                return Some((
                    Err(std::io::Error::other("mock cut the stream")),
                    (it, n + 1, watch),
                ))
                .filter(|_| n == cut);
            }
            let Some(next) = it.next() else {
                watch.ended();
                return None;
            };
            if n > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            sent.fetch_add(1, Ordering::SeqCst);
            Some((Ok(bytes::Bytes::from(next)), (it, n + 1, watch)))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
