//! Every component's main routes in one run (the tour), with the fast path off and on, then
//! two checks of what it did to Redis:
//! - on a one-node Redis cluster over TLS with a password (every slot on the node), every Lua
//!   script was sent and every multi-key command ran, and every request succeeded: a script or
//!   command whose keys span two hash slots fails there with `CROSSSLOT`, failing a request;
//! - every key the services left behind expires, unless its kind is one of
//!   `spin_redis_patterns::KEYS_WITHOUT_EXPIRY` (the list docs/architecture.md cites).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};

use crate::support::{builder, Mode, Monitor, AZURE_STYLE_KEY};

const LOCKS_TOKEN: &str = "locks+T0ken/=locks+T0ken/=locks+T0ken/=";
const SESSIONS_TOKEN: &str = "backend-token-7f3a9c-0123456789abcdef";
const LEADERBOARD_TOKEN: &str = "board+T0ken/=board+T0ken/=board+T0ken/=";
const OTP_TOKEN: &str = "otp-backend-token-0123456789abcdefghij";
const OTP_PEPPER: &str = "pepper+/=for-tests-0123456789abcdefghijklmnop";
const PURGE_TOKEN: &str = "purge-s3cret-token-0123456789abcdef";
const WRITE_BEHIND_TOKEN: &str = "write-behind-tour-token-0123456789abcdef";
const RL_ADMIN_TOKEN: &str = "rl-admin+T0ken/=rl-admin+T0ken/=0123";
const RL_API_TOKEN: &str = "ap1+T0ken/=ap1+T0ken/=ap1+T0ken/=ap1+T0ken";

fn policies() -> Value {
    json!({
        "fw": {"algorithm": "fixed_window", "limit": 50, "window": "1h"},
        "sw": {"algorithm": "sliding_window", "limit": 50, "window": "1h"},
        "tb": {"algorithm": "token_bucket", "capacity": 50, "refill_per_sec": 0.001},
        "combo": {"limits": {
            "burst": {"algorithm": "token_bucket", "capacity": 3, "refill_per_sec": 0.001},
            "hourly": {"algorithm": "sliding_window", "limit": 5, "window": "1h"}}},
    })
}

fn boards() -> Value {
    json!({
        "alltime": {"mode": "best"},
        "xp": {"mode": "increment", "period": "weekly"},
        "daily": {"mode": "latest", "period": "daily", "retention_hours": 48},
        "hourly": {"mode": "best", "period": "window", "window_minutes": 60, "retention_hours": 1}
    })
}

