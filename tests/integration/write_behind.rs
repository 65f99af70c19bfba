//! Write-behind (`PUT /api/cache/behind/...`, `POST /api/cache/drain`, `GET /api/cache/queue`)
//! through the built components into real Redis, delivering to a local origin stand-in that
//! records every delivery and can be told to fail, refuse or never answer. Each scenario
//! checks that nothing acknowledged is lost, that each path's writes reach the origin in the
//! order they were made, and that duplicates are only those docs/write-behind.md allows: a
//! write is delivered again only after a delivery the drain could not confirm, with the same
//! `Idempotency-Key`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use spin_test_host::redis;
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{assert_error, builder};

const WRITE_TOKEN: &str = "write-behind-token-0123456789abcdef";
const DRAIN_TOKEN: &str = "drain-token-0123456789abcdef-012345";

// ---------------------------------------------------------------------------------------
// The origin stand-in.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// 200 to every write.
    Up,
    /// 503 to every write: nothing applied.
    Down,
    /// Applies the write, then never answers (the drain cannot tell it was applied).
    ApplyAndHang,
}

#[derive(Debug, Clone)]
struct Delivery {
    target: String,
    key: String,
    body: String,
    /// Whether the origin applied it (answered 2xx, or applied and hung).
    applied: bool,
}

#[derive(Clone)]
struct Origin {
    port: u16,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Paths answered with this status whatever the behaviour.
    refuse: Arc<Mutex<HashMap<String, u16>>>,
    /// Connections left unanswered, kept open.
    hung: Arc<Mutex<Vec<TcpStream>>>,
}

impl Origin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Self {
            port: listener.local_addr().unwrap().port(),
            deliveries: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Up)),
            refuse: Arc::default(),
            hung: Arc::default(),
        };
        let o = origin.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(o.clone().serve(socket));
            }
        });
        origin
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    async fn serve(self, mut socket: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let target = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        for line in lines {
            if let Some((n, v)) = line.split_once(':') {
                headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < end + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[end..end + length]).into_owned();
        let refused = self.refuse.lock().unwrap().get(&target).copied();
        let behaviour = *self.behaviour.lock().unwrap();
        let status = match (refused, behaviour) {
            (Some(status), _) => status,
            (None, Behaviour::Up) => 200,
            (None, Behaviour::Down) => 503,
            (None, Behaviour::ApplyAndHang) => 0,
        };
        let key = headers.get("idempotency-key").cloned().unwrap_or_default();
        let applied = status == 0 || (200..300).contains(&status);
        self.deliveries.lock().unwrap().push(Delivery { target, key, body, applied });
        if status == 0 {
            self.hung.lock().unwrap().push(socket);
            return;
        }
        let reply =
            format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        let _ = socket.write_all(reply.as_bytes()).await;
    }
}

// ---------------------------------------------------------------------------------------
// The app and its routes.

fn app(redis: &RedisServer, origin: &Origin, extra: &[(&str, &str)]) -> TestApp {
    let mut b = builder(redis)
        .variable("origin_url", origin.url())
        .variable("cache_path_prefixes", "/items/")
        .variable("cache_write_token", WRITE_TOKEN)
        .variable("cache_drain_token", DRAIN_TOKEN)
        .variable("cache_key_buckets", "4")
        // Retries at once: these tests drain in a loop, and wait on nothing but the queue.
        .variable("cache_write_behind_backoff_ms", "0")
        .variable("cache_write_behind_max_attempts", "1000");
    for (name, value) in extra {
        b = b.variable(name, *value);
    }
    b.load().unwrap()
}

async fn write(app: &TestApp, path: &str, body: &str) -> TestResponse {
    app.request(http::Method::PUT, &format!("/api/cache/behind{path}"))
        .header("authorization", &format!("Bearer {WRITE_TOKEN}"))
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
}

/// A write the app acknowledged: (path, body, idempotency key).
type Acked = (String, String, String);

async fn write_ok(app: &TestApp, path: &str, body: &str) -> Acked {
    let res = write(app, path, body).await;
    assert_eq!(res.status, 202, "{} {}", res.text(), res.logs);
    let key = res.json()["idempotency_key"].as_str().unwrap().to_owned();
    assert_eq!(res.header("idempotency-key"), Some(key.as_str()));
    (path.to_owned(), body.to_owned(), key)
}

