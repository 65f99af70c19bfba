//! The sessions component through the Spin-compatible host into real Redis, plain and TLS:
//! lifecycle, sliding and absolute expiry, cookies, bearer use, rotation, atomic patches,
//! list and revoke-all, refusal of bad ids and bodies, what Redis holds, and Redis down.
//!
//! Every behaviour test runs twice (see `in_both_modes!` in support): `NAME::outbound` with the
//! pooled fast path off, `NAME::fast_path` with it on. The tests at the end are about the fast path's
//! own promises: session reads without an outbound connection, the same answer as the
//! outbound read, sliding near the idle deadline, writes seen at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};

use crate::support::{
    assert_error, builder, command_calls, commands_between, in_both_modes, until_fast_enough, Mode,
    AZURE_STYLE_KEY, CONNECTION_SET_UP,
};

const API_TOKEN: &str = "backend-token-7f3a9c-0123456789abcdef";
const DEFAULT_COOKIE_ATTRIBUTES: &str = "; Path=/; Secure; HttpOnly; SameSite=Lax";

in_both_modes!(
    full_lifecycle_over_plain_redis,
    full_lifecycle_over_tls_redis_with_an_azure_style_key,
    bearer_token_works_like_the_cookie,
    cookies_are_found_among_others_in_any_header,
    cookie_name_and_attributes_are_configurable,
    cookie_settings_browsers_would_drop_are_refused,
    idle_timeout_slides_with_use,
    absolute_lifetime_caps_the_sliding_timeout,
    concurrent_patches_of_different_fields_all_survive,
    user_agents_are_kept_bounded_and_default_to_the_header,
    data_values_round_trip_exactly,
    list_and_revoke_all_cover_only_the_callers_user,
    expired_index_entries_are_pruned_and_sessions_per_user_capped,
    forged_truncated_and_oversized_ids_are_refused,
    creation_needs_the_backend_token,
    bad_bodies_are_refused_clearly,
    cross_site_writes_with_the_cookie_are_refused,
    redis_never_holds_a_raw_session_id,
    every_route_is_one_connection_and_one_command,
    unknown_routes_and_methods,
    values_that_are_not_sessions_read_as_ended,
    a_forged_path_info_never_changes_the_route,
    keys_the_backend_set_are_read_only_to_the_session_holder,
    a_rotated_id_lives_only_for_the_grace_period,
    a_rotated_away_id_can_read_and_nothing_else,
    a_session_cannot_hide_from_its_users_list_by_its_data,
    a_rotated_session_keeps_its_handle_and_can_still_be_revoked_by_it,
);

fn app_with(redis: &RedisServer, mode: Mode, vars: &[(&str, &str)]) -> TestApp {
    let mut b = builder(redis)
        .variable("sessions_api_token", API_TOKEN)
        .variable("redis_fast_path", (mode == Mode::FastPath).to_string());
    for (name, value) in vars {
        b = b.variable(name, *value);
    }
    b.load().expect("app loads")
}

fn app(redis: &RedisServer, mode: Mode) -> TestApp {
    app_with(redis, mode, &[])
}

fn cookie(id: &str) -> String {
    format!("__Host-session={id}")
}

/// The session id a response's `Set-Cookie` carries (rotation answers a cookie caller with
/// the cookie only).
fn cookie_id(res: &TestResponse) -> String {
    let set = res.header("set-cookie").unwrap_or_else(|| panic!("no set-cookie: {}", res.text()));
    set.strip_prefix("__Host-session=").unwrap().split(';').next().unwrap().to_owned()
}

/// `POST /api/sessions` as the app's backend; panics unless it is 201.
async fn create(app: &TestApp, user: &str, data: Value) -> (String, TestResponse) {
    let res = app
        .post("/api/sessions")
        .header("authorization", &format!("Bearer {API_TOKEN}"))
        .header("user-agent", "backend/1.0")
        .json(&json!({"user_id": user, "data": data, "user_agent": format!("browser of {user}")}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["session_id"].as_str().unwrap().to_owned();
    (id, res)
}

async fn get(app: &TestApp, id: &str) -> TestResponse {
    app.get("/api/sessions/current").header("cookie", &cookie(id)).send().await
}

async fn patch(app: &TestApp, id: &str, body: Value) -> TestResponse {
    app.request(http::Method::PATCH, "/api/sessions/current")
        .header("cookie", &cookie(id))
        .json(&body)
        .send()
        .await
}

/// 401 that deletes the cookie in the browser.
fn assert_unauthorized_and_cleared(res: &TestResponse) {
    assert_error(res, 401, "unauthorized");
    assert_eq!(
        res.header("set-cookie"),
        Some(format!("__Host-session=; Max-Age=0{DEFAULT_COOKIE_ATTRIBUTES}").as_str())
    );
}

/// The key-value store sends a PING each time a component opens it (Spin's `after_open`).
const STORE_OPEN: &[&str] = &["ping"];

/// The commands the session script runs inside Redis: commandstats counts a script's
/// `redis.call`s too, but they cost no round trip.
const INSIDE_THE_SCRIPT: &[&str] = &[
    "time",
    "exists",
    "get",
    "set",
    "del",
    "pexpireat",
    "zadd",
    "zrem",
    "zrange",
    "zremrangebyscore",
    "zcard",
    "zpopmin",
];

/// Every key and every value Redis holds, as text.
async fn dump(redis: &RedisServer) -> Vec<(String, String)> {
    let mut conn = redis.client().await;
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.unwrap();
        let values: Vec<String> = match kind.as_str() {
            "hash" => conn.hgetall::<_, Vec<String>>(&key).await.unwrap(),
            "zset" => conn.zrange_withscores::<_, Vec<String>>(&key, 0, -1).await.unwrap(),
            "string" => vec![conn.get(&key).await.unwrap()],
            other => panic!("unexpected key type {other} at {key}"),
        };
        out.push((key, values.join("\n")));
    }
    out
}

/// The Redis key of a session id: the test recomputes the documented layout.
fn session_key(id: &str) -> String {
    format!("srp:sess:{{{}}}:s:{}", &id[..4], sha256_b64url(id.as_bytes()))
}

/// base64url(SHA-256): computed here, independently of the component's own hashing.
fn sha256_b64url(data: &[u8]) -> String {
    let digest = sha256(data);
    base64url(&digest)
}

/// FIPS 180-4 SHA-256, small and slow: enough to recompute a few key names.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7].wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [t1.wrapping_add(t2), v[0], v[1], v[2], v[3].wrapping_add(t1), v[4], v[5], v[6]];
        }
        for i in 0..8 {
            h[i] = h[i].wrapping_add(v[i]);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

async fn lifecycle(redis: &RedisServer, mode: Mode) {
    // No grace period for the rotated-away id here (its own test covers it).
    let app = app_with(redis, mode, &[("sessions_rotation_grace_seconds", "0")]);
    let mut client = redis.client().await;

    // Create: 201, a 256-bit id, the cookie, and the data stored.
    let (id, res) = create(&app, "u1", json!({"cart": [1, 2], "theme": "dark"})).await;
    assert_eq!(res.json()["expires_in"], 1800);
    assert_eq!(id.len(), 48, "{id}");
    assert_eq!(
        res.header("set-cookie"),
        Some(format!("__Host-session={id}{DEFAULT_COOKIE_ATTRIBUTES}").as_str())
    );
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.redis_connections, 1);

    // Read by cookie: the whole session, the idle timeout slid.
    let res = get(&app, &id).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["user_id"], "u1");
    assert_eq!(body["data"], json!({"cart": [1, 2], "theme": "dark"}));
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["absolute_expires_in"], 43200);
    let created_at = body["created_at"].as_str().unwrap().to_owned();
    assert!(created_at.ends_with('Z') && created_at.len() == 24, "{created_at}");
    assert_eq!(res.redis_connections, mode.read_connections());
    let ttl: i64 = client.pttl(session_key(&id)).await.unwrap();
    assert!((1_780_000..=1_800_000).contains(&ttl), "{ttl}");

    // Patch: merge, replace, delete with null.
    let res = patch(&app, &id, json!({"theme": "light", "cart": null, "lang": "fi"})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"], json!({"theme": "light", "lang": "fi"}));
    assert_eq!(get(&app, &id).await.json()["data"], json!({"theme": "light", "lang": "fi"}));

    // Rotate: a new id for the same session; the old one is dead.
    let res = app.post("/api/sessions/current/rotate").header("cookie", &cookie(&id)).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    // A cookie caller gets the new id in the cookie only: page scripts never see it.
    assert_eq!(res.json(), json!({"expires_in": 1800}));
    let new_id = cookie_id(&res);
    assert_ne!(new_id, id);
    assert_eq!(&new_id[..4], &id[..4], "same user, same slot tag");
    assert_eq!(
        res.header("set-cookie"),
        Some(format!("__Host-session={new_id}{DEFAULT_COOKIE_ATTRIBUTES}").as_str())
    );
    assert_unauthorized_and_cleared(&get(&app, &id).await);
    let body = get(&app, &new_id).await.json();
    assert_eq!(body["data"], json!({"theme": "light", "lang": "fi"}));
    assert_eq!(
        body["created_at"],
        created_at.as_str(),
        "rotation keeps the session, only the id changes"
    );

    // List: just this one, marked current.
    let res = app.get("/api/sessions").header("cookie", &cookie(&new_id)).send().await;
    let sessions = res.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[0]["user_agent"], "browser of u1");

    // Logout: 204, cookie cleared, session gone from Redis and from the index.
    let res = app.delete("/api/sessions/current").header("cookie", &cookie(&new_id)).send().await;
    assert_eq!(res.status, 204);
    assert_eq!(
        res.header("set-cookie"),
        Some(format!("__Host-session=; Max-Age=0{DEFAULT_COOKIE_ATTRIBUTES}").as_str())
    );
    assert_unauthorized_and_cleared(&get(&app, &new_id).await);
    let keys: Vec<String> = client.keys("*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(app.key_value_connections(), mode.store_connections());

    // Nothing secret in the logs.
    let logs = app.logs();
    for secret in [id.as_str(), new_id.as_str(), API_TOKEN] {
        assert!(!logs.contains(secret), "secret in logs: {logs}");
    }
}