/// The whole app with every component switched on.
fn app(redis: &RedisServer, mode: Mode, extra: &[(&str, &str)]) -> TestApp {
    let mut b = builder(redis)
        .variable("redis_fast_path", mode.variable())
        .variable("locks_api_token", LOCKS_TOKEN)
        .variable("sessions_api_token", SESSIONS_TOKEN)
        .variable("leaderboard_api_token", LEADERBOARD_TOKEN)
        .variable("leaderboard_boards", boards().to_string())
        .variable("otp_api_token", OTP_TOKEN)
        .variable("otp_pepper", OTP_PEPPER)
        .variable("otp_purpose_policies", r#"{"login": {"format": "any"}}"#)
        .variable("cache_purge_token", PURGE_TOKEN)
        .variable("cache_write_token", WRITE_BEHIND_TOKEN)
        .variable("cache_drain_token", WRITE_BEHIND_TOKEN)
        .variable("cache_hit_sampling", "1")
        .variable("ratelimit_policies", policies().to_string())
        .variable("ratelimit_admin_token", RL_ADMIN_TOKEN)
        .variable("ratelimit_api_token", RL_API_TOKEN)
        .variable("ratelimit_gateway_policy", "sw");
    for (name, value) in extra {
        b = b.variable(name, *value);
    }
    b.load().expect("app loads")
}

#[track_caller]
fn ok(res: &TestResponse, status: u16) -> Value {
    assert_eq!(res.status, status, "{} {}", res.text(), res.logs);
    if res.body.is_empty() {
        Value::Null
    } else {
        res.json()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The plain code or link token of the newest outbox entry for `subject`.
async fn sent_code(redis: &RedisServer, subject: &str) -> String {
    let mut client = redis.client().await;
    let streams: Vec<String> = client.keys("srp:otp:outbox:*").await.unwrap();
    let mut newest: Option<(String, String)> = None;
    for stream in streams {
        let range: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query_async(&mut client)
            .await
            .unwrap();
        for (id, fields) in range {
            if fields.iter().any(|(k, v)| k == "subject" && v == subject) {
                let code = fields.iter().find(|(k, _)| k == "code").unwrap().1.clone();
                let (ms, seq) = id.split_once('-').unwrap();
                let order = format!("{ms:0>20}-{seq:0>20}");
                if newest.as_ref().is_none_or(|(o, _)| *o < order) {
                    newest = Some((order, code));
                }
            }
        }
    }
    newest.unwrap_or_else(|| panic!("no outbox entry for {subject}")).1
}

/// Every component's main routes, each expected to succeed. `t` keeps names apart between
/// runs on one server.
async fn tour(redis: &RedisServer, mode: Mode, t: &str) {
    let app = app(redis, mode, &[]);
    // The demo origin knows profiles by number.
    let n = if t == "o" { 1 } else { 2 };

    // health
    ok(&app.get("/health/cache").send().await, 200);

    // cache: a miss and a hit through the demo origin, the demo counter, a path purge, tag
    // and purge-all purges (per bucket, with SCAN), the stats (MGET per bucket).
    for _ in 0..2 {
        ok(&app.get(&format!("/api/cache/profile/{n}7")).send().await, 200);
        ok(&app.get(&format!("/api/cache/proxy/profiles/{n}8")).send().await, 200);
    }
    ok(&app.get("/api/cache/demo").send().await, 200);
    let purge = app
        .delete(&format!("/api/cache/proxy/profiles/{n}8"))
        .header("authorization", &bearer(PURGE_TOKEN))
        .send()
        .await;
    ok(&purge, 200);
    for body in
        [json!({"tags": ["profiles"]}), json!({"all": true, "soft": true}), json!({"all": true})]
    {
        let res = app
            .post("/api/cache/purge")
            .header("authorization", &bearer(PURGE_TOKEN))
            .json(&body)
            .send()
            .await;
        ok(&res, 200);
    }
    ok(&app.get(&format!("/api/cache/profile/{n}7")).send().await, 200);
    ok(&app.get("/api/cache/stats").send().await, 200);
    // write-behind: a write (entry and queue entry in one script), a drain (the demo origin
    // answers PUT with 405, so the write moves to its bucket's dead letters), the queue.
    let write = app
        .request(http::Method::PUT, &format!("/api/cache/behind/profiles/{n}9"))
        .header("authorization", &bearer(WRITE_BEHIND_TOKEN))
        .body("{}")
        .send()
        .await;
    ok(&write, 202);
    for path in ["/api/cache/drain", "/api/cache/queue"] {
        let method = if path.ends_with("drain") { http::Method::POST } else { http::Method::GET };
        let res = app
            .request(method, path)
            .header("authorization", &bearer(WRITE_BEHIND_TOKEN))
            .send()
            .await;
        ok(&res, 200);
    }

    // ratelimit: every algorithm, one and several limits, state, reset (DEL of several
    // keys), and the gateway.
    let rl = |method: http::Method, path: String| {
        app.request(method, &path).header("authorization", &bearer(RL_API_TOKEN))
    };
    for policy in ["fw", "sw", "tb", "combo"] {
        for dry_run in [false, true] {
            let res = rl(http::Method::POST, "/api/ratelimit/check".into())
                .json(&json!({"policy": policy, "key": format!("{t}k"), "dry_run": dry_run}))
                .send()
                .await;
            assert_eq!(ok(&res, 200)["allowed"], true, "{}", res.text());
        }
        ok(&rl(http::Method::GET, format!("/api/ratelimit/{policy}/{t}k")).send().await, 200);
        let res = app
            .delete(&format!("/api/ratelimit/{policy}/{t}k"))
            .header("authorization", &bearer(RL_ADMIN_TOKEN))
            .send()
            .await;
        assert_eq!(ok(&res, 200)["reset"], true, "{policy}: {}", res.text());
    }
    for _ in 0..2 {
        ok(&app.get(&format!("/api/limited/profiles/{n}9")).send().await, 200);
    }

    // otp: a code issued and verified, a link verified without its subject, and (below) a
    // failed delivery withdrawn.
    let otp = |path: &str, body: Value| {
        app.post(path).header("authorization", &bearer(OTP_TOKEN)).json(&body)
    };
    let subject = format!("{t}alice@example.com");
    ok(
        &otp("/api/otp", json!({"subject": subject, "purpose": "login", "channel": "email"}))
            .send()
            .await,
        202,
    );
    let code = sent_code(redis, &subject).await;
    let res = otp("/api/otp/verify", json!({"subject": subject, "purpose": "login", "code": code}))
        .send()
        .await;
    assert_eq!(ok(&res, 200)["verified"], true);
    let subject = format!("{t}bob@example.com");
    let issue =
        json!({"subject": subject, "purpose": "login", "channel": "email", "format": "link"});
    ok(&otp("/api/otp", issue).send().await, 202);
    let link = sent_code(redis, &subject).await;
    let res = otp("/api/otp/verify", json!({"purpose": "login", "code": link})).send().await;
    assert_eq!(ok(&res, 200)["verified"], true);
    let wrong =
        otp("/api/otp/verify", json!({"subject": subject, "purpose": "login", "code": "000000"}));
    assert_eq!(wrong.send().await.status, 410);
    // A webhook nobody listens on: the code is withdrawn (rollback script).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hook = format!("http://127.0.0.1:{port}");
    let failing = self::app(
        redis,
        mode,
        &[("otp_webhook_url", &format!("{hook}/x")), ("otp_webhook_origin", &hook)],
    );
    let res = failing
        .post("/api/otp")
        .header("authorization", &bearer(OTP_TOKEN))
        .json(&json!({"subject": format!("{t}carol@example.com"), "purpose": "login", "channel": "email"}))
        .send()
        .await;
    ok(&res, 502);

    // sessions: create, read, patch, rotate, list, backend data, log out, log out everywhere,
    // backend revoke.
    let user = format!("{t}user");
    let create = || {
        app.post("/api/sessions")
            .header("authorization", &bearer(SESSIONS_TOKEN))
            .json(&json!({"user_id": user, "data": {"theme": "dark"}, "user_agent": "tour"}))
    };
    let id = ok(&create().send().await, 201)["session_id"].as_str().unwrap().to_owned();
    let session = |method: http::Method, path: &str, id: &str| {
        app.request(method, path).header("authorization", &bearer(id))
    };
    ok(&session(http::Method::GET, "/api/sessions/current", &id).send().await, 200);
    let patch = json!({"lang": "en", "theme": null});
    ok(&session(http::Method::PATCH, "/api/sessions/current", &id).json(&patch).send().await, 200);
    let rotated = session(http::Method::POST, "/api/sessions/current/rotate", &id).send().await;
    let id = ok(&rotated, 200)["session_id"].as_str().unwrap().to_owned();
    let list = ok(&session(http::Method::GET, "/api/sessions", &id).send().await, 200);
    let handle = list["sessions"][0]["handle"].as_str().unwrap().to_owned();
    let res = app
        .request(http::Method::PATCH, "/api/sessions/admin/data")
        .header("authorization", &bearer(SESSIONS_TOKEN))
        .json(&json!({"user_id": user, "handle": handle, "data": {"tier": "gold"}}))
        .send()
        .await;
    ok(&res, 200);
    ok(&session(http::Method::DELETE, "/api/sessions/current", &id).send().await, 204);
    let id = ok(&create().send().await, 201)["session_id"].as_str().unwrap().to_owned();
    ok(&create().send().await, 201);
    ok(&session(http::Method::DELETE, "/api/sessions", &id).send().await, 200);
    ok(&create().send().await, 201);
    let res = app
        .post("/api/sessions/admin/revoke")
        .header("authorization", &bearer(SESSIONS_TOKEN))
        .json(&json!({"user_id": user}))
        .send()
        .await;
    ok(&res, 200);

    // leaderboards: every mode and period, submitted, read, ranked, removed.
    for (board, body) in [
        ("alltime", json!({"member": format!("{t}m"), "score": 10})),
        ("xp", json!({"member": format!("{t}m"), "increment": 5})),
        ("daily", json!({"member": format!("{t}m"), "score": 3})),
        ("hourly", json!({"member": format!("{t}m"), "score": 7})),
        ("hourly", json!({"member": format!("{t}n"), "score": 8})),
    ] {
        let res = app
            .post(&format!("/api/leaderboards/{board}/scores"))
            .header("authorization", &bearer(LEADERBOARD_TOKEN))
            .json(&body)
            .send()
            .await;
        ok(&res, 200);
    }
    ok(&app.get("/api/leaderboards").send().await, 200);
    for board in ["alltime", "xp", "daily", "hourly"] {
        ok(&app.get(&format!("/api/leaderboards/{board}?limit=5")).send().await, 200);
        let member = format!("/api/leaderboards/{board}/members/{t}m");
        ok(&app.get(&format!("{member}?neighbours=1")).send().await, 200);
    }
    let res = app
        .delete(&format!("/api/leaderboards/hourly/members/{t}n"))
        .header("authorization", &bearer(LEADERBOARD_TOKEN))
        .send()
        .await;
    ok(&res, 200);

    // locks: acquire, renew, status, release.
    let lock = format!("/api/locks/{t}job");
    let locks = |method: http::Method| {
        app.request(method, &lock).header("authorization", &bearer(LOCKS_TOKEN))
    };
    let res = locks(http::Method::POST).json(&json!({"ttl_ms": 60000})).send().await;
    let token = ok(&res, 201)["token"].as_str().unwrap().to_owned();
    let res = locks(http::Method::PUT)
        .header("lock-token", &token)
        .json(&json!({"ttl_ms": 60000}))
        .send()
        .await;
    ok(&res, 200);
    ok(&locks(http::Method::GET).send().await, 200);
    ok(&locks(http::Method::DELETE).header("lock-token", &token).send().await, 200);
    // Work after the answers (hit counts, refreshes) writes keys too.
    app.settle().await;
}

/// Every `.lua` file under `src/`.
fn lua_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            lua_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "lua") {
            out.push(path);
        }
    }
}

