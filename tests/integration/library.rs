//! The library API (issue 29) through a component that calls it in-process
//! (tests/host/fixtures/library), beside the HTTP components on the same real Redis: state is
//! shared both ways (a limit spent through the library is spent for `/api/ratelimit`, a
//! session it creates is read by `/api/sessions/current`, ...), a request that uses several
//! patterns opens one connection, settings come from code or Spin variables, and errors are
//! typed. Also: the library's built-in defaults are spin.toml's.

use http::Method;
use serde_json::{json, Value};
use spin_test_host::redis::AsyncCommands;
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};

use crate::support::{builder, PATIENT_STALL_MS, SPIN_TOML};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/host/fixtures/library.toml");
const PEPPER: &str = "pepper+/=for-library-tests-0123456789abcdef";
pub(crate) const TOKEN: &str = "backend-token-for-library-tests-0123456789";

/// The component that uses the library.
pub(crate) fn fixture(redis: &RedisServer) -> TestApp {
    redis
        .configure(TestApp::builder(FIXTURE))
        .variable("redis_stall_ms", PATIENT_STALL_MS)
        .variable("otp_pepper", PEPPER)
        .load()
        .expect("the library fixture loads")
}

/// The HTTP components on the same Redis, with every backend token set.
pub(crate) fn components(redis: &RedisServer) -> TestApp {
    builder(redis)
        .variable("otp_pepper", PEPPER)
        .variable("otp_api_token", TOKEN)
        .variable("otp_dev_echo", "true")
        .variable("ratelimit_api_token", TOKEN)
        .variable("sessions_api_token", TOKEN)
        .variable("cache_purge_token", TOKEN)
        .variable("leaderboard_api_token", TOKEN)
        .variable("locks_api_token", TOKEN)
        .load()
        .expect("the app loads")
}

/// Runs `ops` in one request of the fixture: the results, and the response.
pub(crate) async fn lib(app: &TestApp, ops: Value) -> (Vec<Value>, TestResponse) {
    lib_with(app, json!({}), ops).await
}

/// The fixture component that has the patterns of `ops` (the first one's says): rate limits
/// and sessions at `/lib`; one-time codes, the cache, leaderboards and leases at `/lib-b`.
fn route(ops: &Value) -> &'static str {
    let op = ops[0]["op"].as_str().unwrap_or_default();
    if op.starts_with("cache_http") {
        return "/lib-c";
    }
    let b = ["otp_", "cache", "board_", "lock_"].iter().any(|prefix| op.starts_with(prefix));
    if b {
        "/lib-b"
    } else {
        "/lib"
    }
}

pub(crate) async fn lib_with(
    app: &TestApp,
    config: Value,
    ops: Value,
) -> (Vec<Value>, TestResponse) {
    let res = app.post(route(&ops)).json(&json!({"config": config, "ops": ops})).send().await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    let results = res.json()["results"].as_array().cloned().unwrap_or_default();
    (results, res)
}

/// The one result of a one-operation request, which must have succeeded.
pub(crate) async fn ok(app: &TestApp, op: Value) -> Value {
    let (results, res) = lib(app, json!([op])).await;
    assert!(results[0].get("ok").is_some(), "{results:?} {}", res.logs);
    results[0]["ok"].clone()
}