async fn drain(app: &TestApp) -> Value {
    let res = app
        .post("/api/cache/drain")
        .header("authorization", &format!("Bearer {DRAIN_TOKEN}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    res.json()
}

async fn queue(app: &TestApp) -> Value {
    let res = app
        .get("/api/cache/queue")
        .header("authorization", &format!("Bearer {DRAIN_TOKEN}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    res.json()
}

/// Drains until the queue is empty; a bounded number of calls, never a time limit.
async fn drain_until_empty(app: &TestApp) {
    for _ in 0..500 {
        drain(app).await;
        if queue(app).await["queued"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the queue never emptied: {}", queue(app).await);
}

/// Nothing acknowledged was lost, each path's writes were applied in the order they were
/// made, and every write was applied exactly once per key (`max_applied` allows a key more
/// applications when a drain could not confirm one).
fn assert_delivered(origin: &Origin, acked: &[Acked], max_applied: usize) {
    let deliveries = origin.deliveries();
    let mut applied: HashMap<&str, usize> = HashMap::new();
    for d in deliveries.iter().filter(|d| d.applied) {
        *applied.entry(d.key.as_str()).or_default() += 1;
    }
    for (path, body, key) in acked {
        let n = applied.get(key.as_str()).copied().unwrap_or(0);
        assert!(n >= 1, "acknowledged write {path}={body} never reached the origin");
        assert!(n <= max_applied, "{path}={body} applied {n} times: {deliveries:#?}");
        // Every delivery of a key carries the same write.
        for d in deliveries.iter().filter(|d| d.key == *key) {
            assert_eq!((&d.target, &d.body), (path, body), "key {key} reused");
        }
    }
    // Per path, the first application of each write follows the order of the writes.
    let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for d in deliveries.iter().filter(|d| d.applied) {
        if seen.insert(d.key.as_str()) {
            by_path.entry(d.target.as_str()).or_default().push(d.body.as_str());
        }
    }
    for (path, bodies) in &by_path {
        let written: Vec<&str> =
            acked.iter().filter(|(p, _, _)| p == path).map(|(_, b, _)| b.as_str()).collect();
        assert_eq!(bodies, &written, "{path}: applied out of order");
    }
    let unknown = deliveries.iter().filter(|d| !acked.iter().any(|(_, _, k)| *k == d.key)).count();
    assert_eq!(unknown, 0, "deliveries of writes nobody made: {deliveries:#?}");
}

async fn read(app: &TestApp, path: &str) -> TestResponse {
    app.get(&format!("/api/cache/proxy{path}")).send().await
}

// ---------------------------------------------------------------------------------------

/// The origin is down for a while: writes keep being acknowledged and readable, the queue
/// grows, and once the origin is back the drain delivers every one, in order per path.
#[tokio::test(flavor = "multi_thread")]
async fn origin_down_then_back() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(&redis, &origin, &[]);
    origin.set(Behaviour::Down);
    let mut acked = Vec::new();
    for round in 0..4 {
        for path in ["/items/a", "/items/b", "/items/c"] {
            acked.push(write_ok(&app, path, &format!("{path} v{round}")).await);
        }
    }
    // Read-your-writes through the cache while the origin is down.
    let res = read(&app, "/items/b").await;
    assert_eq!((res.status, res.text().as_str()), (200, "/items/b v3"), "{}", res.logs);
    assert_eq!(res.header("x-cache"), Some("HIT"));
    for _ in 0..3 {
        let out = drain(&app).await;
        assert_eq!(out["delivered"], 0, "{out}");
        assert!(out["failed"].as_u64().unwrap() >= 1, "{out}");
    }
    let q = queue(&app).await;
    assert_eq!((q["queued"].as_i64(), q["dead_letters"].as_i64()), (Some(12), Some(0)), "{q}");
    assert!(q["pending"].as_i64().unwrap() >= 1, "{q}");
    assert!(origin.deliveries().iter().all(|d| !d.applied));

    origin.set(Behaviour::Up);
    drain_until_empty(&app).await;
    assert_delivered(&origin, &acked, 1);
    let q = queue(&app).await;
    assert_eq!((q["queued"].as_i64(), q["pending"].as_i64()), (Some(0), Some(0)), "{q}");
}

/// The origin applies a write but the drain never learns it (no answer within the origin
/// timeout: from the queue's side the same as a drain that died before XACK). The entry
/// stays pending and the next drain delivers it again, with the same Idempotency-Key; no
/// other write is repeated.
#[tokio::test(flavor = "multi_thread")]
async fn unconfirmed_delivery_is_redelivered_with_the_same_key() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app =
        app(&redis, &origin, &[("cache_key_buckets", "1"), ("cache_origin_timeout_ms", "1000")]);
    let mut acked = vec![write_ok(&app, "/items/x", "x1").await];
    origin.set(Behaviour::ApplyAndHang);
    let out = drain(&app).await;
    assert_eq!((out["delivered"].as_u64(), out["failed"].as_u64()), (Some(0), Some(1)), "{out}");
    acked.push(write_ok(&app, "/items/x", "x2").await);
    acked.push(write_ok(&app, "/items/y", "y1").await);
    assert_eq!(queue(&app).await["pending"], 1);

    origin.set(Behaviour::Up);
    drain_until_empty(&app).await;
    let d = origin.deliveries();
    let x1: Vec<&Delivery> = d.iter().filter(|d| d.key == acked[0].2).collect();
    assert_eq!(x1.len(), 2, "{d:#?}");
    assert!(x1.iter().all(|d| d.applied && d.body == "x1"));
    assert_delivered(&origin, &acked, 2);
    // Only the unconfirmed write came twice.
    assert_eq!(d.len(), 4, "{d:#?}");
}

/// Drains called at once (several schedulers, or a slow run overlapping the next) share the
/// buckets: no write is delivered twice, none is lost, order per path holds.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_drains_deliver_each_write_once() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(&redis, &origin, &[("cache_drain_max_entries", "3")]);
    let mut acked = Vec::new();
    for round in 0..5 {
        for p in 0..8 {
            let path = format!("/items/p{p}");
            acked.push(write_ok(&app, &path, &format!("{path} v{round}")).await);
        }
    }
    let worker = || async {
        let mut busy = 0;
        for _ in 0..500 {
            let out = drain(&app).await;
            busy += out["busy_buckets"].as_u64().unwrap();
            if queue(&app).await["queued"] == 0 {
                return busy;
            }
        }
        panic!("the queue never emptied");
    };
    let (a, b, c, d) = tokio::join!(worker(), worker(), worker(), worker());
    eprintln!("buckets found busy by a concurrent drain: {}", a + b + c + d);
    assert_delivered(&origin, &acked, 1);
    assert_eq!(origin.deliveries().len(), acked.len(), "a write was delivered twice");
}

/// Redis killed (SIGKILL) and restarted with its append-only file (`appendfsync always`):
/// the queue, its pending entry and the cached values are all there, acknowledged
/// deliveries are not repeated, and the rest is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn the_queue_survives_a_redis_restart() {
    let mut redis = RedisServer::persistent();
    let origin = Origin::start().await;
    let app = app(&redis, &origin, &[("cache_drain_max_entries", "3")]);
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(write_ok(&app, &format!("/items/r{}", i % 4), &format!("r{i}")).await);
    }
    let out = drain(&app).await;
    let delivered = out["delivered"].as_u64().unwrap();
    assert!(delivered >= 1, "{out}");
    origin.set(Behaviour::Down);
    drain(&app).await;
    let before = queue(&app).await;
    assert_eq!(before["queued"].as_u64(), Some(10 - delivered), "{before}");

    redis.stop();
    redis.start();
    let after = queue(&app).await;
    assert_eq!(after, before, "the queue changed across the restart");
    let res = read(&app, "/items/r1").await;
    assert_eq!((res.status, res.text().as_str()), (200, "r9"), "{}", res.logs);

    origin.set(Behaviour::Up);
    drain_until_empty(&app).await;
    assert_delivered(&origin, &acked, 1);
}

/// A full queue refuses the write with 503 and Retry-After and writes nothing (neither the
/// entry nor the queue); a write the origin refuses for good (4xx) and one that fails every
/// attempt go to the dead-letter stream and stop blocking the writes behind them.
#[tokio::test(flavor = "multi_thread")]
async fn full_queue_refuses_and_hopeless_writes_are_dead_lettered() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(
        &redis,
        &origin,
        &[
            ("cache_key_buckets", "1"),
            ("cache_write_behind_max_queue", "3"),
            ("cache_write_behind_max_attempts", "2"),
        ],
    );
    let acked = [
        write_ok(&app, "/items/bad", "refused").await,
        write_ok(&app, "/items/flaky", "fails").await,
        write_ok(&app, "/items/ok", "one").await,
    ];
    let res = write(&app, "/items/ok", "two").await;
    assert_error(&res, 503, "write_queue_full");
    assert!(res.header("retry-after").is_some());
    assert_eq!(read(&app, "/items/ok").await.text(), "one", "a refused write was cached");
    let mut conn = redis.client().await;
    let len: usize =
        redis::cmd("XLEN").arg("srp:cache:{b0}:wb:queue").query_async(&mut conn).await.unwrap();
    assert_eq!(len, 3);

    origin.refuse.lock().unwrap().insert("/items/bad".into(), 422);
    origin.refuse.lock().unwrap().insert("/items/flaky".into(), 500);
    drain_until_empty(&app).await;
    let q = queue(&app).await;
    assert_eq!(q["dead_letters"], 2, "{q}");
    let dead: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("srp:cache:{b0}:wb:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let field = |i: usize, f: &str| -> String {
        let fields = &dead[i].1;
        let at = fields.iter().step_by(2).position(|n| n == f).unwrap();
        fields[2 * at + 1].clone()
    };
    assert_eq!(
        (field(0, "target"), field(0, "attempts"), field(0, "error")),
        ("/items/bad".into(), "1".into(), "status 422".into())
    );
    assert_eq!(
        (field(1, "target"), field(1, "attempts"), field(1, "error")),
        ("/items/flaky".into(), "2".into(), "status 500".into())
    );
    assert_eq!(field(1, "key"), acked[1].2);
    // The write behind them was delivered; room again.
    let delivered: Vec<Delivery> = origin.deliveries().into_iter().filter(|d| d.applied).collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        (delivered[0].body.as_str(), delivered[0].key.as_str()),
        ("one", acked[2].2.as_str())
    );
    write_ok(&app, "/items/ok", "two").await;
}

