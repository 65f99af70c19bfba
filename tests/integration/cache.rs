//! Cache-aside (`/api/cache/...`) through the built component into real Redis servers (plain
//! and TLS), in front of a real local origin server that counts its hits and can be told to
//! delay, fail or send chosen headers; plus one run through the demo origin component by
//! service chaining.
//!
//! Most tests run twice, with the pooled fast path off (`::outbound`) and on
//! (`::fast_path`): see [`Mode`] and [`in_both_modes!`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{assert_error, builder, in_both_modes, Mode, Monitor, AZURE_STYLE_KEY};

const PURGE_TOKEN: &str = "purge-s3cret-token-0123456789abcdef";

// ---------------------------------------------------------------------------------------
// A local origin: HTTP/1.1 on 127.0.0.1, one response per connection.

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
    /// When set, the body is sent one byte at a time with this pause between bytes.
    trickle: Option<Duration>,
}

/// A request as the origin received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    /// Header lines, names lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
            trickle: None,
        }
    }
    fn trickle_ms(mut self, ms: u64) -> Self {
        self.trickle = Some(Duration::from_millis(ms));
        self
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn delay_ms(mut self, ms: u64) -> Self {
        self.delay = Duration::from_millis(ms);
        self
    }
}

type Handler = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

struct Origin {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Arc<Mutex<Handler>>,
    task: tokio::task::JoinHandle<()>,
}

/// By default: 200 JSON naming the path and how often it was asked for, no Cache-Control.
fn default_reply(target: &str, n: usize) -> Reply {
    Reply::json(200, json!({"target": target, "n": n}))
}

impl Origin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Arc::new(default_reply)));
        let (h, f, r) = (hits.clone(), handler.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (hits, handler, seen) = (h.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let mut lines = text.split("\r\n");
                    let mut request_line = lines.next().unwrap_or("").split_whitespace();
                    let method = request_line.next().unwrap_or("").to_owned();
                    let target = request_line.next().unwrap_or("/").to_owned();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = buf[end..].to_vec();
                    while body.len() < length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&chunk[..n]),
                        }
                    }
                    seen.lock().unwrap().push(Seen {
                        method: method.clone(),
                        target: target.clone(),
                        headers,
                        body,
                    });
                    let n = {
                        let mut hits = hits.lock().unwrap();
                        let n = hits.entry(target.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let reply = {
                        let handler = handler.lock().unwrap().clone();
                        handler(&target, n)
                    };
                    tokio::time::sleep(reply.delay).await;
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (name, value) in &reply.headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = socket.write_all(head.as_bytes()).await;
                    match reply.trickle {
                        None => {
                            let _ = socket.write_all(&reply.body).await;
                        }
                        Some(pause) => {
                            for byte in &reply.body {
                                if socket.write_all(&[*byte]).await.is_err() {
                                    return;
                                }
                                let _ = socket.flush().await;
                                tokio::time::sleep(pause).await;
                            }
                        }
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { port, hits, seen, handler, task }
    }

    /// Every request received so far, in order.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn respond(&self, handler: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    fn hits(&self, target: &str) -> usize {
        self.hits.lock().unwrap().get(target).copied().unwrap_or(0)
    }

    /// Until the origin has received a request for `target`: polled, with a deadline
    /// generous enough for a busy machine, instead of a fixed sleep that may be too short.
    async fn wait_for(&self, target: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.hits(target) == 0 {
            assert!(std::time::Instant::now() < deadline, "the origin never saw {target}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }

    /// Closes the listening socket: connections are refused from now on.
    async fn stop(&self) {
        self.task.abort();
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn app_with(mode: Mode, redis: &RedisServer, origin: &Origin, vars: &[(&str, &str)]) -> TestApp {
    let mut builder = builder(redis)
        .variable("origin_url", origin.url())
        .variable("cache_purge_token", PURGE_TOKEN)
        .variable("cache_ttl_jitter", "0")
        // Every path, and every fast-path hit counted: most tests count exactly.
        .variable("cache_path_prefixes", "/")
        .variable("cache_hit_sampling", "1")
        .variable("redis_fast_path", mode.variable());
    for (name, value) in vars {
        builder = builder.variable(name, *value);
    }
    builder.load().expect("app loads")
}

fn app(mode: Mode, redis: &RedisServer, origin: &Origin) -> TestApp {
    app_with(mode, redis, origin, &[])
}

/// An entry value as the store script writes it (see src/cache/entry.rs), read with the
/// test's own client.
#[derive(Debug)]
struct StoredEntry {
    status: u16,
    stored: i64,
    soft: i64,
    cost: i64,
    swr_until: i64,
    sie_until: i64,
    headers: Vec<(String, String)>,
    content_type: String,
    body: Vec<u8>,
}

fn parse_entry(value: &[u8]) -> StoredEntry {
    let mut rest = value;
    let mut next = || {
        let i = rest.iter().position(|&b| b == b'\n').expect("a header line");
        let line = String::from_utf8(rest[..i].to_vec()).unwrap();
        rest = &rest[i + 1..];
        line
    };
    assert_eq!(next(), "c2", "format version");
    let numbers: Vec<i64> = (0..7).map(|_| next().parse().unwrap()).collect();
    let headers: Vec<(String, String)> = (0..numbers[6])
        .map(|_| {
            let line = next();
            let (n, v) = line.split_once(':').unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect();
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    StoredEntry {
        status: numbers[0] as u16,
        stored: numbers[1],
        soft: numbers[2],
        cost: numbers[3],
        swr_until: numbers[4],
        sie_until: numbers[5],
        headers,
        content_type,
        body: rest.to_vec(),
    }
}

async fn stored_entry(client: &mut redis::aio::MultiplexedConnection, key: &str) -> StoredEntry {
    let value: Vec<u8> = client.get(key).await.unwrap();
    parse_entry(&value)
}

/// A bucket counter (`hits`, `misses`, ...) summed over the buckets, and the TTLs seen.
async fn counter(client: &mut redis::aio::MultiplexedConnection, name: &str) -> (i64, Vec<i64>) {
    let keys: Vec<String> = client.keys(format!("srp:cache:*:stats:{name}")).await.unwrap();
    let (mut total, mut ttls) = (0, Vec::new());
    for key in keys {
        let value: i64 = client.get(&key).await.unwrap();
        total += value;
        ttls.push(client.ttl(&key).await.unwrap());
    }
    (total, ttls)
}

async fn get(app: &TestApp, path: &str) -> TestResponse {
    app.get(path).send().await
}

/// `Age` of an answer from an entry stored after `since` (and `base` seconds old then): at
/// least `at_least`, and no more than the whole seconds since `since` allow, however long a
/// busy machine took between the steps.
#[track_caller]
fn assert_age(res: &TestResponse, at_least: u64, base: u64, since: Instant) {
    let age: u64 = res.header("age").expect("an Age header").parse().unwrap();
    let most = base + since.elapsed().as_secs();
    assert!((at_least..=most).contains(&age), "Age {age}, not in {at_least}..={most}");
}

fn x_cache(res: &TestResponse) -> &str {
    res.header("x-cache").unwrap_or("(none)")
}

/// Entry keys (`...:e:...`) currently in Redis.
async fn entry_keys(client: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut keys: Vec<String> = client.keys("srp:cache:*:e:*").await.unwrap();
    keys.sort();
    keys
}

async fn entry_key(client: &mut redis::aio::MultiplexedConnection, target: &str) -> String {
    let keys = entry_keys(client).await;
    keys.into_iter()
        .find(|k| k.ends_with(&format!(":e:{target}")))
        .unwrap_or_else(|| panic!("no entry for {target}"))
}

// ---------------------------------------------------------------------------------------
// Hits, misses, headers, TTLs

async fn miss_then_hit(mode: Mode, redis: &RedisServer) {
    let origin = Origin::start().await;
    let app = app(mode, redis, &origin);
    let mut client = redis.client().await;

    let stored = Instant::now();
    let res = get(&app, "/api/cache/proxy/items/1?b=2&a=1").await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(res.header("age"), Some("0"));
    assert_eq!(res.header("content-type"), Some("application/json"));
    // The origin is asked for the normalised target.
    assert_eq!(res.json(), json!({"target": "/items/1?a=1&b=2", "n": 1}));
    assert_eq!(res.redis_connections, 1);
    let origin_body = res.body.clone();

    // Same resource, other spelling: one entry.
    let res = get(&app, "/api/cache/proxy/items//1?a=1&b=2&&").await;
    assert_eq!(x_cache(&res), "HIT");
    assert_eq!(res.json(), json!({"target": "/items/1?a=1&b=2", "n": 1}));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_age(&res, 0, 0, stored);
    assert_eq!(res.redis_connections, mode.read_connections());
    assert_eq!(origin.hits("/items/1?a=1&b=2"), 1);

    // One plain string per entry; hard TTL = fresh TTL (300 s, no jitter) + stale (300 s).
    let key = entry_key(&mut client, "/items/1?a=1&b=2").await;
    assert!(key.starts_with("srp:cache:{b") && key.contains("}:e:"), "{key}");
    let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut client).await.unwrap();
    assert_eq!(kind, "string");
    let pttl: i64 = client.pttl(&key).await.unwrap();
    // (Slack for a busy machine between the store and this read.)
    assert!((570_000..=600_000).contains(&pttl), "{pttl}");
    let entry = stored_entry(&mut client, &key).await;
    assert_eq!(entry.soft - entry.stored, 300_000);
    assert_eq!((entry.status, entry.content_type.as_str()), (200, "application/json"));
    assert_eq!(entry.body, origin_body);
    assert!((0..5_000).contains(&entry.cost), "{entry:?}");

    // Age grows with the entry.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = get(&app, "/api/cache/proxy/items/1?a=1&b=2").await;
    assert_eq!(x_cache(&res), "HIT");
    assert_age(&res, 1, 0, stored);
    assert_eq!(res.redis_connections, mode.read_connections());

    // HEAD is served from the same entry, without a body.
    let res = app.request(http::Method::HEAD, "/api/cache/proxy/items/1?a=1&b=2").send().await;
    assert_eq!((res.status, x_cache(&res), res.body.len()), (200, "HIT", 0));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.redis_connections, mode.read_connections());
    assert_eq!(origin.total_hits(), 1);
    // The store was opened once, for the app's life (never with the fast path off).
    let store_connections = if mode == Mode::FastPath { 1 } else { 0 };
    assert_eq!(app.key_value_connections(), store_connections);
}

async fn miss_then_hit_over_plain_redis(mode: Mode) {
    miss_then_hit(mode, &RedisServer::plain()).await;
}

async fn miss_then_hit_over_tls_redis(mode: Mode) {
    miss_then_hit(mode, &RedisServer::tls(AZURE_STYLE_KEY)).await;
}

in_both_modes!(miss_then_hit_over_plain_redis, miss_then_hit_over_tls_redis);

async fn jitter_spreads_ttls_and_max_age_caps_them(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        let reply = default_reply(target, n);
        if target.starts_with("/short") {
            reply.header("cache-control", "public, max-age=10")
        } else {
            reply
        }
    });
    let app = app_with(
        mode,
        &redis,
        &origin,
        &[("cache_ttl_jitter", "0.5"), ("cache_ttl_seconds", "100"), ("cache_stale_seconds", "0")],
    );
    let mut client = redis.client().await;

    let mut ttls = Vec::new();
    for i in 0..20 {
        assert_eq!(x_cache(&get(&app, &format!("/api/cache/proxy/j/{i}")).await), "MISS");
        let key = entry_key(&mut client, &format!("/j/{i}")).await;
        let pttl: i64 = client.pttl(&key).await.unwrap();
        // Jitter only takes time off: between half the TTL and all of it.
        assert!((49_000..=100_000).contains(&pttl), "{pttl}");
        ttls.push(pttl / 1000);
    }
    ttls.sort();
    ttls.dedup();
    assert!(ttls.len() >= 5, "jitter should spread expiries: {ttls:?}");

    get(&app, "/api/cache/proxy/short").await;
    let key = entry_key(&mut client, "/short").await;
    let pttl: i64 = client.pttl(&key).await.unwrap();
    assert!((4_000..=10_000).contains(&pttl), "max-age=10 caps the TTL: {pttl}");
}

in_both_modes!(jitter_spreads_ttls_and_max_age_caps_them);

async fn fifty_concurrent_cold_requests_reach_the_origin_once(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).delay_ms(400));
    let app = app(mode, &redis, &origin);

    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let app = app.clone();
        tasks.spawn(async move { app.get("/api/cache/proxy/hot?x=1").send().await });
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap();
        assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
        assert_eq!(res.json(), json!({"target": "/hot?x=1", "n": 1}));
        // The fetcher and the waiters all go through the lookup script; only a request that
        // arrives after the store can be a fast-path hit.
        if mode == Mode::FastPath && x_cache(&res) == "HIT" {
            assert!(res.redis_connections <= 1);
        } else {
            assert_eq!(res.redis_connections, 1);
        }
        *outcomes.entry(x_cache(&res).to_owned()).or_default() += 1;
    }
    assert_eq!(origin.total_hits(), 1);
    assert_eq!(outcomes, HashMap::from([("MISS".to_owned(), 1), ("HIT".to_owned(), 49)]));
    eprintln!("stampede ({mode:?}): healthy origin (400 ms), answered in {:?}", started.elapsed());
}

