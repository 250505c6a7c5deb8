//! Serving HTTP/1 connections within the server limits of SPEC §3: at most
//! `server.max_connections` open at once (more wait in the listen queue, open ones are never
//! disturbed), a request's headers within `header_read_timeout_seconds` of its first byte, an
//! idle keep-alive connection (nothing read, nothing written, no request in flight) closed after
//! `idle_timeout_seconds`, and a graceful shutdown that stops accepting, closes idle connections
//! and lets requests in flight finish. A client that stops reading a streamed answer is cut by
//! the stream (`stream_write_timeout_seconds`, `gateway::stream`); its connection then idles
//! out here.
//!
//! `axum::serve` has none of the timeouts; hyper's own header timeout also runs while a
//! keep-alive connection waits for its next request, so it cannot tell a slow request from an
//! idle connection. Here each connection's phase (idle, reading a head, busy) is tracked from
//! its reads and its requests, and a watchdog closes it when its phase has lasted too long.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerSettings;

/// The connection limits, read once from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl From<&ServerSettings> for ConnectionLimits {
    fn from(s: &ServerSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(s.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(s.idle_timeout_seconds),
            max_connections: s.max_connections,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the open connections
/// to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        // A slot first, then the connection: past the cap, connections wait in the kernel's
        // listen queue and cost this process nothing (no descriptor, no task).
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = signal_tx.closed() => break,
        };
        let Ok(slot) = slot else { break };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = signal_tx.closed() => break,
        };
        // Server-sent events are small writes: without TCP_NODELAY, Nagle's algorithm holds
        // one back until the client acknowledges the last, adding a delayed-ACK wait.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let signal = signal_tx.clone();
        connections.spawn(async move {
            serve_connection(tcp, app, limits, signal).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// An accept error: a connection reset before it was accepted is nothing; running out of
/// descriptors or memory is waited out briefly rather than spun on.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    signal: watch::Sender<()>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::begin(&activity);
            let app = app.clone();
            async move {
                let response = match app.oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let shutdown = signal.closed();
    tokio::pin!(shutdown);
    let mut shutting_down = false;
    loop {
        // Until the phase's deadline; a busy connection has none and waits for its phase to
        // change.
        let wake = activity
            .deadline(&limits)
            .map_or_else(|| Instant::now() + FAR_FUTURE, |(at, _)| at);
        tokio::select! {
            () = activity.changed.notified() => {}
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some((at, phase)) = activity.deadline(&limits) {
                    if at <= Instant::now() {
                        // Dropping the connection closes the socket; nothing is in flight.
                        tracing::debug!(phase, "closing a connection past its timeout");
                        return;
                    }
                }
            }
        }
    }
}

/// A wake-up that never comes first: the phase changes before.
const FAR_FUTURE: Duration = Duration::from_secs(86_400);

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in flight and no byte of the next one yet.
    Idle(Instant),
    /// The first bytes of a request have arrived, the head is not complete.
    Head(Instant),
    /// This many requests are being answered (their responses not yet written).
    Busy(usize),
}

#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
    /// Since when the socket has refused every write (the client takes nothing), if it does.
    write_blocked: Mutex<Option<Instant>>,
    /// Woken when the phase changes kind or writes block, so the watchdog takes up the new
    /// deadline.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Idle(Instant::now())),
            write_blocked: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn write_blocked(&self) {
        if let Ok(mut blocked) = self.write_blocked.lock() {
            if blocked.is_none() {
                *blocked = Some(Instant::now());
                self.changed.notify_one();
            }
        }
    }

    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        let Ok(mut phase) = self.phase.lock() else {
            return;
        };
        let before = std::mem::discriminant(&*phase);
        *phase = change(*phase);
        if std::mem::discriminant(&*phase) != before {
            self.changed.notify_one();
        }
    }

    fn bytes_read(&self) {
        self.update(|phase| match phase {
            Phase::Idle(_) => Phase::Head(Instant::now()),
            other => other,
        });
    }

    /// A response still being written after its body ended (hyper queues it) keeps the
    /// connection from idling out while the client takes it; a client that takes nothing is
    /// closed `idle_timeout` after the last byte it took.
    fn bytes_written(&self) {
        if let Ok(mut blocked) = self.write_blocked.lock() {
            *blocked = None;
        }
        self.update(|phase| match phase {
            Phase::Idle(_) => Phase::Idle(Instant::now()),
            other => other,
        });
    }

    /// When the current phase must end, and its name. A request in flight has no deadline of
    /// its own (the body and stream timeouts bound it) unless its client has taken nothing for
    /// `idle_timeout`: a streamed answer is cut and settled before that
    /// (`stream_write_timeout_seconds`), but hyper, unable to write, never finishes it.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, &'static str)> {
        match *self.phase.lock().ok()? {
            Phase::Idle(since) => Some((since + limits.idle_timeout, "idle")),
            Phase::Head(since) => Some((since + limits.header_read_timeout, "header_read")),
            Phase::Busy(_) => {
                let blocked = (*self.write_blocked.lock().ok()?)?;
                Some((blocked + limits.idle_timeout, "write_stalled"))
            }
        }
    }
}

/// One request being answered; dropped when its response body is done (or abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Busy {
        activity.update(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// A response body that keeps its connection busy until it is written.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl Watched {
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.bytes_written(),
            Poll::Pending => self.activity.write_blocked(),
            _ => {}
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