async fn full_lifecycle_over_plain_redis(mode: Mode) {
    lifecycle(&RedisServer::plain(), mode).await;
}

async fn full_lifecycle_over_tls_redis_with_an_azure_style_key(mode: Mode) {
    lifecycle(&RedisServer::tls(AZURE_STYLE_KEY), mode).await;
}

async fn bearer_token_works_like_the_cookie(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (id, _) = create(&app, "u1", json!({"a": 1})).await;
    let res = app
        .get("/api/sessions/current")
        .header("authorization", &format!("Bearer {id}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"], json!({"a": 1}));

    let res = app
        .request(http::Method::PATCH, "/api/sessions/current")
        .header("authorization", &format!("bearer {id}"))
        .json(&json!({"b": 2}))
        .send()
        .await;
    assert_eq!(res.json()["data"], json!({"a": 1, "b": 2}));

    // A bearer header wins over the cookie, and a bad one is not rescued by a good cookie.
    let res = app
        .get("/api/sessions/current")
        .header("authorization", "Bearer not-a-session")
        .header("cookie", &cookie(&id))
        .send()
        .await;
    assert_unauthorized_and_cleared(&res);
    assert_eq!(res.redis_connections, 0);
    let res = app
        .get("/api/sessions/current")
        .header("authorization", &format!("Basic {id}"))
        .send()
        .await;
    assert_unauthorized_and_cleared(&res);
}

async fn cookies_are_found_among_others_in_any_header(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (id, _) = create(&app, "u1", json!({})).await;
    for headers in [
        vec![format!("a=1; __Host-session={id}; b=2")],
        vec![format!("a=1;__Host-session=\"{id}\"")],
        vec![format!("  __Host-session = {id} ;theme=dark")],
        vec!["a=1".to_owned(), format!("__Host-session={id}")],
        vec![format!("session={id}x; __Host-session=short; __Host-session={id}")],
    ] {
        let mut req = app.get("/api/sessions/current");
        for h in &headers {
            req = req.header("cookie", h);
        }
        let res = req.send().await;
        assert_eq!(res.status, 200, "{headers:?}: {}", res.text());
    }
    let res =
        app.get("/api/sessions/current").header("cookie", &format!("session={id}")).send().await;
    assert_unauthorized_and_cleared(&res);
    assert_eq!(res.redis_connections, 0);
}

async fn cookie_name_and_attributes_are_configurable(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app_with(
        &redis,
        mode,
        &[
            ("sessions_cookie_name", "sid"),
            ("sessions_cookie_secure", "false"),
            ("sessions_cookie_same_site", "Strict"),
            ("sessions_cookie_path", "/app"),
            ("sessions_cookie_domain", "example.com"),
        ],
    );
    let (id, res) = create(&app, "u1", json!({})).await;
    assert_eq!(
        res.header("set-cookie"),
        Some(
            format!("sid={id}; Path=/app; Domain=example.com; HttpOnly; SameSite=Strict").as_str()
        )
    );
    let res = app.get("/api/sessions/current").header("cookie", &format!("sid={id}")).send().await;
    assert_eq!(res.status, 200);
    let res = app
        .get("/api/sessions/current")
        .header("cookie", &format!("__Host-session={id}"))
        .send()
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(
        res.header("set-cookie"),
        Some("sid=; Max-Age=0; Path=/app; Domain=example.com; HttpOnly; SameSite=Strict")
    );
}

async fn cookie_settings_browsers_would_drop_are_refused(mode: Mode) {
    let redis = RedisServer::plain();
    for (name, value) in [
        ("sessions_cookie_secure", "false"),
        ("sessions_cookie_path", "/app"),
        ("sessions_cookie_domain", "example.com"),
        ("sessions_cookie_same_site", "sometimes"),
        ("sessions_idle_timeout", "0"),
        ("sessions_absolute_timeout", "soon"),
        ("sessions_slide_threshold_percent", "0"),
        ("sessions_slide_threshold_percent", "101"),
    ] {
        let app = app_with(&redis, mode, &[(name, value)]);
        let res = app.get("/api/sessions/current").send().await;
        assert_error(&res, 500, "misconfigured");
        assert_eq!(res.redis_connections, 0);
    }
}

async fn idle_timeout_slides_with_use(mode: Mode) {
    until_fast_enough("idle timeout", |_| idle_timeout_attempt(mode)).await;
}

/// Judged only when each use came within the 3 s idle timeout of the last (the sleeps make
/// each gap at least 1.6 s; a busy machine can make one longer).
async fn idle_timeout_attempt(mode: Mode) -> bool {
    let redis = RedisServer::plain();
    let app = app_with(
        &redis,
        mode,
        &[("sessions_idle_timeout", "3"), ("sessions_absolute_timeout", "60")],
    );
    let mut client = redis.client().await;
    let mut last_use = Instant::now();
    let (id, res) = create(&app, "u1", json!({})).await;
    assert_eq!(res.json()["expires_in"], 3);

    // Used every 1.6 s, it outlives its 3 s idle timeout. Each read finds less than half of
    // the idle timeout left, so the fast path slides it too, through outbound Redis.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let sent = Instant::now();
        let res = get(&app, &id).await;
        let ttl: i64 = client.pttl(session_key(&id)).await.unwrap();
        // This read within the timeout of the last use, and the TTL read within 1 s of it.
        if last_use.elapsed() >= Duration::from_millis(2900)
            || sent.elapsed() >= Duration::from_millis(900)
        {
            return false;
        }
        last_use = sent;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["expires_in"], 3);
        assert_eq!(res.redis_connections, 1);
        assert!((2_000..=3_000).contains(&ttl), "{ttl}");
    }
    // Left alone for longer than the idle timeout, it ends.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert_unauthorized_and_cleared(&get(&app, &id).await);
    let exists: bool = client.exists(session_key(&id)).await.unwrap();
    assert!(!exists);
    true
}