in_both_modes!(fifty_concurrent_cold_requests_reach_the_origin_once);

async fn stale_entries_are_refreshed_by_one_request_while_the_others_get_the_stale_copy(
    mode: Mode,
) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(mode, &redis, &origin, &[("cache_ttl_seconds", "1")]);
    let stored = Instant::now();
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/swr").await), "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    origin.respond(|target, n| default_reply(target, n).delay_ms(500));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let app = app.clone();
        tasks.spawn(async move { app.get("/api/cache/proxy/swr").send().await });
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap();
        let n = res.json()["n"].as_u64().unwrap();
        // Every request, the refreshing one included, is answered from the stale copy: the
        // refresh runs after its answer (stale-while-revalidate, Response::after).
        match x_cache(&res) {
            "STALE" => {
                assert_eq!(n, 1);
                assert_age(&res, 1, 0, stored);
            }
            other => panic!("{other}"),
        }
        assert!(res.header("cache-status").unwrap().contains("hit; ttl=-"), "{:?}", res.headers);
        // A stale entry is never the fast path's to serve: the lookup script decides.
        assert_eq!(res.redis_connections, 1);
        *outcomes.entry(x_cache(&res).to_owned()).or_default() += 1;
    }
    assert_eq!(outcomes, HashMap::from([("STALE".to_owned(), 10)]));
    // The refresh runs after the answers, as under Spin: wait for it.
    app.settle().await;
    assert_eq!(origin.hits("/swr"), 2);
    let res = get(&app, "/api/cache/proxy/swr").await;
    assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("HIT", Some(2)));
    assert_eq!(res.redis_connections, mode.read_connections());
}

in_both_modes!(stale_entries_are_refreshed_by_one_request_while_the_others_get_the_stale_copy);

async fn early_refresh_renews_fresh_entries_when_enabled(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).delay_ms(300));
    // cost 300 ms * beta 50 dwarfs the 2 s TTL: XFetch refreshes on nearly every request.
    let app = app_with(
        mode,
        &redis,
        &origin,
        &[("cache_ttl_seconds", "2"), ("cache_early_refresh_beta", "50")],
    );
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/xf").await), "MISS");
    let mut refreshed = 0;
    for _ in 0..5 {
        let res = get(&app, "/api/cache/proxy/xf").await;
        assert_eq!(res.status, 200);
        if x_cache(&res) == "MISS" {
            // The fast path hands an early refresh to the lookup script, which takes the lock.
            assert_eq!(res.redis_connections, 1);
            refreshed += 1;
        } else {
            assert_eq!(x_cache(&res), "HIT");
        }
    }
    assert!(refreshed >= 1, "no early refresh in 5 tries");
    assert_eq!(origin.hits("/xf"), 1 + refreshed);

    // Off by default: a fresh entry is a plain hit.
    let app = app_with(mode, &redis, &origin, &[("cache_ttl_seconds", "2")]);
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/xf2").await), "MISS");
    for _ in 0..3 {
        let res = get(&app, "/api/cache/proxy/xf2").await;
        assert_eq!((x_cache(&res), res.redis_connections), ("HIT", mode.read_connections()));
    }
}

in_both_modes!(early_refresh_renews_fresh_entries_when_enabled);

// ---------------------------------------------------------------------------------------
// What is and is not stored

async fn not_found_is_cached_briefly(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|_, _| Reply::json(404, json!({"missing": true})));
    let app = app_with(
        mode,
        &redis,
        &origin,
        &[("cache_negative_ttl_seconds", "30"), ("cache_stale_seconds", "0")],
    );
    let mut client = redis.client().await;

    let res = get(&app, "/api/cache/proxy/nothing/here").await;
    assert_eq!((res.status, x_cache(&res)), (404, "MISS"));
    let res = get(&app, "/api/cache/proxy/nothing/here").await;
    assert_eq!((res.status, x_cache(&res)), (404, "HIT"));
    assert_eq!(res.json(), json!({"missing": true}));
    assert_eq!(res.redis_connections, mode.read_connections());
    assert_eq!(origin.total_hits(), 1);
    let key = entry_key(&mut client, "/nothing/here").await;
    let pttl: i64 = client.pttl(&key).await.unwrap();
    assert!((20_000..=30_000).contains(&pttl), "{pttl}");
}

in_both_modes!(not_found_is_cached_briefly);

async fn no_store_private_5xx_and_oversized_answers_are_served_but_not_stored(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| match target {
        "/no-store" => default_reply(target, n).header("cache-control", "no-store"),
        "/private" => default_reply(target, n).header("Cache-Control", "private, max-age=600"),
        "/broken" => Reply::json(503, json!({"origin": "sick"})),
        "/big" => Reply::json(200, json!({"blob": "x".repeat(500)})),
        _ => default_reply(target, n),
    });
    // Failures not remembered here (cache_error_ttl_seconds=0): each request asks the origin.
    let app = app_with(
        mode,
        &redis,
        &origin,
        &[("cache_max_entry_bytes", "200"), ("cache_error_ttl_seconds", "0")],
    );
    let mut client = redis.client().await;

    for (path, status) in [("/no-store", 200), ("/private", 200), ("/broken", 503), ("/big", 200)] {
        for round in 1..=2 {
            let res = get(&app, &format!("/api/cache/proxy{path}")).await;
            assert_eq!((res.status, x_cache(&res)), (status, "BYPASS"), "{path} {}", res.text());
            if path == "/big" {
                assert_eq!(res.body.len(), 511);
            }
            assert_eq!(origin.hits(path), round, "{path}");
        }
    }
    assert_eq!(entry_keys(&mut client).await, Vec::<String>::new());
    // Nothing is left locked either.
    let locks: Vec<String> = client.keys("srp:cache:*:lock:*").await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
}

in_both_modes!(no_store_private_5xx_and_oversized_answers_are_served_but_not_stored);

// ---------------------------------------------------------------------------------------
// Failures

async fn redis_down(mode: Mode) {
    let mut redis = RedisServer::plain();
    let origin = Origin::start().await;
    // `warm` has used Redis (and, on the fast path, connected the pooled store) before Redis
    // goes away; `cold` never reached it.
    let warm = app(mode, &redis, &origin);
    assert_eq!(x_cache(&get(&warm, "/api/cache/proxy/items/9").await), "MISS");
    assert_eq!(x_cache(&get(&warm, "/api/cache/proxy/items/9").await), "HIT");
    let cold = app(mode, &redis, &origin);
    redis.stop();

    let mut n = 1;
    for app in [&cold, &warm] {
        for _ in 0..2 {
            n += 1;
            let res = get(app, "/api/cache/proxy/items/9").await;
            assert_eq!((res.status, x_cache(&res)), (200, "BYPASS"), "{} {}", res.text(), res.logs);
            assert_eq!(res.json(), json!({"target": "/items/9", "n": n}));
            assert_eq!(res.redis_connections, 1);
        }
        assert!(app.logs().contains("Redis unavailable"), "{}", app.logs());
    }
    if mode == Mode::FastPath {
        // The fast path gave way to outbound Redis, which then reported Redis down.
        assert!(cold.logs().contains("key-value store"), "{}", cold.logs());
        assert!(warm.logs().contains("fast path failed"), "{}", warm.logs());
    }
    // Routes that exist only for Redis answer 503.
    assert_error(&get(&cold, "/api/cache/stats").await, 503, "redis_unavailable");
    assert_error(&get(&cold, "/api/cache/demo").await, 503, "redis_unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_still_serves_from_the_origin() {
    redis_down(Mode::Outbound).await;
}

// With the fast path on, a Redis that goes away under load: fast_path_outage.rs.

async fn origin_down_serves_the_stale_copy_else_502(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(mode, &redis, &origin, &[("cache_ttl_seconds", "1")]);
    let stored = Instant::now();
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/keep").await), "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.stop().await;

    let res = get(&app, "/api/cache/proxy/keep").await;
    assert_eq!((res.status, x_cache(&res)), (200, "STALE"), "{} {}", res.text(), res.logs);
    assert_eq!(res.json(), json!({"target": "/keep", "n": 1}));
    assert_age(&res, 1, 0, stored);
    assert_eq!(res.redis_connections, 1);

    let res = get(&app, "/api/cache/proxy/never-cached").await;
    assert_error(&res, 502, "origin_unreachable");
    // The lock taken for the failed fetch was released.
    let mut client = redis.client().await;
    let locks: Vec<String> = client.keys("srp:cache:*:lock:*").await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
}

in_both_modes!(origin_down_serves_the_stale_copy_else_502);

async fn a_slow_origin_is_a_504(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).delay_ms(2000));
    let app = app_with(mode, &redis, &origin, &[("cache_origin_timeout_ms", "300")]);
    assert_error(&get(&app, "/api/cache/proxy/slow").await, 504, "origin_timeout");
}