/// A script file as the loader sends it (src/platform/script.rs: no blank or comment-only
/// lines, no indentation), escaped as `MONITOR` prints arguments (Redis's `sdscatrepr`).
fn as_monitor_shows(source: &str) -> String {
    let mut sent = String::new();
    for line in source.lines() {
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        sent.push_str(line);
        sent.push('\n');
    }
    let mut out = String::new();
    for b in sent.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            b if b.is_ascii_graphic() || b == b' ' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The tour on a one-node cluster over TLS: every request succeeded (so no script or
/// command of it crossed slots), every Lua file of `src/` went to Redis, and the multi-key
/// commands outside scripts (`MGET` of the cache stats, `DEL` of a rate limit reset) ran.
#[tokio::test(flavor = "multi_thread")]
async fn every_script_and_multi_key_command_runs_on_a_one_node_cluster() {
    let redis = RedisServer::cluster_tls(AZURE_STYLE_KEY);
    let mut client = redis.client().await;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut client).await.unwrap();
    assert!(info.contains("cluster_state:ok") && info.contains("cluster_slots_assigned:16384"));
    // The check has teeth: a cross-slot script fails here.
    let crossed: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("return redis.call('EXISTS', KEYS[1], KEYS[2])")
        .arg(2)
        .arg("{a}x")
        .arg("{b}x")
        .query_async(&mut client)
        .await;
    let err = crossed.expect_err("a cross-slot script must fail on a cluster");
    assert!(err.to_string().to_ascii_uppercase().contains("CROSSSLOT"), "{err}");

    let mut monitor = Monitor::start(&redis).await;
    tour(&redis, Mode::Outbound, "o").await;
    tour(&redis, Mode::FastPath, "f").await;
    let seen = monitor.take_raw().await.join("\n");

    let mut files = Vec::new();
    lua_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !seen.contains(&as_monitor_shows(&std::fs::read_to_string(f).unwrap())))
        .collect();
    assert!(missing.is_empty(), "scripts the tour never sent: {missing:?}");
    for command in ["\"MGET\"", "\"DEL\""] {
        assert!(
            seen.lines().any(|l| !l.contains(" lua]") && l.to_ascii_uppercase().contains(command)),
            "the tour never sent {command}"
        );
    }
}

