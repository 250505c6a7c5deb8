//! A loopback TCP proxy between AEX and the real Postgres that loses a COMMIT's answer: it
//! forwards both ways, and once armed it lets the next transaction that ran a statement
//! containing a given text send its COMMIT to the server, keeps the server's answer from the
//! client, and then closes both sockets. The server committed (or rolled back); the client only
//! sees its connection die — an acknowledgement lost in the network.
//!
//! It reads just enough of the client's side of the protocol to see COMMIT whichever way it is
//! sent: a simple query (sqlx's transactions), or a Bind of a statement prepared as `COMMIT`
//! (tokio-postgres pipelines a prepared COMMIT, so its text crosses the wire only once per
//! connection, in its Parse).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Protocol codes of the untyped messages a connection may start with before its startup.
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

#[derive(Default)]
struct Shared {
    /// The text a transaction must have run to lose its COMMIT's answer, and how many more may.
    armed: Mutex<Option<(String, usize)>>,
    /// Connections dropped after their COMMIT was forwarded, and how many of those the server
    /// answered `COMMIT` (committed) rather than `ROLLBACK`.
    dropped: AtomicUsize,
    committed: AtomicUsize,
}

impl Shared {
    /// Whether a COMMIT ending a transaction that ran `ran` loses its answer (taking one arming).
    fn take_arming(&self, ran: &str) -> bool {
        let mut armed = self.armed.lock().unwrap();
        match armed.as_mut() {
            Some((needle, n)) if *n > 0 && ran.contains(needle.as_str()) => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

pub struct CommitProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for CommitProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl CommitProxy {
    /// A proxy to the Postgres at `upstream`, on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> CommitProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        tokio::spawn({
            let (shared, stop) = (Arc::clone(&shared), stop.clone());
            async move {
                loop {
                    let client = tokio::select! {
                        () = stop.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((client, _)) => client,
                            Err(_) => continue,
                        },
                    };
                    tokio::spawn(relay(client, upstream, Arc::clone(&shared), stop.clone()));
                }
            }
        });
        CommitProxy { addr, shared, stop }
    }

    /// The next `times` transactions that ran a statement containing `needle` lose their
    /// COMMIT's answer.
    pub fn arm(&self, needle: &str, times: usize) {
        *self.shared.armed.lock().unwrap() = Some((needle.to_owned(), times));
    }

    /// Armings not used yet.
    pub fn armed(&self) -> usize {
        self.shared
            .armed
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |a| a.1)
    }

    /// Connections dropped after their COMMIT reached the server.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Of those, the ones the server committed.
    pub fn committed(&self) -> usize {
        self.shared.committed.load(Ordering::SeqCst)
    }
}

/// One connection's two directions; `lost` set once its COMMIT's answer is to be kept back.
struct Connection {
    lost: std::sync::atomic::AtomicBool,
    closed: CancellationToken,
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let conn = Arc::new(Connection {
        lost: false.into(),
        closed: stop.child_token(),
    });
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = client_to_server(client_read, server_write, Arc::clone(&conn), shared.clone());
    let down = server_to_client(server_read, client_write, Arc::clone(&conn), shared);
    // Both halves of both sockets are dropped when either direction ends: both are closed.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    conn.closed.cancel();
}

/// What the client's side of one connection has said so far.
#[derive(Default)]
struct ClientSide {
    /// Past the untyped messages a connection starts with (SSL request, startup).
    started: bool,
    /// Prepared statements' text, by name.
    statements: HashMap<String, String>,
    /// The statements run since the last COMMIT or ROLLBACK.
    ran: String,
}

async fn client_to_server(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    conn: Arc<Connection>,
    shared: Arc<Shared>,
) {
    let mut side = ClientSide::default();
    let mut buf = Vec::new();
    loop {
        let read = tokio::select! {
            () = conn.closed.cancelled() => return,
            read = from.read_buf(&mut buf) => read,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
        let mut whole = 0;
        while let Some(len) = side.next_len(&buf[whole..]) {
            let message = &buf[whole..whole + len];
            if side.commits_lost(message, &shared) {
                // Before the COMMIT is written: its answer cannot reach the client now.
                conn.lost.store(true, Ordering::SeqCst);
            }
            whole += len;
        }
        if to.write_all(&buf[..whole]).await.is_err() {
            return;
        }
        buf.drain(..whole);
    }
}

impl ClientSide {
    /// The length of the complete message at the start of `buf`, if it is all there.
    fn next_len(&self, buf: &[u8]) -> Option<usize> {
        let (at, typed) = if self.started { (1, 1) } else { (0, 0) };
        let len = u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize + typed;
        (buf.len() >= len).then_some(len)
    }

    /// Reads one message; whether it is the COMMIT of an armed transaction.
    fn commits_lost(&mut self, message: &[u8], shared: &Shared) -> bool {
        if !self.started {
            let code = u32::from_be_bytes(message[4..8].try_into().unwrap());
            self.started = code != SSL_REQUEST && code != GSS_REQUEST;
            return false;
        }
        let mut fields = message[5..].split(|b| *b == 0).map(String::from_utf8_lossy);
        let query = match message[0] {
            b'P' => {
                let name = fields.next().unwrap_or_default().into_owned();
                let text = fields.next().unwrap_or_default().into_owned();
                self.statements.insert(name, text);
                return false;
            }
            b'B' => {
                let _portal = fields.next();
                let name = fields.next().unwrap_or_default();
                self.statements
                    .get(name.as_ref())
                    .cloned()
                    .unwrap_or_default()
            }
            b'Q' => fields.next().unwrap_or_default().into_owned(),
            _ => return false,
        };
        let bare = query.trim().trim_end_matches(';').to_ascii_uppercase();
        if bare != "COMMIT" && bare != "ROLLBACK" && bare != "END" {
            self.ran.push_str(&query);
            self.ran.push('\n');
            return false;
        }
        let ran = std::mem::take(&mut self.ran);
        bare != "ROLLBACK" && shared.take_arming(&ran)
    }
}

async fn server_to_client(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    conn: Arc<Connection>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut kept_back = Vec::new();
    loop {
        let read = tokio::select! {
            () = conn.closed.cancelled() => return,
            read = tokio::time::timeout(Duration::from_secs(5), from.read(&mut buf)) => read,
        };
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            // The server closed, or it never answered the lost COMMIT.
            Ok(_) => return,
            Err(_) if conn.lost.load(Ordering::SeqCst) => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Err(_) => continue,
        };
        if !conn.lost.load(Ordering::SeqCst) {
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
            continue;
        }
        // The answers to the lost transaction's last round trip: kept back until the server's
        // answer to COMMIT (its CommandComplete tag) shows what it did.
        kept_back.extend_from_slice(&buf[..n]);
        let committed = contains(&kept_back, b"COMMIT\0");
        if committed || contains(&kept_back, b"ROLLBACK\0") {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            if committed {
                shared.committed.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