in_both_modes!(a_slow_origin_is_a_504);

async fn malformed_and_oversized_requests_get_clear_errors_without_touching_redis(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(mode, &redis, &origin);
    let many_params: Vec<String> = (0..65).map(|i| format!("p{i}=1")).collect();
    let cases = [
        ("/api/cache/proxy/a/%zz".to_owned(), 400, "invalid_path"),
        // A signed "hex" escape, which a from_str_radix decoder read as 0x0F (issue 27).
        ("/api/cache/proxy/a/%+f".to_owned(), 400, "invalid_path"),
        ("/api/cache/proxy/a?q=%+f".to_owned(), 400, "invalid_path"),
        ("/api/cache/proxy/a/../b".to_owned(), 400, "invalid_path"),
        ("/api/cache/proxy/a/%2e%2e/b".to_owned(), 400, "invalid_path"),
        (format!("/api/cache/proxy/{}", "x".repeat(3000)), 414, "uri_too_long"),
        (format!("/api/cache/proxy/a?{}", many_params.join("&")), 400, "invalid_path"),
        ("/api/cache/profile/a.b".to_owned(), 400, "invalid_user_id"),
        (format!("/api/cache/profile/{}", "9".repeat(65)), 400, "invalid_user_id"),
        ("/api/cache/nope".to_owned(), 404, "not_found"),
    ];
    for (path, status, code) in cases {
        let res = get(&app, &path).await;
        assert_error(&res, status, code);
        assert_eq!(res.redis_connections, 0, "{path}");
    }
    let res = app.post("/api/cache/stats").send().await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    let res = app.request(http::Method::OPTIONS, "/api/cache/proxy/a").send().await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("GET, HEAD, POST, PUT, PATCH, DELETE"));
    assert_eq!(origin.total_hits(), 0);
    // Nor is the pooled store opened for them.
    assert_eq!(app.key_value_connections(), 0);

    // Braces from users never become a hash tag: they are encoded in the key.
    let mut client = redis.client().await;
    assert_eq!(get(&app, "/api/cache/proxy/%7Btag%7D/x").await.status, 200);
    let keys = entry_keys(&mut client).await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].ends_with(":e:/%7Btag%7D/x") && keys[0].matches('{').count() == 1, "{keys:?}");
    // Long targets are hashed into a bounded key.
    let long = format!("/api/cache/proxy/{}", "y".repeat(1500));
    assert_eq!(x_cache(&get(&app, &long).await), "MISS");
    assert_eq!(x_cache(&get(&app, &long).await), "HIT");
    let keys = entry_keys(&mut client).await;
    assert!(keys.iter().any(|k| k.contains(":e:sha256:") && k.len() < 120), "{keys:?}");
}

in_both_modes!(malformed_and_oversized_requests_get_clear_errors_without_touching_redis);

// ---------------------------------------------------------------------------------------
// Round trips, stats

async fn a_hit_is_one_round_trip_and_a_miss_at_most_three(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).header("cache-tag", "t1, t2"));
    // Hits sampled 1 in 1000 (issue 14): a fast-path hit is one GET.
    let app = app_with(mode, &redis, &origin, &[("cache_hit_sampling", "1000")]);
    // Let Redis learn the scripts first (the first EVALSHA of each is followed by an EVAL).
    get(&app, "/api/cache/proxy/warm").await;
    get(&app, "/api/cache/proxy/warm").await;
    let mut monitor = Monitor::start(&redis).await;
    monitor.take().await;

    let res = get(&app, "/api/cache/proxy/rt").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("MISS", 1));
    // Lookup + lock, then store + tag index + unlock + count: two scripts. On the fast path
    // they follow the store's PING (Spin's, on every open) and its GET of the missing entry,
    // on the pooled connection.
    let scripts = ["EVALSHA", "EVALSHA"];
    match mode {
        Mode::Outbound => assert_eq!(monitor.take().await, scripts),
        Mode::FastPath => {
            assert_eq!(monitor.take().await, [&["PING", "GET"][..], &scripts].concat())
        }
    }

    let res = get(&app, "/api/cache/proxy/rt").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("HIT", mode.read_connections()));
    match mode {
        Mode::Outbound => assert_eq!(monitor.take().await, ["EVALSHA"]),
        // No connection at all, one round trip on the pooled one (after Spin's PING on
        // open). One hit in 1000 is counted with an INCRBY of 1000: look again if this was it.
        Mode::FastPath => {
            let mut seen = monitor.take().await;
            if seen.contains(&"INCRBY".to_owned()) {
                assert_eq!(seen, ["PING", "GET", "INCRBY"]);
                get(&app, "/api/cache/proxy/rt").await;
                seen = monitor.take().await;
            }
            assert_eq!(seen, ["PING", "GET"]);
        }
    }
}

in_both_modes!(a_hit_is_one_round_trip_and_a_miss_at_most_three);

async fn stats_count_outcomes_and_the_hit_ratio(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        if target == "/nostore" {
            default_reply(target, n).header("cache-control", "no-store")
        } else {
            default_reply(target, n)
        }
    });
    let app = app(mode, &redis, &origin);
    for path in ["/s1", "/s1", "/s1", "/s1", "/s2", "/s2", "/nostore"] {
        assert_eq!(get(&app, &format!("/api/cache/proxy{path}")).await.status, 200);
    }
    let res = get(&app, "/api/cache/stats").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.redis_connections, 1);
    assert_eq!(
        res.json(),
        json!({"hits": 4, "misses": 2, "stale": 0, "bypasses": 1, "origin_fetches": 3, "purged": 0,
               "requests": 7, "hit_ratio": 0.5714})
    );

    // One string counter per bucket; the scripts keep them for 30 days after each update.
    let mut client = redis.client().await;
    let thirty_days = 30 * 24 * 3600;
    for name in ["misses", "bypasses", "origin_fetches"] {
        for ttl in counter(&mut client, name).await.1 {
            assert!((thirty_days - 60..=thirty_days).contains(&ttl), "{name}: {ttl}");
        }
    }
    let (hits, ttls) = counter(&mut client, "hits").await;
    assert_eq!(hits, 4);
    for ttl in ttls {
        match mode {
            Mode::Outbound => assert!((thirty_days - 60..=thirty_days).contains(&ttl), "{ttl}"),
            // Created by the fast path's INCRBY, which sets no expiry (as documented).
            Mode::FastPath => assert_eq!(ttl, -1),
        }
    }
}

in_both_modes!(stats_count_outcomes_and_the_hit_ratio);

// ---------------------------------------------------------------------------------------
// The pooled fast path

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_path_hit_answers_like_an_outbound_hit_without_connecting() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let origin = Origin::start().await;
    let raw = |status, content_type: Option<&str>, body: &[u8]| Reply {
        status,
        headers: content_type
            .map(|t| vec![("content-type".to_owned(), t.to_owned())])
            .unwrap_or_default(),
        body: body.to_vec(),
        delay: Duration::ZERO,
        trickle: None,
    };
    origin.respond(move |target, n| match target {
        "/missing" => Reply::json(404, json!({"missing": n})),
        // Line breaks and bytes that are not UTF-8 in the body; a body shaped like a header.
        "/binary" => raw(200, Some("application/octet-stream"), b"a\nb\r\n\xff\x00\n"),
        "/untyped" => raw(200, None, b"c1\n200\n1\n2\n3\ntext/plain\nnot the header"),
        "/empty" => raw(200, Some("text/plain; charset=utf-8"), b""),
        _ => default_reply(target, n),
    });
    let outbound = app(Mode::Outbound, &redis, &origin);
    let fast = app(Mode::FastPath, &redis, &origin);
    let paths = [
        "/api/cache/proxy/json?b=1&a=2",
        "/api/cache/proxy/missing",
        "/api/cache/proxy/binary",
        "/api/cache/proxy/untyped",
        "/api/cache/proxy/empty",
        "/api/cache/profile/7",
    ];
    for path in paths {
        let res = get(&fast, path).await;
        assert_eq!((x_cache(&res), res.redis_connections), ("MISS", 1), "{path}");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    for path in paths {
        for method in [http::Method::GET, http::Method::HEAD] {
            let sent = Instant::now();
            let a = outbound.request(method.clone(), path).send().await;
            let b = fast.request(method.clone(), path).send().await;
            assert_eq!((a.redis_connections, b.redis_connections), (1, 0), "{path}");
            assert_eq!(x_cache(&a), "HIT", "{path}");
            let seen = |r: &TestResponse| {
                (
                    r.status,
                    r.header("x-cache").map(str::to_owned),
                    r.header("content-type").map(str::to_owned),
                    r.body.clone(),
                )
            };
            assert_eq!(seen(&b), seen(&a), "{path} {method}");
            // Both count whole seconds since the store: equal unless seconds ticked between.
            let age = |r: &TestResponse| r.header("age").unwrap().parse::<u64>().unwrap();
            let most = age(&a) + sent.elapsed().as_secs() + 1;
            assert!(age(&a) >= 1 && (age(&a)..=most).contains(&age(&b)), "{path}");
        }
    }
    assert_eq!(origin.total_hits(), paths.len());
    assert_eq!((fast.key_value_connections(), outbound.key_value_connections()), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pooled_store_keeps_one_connection_for_the_apps_life() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let origin = Origin::start().await;
    let app = app(Mode::FastPath, &redis, &origin);
    for i in 0..5 {
        assert_eq!(x_cache(&get(&app, &format!("/api/cache/proxy/pool/{i}")).await), "MISS");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.spawn(
            async move { app.get(&format!("/api/cache/proxy/pool/{}", i % 5)).send().await },
        );
    }
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap();
        assert_eq!(
            (res.status, x_cache(&res), res.redis_connections),
            (200, "HIT", 0),
            "{}",
            res.logs
        );
    }
    let res = app
        .delete("/api/cache/proxy/pool/0")
        .header("authorization", &format!("Bearer {PURGE_TOKEN}"))
        .send()
        .await;
    assert_eq!(res.json()["purged"], 1);
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/pool/0").await), "MISS");
    assert_eq!(get(&app, "/api/cache/stats").await.json()["hits"], 40);
    assert_eq!(app.key_value_connections(), 1);
    assert_eq!(origin.total_hits(), 6);
}

