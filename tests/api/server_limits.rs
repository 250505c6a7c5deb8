//! The server limits of SPEC §3, tried as a hostile client would: headers trickled byte by
//! byte, sockets opened and left idle, a body that never finishes, a streaming client that
//! never reads. Each must be cut within its timeout while `/health` keeps answering, and a cut
//! stream is settled for what it delivered with nothing left held. (The descriptor-starvation
//! attack on a real process is in `processes.rs`.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aex::config::Settings;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{hello, poll, spawn_app_with, TestApp, PATIENCE};

async fn app_with(tweak: impl FnOnce(&mut aex::config::ServerSettings)) -> TestApp {
    spawn_app_with(|s: &mut Settings| tweak(&mut s.server)).await
}

fn addr(app: &TestApp) -> SocketAddr {
    app.server.as_ref().expect("server").addr
}

/// Whether the server has closed `conn` (end of stream or an error), without waiting.
fn is_closed(conn: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match conn.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Reads what the server sends until it closes the connection.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

async fn assert_health(app: &TestApp) {
    let resp = app.get("/health", None).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn headers_trickled_byte_by_byte_are_cut_at_the_header_read_timeout() {
    let app = app_with(|s| {
        s.header_read_timeout_seconds = 1;
        s.idle_timeout_seconds = 600;
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: aex\r\n")
            .await
            .unwrap();
        open.push(conn);
    }
    // A header byte every 100 ms on each: a timeout reset by every read would never fire.
    tokio::time::timeout(PATIENCE, async {
        while !open.is_empty() {
            open.retain(|conn| !is_closed(conn));
            for conn in &mut open {
                let _ = conn.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every slow-header connection is closed (header_read_timeout_seconds = 1)");
    assert_health(&app).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_and_busy_ones_are_not() {
    let app = app_with(|s| {
        s.header_read_timeout_seconds = 600;
        s.idle_timeout_seconds = 1;
    })
    .await;
    // A socket that never sends a byte.
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    // A keep-alive connection after one answered request.
    let mut kept = TcpStream::connect(addr(&app)).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: aex\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut silent).await, "");
    let answered = read_to_close(&mut kept).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.contains("\"status\":\"ok\""), "{answered}");

    // A request that takes longer than the idle timeout is not cut by it.
    app.mock.delay_ms.store(2500, Ordering::SeqCst);
    let agent = app.create_agent("patient", "1.00", json!({})).await;
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_and_changes_nothing() {
    let app = app_with(|s| s.body_read_timeout_seconds = 1).await;
    let agent = app.create_agent("slow-body", "1.00", json!({})).await;
    let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: aex\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{{\"model\"",
        agent.token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(app.count("SELECT count(*) FROM executions").await, 0);
    assert_eq!(app.mock.calls(), 0);
    assert_health(&app).await;
}

#[tokio::test]
async fn a_streaming_client_that_never_reads_is_cut_settled_and_its_upstream_closed() {
    // One connection at a time: `/health` below is answered only once the server has let go
    // of the stalled client's connection, which never reads and never closes.
    // The stream is cut after 1 s without progress; the connection is let go 3 s after the
    // client stopped taking anything.
    let app = app_with(|s| {
        s.stream_write_timeout_seconds = 1;
        s.idle_timeout_seconds = 3;
        s.max_connections = 1;
    })
    .await;
    // The provider sends 40 tokens of content, then holds the stream open with keep-alives.
    app.mock.completion_tokens.store(40, Ordering::SeqCst);
    app.mock.hang_after_content.store(true, Ordering::SeqCst);
    let agent = app.create_agent("never-reads", "1.00", json!({})).await;

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr(&app)).await.unwrap();
    let mut body = hello();
    body["stream"] = json!(true);
    let body = body.to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: aex\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        agent.token,
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    // From here on the client reads nothing.

    let state: String = poll("the stalled stream to settle", PATIENCE, || async {
        sqlx::query_scalar::<_, String>("SELECT state FROM executions WHERE agent_id = $1")
            .bind(agent.id)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
            .filter(|s| s == "COMMITTED")
    })
    .await;
    assert_eq!(state, "COMMITTED");
    let commit: Value = app
        .ledger_payloads("usage.commit")
        .await
        .pop()
        .expect("a usage.commit event");
    assert_eq!(commit["stream_end"], "client_stalled", "{commit}");
    assert_eq!(commit["usage"], "estimated", "{commit}");
    // Charged for what was relayed: some output, never more than the hold.
    assert!(
        commit["completion_tokens"].as_u64().unwrap() > 0,
        "{commit}"
    );
    assert!(
        commit["actual_micro_usd"].as_i64().unwrap()
            <= commit["estimate_micro_usd"].as_i64().unwrap(),
        "{commit}"
    );
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(reserved, 0);
    assert!(spent > 0);
    poll("the upstream stream to be dropped", PATIENCE, || async {
        (app.mock.streams_dropped.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    tokio::time::timeout(PATIENCE, assert_health(&app))
        .await
        .expect("the stalled client's connection is let go");
    drop(conn);
    app.assert_books_audit().await;
}
