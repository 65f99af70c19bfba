//! The `locks` component through the Spin-compatible host into real `redis-server`s (plain,
//! and TLS with a password): leases, fencing tokens, expiry, waiting, races, bad input and
//! authentication, and one round trip per operation.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};

use crate::support::{assert_error, builder, Monitor, AZURE_STYLE_KEY};

const API_TOKEN: &str = "locks+T0ken/=locks+T0ken/=locks+T0ken/=";
/// A token of the right shape that this service never issued.
const FORGED_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// How long a fencing counter outlives its last lease (`FENCE_KEPT_MS` in src/locks/keys.rs).
const DAY_MS: i64 = 86_400_000;

fn app_with(redis: &RedisServer, vars: &[(&str, &str)]) -> TestApp {
    let mut builder = builder(redis)
        .variable("locks_api_token", API_TOKEN)
        .variable("locks_max_ttl_ms", "60000")
        .variable("locks_max_wait_ms", "3000");
    for (name, value) in vars {
        builder = builder.variable(name, *value);
    }
    builder.load().expect("app loads")
}

fn app(redis: &RedisServer) -> TestApp {
    app_with(redis, &[])
}

fn bearer() -> String {
    format!("Bearer {API_TOKEN}")
}

async fn acquire(app: &TestApp, name: &str, body: Value) -> TestResponse {
    app.post(&format!("/api/locks/{name}"))
        .header("authorization", &bearer())
        .json(&body)
        .send()
        .await
}

async fn renew(app: &TestApp, name: &str, token: &str, ttl_ms: u64) -> TestResponse {
    app.request(Method::PUT, &format!("/api/locks/{name}"))
        .header("authorization", &bearer())
        .header("lock-token", token)
        .json(&json!({"ttl_ms": ttl_ms}))
        .send()
        .await
}

async fn release(app: &TestApp, name: &str, token: &str) -> TestResponse {
    app.delete(&format!("/api/locks/{name}"))
        .header("authorization", &bearer())
        .header("lock-token", token)
        .send()
        .await
}