/// A value this version cannot read (another format version, or the hash of the layout
/// before it) is a miss on either path: fetched again and overwritten, never an error.
async fn entries_in_an_unknown_format_are_refetched(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(mode, &redis, &origin);
    let mut client = redis.client().await;
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/fmt").await), "MISS");
    let key = entry_key(&mut client, "/fmt").await;

    let _: () =
        client.set(&key, "c9\n200\n1\n99999999999999\n0\ntext/plain\nfuture").await.unwrap();
    let res = get(&app, "/api/cache/proxy/fmt").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("MISS", 1), "{}", res.logs);
    assert_eq!(res.json()["n"], 2);

    // The previous format (c1, before headers were stored) is refetched too.
    let _: () = client.set(&key, "c1\n200\n1\n99999999999999\n0\ntext/plain\nold").await.unwrap();
    let res = get(&app, "/api/cache/proxy/fmt").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("MISS", 1), "{}", res.logs);
    assert_eq!(res.json()["n"], 3);

    let _: () = client.del(&key).await.unwrap();
    let _: () = client
        .hset_multiple(
            &key,
            &[
                ("status", "200"),
                ("type", "text/plain"),
                ("body", "old"),
                ("stored", "1"),
                ("soft", "99999999999999"),
                ("cost", "0"),
            ],
        )
        .await
        .unwrap();
    let res = get(&app, "/api/cache/proxy/fmt").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("MISS", 1), "{}", res.logs);
    assert_eq!(res.json()["n"], 4);

    let res = get(&app, "/api/cache/proxy/fmt").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("HIT", mode.read_connections()));
    assert_eq!(res.json()["n"], 4);
    assert_eq!(stored_entry(&mut client, &key).await.status, 200);
}

in_both_modes!(entries_in_an_unknown_format_are_refetched);

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_fast_path_setting_is_a_redis_misconfiguration() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(Mode::FastPath, &redis, &origin, &[("redis_fast_path", "sometimes")]);
    for n in 1..=2 {
        let res = get(&app, "/api/cache/proxy/conf").await;
        assert_eq!((res.status, x_cache(&res)), (200, "BYPASS"), "{}", res.logs);
        assert_eq!(res.json()["n"], n);
        assert_eq!((res.redis_connections, app.key_value_connections()), (0, 0));
    }
    assert!(app.logs().contains("redis_fast_path"), "{}", app.logs());
}

// ---------------------------------------------------------------------------------------
// Purges

/// Subscribes before `action` runs and returns the first message published on `channel`.
async fn published_during<F: std::future::Future<Output = ()>>(
    redis: &RedisServer,
    channel: &str,
    action: F,
) -> Value {
    let url = redis.url();
    let channel = channel.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = tokio::task::spawn_blocking(move || {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_connection().unwrap();
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(&channel).unwrap();
        pubsub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ready_tx.send(()).unwrap();
        let message = pubsub.get_message().expect("a purge event was published");
        let payload: String = message.get_payload().unwrap();
        serde_json::from_str::<Value>(&payload).unwrap()
    });
    ready_rx.recv().unwrap();
    action.await;
    listener.await.unwrap()
}

async fn purge_one_path_needs_the_token_and_announces_it(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(mode, &redis, &origin);
    get(&app, "/api/cache/proxy/p/1?z=1&a=2").await;
    let res = get(&app, "/api/cache/proxy/p/1?z=1&a=2").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("HIT", mode.read_connections()));

    let purge = |token: Option<&'static str>| {
        let app = app.clone();
        async move {
            let mut req = app.delete("/api/cache/proxy/p/1?a=2&z=1");
            if let Some(t) = token {
                req = req.header("authorization", &format!("Bearer {t}"));
            }
            req.send().await
        }
    };
    assert_error(&purge(None).await, 401, "unauthorized");
    assert_error(&purge(Some("wrong-token")).await, 401, "unauthorized");
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/p/1?z=1&a=2").await), "HIT");

    let event = published_during(&redis, "srp:cache:purge", async {
        let res = purge(Some(PURGE_TOKEN)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json(), json!({"purged": 1, "path": "/p/1?a=2&z=1"}));
        assert_eq!(res.redis_connections, 1);
    })
    .await;
    assert_eq!(event, json!({"type": "purge", "path": "/p/1?a=2&z=1", "purged": 1}));
    // The next read sees the purge at once, on the fast path too (no local copy anywhere).
    let res = get(&app, "/api/cache/proxy/p/1?z=1&a=2").await;
    assert_eq!((x_cache(&res), res.redis_connections), ("MISS", 1));
    assert_eq!(origin.hits("/p/1?a=2&z=1"), 2);
    assert!(!app.logs().contains(PURGE_TOKEN), "the token was logged");

    // Without a configured token purges are off.
    let app = builder(&redis)
        .variable("origin_url", origin.url())
        .variable("redis_fast_path", mode.variable())
        .load()
        .unwrap();
    let res =
        app.delete("/api/cache/proxy/p/1").header("authorization", "Bearer anything").send().await;
    assert_error(&res, 403, "purge_disabled");
}

in_both_modes!(purge_one_path_needs_the_token_and_announces_it);

async fn purge_by_tag(mode: Mode, redis: &RedisServer) {
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        let reply = default_reply(target, n);
        match target {
            "/t/1" => reply.header("cache-tag", "team-a, all"),
            "/t/2" => reply.header("Surrogate-Key", "team-a all"),
            _ => reply.header("cache-tag", "team-b,all"),
        }
    });
    let app = app(mode, redis, &origin);
    let mut client = redis.client().await;
    for path in ["/t/1", "/t/2", "/t/3"] {
        assert_eq!(x_cache(&get(&app, &format!("/api/cache/proxy{path}")).await), "MISS");
    }
    let purge = |body: Value| {
        let app = app.clone();
        async move {
            app.post("/api/cache/purge")
                .header("authorization", &format!("Bearer {PURGE_TOKEN}"))
                .json(&body)
                .send()
                .await
        }
    };
    let res = purge(json!({"tags": ["team-a", "no-such-tag"]})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"purged": 2, "tags": ["team-a", "no-such-tag"]}));
    assert_eq!(res.redis_connections, 1);
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/t/3").await), "HIT");
    assert_eq!(entry_keys(&mut client).await.len(), 1);
    let tag_sets: Vec<String> = client.keys("srp:cache:*:tag:team-a").await.unwrap();
    assert!(tag_sets.is_empty(), "{tag_sets:?}");
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/t/1").await), "MISS");

    let res = purge(json!({"tags": ["all"]})).await;
    assert_eq!(res.json()["purged"], 2);
    assert_eq!(entry_keys(&mut client).await, Vec::<String>::new());
}

async fn purge_by_tag_over_plain_redis_and_announce_it(mode: Mode) {
    let redis = RedisServer::plain();
    purge_by_tag(mode, &redis).await;
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).header("cache-tag", "x"));
    let app = app_with(mode, &redis, &origin, &[("cache_purge_channel", "ops:purges")]);
    get(&app, "/api/cache/proxy/e/1").await;
    let event = published_during(&redis, "ops:purges", async {
        let res = app
            .post("/api/cache/purge")
            .header("authorization", &format!("Bearer {PURGE_TOKEN}"))
            .json(&json!({"tags": ["x"]}))
            .send()
            .await;
        assert_eq!(res.status, 200);
    })
    .await;
    assert_eq!(event, json!({"type": "purge", "tags": ["x"], "purged": 1}));
}

in_both_modes!(purge_by_tag_over_plain_redis_and_announce_it);

async fn purge_by_tag_over_tls_redis(mode: Mode) {
    purge_by_tag(mode, &RedisServer::tls(AZURE_STYLE_KEY)).await;
}

in_both_modes!(purge_by_tag_over_tls_redis);

#[tokio::test(flavor = "multi_thread")]
async fn purge_bodies_are_validated() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(Mode::Outbound, &redis, &origin);
    let send = |body: Vec<u8>, content_type: &'static str| {
        let app = app.clone();
        async move {
            app.post("/api/cache/purge")
                .header("authorization", &format!("Bearer {PURGE_TOKEN}"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
        }
    };
    let json_type = "application/json";
    assert_error(&send(b"{\"tags\": []}".to_vec(), json_type).await, 422, "invalid_tags");
    assert_error(&send(b"{\"tags\": [\"\"]}".to_vec(), json_type).await, 422, "invalid_tags");
    let too_many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    assert_error(
        &send(json!({"tags": too_many}).to_string().into_bytes(), json_type).await,
        422,
        "invalid_tags",
    );
    assert_error(&send(b"{\"tags\": \"a\"}".to_vec(), json_type).await, 400, "invalid_json");
    // The fields in order as an array, which serde's derived structs take (issue 27).
    assert_error(&send(b"[[\"a\"], false, false]".to_vec(), json_type).await, 400, "invalid_json");
    assert_error(
        &send(b"{\"tags\": [\"a\"], \"x\": 1}".to_vec(), json_type).await,
        400,
        "invalid_json",
    );
    assert_error(&send(b"tags=a".to_vec(), "text/plain").await, 415, "unsupported_media_type");
    assert_error(&send(vec![b' '; 20_000], json_type).await, 413, "body_too_large");
    assert_error(&app.get("/api/cache/purge").send().await, 405, "method_not_allowed");
}