async fn absolute_lifetime_caps_the_sliding_timeout(mode: Mode) {
    until_fast_enough("absolute lifetime", |_| absolute_lifetime_attempt(mode)).await;
}

/// Judged only when the reads came before the deadlines they probe (the sleeps make them
/// late enough; a busy machine can make them later).
async fn absolute_lifetime_attempt(mode: Mode) -> bool {
    let redis = RedisServer::plain();
    let app = app_with(
        &redis,
        mode,
        &[("sessions_idle_timeout", "3"), ("sessions_absolute_timeout", "4")],
    );
    let mut client = redis.client().await;
    let created = Instant::now();
    let (id, _) = create(&app, "u1", json!({})).await;

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let res = get(&app, &id).await;
    if created.elapsed() >= Duration::from_millis(2900) {
        return false;
    }
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.redis_connections, 1, "less than half the idle timeout left: slid");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // 3.2 s in: the idle timeout would give 3 s more, the absolute deadline allows 0.8 s.
    // The deadline cannot move any more, so the fast path has nothing to slide.
    let res = get(&app, &id).await;
    let ttl: i64 = client.pttl(session_key(&id)).await.unwrap();
    if created.elapsed() >= Duration::from_millis(3900) {
        return false;
    }
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["expires_in"], 1);
    assert_eq!(res.json()["absolute_expires_in"], 1);
    assert_eq!(res.redis_connections, mode.read_connections());
    assert!((1..=850).contains(&ttl), "{ttl}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_unauthorized_and_cleared(&get(&app, &id).await);
    true
}

async fn concurrent_patches_of_different_fields_all_survive(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (id, _) = create(&app, "u1", json!({"base": true})).await;
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let app = app.clone();
            let id = id.clone();
            tokio::spawn(
                async move { patch(&app, &id, json!({ format!("f{i}"): i })).await.status },
            )
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let data = get(&app, &id).await.json()["data"].clone();
    let mut expected = json!({"base": true});
    for i in 0..24 {
        expected[format!("f{i}")] = json!(i);
    }
    assert_eq!(data, expected);
}

async fn user_agents_are_kept_bounded_and_default_to_the_header(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let long = format!("Mozilla/5.0 {}\\u0007é", "x".repeat(400));
    let res = app
        .post("/api/sessions")
        .header("authorization", &format!("Bearer {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"user_id":"u1","user_agent":"{long}"}}"#))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["session_id"].as_str().unwrap().to_owned();
    let res = app
        .post("/api/sessions")
        .header("authorization", &format!("Bearer {API_TOKEN}"))
        .header("user-agent", "curl/8.5")
        .json(&json!({"user_id": "u1"}))
        .send()
        .await;
    assert_eq!(res.status, 201);
    let res = app.get("/api/sessions").header("cookie", &cookie(&id)).send().await;
    let mut agents: Vec<String> = res.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["user_agent"].as_str().unwrap().to_owned())
        .collect();
    agents.sort();
    assert_eq!(
        agents,
        vec![format!("Mozilla/5.0 {}", "x".repeat(256 - 12)), "curl/8.5".to_owned()]
    );
}

async fn data_values_round_trip_exactly(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let raw = r#"{"user_id":"u1","data":{"big":12345678901234567890123,"price":1.10,"e":1E+2,"s":"é\u00e9\n","n":[null,{}]}}"#;
    let res = app
        .post("/api/sessions")
        .header("authorization", &format!("Bearer {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["session_id"].as_str().unwrap().to_owned();
    let text = get(&app, &id).await.text();
    for piece in
        [r#""big":12345678901234567890123"#, r#""price":1.10"#, r#""e":1E+2"#, r#""n":[null,{}]"#]
    {
        assert!(text.contains(piece), "{piece} not in {text}");
    }
}

async fn list_and_revoke_all_cover_only_the_callers_user(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let mut client = redis.client().await;
    let (a, _) = create(&app, "alice", json!({})).await;
    let (b, _) = create(&app, "alice", json!({})).await;
    let (c, _) = create(&app, "alice", json!({})).await;
    let (other, _) = create(&app, "bob", json!({})).await;

    let res = app.get("/api/sessions").header("cookie", &cookie(&b)).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.redis_connections, 1);
    let sessions = res.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(sessions[0]["current"], true, "most recently seen first");
    assert!(sessions
        .iter()
        .all(|s| s["user_agent"] == "browser of alice" && s["expires_in"] == 1800));
    assert!(
        !res.text().contains(&a[5..]) && !res.text().contains(&c[5..]),
        "other ids never listed"
    );

    let res =
        app.delete("/api/sessions").header("authorization", &format!("Bearer {a}")).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"revoked": 3}));
    assert!(res.header("set-cookie").unwrap().contains("Max-Age=0"));
    for id in [&a, &b, &c] {
        assert_unauthorized_and_cleared(&get(&app, id).await);
    }
    assert_eq!(get(&app, &other).await.status, 200);
    let keys: Vec<String> = client.keys("*").await.unwrap();
    assert_eq!(keys.len(), 2, "only bob's session and index remain: {keys:?}");
}

async fn expired_index_entries_are_pruned_and_sessions_per_user_capped(mode: Mode) {
    until_fast_enough("index pruning", |_| index_pruning_attempt(mode)).await;
}

/// Sessions with a 1 s idle timeout: judged only when the steps that need them alive ran
/// within that second.
async fn index_pruning_attempt(mode: Mode) -> bool {
    let redis = RedisServer::plain();
    let app =
        app_with(&redis, mode, &[("sessions_idle_timeout", "1"), ("sessions_max_per_user", "3")]);
    let mut client = redis.client().await;
    let index = |id: &str| format!("srp:sess:{{{}}}:u:{}", &id[..4], sha256_b64url(b"alice"));

    let (first, _) = create(&app, "alice", json!({})).await;
    create(&app, "alice", json!({})).await;
    let count: u64 = client.zcard(index(&first)).await.unwrap();
    assert_eq!(count, 2);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    let (fresh, _) = create(&app, "alice", json!({})).await;
    let count: u64 = client.zcard(index(&fresh)).await.unwrap();
    let ttl: i64 = client.pttl(index(&fresh)).await.unwrap();
    if started.elapsed() >= Duration::from_millis(950) {
        return false;
    }
    assert_eq!(count, 1, "expired entries pruned by the next write");
    assert!((1..=1000).contains(&ttl), "the index expires with its last session: {ttl}");

    // A fourth live session ends the one closest to expiring.
    let (s2, _) = create(&app, "alice", json!({})).await;
    let (s3, _) = create(&app, "alice", json!({})).await;
    let (s4, _) = create(&app, "alice", json!({})).await;
    let ended = get(&app, &fresh).await;
    let mut live = Vec::new();
    for id in [&s2, &s3, &s4] {
        live.push(get(&app, id).await.status);
    }
    // All four were alive when s4 came (else expiry, not the cap, ended `fresh`), and the
    // others still are at their reads.
    if started.elapsed() >= Duration::from_millis(950) {
        return false;
    }
    assert_unauthorized_and_cleared(&ended);
    assert_eq!(live, [200, 200, 200]);
    true
}

