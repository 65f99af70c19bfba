//! Write-behind under the real Spin (docs/write-behind.md): a write acknowledged and served
//! from the cache, a drain killed with the whole Spin process while the origin holds its
//! delivery (the origin has the write, the queue never got the XACK), Spin started again, and
//! the next drain delivering the write again with the same Idempotency-Key, then the write
//! queued behind it: nothing lost, the one duplicate documented, order kept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use spin_test_host::real_spin::{self, RealSpin};
use spin_test_host::redis_server::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{check_response, spin_or_skip, start_on, Mode, AZURE_STYLE_KEY, TOKEN};

/// (target, idempotency key, body) of each delivery the origin received.
type Deliveries = Arc<Mutex<Vec<(String, String, String)>>>;

/// An origin that records each delivery and holds the first one forever (no answer); later
/// ones get 200.
async fn origin() -> (u16, Deliveries) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Deliveries = Arc::default();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (seen, held) = (s.clone(), held.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let field = |name: &str| {
                            head.lines()
                                .filter_map(|l| l.split_once(':'))
                                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                                .map(|(_, v)| v.trim().to_owned())
                                .unwrap_or_default()
                        };
                        let length: usize = field("content-length").parse().unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                            let first = {
                                let mut seen = seen.lock().unwrap();
                                seen.push((target, field("idempotency-key"), body.into_owned()));
                                seen.len() == 1
                            };
                            if first {
                                held.lock().unwrap().push(socket);
                            } else {
                                let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                                let _ = socket.write_all(ok.as_bytes()).await;
                            }
                            return;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, seen)
}

fn authed(
    method: Method,
    path: &str,
    body: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let auth = format!("Bearer {TOKEN}");
    real_spin::request(
        method,
        path,
        &[("authorization", auth.as_str()), ("content-type", "text/plain")],
        body.to_owned(),
    )
}

async fn send(
    spin: &RealSpin,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> real_spin::SpinResponse {
    let sent = crate::support::sent(&request).await;
    let res = spin
        .send_within(Duration::from_secs(30), request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", spin.output()));
    check_response(&sent, &res);
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_killed_before_its_ack_is_redelivered_with_the_same_key() {
    let Some(spin_bin) = spin_or_skip(
        "write_behind::a_drain_killed_before_its_ack_is_redelivered_with_the_same_key",
    ) else {
        return;
    };
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let (port, seen) = origin().await;
    let origin_url = format!("http://127.0.0.1:{port}");
    let variables = [
        ("origin_url", origin_url.as_str()),
        ("cache_path_prefixes", "/items/"),
        ("cache_write_token", TOKEN),
        ("cache_drain_token", TOKEN),
        ("cache_key_buckets", "1"),
        ("cache_write_behind_backoff_ms", "0"),
        // The held delivery outlasts the test's wait for it: only the kill ends that drain.
        ("cache_origin_timeout_ms", "10000"),
        ("cache_drain_deadline_ms", "11000"),
    ];
    let mut spin = start_on(&spin_bin, &redis, Mode::Outbound, &variables).await;

    let res = send(&spin, authed(Method::PUT, "/api/cache/behind/items/a", "first")).await;
    assert_eq!(res.status, 202, "{}", res.text());
    let key = res.json()["idempotency_key"].as_str().unwrap().to_owned();
    let res = send(&spin, authed(Method::PUT, "/api/cache/behind/items/a", "second")).await;
    assert_eq!(res.status, 202, "{}", res.text());
    let second_key = res.json()["idempotency_key"].as_str().unwrap().to_owned();
    let res =
        send(&spin, real_spin::request(Method::GET, "/api/cache/proxy/items/a", &[], "")).await;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "second"));
    assert_eq!(res.header("x-cache"), Some("HIT"));

    // A drain, left waiting on the origin; Spin killed (SIGKILL, the whole process group) as
    // soon as the origin has the write.
    let mut conn = spin.connect().await.unwrap();
    let drain =
        tokio::spawn(async move { conn.send(authed(Method::POST, "/api/cache/drain", "")).await });
    let waited = Instant::now();
    while seen.lock().unwrap().is_empty() {
        assert!(waited.elapsed() < Duration::from_secs(60), "no delivery: {}", spin.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spin.stop();
    assert!(drain.await.unwrap().is_err(), "the killed drain answered");

    // Spin again, same Redis: drains until both writes are delivered. The first calls may find
    // the bucket still leased by the dead drain (busy) until its lease runs out.
    let spin = start_on(&spin_bin, &redis, Mode::Outbound, &variables).await;
    let waited = Instant::now();
    loop {
        let res = send(&spin, authed(Method::POST, "/api/cache/drain", "")).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let queue = send(&spin, authed(Method::GET, "/api/cache/queue", "")).await;
        if queue.json()["queued"] == 0 {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(120), "{}", queue.text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let expected = [
        ("/items/a".to_owned(), key.clone(), "first".to_owned()),
        ("/items/a".to_owned(), key, "first".to_owned()),
        ("/items/a".to_owned(), second_key, "second".to_owned()),
    ];
    assert_eq!(seen, expected);
}