// ---------------------------------------------------------------------------------------
// The seed recipe's routes, and the demo origin by service chaining

async fn profile_route_and_demo_counter(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, _| match target.strip_prefix("/profiles/") {
        Some("7") => Reply::json(200, json!({"id": "7", "name": "Seven"})),
        _ => Reply::json(404, json!({"error": "nope"})),
    });
    let app = app(mode, &redis, &origin);
    let res = get(&app, "/api/cache/profile/7").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"source": "origin", "profile": {"id": "7", "name": "Seven"}}));
    let res = get(&app, "/api/cache/profile/7").await;
    assert_eq!(res.json(), json!({"source": "cache", "profile": {"id": "7", "name": "Seven"}}));
    assert_eq!(x_cache(&res), "HIT");
    assert_eq!(res.redis_connections, mode.read_connections());
    // The proxy route shares the entry.
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/profiles/7").await), "HIT");
    assert_error(&get(&app, "/api/cache/profile/8").await, 404, "profile_not_found");
    let res = get(&app, "/api/cache/profile/8").await;
    assert_error(&res, 404, "profile_not_found");
    assert_eq!((x_cache(&res), res.redis_connections), ("HIT", mode.read_connections()));
    assert_eq!(origin.total_hits(), 2);

    let mut client = redis.client().await;
    for value in 1..=2 {
        let res = get(&app, "/api/cache/demo").await;
        assert_eq!(res.json(), json!({"key": "demo:counter", "value": value, "ttl_seconds": 300}));
        assert_eq!(res.redis_connections, 1);
    }
    let ttl: i64 = client.ttl("srp:demo:counter").await.unwrap();
    assert!((299..=300).contains(&ttl), "{ttl}");
}

in_both_modes!(profile_route_and_demo_counter);

async fn the_demo_origin_component_is_reached_by_service_chaining(mode: Mode) {
    let redis = RedisServer::plain();
    let app = builder(&redis)
        .variable("origin_delay_ms", "5")
        .variable("redis_fast_path", mode.variable())
        .load()
        .unwrap();
    let res = get(&app, "/api/cache/profile/42").await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    let body = res.json();
    assert_eq!(body["source"], "origin");
    assert_eq!(body["profile"]["id"], "42");
    assert_eq!(body["profile"]["email"], "user42@example.com");
    let res = get(&app, "/api/cache/profile/42").await;
    assert_eq!((res.json()["source"].as_str(), x_cache(&res)), (Some("cache"), "HIT"));
    assert_eq!(res.json()["profile"], body["profile"]);

    // The demo origin's max-age=60 caps the 300 s TTL; its tags allow purging by profile.
    let mut client = redis.client().await;
    let key = entry_key(&mut client, "/profiles/42").await;
    let entry = stored_entry(&mut client, &key).await;
    assert!((54_000..=60_000).contains(&(entry.soft - entry.stored)), "{entry:?}");
    // The origin took about its 5 ms delay: XFetch's cost.
    assert!((5..2_000).contains(&entry.cost), "{entry:?}");
    let bucket = &key[..key.find("}:e:").unwrap() + 1];
    for tag in ["profiles", "profile-42"] {
        let member: bool = client.sismember(format!("{bucket}:tag:{tag}"), &key).await.unwrap();
        assert!(member, "{key} is not in the tag set {tag}");
    }
    assert_error(&get(&app, "/api/cache/profile/5000").await, 404, "profile_not_found");
    // The origin has no public route.
    assert_eq!(get(&app, "/profiles/42").await.status, 404);
}

in_both_modes!(the_demo_origin_component_is_reached_by_service_chaining);

// ---------------------------------------------------------------------------------------
// Single flight (issue 16.1)

/// `n` concurrent GETs of one path; the answers.
async fn concurrently(app: &TestApp, path: &str, n: usize) -> Vec<TestResponse> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (app, path) = (app.clone(), path.to_owned());
        tasks.spawn(async move { app.get(&path).send().await });
    }
    let mut all = Vec::new();
    while let Some(res) = tasks.join_next().await {
        all.push(res.unwrap());
    }
    all
}

fn outcomes(responses: &[TestResponse]) -> HashMap<String, usize> {
    let mut outcomes = HashMap::new();
    for res in responses {
        *outcomes.entry(format!("{} {}", res.status, x_cache(res))).or_default() += 1;
    }
    outcomes
}

fn counts(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

async fn no_locks_left(redis: &RedisServer) {
    let mut client = redis.client().await;
    let locks: Vec<String> = client.keys("srp:cache:*:lock:*").await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
}

/// The stampede figure of issue 16: 50 concurrent requests for one cold key, origin calls
/// counted, for an origin that is slow (3 s, longer than any former lock wait) or failing.
async fn stampede_slow_and_failing(mode: Mode, redis: &RedisServer) {
    let origin = Origin::start().await;
    origin.respond(|target, n| match target {
        "/slow" => default_reply(target, n).delay_ms(3000),
        _ => Reply::json(500, json!({"origin": "broken", "n": n})).delay_ms(300),
    });
    let app = app(mode, redis, &origin);

    let started = std::time::Instant::now();
    let all = concurrently(&app, "/api/cache/proxy/slow", 50).await;
    assert_eq!(origin.hits("/slow"), 1, "one origin call for 50 requests (slow origin)");
    assert_eq!(outcomes(&all), counts(&[("200 MISS", 1), ("200 HIT", 49)]));
    for res in &all {
        assert_eq!(res.json(), json!({"target": "/slow", "n": 1}));
    }
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    eprintln!("stampede ({mode:?}): slow origin, 50 requests answered in {:?}", started.elapsed());

    let started = std::time::Instant::now();
    let all = concurrently(&app, "/api/cache/proxy/failing", 50).await;
    eprintln!("stampede ({mode:?}): failing origin, 50 answered in {:?}", started.elapsed());
    assert_eq!(origin.hits("/failing"), 1, "one origin call for 50 requests (failing origin)");
    // The fetcher passes the 500 on; the others are answered the remembered failure.
    assert_eq!(outcomes(&all), counts(&[("500 BYPASS", 1), ("500 ERROR", 49)]));
    for res in &all {
        assert_eq!(res.json(), json!({"origin": "broken", "n": 1}), "{}", res.logs);
        assert!(res.header("cache-status").is_some());
    }
    no_locks_left(redis).await;
    let mut client = redis.client().await;
    assert_eq!(entry_keys(&mut client).await.len(), 1, "the failure is not an entry");
}

async fn stampede_slow_and_failing_over_plain_redis(mode: Mode) {
    stampede_slow_and_failing(mode, &RedisServer::plain()).await;
}

in_both_modes!(stampede_slow_and_failing_over_plain_redis);

#[tokio::test(flavor = "multi_thread")]
async fn stampede_slow_and_failing_over_tls_redis() {
    stampede_slow_and_failing(Mode::Outbound, &RedisServer::tls(AZURE_STYLE_KEY)).await;
}

/// A failing origin gets at most one call per key per error interval.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_origin_sees_one_request_per_key_per_error_interval() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|_, n| Reply::json(503, json!({"n": n})));
    let app = app_with(Mode::Outbound, &redis, &origin, &[("cache_error_ttl_seconds", "1")]);
    let started = std::time::Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let res = get(&app, "/api/cache/proxy/down").await;
        assert_eq!(res.status, 503);
        requests += 1;
    }
    let calls = origin.hits("/down");
    assert!(requests > 20 && (2..=4).contains(&calls), "{requests} requests, {calls} calls");
}

/// An origin that trickles its body is cut off at the overall deadline, and the key's other
/// requests are answered the remembered timeout instead of each waiting for their own.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_origin_is_cut_off_once_for_everyone() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).trickle_ms(100));
    let app = app_with(Mode::Outbound, &redis, &origin, &[("cache_origin_timeout_ms", "1000")]);
    let started = std::time::Instant::now();
    let all = concurrently(&app, "/api/cache/proxy/trickle", 10).await;
    for res in &all {
        assert_error(res, 504, "origin_timeout");
    }
    assert_eq!(origin.hits("/trickle"), 1);
    // The body would take about 3 s; the deadline is 1 s.
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    no_locks_left(&redis).await;
}

/// With failures not remembered, a released lock is taken over by one waiter.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_takes_over_when_the_lock_is_released_without_a_result() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| match n {
        1 => Reply::json(500, json!({"n": n})).delay_ms(300),
        _ => default_reply(target, n).delay_ms(100),
    });
    let app = app_with(Mode::Outbound, &redis, &origin, &[("cache_error_ttl_seconds", "0")]);
    let all = concurrently(&app, "/api/cache/proxy/takeover", 10).await;
    assert_eq!(outcomes(&all), counts(&[("500 BYPASS", 1), ("200 MISS", 1), ("200 HIT", 8)]));
    assert_eq!(origin.hits("/takeover"), 2);
}

/// Waiters keep waiting while the lock is held (here by a holder that died: its lock
/// expires), then take it over.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_wait_while_the_lock_is_held() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(Mode::Outbound, &redis, &origin, &[("cache_key_buckets", "1")]);
    let mut client = redis.client().await;
    let lock = "srp:cache:{b0}:lock:/held";
    // Before the SET: the lock ends 1500 ms after it, so at least that after this.
    let started = std::time::Instant::now();
    let _: () = redis::cmd("SET")
        .arg(lock)
        .arg("a-dead-holder")
        .arg("PX")
        .arg(1500)
        .query_async(&mut client)
        .await
        .unwrap();
    let res = get(&app, "/api/cache/proxy/held").await;
    assert!(started.elapsed() >= Duration::from_millis(1400), "{:?}", started.elapsed());
    assert_eq!((res.status, x_cache(&res)), (200, "MISS"), "{}", res.logs);
    assert_eq!(origin.hits("/held"), 1);
}

/// Only the current lock holder stores: a fill whose lock was taken from it (expired and
/// taken by another) answers its client but writes nothing, and leaves the other's lock.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_current_lock_holder_stores() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).delay_ms(2000));
    let app = app_with(Mode::Outbound, &redis, &origin, &[("cache_key_buckets", "1")]);
    let fill = {
        let app = app.clone();
        tokio::spawn(async move { app.get("/api/cache/proxy/owned").send().await })
    };
    // The fill holds the lock once the origin has its request (then 2 s to answer).
    origin.wait_for("/owned").await;
    let mut client = redis.client().await;
    let lock = "srp:cache:{b0}:lock:/owned";
    let _: () = client.set(lock, "newer-holder").await.unwrap();
    let res = fill.await.unwrap();
    assert_eq!((res.status, x_cache(&res)), (200, "BYPASS"), "{}", res.logs);
    assert!(!res.header("cache-status").unwrap().contains("stored"));
    assert_eq!(entry_keys(&mut client).await, Vec::<String>::new());
    let still: String = client.get(lock).await.unwrap();
    assert_eq!(still, "newer-holder");
}