async fn forged_truncated_and_oversized_ids_are_refused(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (id, _) = create(&app, "u1", json!({})).await;
    let oversized = format!("{id}{}", "A".repeat(4000));
    let bad_ids = [
        String::new(),
        id[..47].to_owned(),
        id[..20].to_owned(),
        format!("{id}A"),
        oversized,
        id.to_uppercase(),
        format!("{}{{x}}{}", &id[..2], &id[5..]),
        format!("{}B", &id[..47]),
        "../../etc/passwd".to_owned(),
    ];
    for bad in &bad_ids {
        if bad == &id {
            continue;
        }
        for res in [
            app.get("/api/sessions/current").header("cookie", &cookie(bad)).send().await,
            app.get("/api/sessions/current")
                .header("authorization", &format!("Bearer {bad}"))
                .send()
                .await,
            app.delete("/api/sessions").header("cookie", &cookie(bad)).send().await,
        ] {
            assert_unauthorized_and_cleared(&res);
            assert_eq!(res.redis_connections, 0, "refused before Redis: {bad:?}");
        }
    }
    // Well-formed but never issued: Redis says no. On the fast path the missing key is that
    // answer, so a forged id costs no outbound connection.
    let forged = format!("{}.{}", &id[..4], base64url(&[7u8; 32]));
    let res = get(&app, &forged).await;
    assert_unauthorized_and_cleared(&res);
    assert_eq!(res.redis_connections, mode.read_connections());
    let exists: bool = redis.client().await.exists(session_key(&forged)).await.unwrap();
    assert!(!exists, "a failed read writes nothing");
    // No credential at all.
    assert_unauthorized_and_cleared(&app.get("/api/sessions/current").send().await);
    // The genuine id still works.
    assert_eq!(get(&app, &id).await.status, 200);
}

async fn creation_needs_the_backend_token(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let body = json!({"user_id": "u1"});
    for auth in [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {API_TOKEN}x")),
        Some(API_TOKEN.to_owned()),
    ] {
        let mut req = app.post("/api/sessions").json(&body);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await;
        assert_error(&res, 401, "unauthorized");
        assert_eq!(res.redis_connections, 0);
    }
    let disabled = app_with(&redis, mode, &[("sessions_api_token", "")]);
    let res =
        disabled.post("/api/sessions").header("authorization", "Bearer ").json(&body).send().await;
    assert_error(&res, 403, "creation_disabled");
    assert!(!app.logs().contains(API_TOKEN));
}

async fn bad_bodies_are_refused_clearly(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app_with(&redis, mode, &[("sessions_max_data_bytes", "100")]);
    let post = |body: Vec<u8>, content_type: &'static str| {
        app.post("/api/sessions")
            .header("authorization", &format!("Bearer {API_TOKEN}"))
            .header("content-type", content_type)
            .body(body)
    };
    let json_ct = "application/json";
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            b"user_id=u1".to_vec(),
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (b"".to_vec(), json_ct, 400, "invalid_json"),
        (b"{\"user_id\": \"u1\"".to_vec(), json_ct, 400, "invalid_json"),
        (b"[\"u1\"]".to_vec(), json_ct, 400, "invalid_json"),
        // The fields in order as an array, which serde's derived structs take (issue 27).
        (b"[\"u1\", null, null, null]".to_vec(), json_ct, 400, "invalid_json"),
        (b"{\"user_id\": \"u1\", \"user_id\": \"u2\"}".to_vec(), json_ct, 400, "invalid_json"),
        (b"{}".to_vec(), json_ct, 422, "invalid_user_id"),
        (b"{\"user_id\": 7}".to_vec(), json_ct, 422, "invalid_user_id"),
        (
            format!("{{\"user_id\": \"{}\"}}", "u".repeat(257)).into_bytes(),
            json_ct,
            422,
            "invalid_user_id",
        ),
        (b"{\"user_id\": \"u\\u0000\"}".to_vec(), json_ct, 422, "invalid_user_id"),
        (b"{\"user_id\": \"u1\", \"data\": [1]}".to_vec(), json_ct, 422, "invalid_data"),
        (
            format!("{{\"user_id\": \"u1\", \"data\": {{\"k\": \"{}\"}}}}", "x".repeat(100))
                .into_bytes(),
            json_ct,
            422,
            "data_too_large",
        ),
        (
            format!("{{\"user_id\": \"u1\", \"data\": {{\"{}\": 1}}}}", "k".repeat(129))
                .into_bytes(),
            json_ct,
            422,
            "invalid_data_key",
        ),
        (vec![b' '; 5000], json_ct, 413, "body_too_large"),
    ];
    for (body, ct, status, code) in cases {
        let text = String::from_utf8_lossy(&body).chars().take(60).collect::<String>();
        let res = post(body, ct).send().await;
        assert_eq!(
            (res.status, res.json()["code"].as_str()),
            (status, Some(code)),
            "{text}: {}",
            res.text()
        );
        assert_eq!(res.redis_connections, 0);
    }

    let (id, _) = create(&app, "u1", json!({"keep": "me"})).await;
    let res = patch(&app, &id, json!({"big": "y".repeat(90)})).await;
    assert_error(&res, 422, "data_too_large");
    let res = app
        .request(http::Method::PATCH, "/api/sessions/current")
        .header("cookie", &cookie(&id))
        .body("{\"a\":1}")
        .send()
        .await;
    assert_error(&res, 415, "unsupported_media_type");
    let res = app
        .request(http::Method::PATCH, "/api/sessions/current")
        .header("cookie", &cookie(&id))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await;
    assert_error(&res, 400, "invalid_json");
    assert_eq!(get(&app, &id).await.json()["data"], json!({"keep": "me"}), "nothing written");
    // Replacing a value frees its old size: this fits.
    assert_eq!(patch(&app, &id, json!({"keep": null, "big": "y".repeat(90)})).await.status, 200);
}

async fn cross_site_writes_with_the_cookie_are_refused(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (id, _) = create(&app, "u1", json!({})).await;
    let res = app
        .delete("/api/sessions")
        .header("cookie", &cookie(&id))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await;
    assert_error(&res, 403, "cross_site_request");
    assert_eq!(res.redis_connections, 0);
    let res = app
        .get("/api/sessions/current")
        .header("cookie", &cookie(&id))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await;
    assert_eq!(res.status, 200);
}