/// The tour, then every key in Redis: each must expire, or match a documented kind.
#[tokio::test(flavor = "multi_thread")]
async fn every_key_a_service_leaves_expires_or_is_a_documented_kind() {
    let redis = RedisServer::plain();
    tour(&redis, Mode::Outbound, "o").await;
    tour(&redis, Mode::FastPath, "f").await;

    let mut client = redis.client().await;
    let mut keys: Vec<String> = client.keys("*").await.unwrap();
    keys.sort();
    assert!(keys.len() > 20, "the tour left state: {keys:?}");
    let mut without_expiry = Vec::new();
    for key in &keys {
        let ttl: i64 = client.pttl(key).await.unwrap();
        // (-2: expired since the scan.)
        if ttl == -1 {
            without_expiry.push(key.clone());
        }
    }
    let undocumented: Vec<_> = without_expiry
        .iter()
        .filter(|key| {
            let key = key.strip_prefix("srp:").unwrap_or(key);
            !spin_redis_patterns::KEYS_WITHOUT_EXPIRY.iter().any(|kind| glob(kind.pattern, key))
        })
        .collect();
    assert!(undocumented.is_empty(), "keys without expiry of no documented kind: {undocumented:?}");
    // Each documented kind is real: the tour leaves one of each.
    for kind in spin_redis_patterns::KEYS_WITHOUT_EXPIRY {
        assert!(
            without_expiry.iter().any(|k| glob(kind.pattern, k.strip_prefix("srp:").unwrap())),
            "{} is documented but the tour left none: {without_expiry:?}",
            kind.pattern
        );
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else { return false };
            (0..=text.len()).any(|i| text.is_char_boundary(i) && glob(rest, &text[i..]))
        }
    }
}

#[test]
fn glob_matches_runs() {
    assert!(glob("lb:{*}:all:z", "lb:{alltime}:all:z"));
    assert!(!glob("lb:{*}:all:z", "lb:{alltime}:2026-11-28:z"));
    assert!(glob("a*b*c", "aXbYc") && !glob("a*b", "ab c"));
}