// ---------------------------------------------------------------------------------------
// Purges that stick (issue 16.2)

async fn purge_request(app: &TestApp, body: Value) -> TestResponse {
    app.post("/api/cache/purge")
        .header("authorization", &format!("Bearer {PURGE_TOKEN}"))
        .json(&body)
        .send()
        .await
}

async fn purge_path(app: &TestApp, path: &str, soft: bool) -> TestResponse {
    let mut req = app
        .delete(&format!("/api/cache/proxy{path}"))
        .header("authorization", &format!("Bearer {PURGE_TOKEN}"));
    if soft {
        req = req.header("soft-purge", "1");
    }
    req.send().await
}

/// A purge (by path, by tag, of everything) during a fill: the fill answers its client but
/// does not store, so the purge is never undone.
async fn a_purge_during_a_fill_is_never_undone(mode: Mode, redis: &RedisServer) {
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).header("cache-tag", "grp").delay_ms(2000));
    let app = app(mode, redis, &origin);
    let mut client = redis.client().await;
    for (path, how) in [("/pf/key", "path"), ("/pf/tag", "tag"), ("/pf/all", "all")] {
        let fill = {
            let (app, url) = (app.clone(), format!("/api/cache/proxy{path}"));
            tokio::spawn(async move { app.get(&url).send().await })
        };
        // Mid-fill: the origin has the request (and takes 2 s to answer).
        origin.wait_for(path).await;
        let res = match how {
            "path" => purge_path(&app, path, false).await,
            "tag" => purge_request(&app, json!({"tags": ["grp"]})).await,
            _ => purge_request(&app, json!({"all": true})).await,
        };
        assert_eq!(res.status, 200, "{how}: {}", res.text());
        let res = fill.await.unwrap();
        assert_eq!((res.status, x_cache(&res)), (200, "BYPASS"), "{how}: {}", res.logs);
        assert_eq!(res.json()["n"], 1);
        assert!(entry_keys(&mut client).await.is_empty(), "{how}: the purge was undone");
        let res = get(&app, &format!("/api/cache/proxy{path}")).await;
        assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("MISS", Some(2)), "{how}");
        assert_eq!(x_cache(&get(&app, &format!("/api/cache/proxy{path}")).await), "HIT");
        let res = purge_path(&app, path, false).await;
        assert_eq!(res.json()["purged"], 1);
    }
}

async fn a_purge_during_a_fill_is_never_undone_over_plain_redis(mode: Mode) {
    a_purge_during_a_fill_is_never_undone(mode, &RedisServer::plain()).await;
}

in_both_modes!(a_purge_during_a_fill_is_never_undone_over_plain_redis);

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_during_a_fill_is_never_undone_over_tls_redis() {
    a_purge_during_a_fill_is_never_undone(Mode::Outbound, &RedisServer::tls(AZURE_STYLE_KEY)).await;
}

/// Soft purges mark entries stale: the next request is answered from the stale copy while
/// the entry is refreshed after its answer; the one after gets the new content.
async fn soft_purges_serve_stale_while_one_request_revalidates(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| default_reply(target, n).header("cache-tag", "grp"));
    let app = app(mode, &redis, &origin);
    for (path, how) in [("/sp/key", "path"), ("/sp/tag", "tag"), ("/sp/all", "all")] {
        let url = format!("/api/cache/proxy{path}");
        assert_eq!(x_cache(&get(&app, &url).await), "MISS");
        let res = match how {
            "path" => purge_path(&app, path, true).await,
            "tag" => purge_request(&app, json!({"tags": ["grp"], "soft": true})).await,
            _ => purge_request(&app, json!({"all": true, "soft": true})).await,
        };
        assert_eq!(res.status, 200, "{how}: {}", res.text());
        assert_eq!(res.json()["mode"], "soft");
        assert!(res.json()["purged"].as_i64().unwrap() >= 1, "{how}: {}", res.text());
        let res = get(&app, &url).await;
        assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("STALE", Some(1)), "{how}");
        // The revalidation runs after that answer, as under Spin: wait for it.
        app.settle().await;
        let res = get(&app, &url).await;
        assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("HIT", Some(2)), "{how}");
        assert_eq!(origin.hits(path), 2, "{how}");
    }
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/sp/final").await), "MISS");
    assert_eq!(
        purge_path(&app, "/sp/final", true).await.json(),
        json!({"purged": 1, "path": "/sp/final", "mode": "soft"})
    );
}

in_both_modes!(soft_purges_serve_stale_while_one_request_revalidates);

#[tokio::test(flavor = "multi_thread")]
async fn purge_all_deletes_every_entry_and_is_announced() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app(Mode::Outbound, &redis, &origin);
    let mut client = redis.client().await;
    for i in 0..30 {
        assert_eq!(x_cache(&get(&app, &format!("/api/cache/proxy/all/{i}")).await), "MISS");
    }
    // Keys of other services, and the counters, stay.
    let _: () = client.set("srp:sessions:keep", "1").await.unwrap();
    let event = published_during(&redis, "srp:cache:purge", async {
        let res = purge_request(&app, json!({"all": true})).await;
        assert_eq!(res.json(), json!({"purged": 30, "all": true}));
    })
    .await;
    assert_eq!(event, json!({"type": "purge", "all": true, "purged": 30}));
    assert!(entry_keys(&mut client).await.is_empty());
    let kept: i64 = client.exists("srp:sessions:keep").await.unwrap();
    assert_eq!(kept, 1);
    assert_eq!(get(&app, "/api/cache/stats").await.json()["purged"], 30);
    let res = purge_request(&app, json!({"all": true, "tags": ["x"]})).await;
    assert_error(&res, 422, "invalid_tags");
}

// ---------------------------------------------------------------------------------------
// Headers, RFC 9111 / 5861 (issue 16.3, 16.4)

const PASSED_HEADERS: &[(&str, &str)] = &[
    ("etag", "\"v1\""),
    ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ("cache-control", "public, max-age=120"),
    ("content-encoding", "identity"),
    ("content-language", "en"),
    ("vary", "Accept-Encoding"),
    ("link", "</style.css>; rel=preload"),
    ("strict-transport-security", "max-age=63072000"),
    ("content-security-policy", "default-src 'self'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

async fn every_listed_header_survives_the_round_trip(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        let mut reply = match target {
            "/dir" => Reply::json(301, json!({"moved": true})).header("location", "/dir/"),
            _ => default_reply(target, n),
        };
        for (name, value) in PASSED_HEADERS {
            reply = reply.header(name, value);
        }
        reply.header("link", "</app.js>; rel=preload").header("cache-tag", "internal")
    });
    let app = app(mode, &redis, &origin);
    for round in ["MISS", "HIT"] {
        let res = get(&app, "/api/cache/proxy/h").await;
        assert_eq!((res.status, x_cache(&res)), (200, round));
        for (name, value) in PASSED_HEADERS {
            let values: Vec<&str> =
                res.headers.get_all(*name).iter().map(|v| v.to_str().unwrap()).collect();
            assert!(values.contains(value), "{round}: {name}: {values:?}");
        }
        assert_eq!(res.headers.get_all("link").iter().count(), 2, "{round}");
        assert_eq!(res.header("cache-tag"), None, "{round}");
        let status = res.header("cache-status").unwrap();
        match round {
            "MISS" => assert_eq!(status, "spin-redis-cache; fwd=uri-miss; fwd-status=200; stored"),
            _ => assert!(status.starts_with("spin-redis-cache; hit; ttl=1"), "{status}"),
        }
        // A redirect keeps its Location, and /dir/ is another resource than /dir.
        let res = get(&app, "/api/cache/proxy/dir").await;
        assert_eq!(
            (res.status, x_cache(&res), res.header("location")),
            (301, round, Some("/dir/"))
        );
        let res = get(&app, "/api/cache/proxy/dir/").await;
        assert_eq!((res.status, x_cache(&res)), (200, round));
        assert_eq!(res.json()["target"], "/dir/");
    }
    assert_eq!((origin.hits("/dir"), origin.hits("/dir/"), origin.hits("/h")), (1, 1, 1));
    // Stored with the entry: the end-to-end fields, not the origin's internals.
    let mut client = redis.client().await;
    let key = entry_key(&mut client, "/h").await;
    let stored = stored_entry(&mut client, &key).await;
    assert!(stored.headers.contains(&("etag".to_owned(), "\"v1\"".to_owned())), "{stored:?}");
    assert!(!stored.headers.iter().any(|(n, _)| n == "cache-tag"), "{stored:?}");
}

in_both_modes!(every_listed_header_survives_the_round_trip);

/// A response that sets a cookie is passed to its client, never stored or replayed.
async fn answers_that_set_cookies_are_passed_not_stored(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        default_reply(target, n)
            .header("cache-control", "public, max-age=600")
            .header("set-cookie", &format!("session=secret-{n}; HttpOnly"))
    });
    let app = app(mode, &redis, &origin);
    let mut client = redis.client().await;
    for n in 1..=3 {
        let res = get(&app, "/api/cache/proxy/login").await;
        assert_eq!((res.status, x_cache(&res)), (200, "BYPASS"));
        assert_eq!(
            res.header("set-cookie"),
            Some(format!("session=secret-{n}; HttpOnly").as_str())
        );
        assert_eq!(res.json()["n"], n);
    }
    assert!(entry_keys(&mut client).await.is_empty());
    // Only a pass marker is left behind, with no trace of the cookie.
    let keys: Vec<String> = client.keys("srp:cache:*").await.unwrap();
    for key in keys {
        if let Ok(value) = client.get::<_, Vec<u8>>(&key).await {
            assert!(!String::from_utf8_lossy(&value).contains("secret"), "{key}");
        }
    }
}

in_both_modes!(answers_that_set_cookies_are_passed_not_stored);