pub(crate) async fn backend(app: &TestApp, path: &str, body: Value) -> TestResponse {
    app.post(path).header("authorization", &format!("Bearer {TOKEN}")).json(&body).send().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_spent_through_the_library_is_spent_for_the_http_api() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    // `login` (spin.toml's default policies): a token bucket of 5.
    for left in (0..5).rev() {
        let d = ok(&lib_app, json!({"op": "limit", "policy": "login", "key": "ann"})).await;
        assert_eq!((d["allowed"].as_bool(), d["remaining"].as_u64()), (Some(true), Some(left)));
    }
    // In the decision API's documented key (docs/ratelimit.md), which the gateway's and
    // earlier versions' state sit beside: the HTTP route going through the library too, this
    // is what would catch a changed layout.
    let mut client = redis.client().await;
    let keys: Vec<String> = client.keys("srp:rl:*").await.unwrap();
    assert_eq!(keys, ["srp:rl:a:{login:ann}:tb"]);
    let check = json!({"policy": "login", "key": "ann"});
    let res = backend(&http, "/api/ratelimit/check", check.clone()).await;
    assert_eq!(res.status, 429, "{}", res.text());
    // And back: another key spent over HTTP is spent for the library.
    for _ in 0..5 {
        let res =
            backend(&http, "/api/ratelimit/check", json!({"policy": "login", "key": "bob"})).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let d = ok(&lib_app, json!({"op": "limit", "policy": "login", "key": "bob"})).await;
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(d["violated"], json!(["login"]));
    let headers: Vec<(String, String)> = serde_json::from_value(d["headers"].clone()).unwrap();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ratelimit-policy", "ratelimit", "retry-after"], "{headers:?}");
    assert!(d["retry_after_ms"].as_u64().unwrap() > 0);
    // A reset through the library frees the HTTP route's key.
    assert_eq!(ok(&lib_app, json!({"op": "reset", "policy": "login", "key": "ann"})).await, true);
    assert_eq!(backend(&http, "/api/ratelimit/check", check).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_shared_with_the_http_component() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    let created = ok(
        &lib_app,
        json!({"op": "session_create", "user_id": "u-1", "data": r#"{"theme":"dark"}"#}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let set_cookie = created["set_cookie"].as_str().unwrap();
    assert!(set_cookie.starts_with(&format!("__Host-session={id};")), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("Secure"), "{set_cookie}");
    let cookie = format!("__Host-session={id}");
    let res = http.get("/api/sessions/current").header("cookie", &cookie).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["user_id"], "u-1");
    assert_eq!(res.json()["data"], json!({"theme": "dark"}));

    // Created over HTTP, read by the library from a Cookie header among others.
    let res = backend(&http, "/api/sessions", json!({"user_id": "u-2"})).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let other = res.json()["session_id"].as_str().unwrap().to_owned();
    let cookies = format!("a=b; __Host-session={other}; c=d");
    let current = ok(&lib_app, json!({"op": "session_current", "cookie": cookies})).await;
    assert_eq!(current["user_id"], "u-2", "{current}");

    // Rotated by the library: the new id works over HTTP.
    let rotated = ok(&lib_app, json!({"op": "session_rotate", "id": id})).await;
    let new_id = rotated.as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    let res = http
        .get("/api/sessions/current")
        .header("cookie", &format!("__Host-session={new_id}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    // Ended by the library: over HTTP it is gone.
    assert_eq!(ok(&lib_app, json!({"op": "session_end", "id": new_id})).await, true);
    let res = http
        .get("/api/sessions/current")
        .header("cookie", &format!("__Host-session={new_id}"))
        .send()
        .await;
    assert_eq!(res.status, 401, "{}", res.text());
    // No cookie, a malformed one, or an ended session: no session, and no Redis asked for
    // the first two.
    let (results, res) = lib(
        &lib_app,
        json!([{"op": "session_current", "cookie": ""},
               {"op": "session_current", "cookie": "__Host-session=forged"}]),
    )
    .await;
    assert_eq!(results, vec![json!({"ok": null}), json!({"ok": null})]);
    assert_eq!(res.redis_connections, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn otp_codes_are_shared_with_the_http_component() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    let issued =
        ok(&lib_app, json!({"op": "otp_issue", "subject": "Ann@Example.com", "purpose": "login"}))
            .await;
    let code = issued["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    // The cooldown is one: the HTTP route refuses another code at once.
    let res =
        backend(&http, "/api/otp", json!({"subject": "ann@example.com", "purpose": "login"})).await;
    assert_eq!(res.status, 429, "{}", res.text());
    assert_eq!(res.json()["code"], "resend_cooldown");
    // And the library's refusal is typed the same way.
    let (results, _) = lib(
        &lib_app,
        json!([{"op": "otp_issue", "subject": "ann@example.com", "purpose": "login"}]),
    )
    .await;
    assert_eq!(results[0]["err"]["status"], 429, "{results:?}");
    assert_eq!(results[0]["err"]["code"], "resend_cooldown");
    assert!(results[0]["err"]["retry_after"].as_u64().unwrap() >= 1);
    // Verified over HTTP.
    let body = json!({"subject": "ann@example.com", "purpose": "login", "code": code});
    let res = backend(&http, "/api/otp/verify", body).await;
    assert_eq!(res.status, 200, "{}", res.text());

    // Issued over HTTP (dev echo), verified by the library; a wrong code first.
    let res =
        backend(&http, "/api/otp", json!({"subject": "bob@example.com", "purpose": "login"})).await;
    assert_eq!(res.status, 202, "{}", res.text());
    let code = res.json()["code"].as_str().unwrap().to_owned();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (results, _) = lib(
        &lib_app,
        json!([
            {"op": "otp_verify", "subject": "bob@example.com", "purpose": "login", "code": wrong},
            {"op": "otp_verify", "subject": "bob@example.com", "purpose": "login", "code": code},
            {"op": "otp_verify", "subject": "bob@example.com", "purpose": "login", "code": code},
        ]),
    )
    .await;
    assert_eq!(results[0]["ok"], json!({"verified": false, "status": 401, "code": "wrong_code"}));
    assert_eq!(results[1]["ok"], json!({"verified": true, "subject": "bob@example.com"}));
    assert_eq!(results[2]["ok"]["code"], "code_expired", "used up: {results:?}");
    // Link tokens verify without their subject.
    let link = ok(
        &lib_app,
        json!({"op": "otp_issue", "subject": "cy@example.com", "purpose": "reset_password", "format": "link"}),
    )
    .await;
    let token = link["code"].as_str().unwrap();
    let verified =
        ok(&lib_app, json!({"op": "otp_verify", "purpose": "reset_password", "code": token})).await;
    assert_eq!(verified, json!({"verified": true, "subject": "cy@example.com"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_values_share_the_cache_components_entries_and_purges() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    let fill = |value: &str| json!({"op": "cache", "key": "/profiles/lib-1", "value": value, "ttl": 300, "tags": ["team-a"]});
    let first = ok(&lib_app, fill("v1")).await;
    assert_eq!(first, json!({"value": "v1", "status": "miss"}));
    let second = ok(&lib_app, fill("v2")).await;
    assert_eq!(second, json!({"value": "v1", "status": "hit"}));
    // Purged by tag through the cache-admin component: the library fetches again.
    let res = backend(&http, "/api/cache/purge", json!({"tags": ["team-a"]})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["purged"], 1, "{}", res.text());
    assert_eq!(ok(&lib_app, fill("v3")).await, json!({"value": "v3", "status": "miss"}));
    // The library's own purges.
    assert_eq!(ok(&lib_app, json!({"op": "cache_purge", "key": "/profiles/lib-1"})).await, true);
    assert_eq!(ok(&lib_app, fill("v4")).await["status"], "miss");
    assert_eq!(ok(&lib_app, json!({"op": "cache_purge_tag", "tag": "team-a"})).await, 1);
    // A failing source: a typed error, nothing stored, and the next caller tries again.
    let failing = json!({"op": "cache", "key": "/profiles/lib-2", "fail": true});
    let (results, _) = lib(&lib_app, json!([failing])).await;
    assert_eq!(results[0]["err"]["status"], 502, "{results:?}");
    assert_eq!(results[0]["err"]["code"], "fetch_failed");
    let fine = json!({"op": "cache", "key": "/profiles/lib-2", "value": "ok"});
    assert_eq!(ok(&lib_app, fine).await, json!({"value": "ok", "status": "miss"}));
    // A key that is not a path is refused before Redis is asked.
    let (results, res) =
        lib(&lib_app, json!([{"op": "cache", "key": "no-slash", "value": "x"}])).await;
    assert_eq!(results[0]["err"]["code"], "invalid_key", "{results:?}");
    assert_eq!(res.redis_connections, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn leaderboards_and_leases_are_shared_with_the_http_components() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    let (results, _) = lib(
        &lib_app,
        json!([
            {"op": "board_submit", "board": "global", "member": "ann", "score": 30},
            {"op": "board_submit", "board": "global", "member": "bob", "score": 50},
            {"op": "board_rank", "board": "global", "member": "ann"},
            {"op": "board_rank", "board": "global", "member": "nobody"},
            {"op": "board_submit", "board": "no-such-board", "member": "x", "score": 1},
        ]),
    )
    .await;
    assert_eq!(results[1]["ok"]["rank"], 1, "{results:?}");
    assert_eq!(results[2]["ok"], json!({"rank": 2, "score": 30.0, "total": 2}));
    assert_eq!(results[3]["ok"], Value::Null);
    assert_eq!(results[4]["err"]["status"], 404);
    assert_eq!(results[4]["err"]["code"], "unknown_board");
    let res = http.get("/api/leaderboards/global").send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    let members: Vec<&str> =
        body["entries"].as_array().unwrap().iter().filter_map(|e| e["member"].as_str()).collect();
    assert_eq!(members, ["bob", "ann"]);

    // A lease taken by the library holds against the HTTP route, whose holder token the
    // library issued.
    let lease =
        ok(&lib_app, json!({"op": "lock_acquire", "name": "report", "ttl_ms": 60000})).await;
    let token = lease["token"].as_str().unwrap().to_owned();
    let res = backend(&http, "/api/locks/report", json!({"ttl_ms": 1000})).await;
    assert_eq!(res.status, 409, "{}", res.text());
    assert_eq!(res.json()["code"], "lock_held");
    let (results, _) =
        lib(&lib_app, json!([{"op": "lock_acquire", "name": "report", "ttl_ms": 1000}])).await;
    assert_eq!(results[0]["err"]["status"], 409, "{results:?}");
    assert_eq!(results[0]["err"]["code"], "lock_held");
    assert!(results[0]["err"]["retry_after"].as_u64().unwrap() >= 1);
    // Renewed by the library from the token alone, released over HTTP.
    let renewed = ok(
        &lib_app,
        json!({"op": "lock_renew", "name": "report", "token": token, "ttl_ms": 60000}),
    )
    .await;
    assert_eq!(renewed["fencing_token"], lease["fencing_token"]);
    let res = http
        .delete("/api/locks/report")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .header("lock-token", &token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let (results, _) =
        lib(&lib_app, json!([{"op": "lock_release", "name": "report", "token": token}])).await;
    assert_eq!(results[0]["err"]["code"], "not_holder", "{results:?}");
}

/// The lock routes go through `Lease` (issue 29): a waiting acquire, a status read and the
/// 409 a holder's lease gives are the same through the library and over HTTP, both ways.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_acquires_and_status_are_shared_with_the_locks_route() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    // Held over HTTP: the library's status sees the route's lease, and its bounded wait ends
    // with how long the lease has left, not with an error.
    let res = backend(&http, "/api/locks/batch", json!({"ttl_ms": 60000})).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let fence = res.json()["fencing_token"].clone();
    let (results, res) = lib(
        &lib_app,
        json!([
            {"op": "lock_status", "name": "batch"},
            {"op": "lock_try", "name": "batch", "ttl_ms": 1000, "wait_ms": 30},
            {"op": "lock_status", "name": "never-taken"},
        ]),
    )
    .await;
    let status = &results[0]["ok"];
    assert_eq!((&status["held"], &status["fencing_token"]), (&json!(true), &fence), "{results:?}");
    assert_eq!(status["last_fencing_token"], fence);
    let left = status["expires_in_ms"].as_u64().unwrap();
    assert!((1..=60000).contains(&left), "{results:?}");
    let held = results[1]["ok"]["held_ms"].as_u64().expect("still held after the wait");
    assert!((1..=60000).contains(&held), "{results:?}");
    assert_eq!(
        results[2]["ok"],
        json!({"held": false, "expires_in_ms": null, "fencing_token": null, "last_fencing_token": null})
    );
    assert_eq!(res.redis_connections, 1, "the wait polls on the request's connection");

    // Held by the library: the route's status and its 409 (with expires_in_ms and
    // Retry-After) see the library's lease.
    let lease = ok(&lib_app, json!({"op": "lock_try", "name": "nightly", "ttl_ms": 60000})).await;
    let token = lease["token"].as_str().unwrap().to_owned();
    let res = http
        .get("/api/locks/nightly")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        (&res.json()["held"], &res.json()["fencing_token"]),
        (&json!(true), &lease["fencing_token"])
    );
    let res = backend(&http, "/api/locks/nightly", json!({"ttl_ms": 1000, "wait_ms": 20})).await;
    assert_eq!(res.status, 409, "{}", res.text());
    let left = res.json()["expires_in_ms"].as_u64().unwrap();
    assert_eq!(res.header("retry-after"), Some(left.div_ceil(1000).to_string().as_str()));
    // Another token for the same name is not the holder: 409 not_holder, with the holder's
    // time left, from the library's answer.
    let res = http
        .request(Method::PUT, "/api/locks/nightly")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .header("lock-token", &"A".repeat(43))
        .json(&json!({"ttl_ms": 1000}))
        .send()
        .await;
    assert_eq!(res.status, 409, "{}", res.text());
    assert_eq!(res.json()["code"], "not_holder");
    assert!(res.json()["expires_in_ms"].as_u64().is_some(), "{}", res.text());
    let res = http
        .delete("/api/locks/nightly")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .header("lock-token", &token)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    // A waiting acquire gets a lease once the other one ends, both ways: a 1 ms lease ends
    // long before the 10 s wait does, however slow the machine.
    let res = backend(&http, "/api/locks/short", json!({"ttl_ms": 1})).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let got =
        ok(&lib_app, json!({"op": "lock_try", "name": "short", "ttl_ms": 1, "wait_ms": 10000}))
            .await;
    assert!(got["token"].is_string(), "{got}");
    let res = backend(&http, "/api/locks/short", json!({"ttl_ms": 1000, "wait_ms": 5000})).await;
    assert_eq!(res.status, 201, "{}", res.text());
}

/// Removal from a period goes through `Board::remove_of`: what one side scored the other
/// removes, in the period it names.
#[tokio::test(flavor = "multi_thread")]
async fn removals_by_period_are_shared_with_the_leaderboard_route() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    // Scored over HTTP on the daily board, removed by the library from that day's period.
    let res =
        backend(&http, "/api/leaderboards/daily/scores", json!({"member": "ann", "score": 5}))
            .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let day = res.json()["period"].as_str().unwrap().to_owned();
    let (results, _) = lib(
        &lib_app,
        json!([
            {"op": "board_remove", "board": "daily", "period": "previous", "member": "ann"},
            {"op": "board_remove", "board": "daily", "period": day, "member": "ann"},
            {"op": "board_remove", "board": "daily", "period": day, "member": "ann"},
            {"op": "board_remove", "board": "daily", "period": "2026", "member": "ann"},
        ]),
    )
    .await;
    assert_eq!(results[0]["ok"]["removed"], false, "{results:?}");
    assert_ne!(results[0]["ok"]["period"], json!(day), "{results:?}");
    assert_eq!(results[1]["ok"], json!({"removed": true, "period": day}), "{results:?}");
    assert_eq!(results[2]["ok"], json!({"removed": false, "period": day}), "{results:?}");
    assert_eq!(results[3]["err"]["code"], "invalid_query", "{results:?}");
    let res = http.get(&format!("/api/leaderboards/daily/members/ann?period={day}")).send().await;
    assert_eq!(res.status, 404, "{}", res.text());

    // Scored by the library on the all-time board, removed over HTTP.
    ok(&lib_app, json!({"op": "board_submit", "board": "global", "member": "bob", "score": 7}))
        .await;
    let res = http
        .delete("/api/leaderboards/global/members/bob?period=current")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["removed"], true, "{}", res.text());
    assert_eq!(res.json()["period"], "all");
    let rank = ok(&lib_app, json!({"op": "board_rank", "board": "global", "member": "bob"})).await;
    assert_eq!(rank, Value::Null);
}

/// The gateway decides through `Limiter` in the gateway's namespace (`rl:g:{gw}:...`): a
/// caller's quota spent through the library is spent for `/api/limited`, and back, and the
/// library names a second subject's limits as the gateway does (`<policy>.address`).
#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_counters_are_shared_with_the_library() {
    let redis = RedisServer::plain();
    let policies = r#"{"gw": {"algorithm": "fixed_window", "limit": 3, "window": "3600s"}}"#;
    let http = builder(&redis)
        .variable("ratelimit_policies", policies)
        .variable("ratelimit_gateway_policy", "gw")
        .load()
        .expect("the app loads");
    let lib_app = fixture(&redis);
    let config = json!({"ratelimit_policies": policies});
    // The gateway's own pair for a caller without an API key: its address twice.
    let caller = |ip: &str| json!({"op": "gateway_limit", "subjects": [["gw", format!("ip:{ip}")], ["gw", format!("ip:{ip}"), "address"]]});
    let (results, res) = lib_with(
        &lib_app,
        config.clone(),
        json!([caller("203.0.113.5"), caller("203.0.113.5"), caller("203.0.113.5")]),
    )
    .await;
    let left: Vec<&Value> = results.iter().map(|r| &r["ok"]["remaining"]).collect();
    assert_eq!(left, [&json!(2), &json!(1), &json!(0)], "{results:?}");
    assert_eq!(res.redis_connections, 1);
    let mut client = redis.client().await;
    let keys: Vec<String> = client.keys("srp:rl:*").await.unwrap();
    assert!(
        !keys.is_empty()
            && keys.iter().all(|k| k.starts_with("srp:rl:g:{gw}:gw:ip:203.0.113.5:fw:")),
        "{keys:?}"
    );
    let res = http.get("/api/limited/x").client_addr("203.0.113.5:1000").send().await;
    assert_eq!(res.status, 429, "{}", res.text());
    assert_eq!(res.json()["code"], "rate_limited");

    // Back: three requests through the gateway spend another caller's quota for the library.
    for _ in 0..3 {
        let res = http.get("/api/limited/y").client_addr("203.0.113.6:1000").send().await;
        assert_ne!(res.status, 429, "{}", res.text());
    }
    let (results, _) = lib_with(
        &lib_app,
        config.clone(),
        json!([{"op": "gateway_peek", "policy": "gw", "key": "ip:203.0.113.6"}, caller("203.0.113.6")]),
    )
    .await;
    assert_eq!(results[0]["ok"], json!({"allowed": false, "remaining": 0}), "{results:?}");
    assert_eq!(results[1]["ok"]["violated"], json!(["gw"]), "{results:?}");

    // A known key and an address: two limits, the address's named as the gateway names it.
    let (results, _) = lib_with(
        &lib_app,
        config,
        json!([{"op": "gateway_limit", "subjects": [["gw", "key:k1"], ["gw", "ip:203.0.113.7", "address"]]}]),
    )
    .await;
    let headers: Vec<(String, String)> =
        serde_json::from_value(results[0]["ok"]["headers"].clone()).unwrap();
    let ratelimit = &headers.iter().find(|(n, _)| n == "ratelimit").unwrap().1;
    assert!(
        ratelimit.starts_with("\"gw\";r=2;t=") && ratelimit.contains(", \"gw.address\";r=2;t="),
        "{ratelimit}"
    );
}

/// The point of the API: a handler that limits and reads a session, or reads through the
/// cache and records a score, makes one Redis connection for all of it (each fixture component
/// has some of the patterns).
#[tokio::test(flavor = "multi_thread")]
async fn several_patterns_in_one_request_share_one_connection() {
    let redis = RedisServer::plain();
    let lib_app = fixture(&redis);
    let created = ok(&lib_app, json!({"op": "session_create", "user_id": "u-9"})).await;
    let cookie = format!("__Host-session={}", created["id"].as_str().unwrap());
    let (results, res) = lib(
        &lib_app,
        json!([
            {"op": "limit", "policy": "api", "key": "10.0.0.9"},
            {"op": "session_current", "cookie": cookie},
        ]),
    )
    .await;
    assert!(results.iter().all(|r| r.get("ok").is_some()), "{results:?}");
    assert_eq!(results[1]["ok"]["user_id"], "u-9");
    assert_eq!(res.redis_connections, 1, "{results:?}");
    let (results, res) = lib(
        &lib_app,
        json!([
            {"op": "cache", "key": "/profiles/u-9", "value": "{}"},
            {"op": "board_submit", "board": "global", "member": "u-9", "score": 3},
            {"op": "lock_acquire", "name": "u-9", "ttl_ms": 1000},
        ]),
    )
    .await;
    assert!(results.iter().all(|r| r.get("ok").is_some()), "{results:?}");
    assert_eq!(res.redis_connections, 1, "{results:?}");
}

/// `http::serve` reads the whole body before the handler runs, so it bounds it: past
/// `MAX_REQUEST_BYTES` (1 MiB) the caller gets a 413 problem, and the handler never runs
/// (no Redis connection); at the bound the handler gets the request.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_bound_is_refused_before_the_handler() {
    let redis = RedisServer::plain();
    let app = fixture(&redis);
    let over = app.post("/lib").header("content-type", "application/json");
    let res = over.body(vec![b' '; 1024 * 1024 + 1]).send().await;
    assert_eq!(res.status, 413, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(res.json()["code"], "body_too_large");
    assert_eq!(res.redis_connections, 0);
    // At the bound: whitespace around the fixture's JSON, read and answered.
    let ops = json!({"config": {}, "ops": [{"op": "peek", "policy": "api", "key": "k"}]});
    let mut body = ops.to_string().into_bytes();
    body.resize(1024 * 1024, b' ');
    let at = app.post("/lib").header("content-type", "application/json").body(body);
    let res = at.send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.json()["results"][0].get("ok").is_some(), "{}", res.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_come_from_code_and_errors_are_typed() {
    let redis = RedisServer::plain();
    let lib_app = fixture(&redis);
    let tiny = json!({"ratelimit_policies": r#"{"tiny": {"algorithm": "fixed_window", "limit": 1, "window": "60s"}}"#});
    let op = json!({"op": "limit", "policy": "tiny", "key": "k"});
    let (results, _) = lib_with(&lib_app, tiny.clone(), json!([op, op])).await;
    assert_eq!(results[0]["ok"]["allowed"], true, "{results:?}");
    assert_eq!(results[1]["ok"]["allowed"], false, "{results:?}");
    let (results, res) = lib_with(
        &lib_app,
        tiny,
        json!([
            {"op": "limit", "policy": "api", "key": "k"},
            {"op": "limit", "policy": "tiny", "key": ""},
            {"op": "limit", "policy": "tiny", "key": "k", "cost": 2},
        ]),
    )
    .await;
    let codes: Vec<(&Value, &Value)> =
        results.iter().map(|r| (&r["err"]["status"], &r["err"]["code"])).collect();
    assert_eq!(
        codes,
        [
            (&json!(404), &json!("unknown_policy")),
            (&json!(400), &json!("invalid_key")),
            (&json!(400), &json!("cost_exceeds_limit")),
        ],
        "{results:?}"
    );
    assert_eq!(res.redis_connections, 0, "refused before Redis is asked");
    // A bad setting from code names its variable.
    let (results, _) = lib_with(
        &lib_app,
        json!({"ratelimit_policies": "not json"}),
        json!([{"op": "limit", "policy": "api", "key": "k"}]),
    )
    .await;
    assert_eq!(results[0]["err"]["status"], 500, "{results:?}");
    assert_eq!(results[0]["err"]["code"], "misconfigured");
    assert!(results[0]["err"]["message"].as_str().unwrap().contains("ratelimit_policies"));
    // Redis settings from code: a port nothing listens on is a 503.
    let (results, _) = lib_with(
        &lib_app,
        json!({"redis_port": "1"}),
        json!([{"op": "limit", "policy": "api", "key": "k"}]),
    )
    .await;
    assert!(
        results[0]["err"]["status"] == 503 || results[0]["err"]["status"] == 500,
        "{results:?}"
    );
    // The OTP pepper is required: without it, a configuration error naming it.
    let (results, _) = lib_with(
        &lib_app,
        json!({"otp_pepper": ""}),
        json!([{"op": "otp_issue", "subject": "a@example.com", "purpose": "login"}]),
    )
    .await;
    assert_eq!(results[0]["err"]["code"], "misconfigured", "{results:?}");
    assert!(results[0]["err"]["message"].as_str().unwrap().contains("otp_pepper"));
}

/// `Config`'s built-in defaults are spin.toml's, so an app that maps no variable behaves as
/// the components do by default.
#[test]
fn the_librarys_defaults_are_spin_tomls() {
    let manifest: toml::Table = std::fs::read_to_string(SPIN_TOML).unwrap().parse().unwrap();
    let variables = manifest["variables"].as_table().unwrap();
    let mut from_manifest: Vec<(String, String)> = variables
        .iter()
        .filter_map(|(name, v)| Some((name.clone(), v.get("default")?.as_str()?.to_owned())))
        .collect();
    from_manifest.sort();
    let mut built_in: Vec<(String, String)> = spin_redis_patterns::config::DEFAULTS
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    built_in.sort();
    assert_eq!(built_in, from_manifest);
}

/// `cargo package` takes the library and its scripts, and leaves out the components, the
/// tests and the deployment files (the full `cargo package`, which also builds the packaged
/// crate, runs in .ci/run).
#[test]
fn the_crate_packages_the_library_alone() {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["package", "-p", "spin-redis-patterns", "--list", "--allow-dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let files = String::from_utf8(output.stdout).unwrap();
    let files: Vec<&str> = files.lines().collect();
    for wanted in
        ["Cargo.toml", "README.md", "src/lib.rs", "src/ratelimit/decide.lua", "docs/library.md"]
    {
        assert!(files.contains(&wanted), "{wanted} missing from {files:?}");
    }
    // Every file the library's code includes at compile time (the `health` service serves
    // docs/openapi.yaml) is packaged, or the packaged crate does not build.
    let included = include_targets(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(included.iter().any(|f| f == "docs/openapi.yaml"), "{included:?}");
    for file in &included {
        assert!(files.contains(&file.as_str()), "{file} is included by src/ but not packaged");
    }
    let unwanted = ["tests/", "deploy/", "components/", "spin.toml", "runtime-config.toml", ".ci/"];
    for file in &files {
        assert!(!unwanted.iter().any(|u| file.starts_with(u)), "{file} is packaged");
    }
}

/// The files `include_str!`/`include_bytes!` name under `dir`, relative to the package root.
fn include_targets(dir: &std::path::Path) -> Vec<String> {
    let root = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(include_targets(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Code only: a doc comment's example names files of its own.
        let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            for macro_name in ["include_str!(\"", "include_bytes!(\""] {
                let Some(at) = line.find(macro_name) else { continue };
                let rest = &line[at + macro_name.len()..];
                let target = &rest[..rest.find('"').unwrap()];
                let file = path.parent().unwrap().join(target);
                let file = std::fs::canonicalize(&file).unwrap_or(file);
                let relative = file.strip_prefix(&root).unwrap_or(&file);
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found
}