/// The routes are off without their tokens, and refuse a wrong one.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_guard_the_routes() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(&redis, &origin, &[]);
    let res = app
        .request(http::Method::PUT, "/api/cache/behind/items/a")
        .header("authorization", &format!("Bearer {DRAIN_TOKEN}"))
        .body("x")
        .send()
        .await;
    assert_error(&res, 401, "unauthorized");
    let res = app.post("/api/cache/drain").send().await;
    assert_error(&res, 401, "unauthorized");
    let res = write(&app, "/items/a", "x").await;
    assert_eq!(res.status, 202);
    let res = app
        .request(http::Method::PUT, "/api/cache/behind/other/a")
        .header("authorization", &format!("Bearer {WRITE_TOKEN}"))
        .body("x")
        .send()
        .await;
    assert_error(&res, 404, "not_proxied");
    let res = app
        .request(http::Method::PUT, "/api/cache/behind/items/a")
        .header("authorization", &format!("Bearer {WRITE_TOKEN}"))
        .header("idempotency-key", "has space")
        .body("x")
        .send()
        .await;
    assert_error(&res, 400, "invalid_idempotency_key");

    let off = builder(&redis).variable("origin_url", origin.url()).load().unwrap();
    let res = off
        .request(http::Method::PUT, "/api/cache/behind/profiles/1")
        .header("authorization", &format!("Bearer {WRITE_TOKEN}"))
        .body("x")
        .send()
        .await;
    assert_error(&res, 403, "write_behind_disabled");
    let res = off
        .post("/api/cache/drain")
        .header("authorization", &format!("Bearer {DRAIN_TOKEN}"))
        .send()
        .await;
    assert_error(&res, 403, "drain_disabled");
}

/// A client's own Idempotency-Key is what the origin sees, so a client retrying a write
/// whose answer it lost is applied once by an origin that honours the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_key_is_passed_to_the_origin() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(&redis, &origin, &[]);
    for _ in 0..2 {
        let res = app
            .request(http::Method::PUT, "/api/cache/behind/items/k")
            .header("authorization", &format!("Bearer {WRITE_TOKEN}"))
            .header("idempotency-key", "client-key-1")
            .body("k")
            .send()
            .await;
        assert_eq!(res.status, 202, "{}", res.text());
        assert_eq!(res.json()["idempotency_key"], "client-key-1");
    }
    drain_until_empty(&app).await;
    let d = origin.deliveries();
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|d| d.key == "client-key-1" && d.body == "k"));
}