/// Vary on a configured request header: one entry per value, the header sent to the origin;
/// a Vary on anything else is not stored.
async fn vary_on_configured_headers_only(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| match target {
        "/by-cookie" => default_reply(target, n).header("vary", "Cookie"),
        _ => default_reply(target, n).header("vary", "Accept-Language"),
    });
    let app = app_with(mode, &redis, &origin, &[("cache_vary_headers", "accept-language")]);
    let fetch = |lang: &'static str, path: &'static str| {
        let app = app.clone();
        async move {
            app.get(&format!("/api/cache/proxy{path}")).header("accept-language", lang).send().await
        }
    };
    assert_eq!(x_cache(&fetch("en", "/v").await), "MISS");
    assert_eq!(x_cache(&fetch("de", "/v").await), "MISS");
    let res = fetch("en", "/v").await;
    assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("HIT", Some(1)));
    assert_eq!(res.redis_connections, mode.read_connections());
    let res = fetch("de", "/v").await;
    assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("HIT", Some(2)));
    let langs: Vec<String> = origin
        .seen()
        .iter()
        .map(|s| s.header("accept-language").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(langs, ["en", "de"]);
    for _ in 0..2 {
        assert_eq!(x_cache(&fetch("en", "/by-cookie").await), "BYPASS");
    }
    // A purge of the path drops every variant.
    assert_eq!(purge_path(&app, "/v", false).await.json()["purged"], 2);
    assert_eq!(x_cache(&fetch("de", "/v").await), "MISS");
}

in_both_modes!(vary_on_configured_headers_only);

async fn freshness_follows_the_origin(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        let reply = default_reply(target, n);
        match target {
            "/mr" => reply.header("cache-control", "max-age=1, must-revalidate"),
            "/pr" => reply.header("cache-control", "max-age=1, proxy-revalidate"),
            "/sm" => reply.header("cache-control", "max-age=600, s-maxage=1"),
            "/swr" => reply
                .header("cache-control", "max-age=1, stale-while-revalidate=1, stale-if-error=7"),
            "/aged" => reply.header("cache-control", "max-age=60").header("age", "50"),
            "/expires" => {
                let now = std::time::SystemTime::now();
                reply
                    .header("date", &httpdate::fmt_http_date(now))
                    .header("expires", &httpdate::fmt_http_date(now + Duration::from_secs(20)))
            }
            _ => reply,
        }
    });
    let app = app(mode, &redis, &origin);
    let client = redis.client().await;
    let wall_ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64
    };
    // The fetches happen between these two readings, however long a busy machine takes.
    let (before, fetched) = (wall_ms(), Instant::now());
    for path in ["/mr", "/pr", "/sm", "/swr", "/aged", "/expires"] {
        assert_eq!(x_cache(&get(&app, &format!("/api/cache/proxy{path}")).await), "MISS");
    }
    let entry = |path: &'static str| {
        let mut client = client.clone();
        async move {
            let key = entry_key(&mut client, path).await;
            stored_entry(&mut client, &key).await
        }
    };
    for path in ["/mr", "/pr", "/sm"] {
        let e = entry(path).await;
        assert_eq!((e.swr_until, e.sie_until), (e.soft, e.soft), "{path}: no stale windows");
    }
    let e = entry("/swr").await;
    // The origin's windows, within the configured 300 s.
    assert_eq!((e.swr_until - e.soft, e.sie_until - e.soft), (1000, 7000));
    let e = entry("/expires").await;
    // (Less the response's apparent age: seconds on a busy machine.)
    assert!((10_000..=20_000).contains(&(e.soft - e.stored)), "{e:?}");
    // An upstream Age of 50 s: stored 50 s in the past, fresh for the 10 s left.
    let e = entry("/aged").await;
    let after = wall_ms();
    assert!((before + 9_000..=after + 10_500).contains(&e.soft), "{e:?} {before}..{after}");
    let res = get(&app, "/api/cache/proxy/aged").await;
    assert_eq!(x_cache(&res), "HIT");
    assert_age(&res, 50, 50, fetched);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // must-revalidate and the like: never served stale; the request that finds the entry
    // stale refreshes it before answering.
    for path in ["/mr", "/pr", "/sm"] {
        let res = get(&app, &format!("/api/cache/proxy{path}")).await;
        assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("MISS", Some(2)), "{path}");
    }
    // Within the origin's stale-while-revalidate second: stale, refreshed after the answer.
    let res = get(&app, "/api/cache/proxy/swr").await;
    assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("STALE", Some(1)));
}

in_both_modes!(freshness_follows_the_origin);

/// Past the origin's stale-while-revalidate window the stale copy is not served.
#[tokio::test(flavor = "multi_thread")]
async fn no_stale_copy_past_the_origins_window() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        default_reply(target, n).header("cache-control", "max-age=1, stale-while-revalidate=1")
    });
    let app = app(Mode::Outbound, &redis, &origin);
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/w").await), "MISS");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let res = get(&app, "/api/cache/proxy/w").await;
    assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("MISS", Some(2)));
}

/// Stale entries are revalidated with the origin's validators; a 304 keeps the entry (and
/// its body) with the freshness the 304 gives.
async fn stale_entries_are_revalidated_and_kept_on_304(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| match (target, n) {
        ("/etag", 1) => default_reply(target, n)
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=1, must-revalidate"),
        ("/lm", 1) => default_reply(target, n)
            .header("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("cache-control", "max-age=1, must-revalidate"),
        _ => Reply {
            status: 304,
            headers: vec![("cache-control".into(), "max-age=60".into())],
            body: Vec::new(),
            delay: Duration::ZERO,
            trickle: None,
        },
    });
    let app = app(mode, &redis, &origin);
    let mut client = redis.client().await;
    for path in ["/etag", "/lm"] {
        assert_eq!(x_cache(&get(&app, &format!("/api/cache/proxy{path}")).await), "MISS");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for path in ["/etag", "/lm"] {
        let url = format!("/api/cache/proxy{path}");
        let res = get(&app, &url).await;
        assert_eq!((res.status, x_cache(&res)), (200, "MISS"), "{path}");
        assert_eq!(
            res.header("cache-status"),
            Some("spin-redis-cache; fwd=stale; fwd-status=304; stored")
        );
        assert_eq!(res.json(), json!({"target": path, "n": 1}), "{path}: the kept body");
        assert_eq!(res.header("cache-control"), Some("max-age=60"));
        let res = get(&app, &url).await;
        assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("HIT", Some(1)), "{path}");
        let key = entry_key(&mut client, path).await;
        let e = stored_entry(&mut client, &key).await;
        assert!((55_000..=60_000).contains(&(e.soft - e.stored)), "{e:?}");
    }
    let seen = origin.seen();
    assert_eq!(seen[2].header("if-none-match"), Some("\"v1\""));
    assert_eq!(seen[3].header("if-modified-since"), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
}

in_both_modes!(stale_entries_are_revalidated_and_kept_on_304);

/// Clients' own conditional requests are answered 304 from the cache.
async fn conditional_requests_get_304(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| {
        default_reply(target, n)
            .header("etag", "W/\"v1\"")
            .header("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("cache-control", "public, max-age=60")
    });
    let app = app(mode, &redis, &origin);
    let ask = |name: &'static str, value: &'static str| {
        let app = app.clone();
        async move { app.get("/api/cache/proxy/c").header(name, value).send().await }
    };
    // The miss itself answers the condition.
    let res = ask("if-none-match", "\"v1\"").await;
    assert_eq!((res.status, x_cache(&res), res.body.len()), (304, "MISS", 0));
    for (name, value, status) in [
        ("if-none-match", "\"v1\"", 304),
        ("if-none-match", "\"v0\", W/\"v1\"", 304),
        ("if-none-match", "*", 304),
        ("if-none-match", "\"v2\"", 200),
        ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT", 304),
        ("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT", 304),
        ("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT", 200),
        ("if-modified-since", "not a date", 200),
    ] {
        let res = ask(name, value).await;
        assert_eq!((res.status, x_cache(&res)), (status, "HIT"), "{name}: {value}");
        assert_eq!(res.redis_connections, mode.read_connections());
        if status == 304 {
            assert!(res.body.is_empty());
            assert_eq!(res.header("etag"), Some("W/\"v1\""));
            assert_eq!(res.header("cache-control"), Some("public, max-age=60"));
            assert_eq!(res.header("content-type"), None);
        } else {
            assert_eq!(res.json()["n"], 1);
        }
    }
    assert_eq!(origin.total_hits(), 1);
}

in_both_modes!(conditional_requests_get_304);

// ---------------------------------------------------------------------------------------
// Bounds and write-through (issue 16.6, 16.7)

#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_paths_and_query_parameters_reach_the_origin() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(
        Mode::Outbound,
        &redis,
        &origin,
        &[
            ("cache_path_prefixes", "/public/, /profiles/"),
            ("cache_query_ignore", "utm_source, fbclid"),
        ],
    );
    for path in ["/admin/metrics", "/public", "/publicity/x", "/profilesx/1"] {
        let res = get(&app, &format!("/api/cache/proxy{path}")).await;
        assert_error(&res, 404, "not_proxied");
        assert_eq!(res.redis_connections, 0);
        let res = app.post(&format!("/api/cache/proxy{path}")).body("x").send().await;
        assert_error(&res, 404, "not_proxied");
    }
    assert_eq!(origin.total_hits(), 0);

    let res = get(&app, "/api/cache/proxy/public/q?utm_source=mail&id=1&fbclid=abc").await;
    assert_eq!((x_cache(&res), res.json()["target"].as_str()), ("MISS", Some("/public/q?id=1")));
    let res = get(&app, "/api/cache/proxy/public/q?id=1&utm_source=other").await;
    assert_eq!(x_cache(&res), "HIT");
    // The demo default: only the demo origin's profiles.
    let default = builder(&redis).variable("origin_url", origin.url()).load().unwrap();
    assert_error(&get(&default, "/api/cache/proxy/admin").await, 404, "not_proxied");

    let app = app_with(Mode::Outbound, &redis, &origin, &[("cache_query_allow", "id, page")]);
    let res = get(&app, "/api/cache/proxy/s?page=2&x=1&id=7&utm_source=a").await;
    assert_eq!(res.json()["target"], "/s?id=7&page=2");
}