async fn status(app: &TestApp, name: &str) -> Value {
    let res =
        app.get(&format!("/api/locks/{name}")).header("authorization", &bearer()).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

/// 201 with a token and a fencing token: returns both.
fn acquired(res: &TestResponse, ttl_ms: u64) -> (String, u64) {
    assert_eq!(res.status, 201, "{} {}", res.text(), res.logs);
    let body = res.json();
    let token = body["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 43, "32 random bytes, base64url: {token}");
    assert_eq!(body["expires_in_ms"], ttl_ms);
    (token, body["fencing_token"].as_u64().expect("fencing token"))
}

async fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let mut conn = redis.client().await;
    redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap()
}

/// The whole life of a lease, each step one connection and one round trip (`EVALSHA`).
async fn lease_lifecycle(redis: &RedisServer) {
    let app = app(redis);
    // Every script once, so the steps below are all EVALSHA.
    let (t, _) = acquired(&acquire(&app, "warm", json!({"ttl_ms": 60000})).await, 60000);
    assert_eq!(renew(&app, "warm", &t, 60000).await.status, 200);
    assert_eq!(release(&app, "warm", &t).await.status, 200);
    status(&app, "warm").await;
    let mut monitor = Monitor::start(redis).await;
    let one_round_trip =
        |res: &TestResponse| assert_eq!(res.redis_connections, 1, "{}", res.text());

    let res = acquire(&app, "job-1", json!({"ttl_ms": 30000})).await;
    one_round_trip(&res);
    let (token, fence) = acquired(&res, 30000);
    assert_eq!(monitor.take().await, ["EVALSHA"]);
    // (The test's own reads below are taken off the monitor before each next request.)
    let left = pttl(redis, "srp:lock:{job-1}").await;
    // (Bounds leave a busy machine seconds between the script and this read.)
    assert!((20_000..=30_000).contains(&left), "lease TTL in Redis: {left}");
    // The fencing counter outlives the lease by a day, and no more.
    let kept = pttl(redis, "srp:lock:{job-1}:fence").await;
    assert!((DAY_MS..=DAY_MS + 30_000).contains(&kept), "fencing counter TTL: {kept}");
    // Redis holds a digest of the token, never the token.
    let mut client = redis.client().await;
    let stored: String = client.get("srp:lock:{job-1}").await.unwrap();
    assert!(!stored.contains(&token), "{stored}");
    assert!(stored.starts_with(&format!("{fence} ")), "{stored}");
    monitor.take().await;

    // Held: 409 with the time left, as a body field and as Retry-After.
    let res = acquire(&app, "job-1", json!({"ttl_ms": 1000})).await;
    one_round_trip(&res);
    assert_error(&res, 409, "lock_held");
    let left = res.json()["expires_in_ms"].as_u64().unwrap();
    assert!((15_000..=30_000).contains(&left), "{left}");
    assert_eq!(res.header("retry-after"), Some((left.div_ceil(1000)).to_string().as_str()));
    assert_eq!(monitor.take().await, ["EVALSHA"]);

    // Only the holder renews; the fencing token stays.
    let res = renew(&app, "job-1", FORGED_TOKEN, 50000).await;
    one_round_trip(&res);
    assert_error(&res, 409, "not_holder");
    assert!(res.json()["expires_in_ms"].as_u64().unwrap() <= 30000);
    let res = renew(&app, "job-1", &token, 50000).await;
    one_round_trip(&res);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"fencing_token": fence, "expires_in_ms": 50000}));
    assert_eq!(monitor.take().await, ["EVALSHA", "EVALSHA"]);
    assert!(pttl(redis, "srp:lock:{job-1}").await > 40_000);
    // Renewing carries the counter along: it still outlives the lease by a day.
    let kept = pttl(redis, "srp:lock:{job-1}:fence").await;
    assert!((DAY_MS + 40_000..=DAY_MS + 50_000).contains(&kept), "fencing counter TTL: {kept}");
    monitor.take().await;

    let s = status(&app, "job-1").await;
    assert_eq!((s["held"].clone(), s["fencing_token"].clone()), (json!(true), json!(fence)));
    assert_eq!(s["last_fencing_token"], fence);
    assert!(s.get("token").is_none(), "{s}");
    assert_eq!(monitor.take().await, ["EVALSHA"]);

    // Only the holder releases.
    let res = release(&app, "job-1", FORGED_TOKEN).await;
    assert_error(&res, 409, "not_holder");
    assert_eq!(status(&app, "job-1").await["held"], true);
    let res = release(&app, "job-1", &token).await;
    one_round_trip(&res);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"released": true, "fencing_token": fence}));
    assert_eq!(monitor.take().await, ["EVALSHA", "EVALSHA", "EVALSHA"]);
    assert_eq!(pttl(redis, "srp:lock:{job-1}").await, -2);
    // Released twice: the second finds no lease.
    let res = release(&app, "job-1", &token).await;
    assert_error(&res, 409, "not_holder");
    assert!(res.json().get("expires_in_ms").is_none());
    assert!(res.header("retry-after").is_none());

    // The next holder gets a larger fencing token.
    let (_, next) = acquired(&acquire(&app, "job-1", json!({"ttl_ms": 1000})).await, 1000);
    assert!(next > fence, "{next} > {fence}");
    let s = status(&app, "never-used").await;
    assert_eq!(
        s,
        json!({"name": "never-used", "held": false, "expires_in_ms": null, "fencing_token": null, "last_fencing_token": null})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_lifecycle_over_plain_redis() {
    lease_lifecycle(&RedisServer::plain()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_lifecycle_over_tls_with_a_password() {
    lease_lifecycle(&RedisServer::tls(AZURE_STYLE_KEY)).await;
}

/// 100 workers race for one lock: exactly one holds it.
async fn race(redis: &RedisServer) {
    let app = app(redis);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { acquire(&app, "race", json!({"ttl_ms": 60000})).await })
        })
        .collect();
    let mut holders = Vec::new();
    for task in tasks {
        let res = task.await.unwrap();
        assert_eq!(res.redis_connections, 1);
        match res.status {
            201 => holders.push(res.json()["fencing_token"].as_u64().unwrap()),
            409 => assert_eq!(res.json()["code"], "lock_held"),
            s => panic!("status {s}: {}", res.text()),
        }
    }
    assert_eq!(holders.len(), 1, "exactly one holder");
    assert_eq!(status(&app, "race").await["fencing_token"], holders[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_racing_acquires_give_one_holder_over_plain_redis() {
    race(&RedisServer::plain()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_racing_acquires_give_one_holder_over_tls() {
    race(&RedisServer::tls(AZURE_STYLE_KEY)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_passes_on_and_its_old_holder_cannot_touch_the_new_one() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let (old, old_fence) = acquired(&acquire(&app, "batch", json!({"ttl_ms": 300})).await, 300);
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Redis expired it; the old holder's renew finds no lease.
    assert_eq!(status(&app, "batch").await["held"], false);
    assert_error(&renew(&app, "batch", &old, 1000).await, 409, "not_holder");

    let (new, new_fence) = acquired(&acquire(&app, "batch", json!({"ttl_ms": 60000})).await, 60000);
    assert!(new_fence > old_fence);
    // The paused worker wakes up: it can neither extend nor delete its successor's lease.
    let res = renew(&app, "batch", &old, 60000).await;
    assert_error(&res, 409, "not_holder");
    assert!(res.json()["detail"].as_str().unwrap().contains("another holder"));
    assert_error(&release(&app, "batch", &old).await, 409, "not_holder");
    // Nor can the holder of another lock, with its own valid token.
    let (other, _) = acquired(&acquire(&app, "other", json!({"ttl_ms": 60000})).await, 60000);
    assert_error(&release(&app, "batch", &other).await, 409, "not_holder");
    assert_error(&renew(&app, "batch", &other, 60000).await, 409, "not_holder");
    let s = status(&app, "batch").await;
    assert_eq!((s["held"].clone(), s["fencing_token"].clone()), (json!(true), json!(new_fence)));
    assert!(s["expires_in_ms"].as_u64().unwrap() <= 60000);
    assert_eq!(release(&app, "batch", &new).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn fencing_tokens_still_grow_when_a_failover_loses_the_last_acquisition() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let (_, lost) = acquired(&acquire(&app, "f", json!({"ttl_ms": 60000})).await, 60000);
    // A replica promoted before the script reached it: no lock, and the counter one behind.
    let mut client = redis.client().await;
    let _: () = client.del("srp:lock:{f}").await.unwrap();
    let _: () = client.set("srp:lock:{f}:fence", lost - 1).await.unwrap();
    let (_, next) = acquired(&acquire(&app, "f", json!({"ttl_ms": 60000})).await, 60000);
    assert!(
        next > lost,
        "a second holder must never get the lost holder's token: {next} vs {lost}"
    );
}

/// Redis `TIME` in microseconds, the clock the acquire script floors tokens at.
async fn redis_time_us(redis: &RedisServer) -> u64 {
    let mut conn = redis.client().await;
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    s * 1_000_000 + us
}

#[tokio::test(flavor = "multi_thread")]
async fn fencing_tokens_still_grow_when_the_counter_expired_between_holders() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let mut client = redis.client().await;
    let mut issued = Vec::new();
    for _ in 0..3 {
        let (token, fence) = acquired(&acquire(&app, "exp", json!({"ttl_ms": 60000})).await, 60000);
        issued.push(fence);
        assert_eq!(release(&app, "exp", &token).await.status, 200);
        // The counter's expiry, as Redis would carry it out (no waiting a day).
        let gone: i64 = client.del("srp:lock:{exp}:fence").await.unwrap();
        assert_eq!(gone, 1, "acquire writes the counter");
    }
    // And a failover that lost the last acquisition and had no counter either.
    let (_, lost) = acquired(&acquire(&app, "exp", json!({"ttl_ms": 60000})).await, 60000);
    let _: () = client.del(&["srp:lock:{exp}", "srp:lock:{exp}:fence"]).await.unwrap();
    issued.push(lost);
    let (_, next) = acquired(&acquire(&app, "exp", json!({"ttl_ms": 60000})).await, 60000);
    issued.push(next);
    assert!(issued.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {issued:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_ahead_of_the_clock_is_kept_until_the_clock_passes_it() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let mut client = redis.client().await;
    // A counter 1000 s ahead of Redis TIME (a burst of acquisitions could, in principle, run
    // it ahead): it must not expire before TIME passes it, or a restart from TIME would
    // reissue its tokens.
    let ahead = redis_time_us(&redis).await + 1_000_000_000;
    let _: () = client.set("srp:lock:{ahead}:fence", ahead).await.unwrap();
    let (token, fence) = acquired(&acquire(&app, "ahead", json!({"ttl_ms": 1000})).await, 1000);
    assert_eq!(fence, ahead + 1);
    let kept = pttl(&redis, "srp:lock:{ahead}:fence").await;
    assert!(
        // (Slack for a slow machine: far less than the 1000 s lead it proves.)
        kept > 1_000_000 + DAY_MS - 60_000 && kept <= 1_000_000 + DAY_MS + 1000 + 1,
        "kept past the lease by the day and the lead: {kept}"
    );
    // A renew never shortens it.
    assert_eq!(renew(&app, "ahead", &token, 1000).await.status, 200);
    assert!(pttl(&redis, "srp:lock:{ahead}:fence").await > 1_000_000 + DAY_MS - 60_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_left_by_earlier_versions_get_an_expiry_on_their_next_use() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let mut client = redis.client().await;
    // Earlier versions wrote the counter without an expiry.
    let old = redis_time_us(&redis).await - 5_000_000;
    let _: () = client.set("srp:lock:{legacy}:fence", old).await.unwrap();
    assert_eq!(pttl(&redis, "srp:lock:{legacy}:fence").await, -1);
    let (_, fence) = acquired(&acquire(&app, "legacy", json!({"ttl_ms": 1000})).await, 1000);
    assert!(fence > old);
    assert!(pttl(&redis, "srp:lock:{legacy}:fence").await > DAY_MS - 60_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_ms_polls_until_the_lock_is_free_within_its_bound() {
    let redis = RedisServer::plain();
    // Waits far longer than any step needs, so a busy machine cannot end one early; each
    // upper bound below is still far below the wait or lease it tells apart.
    let app = app_with(&redis, &[("locks_max_wait_ms", "20000")]);
    // Free when the lease expires. The lease starts after `started`, so the waiter cannot
    // have it before 400 ms from then, however slow the machine.
    let started = Instant::now();
    acquired(&acquire(&app, "w", json!({"ttl_ms": 400})).await, 400);
    let res = acquire(&app, "w", json!({"ttl_ms": 60000, "wait_ms": 20000})).await;
    let (token, _) = acquired(&res, 60000);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(10000),
        "{waited:?}"
    );
    assert_eq!(res.redis_connections, 1, "polling reuses the request's connection");

    // Free when its holder releases it, long before its 60 s lease would end.
    let app2 = app.clone();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        release(&app2, "w", &token).await
    });
    let started = Instant::now();
    let res = acquire(&app, "w", json!({"ttl_ms": 60000, "wait_ms": 20000})).await;
    acquired(&res, 60000);
    assert_eq!(releaser.await.unwrap().status, 200);
    assert!(started.elapsed() < Duration::from_millis(15000), "{:?}", started.elapsed());

    // Still held when the wait is over: 409, after wait_ms (and long before the lease ends).
    let started = Instant::now();
    let res = acquire(&app, "w", json!({"ttl_ms": 1000, "wait_ms": 300})).await;
    assert_error(&res, 409, "lock_held");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(30000),
        "{waited:?}"
    );

    // Beyond locks_max_wait_ms: refused before Redis is asked.
    let res = acquire(&app, "w", json!({"ttl_ms": 1000, "wait_ms": 20001})).await;
    assert_error(&res, 400, "invalid_wait");
    assert_eq!(res.redis_connections, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_json_errors_without_touching_redis() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let auth = bearer();
    let post = |name: &str, body: &str| {
        app.post(&format!("/api/locks/{name}"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    for (res, status, code) in [
        (post("j", "{").send().await, 400, "invalid_json"),
        (post("j", "").send().await, 400, "invalid_json"),
        (post("j", "{}").send().await, 400, "invalid_json"),
        (post("j", r#"{"ttl_ms": 1.5}"#).send().await, 400, "invalid_json"),
        (post("j", r#"{"ttl_ms": -1}"#).send().await, 400, "invalid_json"),
        (post("j", r#"{"ttl_ms": 100, "owner": "me"}"#).send().await, 400, "invalid_json"),
        // The fields in order as an array, which serde's derived structs take (issue 27).
        (post("j", "[60000]").send().await, 400, "invalid_json"),
        (post("j", "[60000, 0]").send().await, 400, "invalid_json"),
        (post("j", r#"{"ttl_ms": 0}"#).send().await, 400, "invalid_ttl"),
        (post("j", r#"{"ttl_ms": 60001}"#).send().await, 400, "invalid_ttl"),
        (post("a!b", r#"{"ttl_ms": 100}"#).send().await, 400, "invalid_name"),
        (post("a%7Bb%7D", r#"{"ttl_ms": 100}"#).send().await, 400, "invalid_name"),
        (post(&"n".repeat(129), r#"{"ttl_ms": 100}"#).send().await, 400, "invalid_name"),
        (
            post("j", &format!(r#"{{"ttl_ms": 1, "x": "{}"}}"#, "a".repeat(2000))).send().await,
            413,
            "body_too_large",
        ),
        (
            app.post("/api/locks/j").header("authorization", &auth).body("ttl_ms=1").send().await,
            415,
            "unsupported_media_type",
        ),
        (
            app.delete("/api/locks/j").header("authorization", &auth).send().await,
            400,
            "missing_lock_token",
        ),
        (
            app.delete("/api/locks/j")
                .header("authorization", &auth)
                .header("lock-token", "not a token")
                .send()
                .await,
            400,
            "invalid_lock_token",
        ),
        (app.get("/api/locks/a/b").header("authorization", &auth).send().await, 404, "not_found"),
        (app.get("/api/locks").header("authorization", &auth).send().await, 404, "not_found"),
    ] {
        assert_error(&res, status, code);
        assert_eq!(res.redis_connections, 0, "{}", res.text());
    }
    let res =
        app.request(Method::PATCH, "/api/locks/j").header("authorization", &auth).send().await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("POST, PUT, DELETE, GET"));
    // A list people read (issue 33), whatever the error body's shape.
    assert!(res.text().contains("use POST, PUT, DELETE or GET"), "{}", res.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_needs_the_bearer_token() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let (token, _) = acquired(&acquire(&app, "guarded", json!({"ttl_ms": 60000})).await, 60000);
    for auth in
        [None, Some("Bearer wrong-token-wrong-token-wrong-token"), Some("Basic Zm9vOmJhcg==")]
    {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::GET] {
            let mut req = app
                .request(method.clone(), "/api/locks/guarded")
                .header("lock-token", &token)
                .json(&json!({"ttl_ms": 60000}));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let res = req.send().await;
            assert_error(&res, 401, "unauthorized");
            assert_eq!(res.header("www-authenticate"), Some("Bearer"));
            assert_eq!(res.redis_connections, 0, "{method} {auth:?}");
        }
    }
    // The lease is untouched.
    assert_eq!(status(&app, "guarded").await["held"], true);

    let off = app_with(&redis, &[("locks_api_token", "")]);
    let res = acquire(&off, "guarded", json!({"ttl_ms": 1000})).await;
    assert_error(&res, 403, "locks_disabled");
    assert!(res.json()["detail"].as_str().unwrap().contains("locks_api_token"));

    let short = app_with(&redis, &[("locks_api_token", "changeme")]);
    let res = acquire(&short, "guarded", json!({"ttl_ms": 1000})).await;
    assert_error(&res, 500, "misconfigured");
    assert!(!res.text().contains("changeme"));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_a_clear_503() {
    let mut redis = RedisServer::plain();
    let app = app(&redis);
    redis.stop();
    let res = acquire(&app, "down", json!({"ttl_ms": 1000})).await;
    assert_error(&res, 503, "redis_unavailable");
    assert_eq!(res.header("retry-after"), Some("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_component_stays_under_512_kb() {
    let redis = RedisServer::plain();
    app(&redis); // builds it
    let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/target/wasm32-wasip2/release/locks.wasm");
    let size = std::fs::metadata(wasm).unwrap().len();
    assert!(size < 512 * 1024, "locks.wasm is {size} bytes");
}