async fn redis_never_holds_a_raw_session_id(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let mut ids = Vec::new();
    for user in ["alice", "bob", "alice"] {
        ids.push(create(&app, user, json!({"n": 1})).await.0);
    }
    patch(&app, &ids[0], json!({"m": 2})).await;
    let res =
        app.post("/api/sessions/current/rotate").header("cookie", &cookie(&ids[1])).send().await;
    ids.push(cookie_id(&res));

    let dump = dump(&redis).await;
    assert_eq!(
        dump.len(),
        6,
        "three sessions, a rotated id's forward record, two indexes: {dump:?}"
    );
    for (key, values) in &dump {
        assert!(key.starts_with("srp:sess:{"), "{key}");
        for id in &ids {
            let secret = &id[5..];
            assert!(!key.contains(secret) && !values.contains(secret), "raw id in {key}");
        }
    }
    // Each live session is under SHA-256 of its id.
    let mut client = redis.client().await;
    for id in [&ids[0], &ids[2], &ids[3]] {
        let exists: bool = client.exists(session_key(id)).await.unwrap();
        assert!(exists, "{}", session_key(id));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_503_and_nothing_half_written_outbound() {
    redis_down_is_503_and_nothing_half_written(Mode::Outbound).await;
}

// With the fast path on, a Redis that goes away under load: fast_path_outage.rs.

async fn redis_down_is_503_and_nothing_half_written(mode: Mode) {
    let mut redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (id, _) = create(&app, "u1", json!({})).await;
    assert_eq!(get(&app, &id).await.status, 200);
    redis.stop();
    for res in [
        get(&app, &id).await,
        patch(&app, &id, json!({"a": 1})).await,
        app.post("/api/sessions")
            .header("authorization", &format!("Bearer {API_TOKEN}"))
            .json(&json!({"user_id": "u1"}))
            .send()
            .await,
        app.get("/api/sessions").header("cookie", &cookie(&id)).send().await,
    ] {
        assert_error(&res, 503, "redis_unavailable");
        assert_eq!(res.header("retry-after"), Some("1"));
        assert!(res.header("set-cookie").is_none(), "a Redis outage does not log anyone out");
    }
    assert_eq!(app.key_value_connections(), mode.store_connections());
    let mut tls = RedisServer::tls(AZURE_STYLE_KEY);
    let app = app_with(&tls, mode, &[]);
    let (id, _) = create(&app, "u1", json!({})).await;
    assert_eq!(get(&app, &id).await.status, 200);
    tls.stop();
    let res = get(&app, &id).await;
    assert_error(&res, 503, "redis_unavailable");
    assert!(res.header("set-cookie").is_none());
}

async fn every_route_is_one_connection_and_one_command(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    // The first use loads the script (EVALSHA, then EVAL); measure after that.
    let (id, _) = create(&app, "u1", json!({})).await;
    let (other, _) = create(&app, "u1", json!({})).await;

    let steps: Vec<(&str, http::Method, &str, Option<Value>)> = vec![
        ("create", http::Method::POST, "/api/sessions", Some(json!({"user_id": "u1"}))),
        ("get", http::Method::GET, "/api/sessions/current", None),
        ("patch", http::Method::PATCH, "/api/sessions/current", Some(json!({"a": 1}))),
        ("list", http::Method::GET, "/api/sessions", None),
        ("rotate", http::Method::POST, "/api/sessions/current/rotate", None),
    ];
    let mut current = id.clone();
    for (name, method, path, body) in steps {
        let before = command_calls(&redis).await;
        let token = if name == "create" {
            format!("Bearer {API_TOKEN}")
        } else {
            format!("Bearer {current}")
        };
        let mut req = app.request(method, path).header("authorization", &token);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let res = req.send().await;
        assert!(res.status < 300, "{name}: {}", res.text());
        let after = command_calls(&redis).await;
        if name == "get" && mode == Mode::FastPath {
            // One GET on the pooled connection, and no script.
            assert_eq!(res.redis_connections, 0, "{name}");
            assert_eq!(
                commands_between(&before, &after, &[CONNECTION_SET_UP, STORE_OPEN]),
                HashMap::from([("get".to_owned(), 1)]),
                "{name}"
            );
        } else {
            assert_eq!(res.redis_connections, 1, "{name}");
            assert_eq!(
                commands_between(
                    &before,
                    &after,
                    &[CONNECTION_SET_UP, STORE_OPEN, INSIDE_THE_SCRIPT]
                ),
                HashMap::from([("evalsha".to_owned(), 1)]),
                "{name}"
            );
        }
        if name == "rotate" {
            current = res.json()["session_id"].as_str().unwrap().to_owned();
        }
    }
    for (path, id) in [("/api/sessions/current", &current), ("/api/sessions", &other)] {
        let before = command_calls(&redis).await;
        let res = app.delete(path).header("authorization", &format!("Bearer {id}")).send().await;
        assert!(res.status < 300, "{path}: {}", res.text());
        assert_eq!(res.redis_connections, 1);
        let after = command_calls(&redis).await;
        assert_eq!(
            commands_between(&before, &after, &[CONNECTION_SET_UP, STORE_OPEN, INSIDE_THE_SCRIPT]),
            HashMap::from([("evalsha".to_owned(), 1)]),
            "DELETE {path}"
        );
    }
}

async fn unknown_routes_and_methods(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let res = app.get("/api/sessions/other").send().await;
    assert_error(&res, 404, "not_found");
    let res = app.request(http::Method::PUT, "/api/sessions/current").send().await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("GET, PATCH, DELETE"));
    let res = app.get("/api/sessions/current/rotate").send().await;
    assert_eq!(res.header("allow"), Some("POST"));
    assert_eq!(res.redis_connections, 0);
}

/// A value at a session key that is not a session record (a hash from before records were
/// strings, or damaged text) reads as an ended session, and is removed. The fast path cannot
/// read it (a hash is WRONGTYPE to GET; the text does not parse) and leaves it to the
/// outbound read, which decides.
async fn values_that_are_not_sessions_read_as_ended(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let mut client = redis.client().await;
    let (live, _) = create(&app, "u1", json!({})).await;
    let hash = format!("{}.{}", &live[..4], base64url(&[1u8; 32]));
    let text = format!("{}.{}", &live[..4], base64url(&[2u8; 32]));
    let legacy = [("uid", "u1"), ("abs", "99999999999999")];
    let _: () = client.hset_multiple(session_key(&hash), &legacy).await.unwrap();
    let _: () = client.set(session_key(&text), "{\"uid\": \"u1\", trailing").await.unwrap();
    for id in [&hash, &text] {
        let res = get(&app, id).await;
        assert_unauthorized_and_cleared(&res);
        assert_eq!(res.redis_connections, 1, "read through outbound Redis");
        let exists: bool = client.exists(session_key(id)).await.unwrap();
        assert!(!exists, "removed");
    }
    assert_eq!(get(&app, &live).await.status, 200);
}

/// The stored session record, as the test reads it from Redis.
async fn stored(redis: &RedisServer, id: &str) -> Value {
    let value: String = redis.client().await.get(session_key(id)).await.unwrap();
    serde_json::from_str(&value).unwrap()
}

/// The body's text without its `"expires_in":N` member.
fn without_expires_in(res: &TestResponse) -> String {
    let expires_in = res.json()["expires_in"].as_i64().unwrap();
    res.text().replace(&format!(r#","expires_in":{expires_in}"#), "")
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_path_reads_open_no_connection_and_answer_like_the_outbound_read() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let outbound = app(&redis, Mode::Outbound);
    let fast = app(&redis, Mode::FastPath);
    let data = json!({"s": "é/\"\n</script>", "n": [null, {}], "price": 1.25, "cart": [1, 2]});
    let (id, _) = create(&outbound, "u1", data).await;

    // The outbound read slides the deadline; the fast read right after answers from the value
    // that read left, without a connection of its own.
    let slow = get(&outbound, &id).await;
    let quick = get(&fast, &id).await;
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(slow.redis_connections, 1);
    assert_eq!(quick.redis_connections, 0);
    assert_eq!(quick.status, slow.status);
    for header in ["content-type", "cache-control", "set-cookie", "www-authenticate"] {
        assert_eq!(quick.header(header), slow.header(header), "{header}");
    }
    // Byte for byte the same body, but for the idle countdown: a second may have ticked.
    assert_eq!(without_expires_in(&quick), without_expires_in(&slow));
    let slow_left = slow.json()["expires_in"].as_i64().unwrap();
    let quick_left = quick.json()["expires_in"].as_i64().unwrap();
    assert!(quick_left == slow_left || quick_left == slow_left - 1, "{quick_left} vs {slow_left}");

    // By bearer token too, again and again: no connection, and the store's one connection kept.
    for _ in 0..5 {
        let bearer = format!("Bearer {id}");
        let res = fast.get("/api/sessions/current").header("authorization", &bearer).send().await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.redis_connections, 0);
    }
    assert_eq!(fast.key_value_connections(), 1);
    assert_eq!(outbound.key_value_connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_path_read_near_the_idle_deadline_slides_it() {
    until_fast_enough("fast path slide", |_| near_idle_deadline_attempt()).await;
}

/// Judged only when each read came in the part of the 6 s idle timeout it probes.
async fn near_idle_deadline_attempt() -> bool {
    let redis = RedisServer::plain();
    let vars = [("sessions_idle_timeout", "6"), ("sessions_slide_threshold_percent", "50")];
    let app = app_with(&redis, Mode::FastPath, &vars);
    let mut client = redis.client().await;
    let before_create = Instant::now();
    let (id, _) = create(&app, "u1", json!({"a": 1})).await;
    let created = stored(&redis, &id).await;

    // 1 s in, 5 s of the 6 s are left: more than half. Answered from the store; the deadline
    // stays where it was, and the answer says so.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let res = get(&app, &id).await;
    let ttl: i64 = client.pttl(session_key(&id)).await.unwrap();
    if before_create.elapsed() >= Duration::from_millis(1950) {
        return false;
    }
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.redis_connections, 0);
    assert_eq!(res.json()["expires_in"], 5);
    assert_eq!(stored(&redis, &id).await, created, "nothing written");
    assert!((4_000..=5_000).contains(&ttl), "{ttl}");

    // 3.6 s in, under half is left: this read slides the deadline, through outbound Redis.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let sent = Instant::now();
    let res = get(&app, &id).await;
    let ttl: i64 = client.pttl(session_key(&id)).await.unwrap();
    if before_create.elapsed() >= Duration::from_millis(5900)
        || sent.elapsed() >= Duration::from_millis(950)
    {
        return false;
    }
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.redis_connections, 1);
    assert_eq!(res.json()["expires_in"], 6);
    assert_eq!(res.json()["data"], json!({"a": 1}));
    assert!((5_000..=6_000).contains(&ttl), "{ttl}");
    let slid = stored(&redis, &id).await;
    let moved = slid["exp"].as_i64().unwrap() - created["exp"].as_i64().unwrap();
    assert!(moved >= 3_600, "the idle deadline moved by {moved} ms");
    assert!(slid["seen"].as_i64() > created["seen"].as_i64());
    assert_ne!(res.json()["last_seen_at"], res.json()["created_at"]);

    // Fresh again: the next read is the store's.
    let res = get(&app, &id).await;
    assert_eq!(res.redis_connections, 0);
    assert_eq!(app.key_value_connections(), 1);
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_path_slides_never_pass_the_absolute_lifetime() {
    until_fast_enough("absolute cap on the fast path", |_| never_pass_absolute_attempt()).await;
}

/// Judged only when each read came before the deadline it probes.
async fn never_pass_absolute_attempt() -> bool {
    let redis = RedisServer::plain();
    let vars = [("sessions_idle_timeout", "4"), ("sessions_absolute_timeout", "5")];
    let app = app_with(&redis, Mode::FastPath, &vars);
    let mut client = redis.client().await;
    let before_create = Instant::now();
    let (id, _) = create(&app, "u1", json!({})).await;
    let abs = stored(&redis, &id).await["abs"].as_i64().unwrap();

    // 2.2 s in, 1.8 s of the 4 s idle timeout are left: the read slides, but only to the
    // absolute deadline (2.8 s away), not 4 s on.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let res = get(&app, &id).await;
    let exp = stored(&redis, &id).await["exp"].clone();
    let ttl: i64 = client.pttl(session_key(&id)).await.unwrap();
    if before_create.elapsed() >= Duration::from_millis(3900) {
        return false;
    }
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.redis_connections, 1);
    assert_eq!(res.json()["expires_in"], res.json()["absolute_expires_in"]);
    assert_eq!(exp, abs);
    assert!((1..=2_800).contains(&ttl), "{ttl}");

    // 3.7 s in: under half the idle timeout is left, but the deadline cannot move, so the
    // store answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = get(&app, &id).await;
    let ttl: i64 = client.pttl(session_key(&id)).await.unwrap();
    if before_create.elapsed() >= Duration::from_millis(4900) {
        return false;
    }
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.redis_connections, 0);
    assert_eq!(res.json()["expires_in"], res.json()["absolute_expires_in"]);
    assert!((1..=1_300).contains(&ttl), "{ttl}");

    // Past the absolute deadline it is gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = get(&app, &id).await;
    assert_unauthorized_and_cleared(&res);
    assert_eq!(res.redis_connections, 0);
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_seen_by_the_next_fast_path_read() {
    let redis = RedisServer::plain();
    let app = app_with(&redis, Mode::FastPath, &[("sessions_rotation_grace_seconds", "0")]);
    let (id, _) = create(&app, "u1", json!({"step": 0})).await;
    assert_eq!(get(&app, &id).await.json()["data"], json!({"step": 0}));

    // Patch, then read from the store: the new data.
    assert_eq!(patch(&app, &id, json!({"step": 1, "more": true})).await.status, 200);
    let res = get(&app, &id).await;
    assert_eq!(res.redis_connections, 0);
    assert_eq!(res.json()["data"], json!({"step": 1, "more": true}));

    // Rotate: the old id is dead at once, the new one reads the same session.
    let res = app.post("/api/sessions/current/rotate").header("cookie", &cookie(&id)).send().await;
    let new_id = cookie_id(&res);
    let res = get(&app, &id).await;
    assert_unauthorized_and_cleared(&res);
    assert_eq!(res.redis_connections, 0);
    let res = get(&app, &new_id).await;
    assert_eq!(res.redis_connections, 0);
    assert_eq!(res.json()["data"], json!({"step": 1, "more": true}));

    // Logout: the next read is 401.
    let res = app.delete("/api/sessions/current").header("cookie", &cookie(&new_id)).send().await;
    assert_eq!(res.status, 204);
    let res = get(&app, &new_id).await;
    assert_unauthorized_and_cleared(&res);
    assert_eq!(res.redis_connections, 0);

    // Log out everywhere: every session of the user reads 401.
    let (a, _) = create(&app, "u2", json!({})).await;
    let (b, _) = create(&app, "u2", json!({})).await;
    assert_eq!(get(&app, &b).await.status, 200);
    assert_eq!(app.delete("/api/sessions").header("cookie", &cookie(&a)).send().await.status, 200);
    for id in [&a, &b] {
        let res = get(&app, id).await;
        assert_unauthorized_and_cleared(&res);
        assert_eq!(res.redis_connections, 0);
    }
    assert_eq!(app.key_value_connections(), 1);
}

/// Issue 19 item 4: Spin appends its own `spin-path-info` after any the client sent, and the
/// component reads the last one, so a forged empty value cannot turn "log out this session"
/// into "log out everywhere".
async fn a_forged_path_info_never_changes_the_route(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (a, _) = create(&app, "forger", json!({})).await;
    let (b, _) = create(&app, "forger", json!({})).await;
    for forged in ["", "/"] {
        let (id, _) = create(&app, "forger", json!({})).await;
        let res = app
            .delete("/api/sessions/current")
            .header("spin-path-info", forged)
            .header("spin-component-route", "/api/sessions")
            .header("cookie", &cookie(&id))
            .send()
            .await;
        assert_eq!(res.status, 204, "{}", res.text());
        assert_eq!(get(&app, &id).await.status, 401);
    }
    // Only the one session ended: the others of the same user live on.
    assert_eq!(get(&app, &a).await.status, 200);
    assert_eq!(get(&app, &b).await.status, 200);
}

/// Issue 21 item 7: the shipped placeholder is not a token.
#[tokio::test(flavor = "multi_thread")]
async fn a_placeholder_api_token_is_refused_naming_only_the_variable() {
    let redis = RedisServer::plain();
    let app = app_with(&redis, Mode::Outbound, &[("sessions_api_token", "<random>")]);
    let res = app
        .post("/api/sessions")
        .header("authorization", "Bearer <random>")
        .json(&json!({"user_id": "u1"}))
        .send()
        .await;
    assert_error(&res, 500, "misconfigured");
    let message = res.json()["detail"].as_str().unwrap().to_owned();
    assert!(message.contains("sessions_api_token"), "{message}");
    assert!(!res.text().contains("<random>"), "the value is never shown: {}", res.text());
    assert_eq!(res.redis_connections, 0);
}

// --- Issue 21: server-only data, backend revocation, rotation, Origin ---

async fn backend_call(
    app: &TestApp,
    method: http::Method,
    path: &str,
    body: Value,
) -> TestResponse {
    app.request(method, path)
        .header("authorization", &format!("Bearer {API_TOKEN}"))
        .json(&body)
        .send()
        .await
}

fn sorted(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    keys.sort();
    keys
}

async fn keys_the_backend_set_are_read_only_to_the_session_holder(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let res = backend_call(
        &app,
        http::Method::POST,
        "/api/sessions",
        json!({"user_id": "mallory", "data": {"theme": "dark"},
               "server_data": {"roles": ["user"], "mfa": false}}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["session_id"].as_str().unwrap().to_owned();
    let handle = res.json()["handle"].as_str().unwrap().to_owned();
    let body = get(&app, &id).await.json();
    assert_eq!(body["data"], json!({"theme": "dark", "roles": ["user"], "mfa": false}));
    assert_eq!(sorted(&body["server_keys"]), ["mfa", "roles"]);

    // The cookie holder tries to promote itself: refused whole, nothing written.
    for attempt in [
        json!({"mfa": true}),
        json!({"roles": ["admin"]}),
        json!({"roles": null}),
        json!({"theme": "light", "mfa": true}),
    ] {
        let res = patch(&app, &id, attempt.clone()).await;
        assert_error(&res, 403, "server_owned_key");
        let res = app
            .request(http::Method::PATCH, "/api/sessions/current")
            .header("authorization", &format!("Bearer {id}"))
            .json(&attempt)
            .send()
            .await;
        assert_error(&res, 403, "server_owned_key");
    }
    assert_eq!(
        get(&app, &id).await.json()["data"],
        json!({"theme": "dark", "roles": ["user"], "mfa": false})
    );
    // Its own keys stay writable.
    assert_eq!(patch(&app, &id, json!({"theme": "light"})).await.status, 200);

    // Only the backend sets server data: with the session id as the token, or none, refused.
    let change = json!({"user_id": "mallory", "handle": handle, "data": {"mfa": true}});
    for auth in [None, Some(format!("Bearer {id}"))] {
        let mut req = app.request(http::Method::PATCH, "/api/sessions/admin/data").json(&change);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        assert_error(&req.send().await, 401, "unauthorized");
    }
    let res = backend_call(&app, http::Method::PATCH, "/api/sessions/admin/data", change).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = backend_call(
        &app,
        http::Method::PATCH,
        "/api/sessions/admin/data",
        json!({"user_id": "mallory", "handle": handle, "data": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = get(&app, &id).await.json();
    assert_eq!(body["data"]["mfa"], true);
    assert_eq!(sorted(&body["server_keys"]), ["mfa", "roles", "tier"]);
    assert_error(&patch(&app, &id, json!({"tier": "platinum"})).await, 403, "server_owned_key");
    // Another user's handle, or a made-up one, reaches nothing.
    let res = backend_call(
        &app,
        http::Method::PATCH,
        "/api/sessions/admin/data",
        json!({"user_id": "alice", "handle": handle, "data": {"mfa": true}}),
    )
    .await;
    assert_error(&res, 404, "no_session");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_revokes_a_users_sessions_by_user_id_or_by_handle() {
    let redis = RedisServer::plain();
    let app = app(&redis, Mode::Outbound);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&app, "u1", json!({})).await.0);
    }
    let (other, _) = create(&app, "u2", json!({})).await;
    let listed = app.get("/api/sessions").header("cookie", &cookie(&ids[0])).send().await.json();
    let handles: Vec<String> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == false)
        .map(|s| s["handle"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(handles.len(), 2);

    // Strangers and session holders cannot use the backend route.
    for auth in [None, Some(format!("Bearer {}", ids[0]))] {
        let mut req = app.post("/api/sessions/admin/revoke").json(&json!({"user_id": "u1"}));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        assert_error(&req.send().await, 401, "unauthorized");
    }
    let revoke =
        |body: Value| backend_call(&app, http::Method::POST, "/api/sessions/admin/revoke", body);
    let res = revoke(json!({"user_id": "u1", "handle": handles[0]})).await;
    assert_eq!(res.json(), json!({"revoked": 1}), "{}", res.text());
    let alive: Vec<u16> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(get(&app, id).await.status);
        }
        v
    };
    assert_eq!(alive.iter().filter(|s| **s == 200).count(), 2, "{alive:?}");
    assert_eq!(revoke(json!({"user_id": "u1"})).await.json(), json!({"revoked": 2}));
    for id in &ids {
        assert_eq!(get(&app, id).await.status, 401);
    }
    assert_eq!(get(&app, &other).await.status, 200);
    assert_error(&revoke(json!({"user_id": "u1", "handle": "x"})).await, 422, "invalid_handle");
}

async fn a_rotated_id_lives_only_for_the_grace_period(mode: Mode) {
    until_fast_enough("rotation grace", |_| rotation_grace_attempt(mode)).await;
}

/// Judged only when the old id's uses came within its 2 s grace period.
async fn rotation_grace_attempt(mode: Mode) -> bool {
    let redis = RedisServer::plain();
    let app = app_with(&redis, mode, &[("sessions_rotation_grace_seconds", "2")]);
    let (old, _) = create(&app, "u1", json!({"n": 0})).await;
    let rotating = Instant::now();
    let res = app.post("/api/sessions/current/rotate").header("cookie", &cookie(&old)).send().await;
    assert_eq!(res.status, 200);
    assert!(res.json().get("session_id").is_none(), "{}", res.text());
    let new = cookie_id(&res);
    // A read already in flight with the old cookie still reaches the session ...
    let res = get(&app, &old).await;
    if rotating.elapsed() >= Duration::from_millis(1900) {
        return false;
    }
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"], json!({"n": 0}));
    // ... and the list shows one session, not two.
    let listed = app.get("/api/sessions").header("cookie", &cookie(&new)).send().await.json();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&app, &old).await.status, 401);
    assert_eq!(get(&app, &new).await.status, 200);

    // A bearer caller gets the new id in the body and no cookie.
    let res = app
        .post("/api/sessions/current/rotate")
        .header("authorization", &format!("Bearer {new}"))
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert!(res.header("set-cookie").is_none());
    let newest = res.json()["session_id"].as_str().unwrap().to_owned();
    assert_eq!(get(&app, &newest).await.status, 200);
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxys_basic_authorization_does_not_log_the_user_out() {
    let redis = RedisServer::plain();
    let app = app(&redis, Mode::Outbound);
    let (id, _) = create(&app, "u1", json!({})).await;
    let res = app
        .get("/api/sessions/current")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .header("cookie", &cookie(&id))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.header("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn cookie_writes_from_another_origin_are_refused_without_sec_fetch_site() {
    let redis = RedisServer::plain();
    let app = app(&redis, Mode::Outbound);
    let (id, _) = create(&app, "u1", json!({"a": 1})).await;
    // The app's own host and port under the other scheme is another origin (issue 27).
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1:3000.evil.example",
        "https://127.0.0.1:3000",
    ] {
        let res = app
            .request(http::Method::PATCH, "/api/sessions/current")
            .header("cookie", &cookie(&id))
            .header("origin", origin)
            .json(&json!({"a": 2}))
            .send()
            .await;
        assert_error(&res, 403, "cross_site_request");
        assert_eq!(res.redis_connections, 0);
        let res = app
            .delete("/api/sessions")
            .header("cookie", &cookie(&id))
            .header("origin", origin)
            .send()
            .await;
        assert_error(&res, 403, "cross_site_request");
    }
    assert_eq!(get(&app, &id).await.json()["data"], json!({"a": 1}));
    // The app's own origin (the Host it was reached at) is fine.
    let res = app
        .request(http::Method::PATCH, "/api/sessions/current")
        .header("cookie", &cookie(&id))
        .header("origin", "http://127.0.0.1:3000")
        .json(&json!({"a": 2}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

/// Issue 27: rotating through the old id inside its grace used to answer 200 with a fresh id
/// that took the session over and logged the rightful holder (of the new id) out. A rotated-
/// away id reads the session during the grace and does nothing else: every other route is
/// 409 `session_rotated`, changes nothing and leaves the cookie alone (a request in flight
/// at the rotation must not delete the browser's new cookie).
async fn a_rotated_away_id_can_read_and_nothing_else(mode: Mode) {
    let redis = RedisServer::plain();
    // A grace far longer than the test, so nothing here depends on timing.
    let app = app_with(&redis, mode, &[("sessions_rotation_grace_seconds", "60")]);
    let (old, _) = create(&app, "u1", json!({"n": 0})).await;
    let res = app.post("/api/sessions/current/rotate").header("cookie", &cookie(&old)).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    let new = cookie_id(&res);

    let res = get(&app, &old).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"], json!({"n": 0}));
    assert!(res.header("set-cookie").is_none());

    let attempts = [
        (http::Method::POST, "/api/sessions/current/rotate", None),
        (http::Method::PATCH, "/api/sessions/current", Some(json!({"n": 666}))),
        (http::Method::DELETE, "/api/sessions/current", None),
        (http::Method::GET, "/api/sessions", None),
        (http::Method::DELETE, "/api/sessions", None),
    ];
    for bearer in [false, true] {
        for (method, path, body) in &attempts {
            let mut req = app.request(method.clone(), path);
            req = if bearer {
                req.header("authorization", &format!("Bearer {old}"))
            } else {
                req.header("cookie", &cookie(&old))
            };
            if let Some(body) = body {
                req = req.json(body);
            }
            let res = req.send().await;
            assert_error(&res, 409, "session_rotated");
            assert!(res.header("set-cookie").is_none(), "{method} {path}");
        }
    }

    // The rightful holder still has the session, unchanged, and alone in the list.
    let res = get(&app, &new).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"], json!({"n": 0}));
    let listed = app.get("/api/sessions").header("cookie", &cookie(&new)).send().await;
    assert_eq!(listed.json()["sessions"].as_array().unwrap().len(), 1, "{}", listed.text());
    // The old id still only reads.
    assert_eq!(get(&app, &old).await.status, 200);
    // The new id can rotate; that ends the old id at once (one generation of forward record).
    let res = app.post("/api/sessions/current/rotate").header("cookie", &cookie(&new)).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_unauthorized_and_cleared(&get(&app, &old).await);
    assert_eq!(get(&app, &cookie_id(&res)).await.json()["data"], json!({"n": 0}));
}

/// Issue 27: forward records used to be told from sessions by searching the stored text for
/// `"fwd":`, which a holder can write into its data; such a session vanished from its user's
/// list and was not counted by log-out-everywhere. Records are now told apart by their
/// top-level members, which the holder cannot write.
async fn a_session_cannot_hide_from_its_users_list_by_its_data(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (owner, _) = create(&app, "u1", json!({})).await;
    let (thief, _) = create(&app, "u1", json!({})).await;
    let res = patch(&app, &thief, json!({"fwd": "x", "note": {"fwd": "y"}, "t": "\"fwd\":"})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // The hiding session still works for its holder ...
    assert_eq!(get(&app, &thief).await.status, 200);
    // ... and its user sees it, and ends it.
    let listed = app.get("/api/sessions").header("cookie", &cookie(&owner)).send().await;
    assert_eq!(listed.json()["sessions"].as_array().unwrap().len(), 2, "{}", listed.text());
    let res = app.delete("/api/sessions").header("cookie", &cookie(&owner)).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["revoked"], 2);
    assert_unauthorized_and_cleared(&get(&app, &thief).await);
}

/// Issue 27: `Sec-Fetch-Site: same-site` (a sibling subdomain, which `SameSite` does not stop)
/// passed. It is refused unless `sessions_accept_same_site` says otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn same_site_cookie_writes_are_refused_unless_accepted() {
    let redis = RedisServer::plain();
    for (accept, refused) in [(None, true), (Some("false"), true), (Some("true"), false)] {
        let vars: Vec<(&str, &str)> =
            accept.map(|a| ("sessions_accept_same_site", a)).into_iter().collect();
        let app = app_with(&redis, Mode::Outbound, &vars);
        let (id, _) = create(&app, "u1", json!({"a": 1})).await;
        let res = app
            .request(http::Method::PATCH, "/api/sessions/current")
            .header("cookie", &cookie(&id))
            .header("sec-fetch-site", "same-site")
            .json(&json!({"a": 2}))
            .send()
            .await;
        if refused {
            assert_error(&res, 403, "cross_site_request");
            assert_eq!(res.redis_connections, 0);
            for (method, path) in [
                (http::Method::POST, "/api/sessions/current/rotate"),
                (http::Method::DELETE, "/api/sessions/current"),
                (http::Method::DELETE, "/api/sessions"),
            ] {
                let res = app
                    .request(method, path)
                    .header("cookie", &cookie(&id))
                    .header("sec-fetch-site", "same-site")
                    .send()
                    .await;
                assert_error(&res, 403, "cross_site_request");
            }
            // Reads are not writes; same-origin writes pass.
            let res = app
                .get("/api/sessions/current")
                .header("cookie", &cookie(&id))
                .header("sec-fetch-site", "same-site")
                .send()
                .await;
            assert_eq!(res.json()["data"], json!({"a": 1}), "{}", res.text());
            let res = app
                .request(http::Method::PATCH, "/api/sessions/current")
                .header("cookie", &cookie(&id))
                .header("sec-fetch-site", "same-origin")
                .json(&json!({"a": 3}))
                .send()
                .await;
            assert_eq!(res.status, 200, "{}", res.text());
        } else {
            assert_eq!(res.status, 200, "{}", res.text());
        }
    }
}

/// Behind a proxy that terminates TLS, Spin reports `http://`; the public origin setting names
/// the origin browsers really use, and only it passes.
#[tokio::test(flavor = "multi_thread")]
async fn the_public_origin_setting_names_the_apps_origin() {
    let redis = RedisServer::plain();
    let app =
        app_with(&redis, Mode::Outbound, &[("sessions_public_origin", "https://app.example")]);
    let (id, _) = create(&app, "u1", json!({"a": 1})).await;
    for (origin, status) in [
        ("https://app.example", 200),
        ("https://app.example:443", 200),
        ("http://127.0.0.1:3000", 403),
    ] {
        let res = app
            .request(http::Method::PATCH, "/api/sessions/current")
            .header("cookie", &cookie(&id))
            .header("origin", origin)
            .json(&json!({"a": 2}))
            .send()
            .await;
        assert_eq!(res.status, status, "{origin}: {}", res.text());
    }
    let bad =
        app_with(&redis, Mode::Outbound, &[("sessions_public_origin", "https://app.example/x")]);
    let res = get(&bad, &id).await;
    assert_error(&res, 500, "misconfigured");
}

/// Review of issue 27: a session's handle changed with every rotation, so a thief who rotated
/// a stolen session escaped the backend's revocation by the handle it was created with (the
/// old handle named only the forward record, and revoking it ended nothing else). The handle
/// now stays with the session across rotations.
async fn a_rotated_session_keeps_its_handle_and_can_still_be_revoked_by_it(mode: Mode) {
    let redis = RedisServer::plain();
    let app = app(&redis, mode);
    let (victim, created) = create(&app, "u1", json!({})).await;
    let handle = created.json()["handle"].as_str().unwrap().to_owned();
    let (other, _) = create(&app, "u1", json!({})).await;
    let res = app
        .post("/api/sessions/current/rotate")
        .header("authorization", &format!("Bearer {victim}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let stolen = res.json()["session_id"].as_str().unwrap().to_owned();
    let listed = app.get("/api/sessions").header("cookie", &cookie(&other)).send().await.json();
    let handles: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["handle"].as_str().unwrap())
        .collect();
    assert!(handles.contains(&handle.as_str()), "{listed}");

    let res = backend_call(
        &app,
        http::Method::PATCH,
        "/api/sessions/admin/data",
        json!({"user_id": "u1", "handle": handle, "data": {"flag": true}}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(get(&app, &stolen).await.json()["data"], json!({"flag": true}));
    let res = backend_call(
        &app,
        http::Method::POST,
        "/api/sessions/admin/revoke",
        json!({"user_id": "u1", "handle": handle}),
    )
    .await;
    assert_eq!(res.json(), json!({"revoked": 1}), "{}", res.text());
    assert_unauthorized_and_cleared(&get(&app, &stolen).await);
    assert_eq!(get(&app, &other).await.status, 200);
}