/// 403, 410 and 451 from the origin evict the entry.
async fn forbidden_gone_and_unavailable_evict(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    origin.respond(|target, n| match n {
        1 => default_reply(target, n).header("cache-control", "max-age=1, must-revalidate"),
        _ => Reply::json(target[3..].parse().unwrap(), json!({"n": n})),
    });
    let app = app(mode, &redis, &origin);
    let mut client = redis.client().await;
    for status in [403u16, 410, 451] {
        let url = format!("/api/cache/proxy/e/{status}");
        assert_eq!(x_cache(&get(&app, &url).await), "MISS");
    }
    assert_eq!(entry_keys(&mut client).await.len(), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for status in [403u16, 410, 451] {
        let url = format!("/api/cache/proxy/e/{status}");
        let res = get(&app, &url).await;
        assert_eq!((res.status, x_cache(&res)), (status, "BYPASS"));
    }
    assert!(entry_keys(&mut client).await.is_empty());
}

in_both_modes!(forbidden_gone_and_unavailable_evict);

/// Writes go through to the origin as sent; a 2xx purges the path, so the writer reads its
/// own write; a failed write leaves the entry.
async fn writes_go_through_and_purge_on_success(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(mode, &redis, &origin, &[("cache_vary_headers", "accept-language")]);
    let url = "/api/cache/proxy/items/w?b=1&a=2";
    assert_eq!(x_cache(&get(&app, url).await), "MISS");
    assert_eq!(x_cache(&app.get(url).header("accept-language", "de").send().await), "MISS");
    assert_eq!(x_cache(&get(&app, url).await), "HIT");

    let res = app
        .request(http::Method::PUT, url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer origin-token")
        .header("cookie", "s=1")
        // Hop-by-hop (RFC 9110 7.6.1): never forwarded. (A `Connection` field never reaches
        // the component: the host consumes it.)
        .header("proxy-authenticate", "Basic realm=x")
        .body(r#"{"name":"new"}"#)
        .send()
        .await;
    assert_eq!((res.status, x_cache(&res)), (200, "BYPASS"), "{}", res.logs);
    assert_eq!(res.header("cache-status"), Some("spin-redis-cache; fwd=method; fwd-status=200"));
    let write = origin.seen().into_iter().find(|s| s.method == "PUT").unwrap();
    assert_eq!(write.target, "/items/w?a=2&b=1");
    assert_eq!(write.body, br#"{"name":"new"}"#);
    assert_eq!(write.header("content-type"), Some("application/json"));
    assert_eq!(write.header("authorization"), Some("Bearer origin-token"));
    assert_eq!(write.header("cookie"), Some("s=1"));
    assert_eq!(write.header("proxy-authenticate"), None);
    // Every variant was purged.
    let res = get(&app, url).await;
    assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("MISS", Some(4)));
    let res = app.get(url).header("accept-language", "de").send().await;
    assert_eq!(x_cache(&res), "MISS");

    origin.respond(|_, n| Reply::json(409, json!({"conflict": n})));
    for method in [http::Method::POST, http::Method::PATCH] {
        let res = app.request(method, url).body("x").send().await;
        assert_eq!((res.status, x_cache(&res)), (409, "BYPASS"));
    }
    assert_eq!(x_cache(&get(&app, url).await), "HIT");
}

in_both_modes!(writes_go_through_and_purge_on_success);

// ---------------------------------------------------------------------------------------
// Standards mode (issue 28)

async fn standards_mode_is_an_rfc_9111_shared_cache(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(
        mode,
        &redis,
        &origin,
        &[("cache_mode", "standard"), ("cache_vary_headers", ""), ("cache_pass_ttl_seconds", "0")],
    );
    origin.respond(|target, n| {
        let reply = Reply::json(200, json!({"target": target, "n": n}));
        match target {
            "/s/fresh" => reply.header("cache-control", "max-age=60").header("x-custom", "1"),
            "/s/vary" => reply.header("cache-control", "max-age=60").header("vary", "X-Lang"),
            "/s/aged" => reply.header("cache-control", "no-store").header("age", "5"),
            _ => reply,
        }
    });
    // Every end-to-end field forwarded and stored.
    let res = app.get("/api/cache/proxy/s/fresh").header("x-trace", "7").send().await;
    assert_eq!(x_cache(&res), "MISS", "{}", res.logs);
    assert_eq!(origin.seen()[0].header("x-trace"), Some("7"));
    let res = get(&app, "/api/cache/proxy/s/fresh").await;
    assert_eq!((x_cache(&res), res.header("x-custom")), ("HIT", Some("1")));
    // No heuristic freshness without Last-Modified: not stored.
    for n in 1..=2 {
        let res = get(&app, "/api/cache/proxy/s/none").await;
        assert_eq!((x_cache(&res), res.json()["n"].as_u64()), ("BYPASS", Some(n)));
    }
    // An answer to a request with Authorization is not stored without public.
    for _ in 0..2 {
        let res = app
            .get("/api/cache/proxy/s/fresh?auth")
            .header("authorization", "Basic x")
            .send()
            .await;
        assert_eq!(x_cache(&res), "BYPASS");
    }
    // Vary on a field nobody configured: one entry per value.
    for (lang, outcome, n) in [("a", "MISS", 1), ("b", "MISS", 2), ("a", "HIT", 1)] {
        let res = app.get("/api/cache/proxy/s/vary").header("x-lang", lang).send().await;
        assert_eq!((x_cache(&res), res.json()["n"].as_u64()), (outcome, Some(n)), "{lang}");
    }
    // An answer not stored keeps the origin's Age.
    assert_eq!(get(&app, "/api/cache/proxy/s/aged").await.header("age"), Some("5"));
    // DELETE is the origin's, and invalidates the path.
    let res = app.request(http::Method::DELETE, "/api/cache/proxy/s/fresh").send().await;
    assert_eq!((res.status, x_cache(&res)), (200, "BYPASS"));
    assert!(origin.seen().iter().any(|s| s.method == "DELETE" && s.target == "/s/fresh"));
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/s/fresh").await), "MISS");
    // Purges moved to /api/cache/entries/.
    let res = app
        .request(http::Method::DELETE, "/api/cache/entries/s/vary")
        .header("authorization", &format!("Bearer {PURGE_TOKEN}"))
        .send()
        .await;
    assert_eq!((res.status, res.json()["purged"].as_i64()), (200, Some(2)), "{}", res.logs);
    let res = app.get("/api/cache/proxy/s/vary").header("x-lang", "a").send().await;
    assert_eq!(x_cache(&res), "MISS");
}

in_both_modes!(standards_mode_is_an_rfc_9111_shared_cache);

async fn standards_mode_ranges_unknown_statuses_and_a_disconnected_origin(mode: Mode) {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(
        mode,
        &redis,
        &origin,
        &[("cache_mode", "standard"), ("cache_vary_headers", ""), ("cache_pass_ttl_seconds", "0")],
    );
    origin.respond(|target, n| {
        let reply = Reply::json(200, json!({"target": target, "n": n}));
        match target {
            "/r/fresh" => reply.header("cache-control", "max-age=60"),
            "/r/odd" => Reply { status: 299, ..reply }.header("cache-control", "max-age=60"),
            "/r/strange" => Reply { status: 499, ..reply }
                .header("cache-control", "max-age=60, no-store, must-understand"),
            "/r/short" => reply.header("cache-control", "max-age=1"),
            "/r/strict" => reply.header("cache-control", "max-age=1, must-revalidate"),
            _ => reply,
        }
    });
    // A range is answered from the complete answer: the fill asks for all of it.
    let res = app.get("/api/cache/proxy/r/fresh").header("range", "bytes=0-1").send().await;
    assert_eq!((res.status, x_cache(&res), res.text()), (206, "MISS", "{\"".to_owned()));
    assert_eq!(origin.seen()[0].header("range"), None);
    let full = get(&app, "/api/cache/proxy/r/fresh").await;
    let len = full.body.len();
    let res = app.get("/api/cache/proxy/r/fresh").header("range", "bytes=-2").send().await;
    assert_eq!((res.status, x_cache(&res), res.text()), (206, "HIT", "\"}".to_owned()));
    let range = format!("bytes {}-{}/{len}", len - 2, len - 1);
    assert_eq!(res.header("content-range"), Some(range.as_str()));
    let res =
        app.get("/api/cache/proxy/r/fresh").header("range", &format!("bytes={len}-")).send().await;
    assert_eq!(res.status, 416);
    // A stale If-Range: the whole answer.
    let res = app
        .get("/api/cache/proxy/r/fresh")
        .header("range", "bytes=0-1")
        .header("if-range", "\"other\"")
        .send()
        .await;
    assert_eq!((res.status, res.body.len()), (200, len));
    assert_eq!(origin.hits("/r/fresh"), 1);
    // An unknown status with explicit freshness is stored; with must-understand it is not.
    for (path, outcome) in
        [("odd", "MISS"), ("odd", "HIT"), ("strange", "BYPASS"), ("strange", "BYPASS")]
    {
        let res = get(&app, &format!("/api/cache/proxy/r/{path}")).await;
        assert_eq!(x_cache(&res), outcome, "{path} {}", res.logs);
    }
    // The origin gone: a stale entry is served unless its origin asked for revalidation.
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/r/short").await), "MISS");
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/r/strict").await), "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.stop().await;
    let res = get(&app, "/api/cache/proxy/r/short").await;
    assert_eq!((res.status, x_cache(&res)), (200, "STALE"), "{}", res.logs);
    assert_error(&get(&app, "/api/cache/proxy/r/strict").await, 502, "origin_unreachable");
}

in_both_modes!(standards_mode_ranges_unknown_statuses_and_a_disconnected_origin);

// ---------------------------------------------------------------------------------------
// Sampled hit counting (issue 14, deliverable 4)

#[tokio::test(flavor = "multi_thread")]
async fn fast_path_hits_are_counted_by_sampling() {
    let redis = RedisServer::plain();
    let origin = Origin::start().await;
    let app = app_with(Mode::FastPath, &redis, &origin, &[("cache_hit_sampling", "2")]);
    assert_eq!(x_cache(&get(&app, "/api/cache/proxy/sampled").await), "MISS");
    for _ in 0..200 {
        let res = get(&app, "/api/cache/proxy/sampled").await;
        assert_eq!((x_cache(&res), res.redis_connections), ("HIT", 0));
    }
    let mut client = redis.client().await;
    let (hits, _) = counter(&mut client, "hits").await;
    // Binomial(200, 1/2) x 2: mean 200, standard deviation 14; counted by twos.
    assert!(hits % 2 == 0 && (130..=270).contains(&hits), "{hits}");
}
