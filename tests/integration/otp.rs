//! The OTP component through the Spin-compatible host into real Redis, plain and TLS:
//! issuing and verifying codes and link tokens, expiry, lockout, races, replacement,
//! cooldown and hourly caps, the outbox and the webhook, bad input and Redis failures.

use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::time::Duration;

use serde_json::{json, Value};
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::webhook::Webhook;
use spin_test_host::{TestApp, TestResponse};

use crate::support::{assert_error, builder, until_fast_enough, AZURE_STYLE_KEY, SPIN_TOML};

const PEPPER: &str = "pepper+/=for-tests-0123456789abcdefghijklmnop";
/// The backend's token for the public routes (most tests use them; the private route, by
/// service chaining, has its own tests).
const TOKEN: &str = "otp-backend-token-0123456789abcdefghij";

fn app_with(redis: &RedisServer, vars: &[(&str, &str)]) -> TestApp {
    let mut builder =
        builder(redis).variable("otp_pepper", PEPPER).variable("otp_api_token", TOKEN);
    for (name, value) in vars {
        builder = builder.variable(name, *value);
    }
    builder.load().expect("app loads")
}

fn app(redis: &RedisServer) -> TestApp {
    app_with(redis, &[])
}

/// The backend's call on the public route, with its token.
async fn backend(app: &TestApp, path: &str, body: Value) -> TestResponse {
    app.post(path).header("authorization", &format!("Bearer {TOKEN}")).json(&body).send().await
}

async fn issue(app: &TestApp, subject: &str, purpose: &str) -> TestResponse {
    backend(app, "/api/otp", json!({"subject": subject, "purpose": purpose, "channel": "email"}))
        .await
}

async fn verify(app: &TestApp, subject: &str, purpose: &str, code: &str) -> TestResponse {
    backend(app, "/api/otp/verify", json!({"subject": subject, "purpose": purpose, "code": code}))
        .await
}

/// Every outbox entry, oldest first, as field maps (with the stream key and entry id).
async fn outbox(client: &mut redis::aio::MultiplexedConnection) -> Vec<HashMap<String, String>> {
    let streams: Vec<String> = client.keys("srp:otp:outbox:*").await.unwrap();
    let mut entries = Vec::new();
    for stream in streams {
        let range: Vec<(String, Vec<(String, String)>)> =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(client).await.unwrap();
        for (id, fields) in range {
            let mut map: HashMap<String, String> = fields.into_iter().collect();
            map.insert("_id".into(), id);
            map.insert("_stream".into(), stream.clone());
            entries.push(map);
        }
    }
    entries.sort_by_key(|e| {
        let (ms, seq) = e["_id"].split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    entries
}

/// The code most recently sent to `subject` (normalised) for `purpose`, read from the outbox
/// as a mail worker would.
async fn sent_code(
    client: &mut redis::aio::MultiplexedConnection,
    subject: &str,
    purpose: &str,
) -> String {
    outbox(client)
        .await
        .into_iter()
        .rev()
        .find(|e| e["subject"] == subject && e["purpose"] == purpose)
        .unwrap_or_else(|| panic!("no outbox entry for {subject} {purpose}"))["code"]
        .clone()
}

async fn keys(client: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = client.keys(pattern).await.unwrap();
    keys.sort();
    keys
}

async fn command_calls(client: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(client).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

async fn issue_and_verify_round_trip(redis: &RedisServer) {
    let mut client = redis.client().await;
    let app = app(redis);

    let res = issue(&app, "alice@example.com", "login").await;
    assert_eq!(res.status, 202, "{} {}", res.text(), res.logs);
    assert_eq!(res.json(), json!({"expires_in": 300, "resend_after": 60}));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.redis_connections, 1);

    let code = sent_code(&mut client, "alice@example.com", "login").await;
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");

    // The state expires by itself: code 300 s, cooldown 60 s, outbox 900 s, and the issue
    // budget (a token bucket of 5 an hour, one back every 720 s) once it is full again.
    let state = keys(&mut client, "srp:otp:{otp:*}:code:login:*").await;
    assert_eq!(state.len(), 1, "{state:?}");
    let ttl: i64 = client.pttl(&state[0]).await.unwrap();
    // (Bounds leave a busy machine seconds; each still tells the four apart.)
    assert!((280_000..=300_000).contains(&ttl), "{ttl}");
    let cooldown = keys(&mut client, "srp:otp:{otp:*}:cooldown:login:*").await;
    let ttl: i64 = client.pttl(&cooldown[0]).await.unwrap();
    assert!((40_000..=60_000).contains(&ttl), "{ttl}");
    let budget = keys(&mut client, "srp:otp:{otp:*}:issue-budget:*").await;
    let ttl: i64 = client.pttl(&budget[0]).await.unwrap();
    assert!((700_000..=720_000).contains(&ttl), "{ttl}");
    let stream = keys(&mut client, "srp:otp:outbox:*").await;
    let ttl: i64 = client.pttl(&stream[0]).await.unwrap();
    assert!((880_000..=900_000).contains(&ttl), "{ttl}");

    // One script per request: the first verify loads it (EVALSHA, then EVAL), a second
    // script run goes by SHA only.
    let evalsha_before = command_calls(&mut client, "evalsha").await;
    let res = verify(&app, "alice@example.com", "login", &code).await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    assert_eq!(res.json(), json!({"verified": true}));
    assert_eq!(res.redis_connections, 1);
    assert_eq!(command_calls(&mut client, "evalsha").await, evalsha_before + 1);

    // Single use: the code is gone.
    let res = verify(&app, "alice@example.com", "login", &code).await;
    assert_error(&res, 410, "code_expired");
    assert!(keys(&mut client, "srp:otp:{otp:*}:code:*").await.is_empty());
    let evals = command_calls(&mut client, "eval").await;
    assert_eq!(evals, 2, "each script is sent in full once (issue, verify), then by SHA");

    // Nothing secret in the logs.
    for text in [app.logs(), res.text()] {
        assert!(!text.contains(PEPPER) && !text.contains(&code), "secret leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_and_verify_over_plain_redis() {
    issue_and_verify_round_trip(&RedisServer::plain()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_and_verify_over_tls_with_an_azure_style_key() {
    issue_and_verify_round_trip(&RedisServer::tls(AZURE_STYLE_KEY)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subjects_are_normalised_and_purposes_kept_apart() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app(&redis);
    assert_eq!(issue(&app, "  Bob@Example.COM ", "login").await.status, 202);
    let code = sent_code(&mut client, "bob@example.com", "login").await;

    // A login code does not verify a password reset, and the try costs the login code nothing.
    assert_error(
        &verify(&app, "bob@example.com", "reset_password", &code).await,
        410,
        "code_expired",
    );
    let res = verify(&app, "BOB@example.com", "login", &code).await;
    assert_eq!(res.status, 200, "{}", res.text());

    // Phone numbers are normalised to E.164.
    assert_eq!(issue(&app, "+44 (20) 7946-0958", "verify_email").await.status, 202);
    let code = sent_code(&mut client, "+442079460958", "verify_email").await;
    assert_eq!(verify(&app, "+442079460958", "verify_email", &code).await.status, 200);

    // The raw subject never appears in a key name.
    let all: Vec<String> = client.keys("*").await.unwrap();
    assert!(all.iter().all(|k| !k.contains("bob") && !k.contains("4420")), "{all:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_expire() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(&redis, &[("otp_code_ttl_seconds", "1")]);
    let res = issue(&app, "carol@example.com", "login").await;
    assert_eq!(res.json()["expires_in"], 1);
    let code = sent_code(&mut client, "carol@example.com", "login").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_error(&verify(&app, "carol@example.com", "login", &code).await, 410, "code_expired");
}

fn wrong_code(code: &str) -> String {
    code.bytes().map(|b| char::from(b'0' + (b - b'0' + 1) % 10)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_count_down_to_a_lockout() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app(&redis);
    assert_eq!(issue(&app, "dave@example.com", "login").await.status, 202);
    let code = sent_code(&mut client, "dave@example.com", "login").await;
    let wrong = wrong_code(&code);

    for remaining in [4, 3, 2, 1] {
        let res = verify(&app, "dave@example.com", "login", &wrong).await;
        assert_error(&res, 401, "wrong_code");
        assert_eq!(res.json()["attempts_remaining"], remaining);
        assert_eq!(res.json()["verified"], false);
        assert_eq!(res.header("www-authenticate"), Some("OTP"));
    }
    let res = verify(&app, "dave@example.com", "login", &wrong).await;
    assert_error(&res, 429, "too_many_attempts");
    assert_eq!(res.json()["attempts_remaining"], 0);
    // The resend cooldown (60 s) is what stands between the user and a new code.
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");

    // Burned: even the right code no longer works, and the state still expires by itself.
    assert_error(&verify(&app, "dave@example.com", "login", &code).await, 429, "too_many_attempts");
    let state = keys(&mut client, "srp:otp:{otp:*}:code:login:*").await;
    let fields: HashMap<String, String> = client.hgetall(&state[0]).await.unwrap();
    assert!(!fields.contains_key("hmac"), "{fields:?}");
    assert!(client.pttl::<_, i64>(&state[0]).await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_racing_verifies_with_the_right_code_succeed_exactly_once() {
    for redis in [RedisServer::plain(), RedisServer::tls(AZURE_STYLE_KEY)] {
        let mut client = redis.client().await;
        let app = app(&redis);
        assert_eq!(issue(&app, "erin@example.com", "login").await.status, 202);
        let code = sent_code(&mut client, "erin@example.com", "login").await;

        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (app, code) = (app.clone(), code.clone());
                tokio::spawn(async move {
                    verify(&app, "erin@example.com", "login", &code).await.status
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        statuses.sort();
        let mut expected = vec![200];
        expected.extend([410; 19]);
        assert_eq!(statuses, expected, "tls={}", redis.is_tls());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_racing_wrong_guesses_get_exactly_the_allowed_attempts() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app(&redis);
    assert_eq!(issue(&app, "frank@example.com", "login").await.status, 202);
    let wrong = wrong_code(&sent_code(&mut client, "frank@example.com", "login").await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (app, wrong) = (app.clone(), wrong.clone());
            tokio::spawn(async move { verify(&app, "frank@example.com", "login", &wrong).await })
        })
        .collect();
    let mut remaining = Vec::new();
    let mut locked = 0;
    for t in tasks {
        let res = t.await.unwrap();
        match res.status {
            401 => remaining.push(res.json()["attempts_remaining"].as_i64().unwrap()),
            429 => locked += 1,
            other => panic!("unexpected {other}: {}", res.text()),
        }
    }
    remaining.sort();
    assert_eq!(remaining, [1, 2, 3, 4]);
    assert_eq!(locked, 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_plain_code_is_stored_anywhere_in_redis() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(
        &redis,
        &[
            ("otp_resend_cooldown_seconds", "0"),
            ("otp_outbox_shards", "1"),
            ("otp_purpose_policies", r#"{"reset_password": {"format": "any"}}"#),
        ],
    );
    let mut codes = Vec::new();
    for (subject, format) in
        [("gina@example.com", "code"), ("gina@example.com", "link"), ("hank@example.com", "code")]
    {
        let res = backend(
            &app,
            "/api/otp",
            json!({"subject": subject, "purpose": "reset_password", "format": format}),
        )
        .await;
        assert_eq!(res.status, 202, "{}", res.text());
        codes.push(sent_code(&mut client, subject, "reset_password").await);
    }
    // Collect every byte Redis holds: key names, and every value of every type. The outbox
    // entries' `code` field is the one exception: it is the delivery channel by design (a
    // worker reads the plain code there to send it), and is trimmed once no code can be valid.
    let mut haystack = String::new();
    let all: Vec<String> = client.keys("*").await.unwrap();
    for key in &all {
        haystack.push_str(key);
        haystack.push('\n');
        let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut client).await.unwrap();
        match kind.as_str() {
            "string" => haystack.push_str(&client.get::<_, String>(key).await.unwrap()),
            "hash" => {
                let h: HashMap<String, String> = client.hgetall(key).await.unwrap();
                for (k, v) in h {
                    haystack.push_str(&format!("{k}={v}\n"));
                }
            }
            "zset" => {
                let z: Vec<(String, f64)> = client.zrange_withscores(key, 0, -1).await.unwrap();
                haystack.push_str(&format!("{z:?}"));
            }
            "stream" => {
                let range: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut client)
                    .await
                    .unwrap();
                for (id, fields) in range {
                    haystack.push_str(&id);
                    for (f, v) in fields {
                        if f != "code" {
                            haystack.push_str(&format!("{f}={v}\n"));
                        }
                    }
                }
            }
            other => panic!("unexpected key type {other} for {key}"),
        }
    }
    // Three code states (gina's code and link are in different lanes), three issue budgets,
    // one outbox (one shard), and the pointer of gina's link token (it holds the subject and
    // the state's key name, never the token); no cooldowns (set to 0).
    assert_eq!(all.len(), 8, "{all:?}");
    for code in &codes {
        assert!(!haystack.contains(code.as_str()), "plain code {code} found in Redis:\n{haystack}");
    }
    // What is stored is a 64-hex-digit HMAC.
    let state = keys(&mut client, "srp:otp:{otp:*}:code:reset_password:*").await;
    let hmac: String = client.hget(&state[0], "hmac").await.unwrap();
    assert_eq!(hmac.len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn issuing_again_replaces_the_previous_code() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(&redis, &[("otp_resend_cooldown_seconds", "0")]);
    assert_eq!(issue(&app, "ivan@example.com", "login").await.json()["resend_after"], 0);
    let first = sent_code(&mut client, "ivan@example.com", "login").await;
    assert_eq!(issue(&app, "ivan@example.com", "login").await.status, 202);
    let second = sent_code(&mut client, "ivan@example.com", "login").await;
    if first != second {
        let res = verify(&app, "ivan@example.com", "login", &first).await;
        assert_error(&res, 401, "wrong_code");
        // A new code starts with the full number of attempts.
        assert_eq!(res.json()["attempts_remaining"], 4);
    }
    assert_eq!(verify(&app, "ivan@example.com", "login", &second).await.status, 200);
    assert_eq!(keys(&mut client, "srp:otp:{otp:*}:code:*").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn resend_cooldown_answers_429_with_retry_after() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app(&redis);
    assert_eq!(issue(&app, "judy@example.com", "login").await.status, 202);
    let code = sent_code(&mut client, "judy@example.com", "login").await;
    let res = issue(&app, "judy@example.com", "login").await;
    assert_error(&res, 429, "resend_cooldown");
    assert_eq!(res.header("retry-after"), Some("60"));
    assert_eq!(outbox(&mut client).await.len(), 1, "no second code was sent");
    // The refused request did not replace the code.
    assert_eq!(verify(&app, "judy@example.com", "login", &code).await.status, 200);
    // The cooldown is per purpose; another subject is unaffected.
    assert_eq!(issue(&app, "judy@example.com", "reset_password").await.status, 202);
    assert_eq!(issue(&app, "kim@example.com", "login").await.status, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn hourly_cap_per_subject_answers_429_with_retry_after() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(&redis, &[("otp_resend_cooldown_seconds", "0"), ("otp_max_per_hour", "3")]);
    for purpose in ["login", "login", "verify_email"] {
        assert_eq!(issue(&app, "leo@example.com", purpose).await.status, 202);
    }
    // The cap counts every code purpose of the subject. It is the rate limiter's token bucket:
    // 3 an hour, one back every 20 minutes.
    let res = issue(&app, "leo@example.com", "login").await;
    assert_error(&res, 429, "hourly_limit");
    assert_eq!(res.header("retry-after"), Some("1200"));
    // Links (reset_password) have a budget of their own, as large, so a flood of codes never
    // keeps a link from the subject's inbox (docs/otp.md, "Bound").
    for _ in 0..3 {
        assert_eq!(issue(&app, "leo@example.com", "reset_password").await.status, 202);
    }
    let res = issue(&app, "leo@example.com", "reset_password").await;
    assert_error(&res, 429, "hourly_limit");
    assert_eq!(res.header("retry-after"), Some("1200"));
    assert_eq!(outbox(&mut client).await.len(), 6);
    assert_eq!(issue(&app, "mia@example.com", "login").await.status, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_entry_carries_what_a_worker_needs() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(&redis, &[("otp_outbox_shards", "1")]);
    let res = backend(
        &app,
        "/api/otp",
        json!({"subject": "+1 555 010 9999", "purpose": "login", "channel": "sms"}),
    )
    .await;
    assert_eq!(res.status, 202);
    let entries = outbox(&mut client).await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["_stream"], "srp:otp:outbox:{otp:0}");
    assert_eq!(
        (e["subject"].as_str(), e["purpose"].as_str(), e["channel"].as_str(), e["format"].as_str()),
        ("+15550109999", "login", "sms", "code")
    );
    let id_ms: u64 = e["_id"].split_once('-').unwrap().0.parse().unwrap();
    let expires: u64 = e["expires_at_ms"].parse().unwrap();
    // The entry id's ms is Redis's clock at the XADD, the expiry is from the script's TIME:
    // the two can round 1 ms apart (seen once in ~10 runs, before this branch too).
    assert!((id_ms + 299_999..=id_ms + 300_000).contains(&expires), "{expires} vs {id_ms}");
    // The code's state names the entry that delivered it.
    let state = keys(&mut client, "srp:otp:{otp:0}:code:login:*").await;
    let delivery: String = client.hget(&state[0], "delivery").await.unwrap();
    assert_eq!(delivery, e["id"]);
}

/// A mailer written from otp.md's delivery contract (issue 33): a consumer group, the fields
/// the doc lists (`id` is the delivery id, not the entry id), `XACK` + `XDEL`; a full stream
/// refuses codes instead of trimming, and the worker's `XDEL` makes room again.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_written_from_the_delivery_contract() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(&redis, &[("otp_outbox_shards", "1"), ("otp_outbox_maxlen", "100")]);
    let stream = "srp:otp:outbox:{otp:0}";
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", stream, "mailer", "0", "MKSTREAM"])
        .query_async(&mut client)
        .await
        .unwrap();
    for i in 0..100 {
        let res = issue(&app, &format!("u{i}@example.com"), "verify_email").await;
        assert_eq!(res.status, 202, "{i}: {}", res.text());
    }
    // Full: refused, nothing dropped (no MAXLEN trim).
    let res = issue(&app, "late@example.com", "verify_email").await;
    assert_eq!((res.status, res.header("retry-after")), (503, Some("1")), "{}", res.text());
    assert!(res.text().contains("outbox_full"), "{}", res.text());
    let len: usize = redis::cmd("XLEN").arg(stream).query_async(&mut client).await.unwrap();
    assert_eq!(len, 100);

    type Delivered = Vec<(String, Vec<(String, HashMap<String, String>)>)>;
    let read: Delivered = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "mailer", "worker-1", "COUNT", "50", "STREAMS", stream, ">"])
        .query_async(&mut client)
        .await
        .unwrap();
    let (name, entries) = &read[0];
    assert_eq!((name.as_str(), entries.len()), (stream, 50));
    let (entry_id, fields) = &entries[0];
    let names: BTreeSet<&str> = fields.keys().map(String::as_str).collect();
    let documented = ["id", "subject", "purpose", "channel", "format", "code", "expires_at_ms"];
    assert_eq!(names, BTreeSet::from(documented));
    assert_eq!(fields["subject"], "u0@example.com");
    assert_eq!(fields["id"].len(), 16, "{fields:?}");
    assert_ne!(&fields["id"], entry_id);
    let state = keys(&mut client, "srp:otp:{otp:0}:code:verify_email:*").await;
    let deliveries: BTreeSet<String> = {
        let mut all = BTreeSet::new();
        for key in &state {
            all.insert(client.hget::<_, _, String>(key, "delivery").await.unwrap());
        }
        all
    };
    assert!(deliveries.contains(&fields["id"]), "the id field is the code state's delivery id");
    // Sent: acknowledge and delete, which makes room for a new code.
    let cmd = |name: &str| redis::cmd(name).arg(stream).clone();
    let acked: i64 =
        cmd("XACK").arg("mailer").arg(entry_id).query_async(&mut client).await.unwrap();
    let deleted: i64 = cmd("XDEL").arg(entry_id).query_async(&mut client).await.unwrap();
    assert_eq!((acked, deleted), (1, 1));
    assert_eq!(issue(&app, "late@example.com", "verify_email").await.status, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_entries_leave_once_no_code_can_be_valid() {
    until_fast_enough("outbox trim", |_| outbox_trim_attempt()).await;
}

/// Judged only when the stream's TTL was read within its code's 1 s lifetime.
async fn outbox_trim_attempt() -> bool {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(
        &redis,
        &[("otp_code_ttl_seconds", "1"), ("otp_link_ttl_seconds", "1"), ("otp_outbox_shards", "1")],
    );
    let issuing = std::time::Instant::now();
    assert_eq!(issue(&app, "old@example.com", "login").await.status, 202);
    let stream = "srp:otp:outbox:{otp:0}";
    let ttl: i64 = client.pttl(stream).await.unwrap();
    if issuing.elapsed() >= Duration::from_millis(950) {
        return false;
    }
    assert!((1..=1000).contains(&ttl), "the stream expires with its last code: {ttl}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(issue(&app, "new@example.com", "login").await.status, 202);
    let subjects: Vec<String> =
        outbox(&mut client).await.into_iter().map(|e| e["subject"].clone()).collect();
    assert_eq!(subjects, ["new@example.com"], "the expired code's entry was trimmed");
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_length_is_capped() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(
        &redis,
        &[
            ("otp_outbox_maxlen", "100"),
            ("otp_outbox_shards", "1"),
            ("otp_client_issues_per_hour", "1000"),
        ],
    );
    for i in 0..100 {
        assert_eq!(issue(&app, &format!("user{i}@example.com"), "login").await.status, 202);
    }
    // A full outbox refuses new codes instead of dropping undelivered ones (`MAXLEN ~` did):
    // the first code queued is still there for the worker.
    let res = issue(&app, "user100@example.com", "login").await;
    assert_error(&res, 503, "outbox_full");
    assert_eq!(res.header("retry-after"), Some("1"));
    let len: u64 = client.xlen("srp:otp:outbox:{otp:0}").await.unwrap();
    assert_eq!(len, 100);
    assert_eq!(outbox(&mut client).await[0]["subject"], "user0@example.com");
    assert!(
        keys(&mut client, "srp:otp:{otp:*}:code:*").await.len() == 100,
        "no state for the refused code"
    );
    // Trimming old entries never needs Redis 6.2 (XTRIM MINID): XRANGE + XDEL only.
    assert_eq!(command_calls(&mut client, "xtrim").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn link_tokens_are_long_url_safe_and_single_use() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app(&redis);
    let res = backend(
        &app,
        "/api/otp",
        json!({"subject": "nina@example.com", "purpose": "reset_password", "format": "link"}),
    )
    .await;
    assert_eq!(res.status, 202, "{}", res.text());
    assert_eq!(res.json(), json!({"expires_in": 900, "resend_after": 60}));
    let token = sent_code(&mut client, "nina@example.com", "reset_password").await;
    assert_eq!(token.len(), 43, "256 bits in base64url");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
    let state = keys(&mut client, "srp:otp:{otp:*}:code:reset_password:*").await;
    let ttl: i64 = client.pttl(&state[0]).await.unwrap();
    assert!((880_000..=900_000).contains(&ttl), "{ttl}");

    assert_eq!(verify(&app, "nina@example.com", "reset_password", &token).await.status, 200);
    assert_error(
        &verify(&app, "nina@example.com", "reset_password", &token).await,
        410,
        "code_expired",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_rejected_clearly_without_touching_redis() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    let long = "a".repeat(300);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/api/otp", json!({"subject": "", "purpose": "login"}), 400, "invalid_subject"),
        ("/api/otp", json!({"subject": long, "purpose": "login"}), 400, "invalid_subject"),
        (
            "/api/otp",
            json!({"subject": "a b@example.com", "purpose": "login"}),
            400,
            "invalid_subject",
        ),
        ("/api/otp", json!({"subject": "x@nodot", "purpose": "login"}), 400, "invalid_subject"),
        ("/api/otp", json!({"subject": "+12", "purpose": "login"}), 400, "invalid_subject"),
        (
            "/api/otp",
            json!({"subject": "a@example.com", "purpose": "admin"}),
            400,
            "invalid_purpose",
        ),
        (
            "/api/otp",
            json!({"subject": "a@example.com", "purpose": "login", "format": "pdf"}),
            400,
            "invalid_format",
        ),
        (
            "/api/otp",
            json!({"subject": "a@example.com", "purpose": "login", "channel": "Pigeon!"}),
            400,
            "invalid_channel",
        ),
        (
            "/api/otp",
            json!({"subject": "a@example.com", "purpose": "login", "extra": 1}),
            400,
            "invalid_json",
        ),
        ("/api/otp", json!({"subject": 42, "purpose": "login"}), 400, "invalid_json"),
        ("/api/otp", json!({"purpose": "login"}), 400, "invalid_json"),
        // The fields in order as an array, which serde's derived structs take (issue 27).
        ("/api/otp", json!(["a@example.com", "login", null, null, null]), 400, "invalid_json"),
        ("/api/otp/verify", json!(["a@example.com", "login", "123456", null]), 400, "invalid_json"),
        (
            "/api/otp/verify",
            json!({"subject": "a@example.com", "purpose": "login", "code": "12345"}),
            400,
            "invalid_code",
        ),
        (
            "/api/otp/verify",
            json!({"subject": "a@example.com", "purpose": "login", "code": "12345a"}),
            400,
            "invalid_code",
        ),
        (
            "/api/otp/verify",
            json!({"subject": "a@example.com", "purpose": "login", "code": ""}),
            400,
            "invalid_code",
        ),
        (
            "/api/otp/verify",
            json!({"subject": "a@example.com", "purpose": "login", "code": 123456}),
            400,
            "invalid_json",
        ),
        (
            "/api/otp/verify",
            json!({"subject": "a@example.com", "purpose": "logout", "code": "123456"}),
            400,
            "invalid_purpose",
        ),
    ];
    for (path, body, status, code) in cases {
        let res = backend(&app, path, body.clone()).await;
        assert_error(&res, status, code);
        assert!(!res.json()["detail"].as_str().unwrap().is_empty());
        assert_eq!(res.redis_connections, 0, "{path} {body}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let res = app
        .post("/api/otp")
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await;
    assert_error(&res, 400, "invalid_json");
    let res = app
        .post("/api/otp")
        .header("authorization", &bearer)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await;
    assert_error(&res, 415, "unsupported_media_type");
    let big = json!({"subject": "a".repeat(5000), "purpose": "login"});
    assert_error(&backend(&app, "/api/otp", big).await, 413, "body_too_large");
    let res = app.get("/api/otp").send().await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unset_pepper_is_a_clear_500_and_nothing_is_issued() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = builder(&redis).load().unwrap();
    for res in [
        issue(&app, "a@example.com", "login").await,
        verify(&app, "a@example.com", "login", "123456").await,
    ] {
        assert_error(&res, 500, "misconfigured");
        assert!(res.json()["detail"].as_str().unwrap().contains("otp_pepper"));
        assert_eq!(res.redis_connections, 0);
    }
    let all: Vec<String> = client.keys("*").await.unwrap();
    assert!(all.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_echo_works_on_loopback_only() {
    let redis = RedisServer::plain();
    let app = app_with(&redis, &[("otp_dev_echo", "true")]);
    let res = issue(&app, "olga@example.com", "login").await;
    assert_eq!(res.status, 202);
    let code = res.json()["code"].as_str().unwrap().to_owned();
    assert_eq!(verify(&app, "olga@example.com", "login", &code).await.status, 200);

    // Off by default.
    assert!(issue(&app_with(&redis, &[]), "pat@example.com", "login")
        .await
        .json()
        .get("code")
        .is_none());

    // Refused (never echoing) when Redis is remote; no connection is attempted.
    let remote = TestApp::builder(SPIN_TOML)
        .check_responses(crate::support::check_response)
        .key_value_store("redis", "redis://127.0.0.1:6379")
        .key_value_store("redis_standby", "redis://127.0.0.1:6379")
        .in_memory_key_value_store("breaker")
        .variable("otp_pepper", PEPPER)
        .variable("otp_api_token", TOKEN)
        .variable("otp_dev_echo", "true")
        .variable("redis_host", "contoso.redis.cache.windows.net")
        .variable("redis_port", "6380")
        .variable("redis_tls", "true")
        .load()
        .unwrap();
    let res = issue(&remote, "olga@example.com", "login").await;
    assert_error(&res, 500, "misconfigured");
    assert!(res.json()["detail"].as_str().unwrap().contains("otp_dev_echo"));
    assert_eq!(res.redis_connections, 0);

    // Refused too when a real delivery channel (a webhook) is set, even on a loopback Redis.
    let with_hook = app_with(
        &redis,
        &[
            ("otp_dev_echo", "true"),
            ("otp_webhook_url", "https://mail.example.com/hook"),
            ("otp_webhook_origin", "https://mail.example.com"),
        ],
    );
    let res = issue(&with_hook, "olga@example.com", "login").await;
    assert_error(&res, 500, "misconfigured");
    assert!(res.json()["detail"].as_str().unwrap().contains("otp_dev_echo"));
    assert!(!res.text().contains("mail.example.com"), "no configuration text: {}", res.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_503_and_nothing_is_left_half_written() {
    let mut redis = RedisServer::plain();
    let app = app(&redis);
    redis.stop();
    for res in [
        issue(&app, "quinn@example.com", "login").await,
        verify(&app, "quinn@example.com", "login", "123456").await,
    ] {
        assert_error(&res, 503, "redis_unavailable");
        assert_eq!(res.header("retry-after"), Some("1"));
    }
    redis.start();
    let mut client = redis.client().await;
    let all: Vec<String> = client.keys("*").await.unwrap();
    assert!(all.is_empty(), "{all:?}");
    assert_eq!(issue(&app, "quinn@example.com", "login").await.status, 202);
    let code = sent_code(&mut client, "quinn@example.com", "login").await;
    assert_eq!(verify(&app, "quinn@example.com", "login", &code).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_receives_the_code() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let hook = Webhook::start();
    let url = format!("{}/hooks/otp", hook.origin());
    let app = app_with(
        &redis,
        &[
            ("otp_webhook_url", &url),
            ("otp_webhook_origin", &hook.origin()),
            ("otp_webhook_token", "hook-s3cret"),
        ],
    );
    let res = issue(&app, "rita@example.com", "login").await;
    assert_eq!(res.status, 202, "{} {}", res.text(), res.logs);

    let received = hook.received();
    assert_eq!(received.len(), 1);
    let (headers, body) = (&received[0].headers, received[0].json());
    assert_eq!(headers[":request"], "POST /hooks/otp HTTP/1.1");
    assert_eq!(headers["authorization"], "Bearer hook-s3cret");
    assert_eq!(headers["content-type"], "application/json");
    // The webhook is the delivery channel: no plain code is written to Redis at all (no
    // outbox entry); the code state names the delivery.
    assert!(outbox(&mut client).await.is_empty());
    let state = keys(&mut client, "srp:otp:{otp:*}:code:login:*").await;
    let delivery: String = client.hget(&state[0], "delivery").await.unwrap();
    assert_eq!(headers["idempotency-key"], delivery);
    assert_eq!(body["id"], delivery.as_str());
    assert_eq!(
        (
            &body["subject"],
            &body["purpose"],
            &body["channel"],
            &body["format"],
            &body["expires_in"]
        ),
        (&json!("rita@example.com"), &json!("login"), &json!("email"), &json!("code"), &json!(300))
    );
    let code = body["code"].as_str().unwrap();
    assert_eq!(verify(&app, "rita@example.com", "login", code).await.status, 200);
    assert!(!app.logs().contains("hook-s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_webhook_withdraws_the_code_so_the_user_can_ask_again() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let hook = Webhook::start();
    hook.answer_with(500);
    let url = format!("{}/hooks/otp", hook.origin());
    let app =
        app_with(&redis, &[("otp_webhook_url", &url), ("otp_webhook_origin", &hook.origin())]);

    let res = issue(&app, "sam@example.com", "login").await;
    assert_error(&res, 502, "delivery_failed");
    assert_eq!(res.header("retry-after"), Some("1"));
    let code = hook.received()[0].json()["code"].as_str().unwrap().to_owned();
    // Withdrawn: no code state, no cooldown, no outbox entry. It stays counted in the hourly
    // cap: the provider may have sent it before failing, so failures cannot pump messages.
    assert!(keys(&mut client, "srp:otp:{otp:*}:code:*").await.is_empty());
    assert!(keys(&mut client, "srp:otp:{otp:*}:cooldown:*").await.is_empty());
    let budget = keys(&mut client, "srp:otp:{otp:*}:issue-budget:*").await;
    assert!(client.pttl::<_, i64>(&budget[0]).await.unwrap() > 0, "the issue is counted");
    assert!(outbox(&mut client).await.is_empty());
    assert_error(&verify(&app, "sam@example.com", "login", &code).await, 410, "code_expired");
    assert!(!app.logs().contains(&code));

    // Once the webhook recovers, asking again works at once.
    hook.answer_with(200);
    assert_eq!(issue(&app, "sam@example.com", "login").await.status, 202);
    let code = hook.received()[1].json()["code"].as_str().unwrap().to_owned();
    assert_eq!(verify(&app, "sam@example.com", "login", &code).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_webhook_is_a_502_too() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{port}");
    let app = app_with(
        &redis,
        &[("otp_webhook_url", &format!("{origin}/x")), ("otp_webhook_origin", &origin)],
    );
    assert_error(&issue(&app, "tom@example.com", "login").await, 502, "delivery_failed");
    assert!(keys(&mut client, "srp:otp:{otp:*}:code:*").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_url_outside_its_origin_is_misconfigured() {
    let redis = RedisServer::plain();
    let app = app_with(
        &redis,
        &[
            ("otp_webhook_url", "http://127.0.0.1:9/hook"),
            ("otp_webhook_origin", "http://127.0.0.1:10"),
        ],
    );
    let res = issue(&app, "uma@example.com", "login").await;
    assert_error(&res, 500, "misconfigured");
    assert!(res.json()["detail"].as_str().unwrap().contains("otp_webhook_origin"));
    assert_eq!(res.redis_connections, 0);
}

// --- Issue 19: a backend API, limits that protect the victim, a guessing budget over days ---

/// The app's own backend calling OTP by service chaining: the rate limiter's gateway stands in
/// for it, forwarding `/api/limited/<path>` to `http://otp.spin.internal/<path>`.
fn chained_app(redis: &RedisServer, vars: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("ratelimit_upstream", "http://otp.spin.internal"), ("otp_api_token", "")];
    all.extend_from_slice(vars);
    app_with(redis, &all)
}

async fn chained(app: &TestApp, path: &str, body: Value) -> TestResponse {
    app.post(&format!("/api/limited{path}")).json(&body).send().await
}

async fn the_backend_reaches_otp_by_service_chaining(redis: &RedisServer) {
    let mut client = redis.client().await;
    let app = chained_app(redis, &[]);
    let res =
        chained(&app, "/api/otp", json!({"subject": "sol@example.com", "purpose": "login"})).await;
    assert_eq!(res.status, 202, "{} {}", res.text(), res.logs);
    let code = sent_code(&mut client, "sol@example.com", "login").await;
    let res = chained(
        &app,
        "/api/otp/verify",
        json!({"subject": "sol@example.com", "purpose": "login", "code": code}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());

    // The public routes are off by default: a stranger cannot issue a code or verify one.
    for (path, body) in [
        ("/api/otp", json!({"subject": "sol@example.com", "purpose": "login"})),
        (
            "/api/otp/verify",
            json!({"subject": "sol@example.com", "purpose": "login", "code": "123456"}),
        ),
    ] {
        let res = app.post(path).json(&body).send().await;
        assert_error(&res, 403, "otp_public_disabled");
        assert_eq!(res.redis_connections, 0);
    }
    assert_eq!(outbox(&mut client).await.len(), 1, "the stranger sent nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_reaches_otp_by_service_chaining_over_plain_redis() {
    the_backend_reaches_otp_by_service_chaining(&RedisServer::plain()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_reaches_otp_by_service_chaining_over_tls() {
    the_backend_reaches_otp_by_service_chaining(&RedisServer::tls(AZURE_STYLE_KEY)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_without_the_token_cannot_issue_verify_or_spend_attempts() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app(&redis);
    assert_eq!(issue(&app, "vic@example.com", "login").await.status, 202);
    let code = sent_code(&mut client, "vic@example.com", "login").await;
    let wrong = wrong_code(&code);
    let guess = json!({"subject": "vic@example.com", "purpose": "login", "code": wrong});
    let ask = json!({"subject": "vic@example.com", "purpose": "login"});
    for _ in 0..3 {
        for (path, body) in [("/api/otp/verify", &guess), ("/api/otp", &ask)] {
            let attempts = [
                app.post(path).json(body).send().await,
                app.post(path).header("authorization", "Bearer wrong").json(body).send().await,
                app.post(path)
                    .header("authorization", &format!("Basic {TOKEN}"))
                    .json(body)
                    .send()
                    .await,
                // Forged Spin headers: Spin appends its own after them, and those are read.
                app.post(path)
                    .header("spin-component-route", "")
                    .header("spin-path-info", path)
                    .header("spin-client-addr", "0.0.0.0:0")
                    .json(body)
                    .send()
                    .await,
            ];
            for res in attempts {
                assert_error(&res, 401, "unauthorized");
                assert_eq!(res.redis_connections, 0);
            }
        }
    }
    // The victim's code kept every attempt and still works; no second code was sent.
    let state = keys(&mut client, "srp:otp:{otp:*}:code:login:*").await;
    let left: String = client.hget(&state[0], "attempts_left").await.unwrap();
    assert_eq!(left, "5");
    assert_eq!(outbox(&mut client).await.len(), 1);
    assert_eq!(verify(&app, "vic@example.com", "login", &code).await.status, 200);
}

/// Judged only when the issue that must find the subject locked came within the lockout.
async fn wrong_codes_across_reissues_lock_out_with_a_growing_backoff(redis: &RedisServer) -> bool {
    let mut client = redis.client().await;
    let app =
        app_with(redis, &[("otp_resend_cooldown_seconds", "0"), ("otp_lockout_seconds", "1")]);
    let subject = "wes@example.com";
    for (round, lockout) in [(0, 1u64), (1, 2)] {
        // First code: five wrong guesses burn it.
        assert_eq!(issue(&app, subject, "login").await.status, 202, "round {round}");
        let wrong = wrong_code(&sent_code(&mut client, subject, "login").await);
        for _ in 0..4 {
            assert_error(&verify(&app, subject, "login", &wrong).await, 401, "wrong_code");
        }
        assert_error(&verify(&app, subject, "login", &wrong).await, 429, "too_many_attempts");
        // A new code does not reset the count: the tenth failure in a row locks the subject.
        assert_eq!(issue(&app, subject, "login").await.status, 202);
        let wrong = wrong_code(&sent_code(&mut client, subject, "login").await);
        for _ in 0..4 {
            assert_error(&verify(&app, subject, "login", &wrong).await, 401, "wrong_code");
        }
        let locking = std::time::Instant::now();
        let res = verify(&app, subject, "login", &wrong).await;
        assert_error(&res, 429, "too_many_failures");
        assert_eq!(res.header("retry-after"), Some(lockout.to_string().as_str()));
        // Locked: no new code, with Retry-After; the backoff doubles each time.
        let res = issue(&app, subject, "login").await;
        if locking.elapsed() >= Duration::from_millis(lockout * 1000 - 50) {
            return false;
        }
        assert_error(&res, 429, "too_many_failures");
        let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=lockout).contains(&retry), "{retry}");
        tokio::time::sleep(Duration::from_millis(lockout * 1000 + 100)).await;
    }
    // A success resets the count and the backoff.
    assert_eq!(issue(&app, subject, "login").await.status, 202);
    let code = sent_code(&mut client, subject, "login").await;
    assert_eq!(verify(&app, subject, "login", &code).await.status, 200);
    assert!(keys(&mut client, "srp:otp:{otp:*}:guard:*").await.is_empty());
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_across_reissues_lock_out_over_plain_redis() {
    until_fast_enough("lockout", |_| async {
        wrong_codes_across_reissues_lock_out_with_a_growing_backoff(&RedisServer::plain()).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_across_reissues_lock_out_over_tls() {
    until_fast_enough("lockout", |_| async {
        let redis = RedisServer::tls(AZURE_STYLE_KEY);
        wrong_codes_across_reissues_lock_out_with_a_growing_backoff(&redis).await
    })
    .await;
}

async fn issue_from(app: &TestApp, subject: &str, client: &str) -> TestResponse {
    backend(app, "/api/otp", json!({"subject": subject, "purpose": "login", "client": client}))
        .await
}

async fn verify_from(app: &TestApp, subject: &str, code: &str, client: &str) -> TestResponse {
    let body = json!({"subject": subject, "purpose": "login", "code": code, "client": client});
    backend(app, "/api/otp/verify", body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_many_clients_cannot_keep_a_known_client_out_over_plain_redis() {
    a_flood_from_many_clients_cannot_keep_a_known_client_out(&RedisServer::plain()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_many_clients_cannot_keep_a_known_client_out_over_tls() {
    a_flood_from_many_clients_cannot_keep_a_known_client_out(&RedisServer::tls(AZURE_STYLE_KEY))
        .await;
}

async fn a_flood_from_many_clients_cannot_keep_a_known_client_out(redis: &RedisServer) {
    let mut client = redis.client().await;
    let app = app_with(redis, &[("otp_resend_cooldown_seconds", "0"), ("otp_outbox_shards", "1")]);
    let victim = "xena@example.com";
    let device = "198.51.100.7";
    assert_eq!(issue_from(&app, victim, device).await.status, 202);
    let code = sent_code(&mut client, victim, "login").await;
    assert_eq!(verify_from(&app, victim, &code, device).await.status, 200);

    // Forty attacking clients spend the subject's hourly cap and lock it with wrong guesses.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let attacker = format!("203.0.113.{i}");
        statuses.push(issue_from(&app, victim, &attacker).await.status);
        statuses.push(verify_from(&app, victim, "000000", &attacker).await.status);
    }
    assert!(statuses.iter().filter(|s| **s == 202).count() <= 5, "{statuses:?}");
    let res = issue_from(&app, victim, "203.0.113.200").await;
    assert_eq!(res.status, 429, "{}", res.text());

    // The victim's known device has its own lane: a code at once, and it verifies.
    let res = issue_from(&app, victim, device).await;
    assert_eq!(res.status, 202, "{}", res.text());
    let code = sent_code(&mut client, victim, "login").await;
    assert_eq!(verify_from(&app, victim, &code, device).await.status, 200);
    // (From a device it never verified on, the victim shares the strangers' lanes: links
    // still reach them, see a_flood_cannot_keep_a_new_device_from_a_link.)
}

/// Issue 19's bound for a device that never verified the subject: strangers can spend the
/// subject's code budget and lock its codes, but every link they make the app send goes to
/// the subject's inbox, cannot be guessed, burned or locked by them, and outlives the wait
/// for the next one (link TTL 900 s >= 3600 / 5 s). So the user always holds a valid link or
/// can ask for one: kept out for 0 s with the defaults (docs/otp.md, "Bound").
async fn a_flood_cannot_keep_a_new_device_from_a_link(redis: &RedisServer) {
    let mut client = redis.client().await;
    let app = app_with(
        redis,
        &[
            ("otp_resend_cooldown_seconds", "1"),
            ("otp_outbox_shards", "1"),
            ("otp_purpose_policies", r#"{"login": {"format": "any"}}"#),
        ],
    );
    let victim = "yara@example.com";
    let ask = |format: &'static str, from: String| {
        let body = json!({"subject": victim, "purpose": "login", "format": format, "client": from});
        backend(&app, "/api/otp", body)
    };
    // Six rounds, a cooldown apart, of eight attacking clients each asking for a code and a
    // link and sending a wrong code, a wrong link token with the subject, and one without.
    let wrong_token = "A".repeat(43);
    let mut wrong_token_answers = Vec::new();
    for round in 0..6 {
        for i in 0..8 {
            let attacker = format!("203.0.113.{}", round * 8 + i);
            ask("code", attacker.clone()).await;
            ask("link", attacker.clone()).await;
            verify_from(&app, victim, "000000", &attacker).await;
            let with_subject = json!({"subject": victim, "purpose": "login",
                                      "code": wrong_token, "client": attacker});
            wrong_token_answers.push(backend(&app, "/api/otp/verify", with_subject).await.status);
            let alone = json!({"purpose": "login", "code": wrong_token, "client": attacker});
            wrong_token_answers.push(backend(&app, "/api/otp/verify", alone).await.status);
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(wrong_token_answers.iter().all(|s| *s == 410), "{wrong_token_answers:?}");
    // The mailbox stays capped: at most 5 codes (here fewer: the wrong guesses locked codes
    // early) and 5 links an hour from all strangers together.
    let sent = outbox(&mut client).await;
    let count = |format: &str| sent.iter().filter(|e| e["format"] == format).count();
    assert!((1..=5).contains(&count("code")), "{} codes", count("code"));
    assert_eq!(count("link"), 5);

    // The user, on a device that never verified: codes are locked by the strangers' wrong
    // guesses and links are over budget...
    let device = "198.51.100.99".to_owned();
    let res = ask("code", device.clone()).await;
    assert_error(&res, 429, "too_many_failures");
    assert!(res.json()["detail"].as_str().unwrap().contains("a link"), "{}", res.text());
    let res = ask("link", device.clone()).await;
    assert_error(&res, 429, "hourly_limit");
    // ...yet the newest link in their inbox works, at once, from that device.
    let link = sent.iter().rev().find(|e| e["format"] == "link").unwrap()["code"].clone();
    let res = verify_from(&app, victim, &link, &device).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // It proved the inbox: the lockout is lifted and the device is known from now on.
    let res = ask("code", device.clone()).await;
    assert_eq!(res.status, 202, "{}", res.text());
    let code = sent_code(&mut client, victim, "login").await;
    assert_eq!(verify_from(&app, victim, &code, &device).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_cannot_keep_a_new_device_from_a_link_over_plain_redis() {
    a_flood_cannot_keep_a_new_device_from_a_link(&RedisServer::plain()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_cannot_keep_a_new_device_from_a_link_over_tls() {
    a_flood_cannot_keep_a_new_device_from_a_link(&RedisServer::tls(AZURE_STYLE_KEY)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_is_limited_across_subjects() {
    let redis = RedisServer::plain();
    let app = app_with(
        &redis,
        &[
            ("otp_outbox_shards", "1"),
            ("otp_client_issues_per_hour", "3"),
            ("otp_client_failures_per_hour", "4"),
        ],
    );
    let pump = "192.0.2.66";
    for i in 0..3 {
        assert_eq!(issue_from(&app, &format!("+1555010{i:04}"), pump).await.status, 202);
    }
    let res = issue_from(&app, "+15550109999", pump).await;
    assert_error(&res, 429, "client_limit");
    // The rate limiter's token bucket: 3 an hour, one back every 20 minutes.
    assert_eq!(res.header("retry-after"), Some("1200"));
    // Another client is not affected.
    assert_eq!(issue_from(&app, "+15550109999", "192.0.2.1").await.status, 202);

    // Failed guesses spread over subjects count for the client too.
    for i in [0, 1, 2, 0] {
        let res = verify_from(&app, &format!("+1555010{i:04}"), "000000", pump).await;
        assert_error(&res, 401, "wrong_code");
    }
    let res = verify_from(&app, "+15550100000", "000000", pump).await;
    assert_error(&res, 429, "client_limit");
}

/// Issue 27: the client budgets were keyed by the raw `client` while the known-client mark
/// used the trimmed one, so padding the key (or respelling an address) bought a fresh budget.
/// Every key derived from the client now comes from one normalised form.
#[tokio::test(flavor = "multi_thread")]
async fn respelling_the_client_key_buys_no_fresh_budget() {
    let redis = RedisServer::plain();
    let app = app_with(
        &redis,
        &[
            ("otp_outbox_shards", "1"),
            ("otp_client_issues_per_hour", "2"),
            ("otp_client_failures_per_hour", "2"),
        ],
    );
    assert_eq!(issue_from(&app, "+15550100000", "2001:db8::66").await.status, 202);
    assert_eq!(issue_from(&app, "+15550100001", "2001:db8::66").await.status, 202);
    for spelling in [" 2001:db8::66", "2001:db8::66  ", "2001:DB8:0:0::66", "\t2001:db8::66"] {
        let res = issue_from(&app, "+15550100002", spelling).await;
        assert_error(&res, 429, "client_limit");
    }
    for (i, spelling) in ["192.0.2.9", " 192.0.2.9 "].iter().enumerate() {
        let res = verify_from(&app, &format!("+1555010000{i}"), "000000", spelling).await;
        assert_error(&res, 401, "wrong_code");
    }
    for spelling in ["192.0.2.9", "::ffff:192.0.2.9", "192.0.2.9 "] {
        let res = verify_from(&app, "+15550100000", "000000", spelling).await;
        assert_error(&res, 429, "client_limit");
    }
}

// --- Issue 21 item 4: per-purpose policy ---

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_link_cannot_be_downgraded_to_a_short_code() {
    let redis = RedisServer::plain();
    let mut client = redis.client().await;
    let app = app_with(
        &redis,
        &[(
            "otp_purpose_policies",
            r#"{"reset_password": {"format": "link", "channels": ["email"]},
                "login": {"length": 8, "ttl_seconds": 120}}"#,
        )],
    );
    let ask = |body: Value| backend(&app, "/api/otp", body);
    let res =
        ask(json!({"subject": "ulf@example.com", "purpose": "reset_password", "format": "code"}))
            .await;
    assert_error(&res, 400, "invalid_format");
    assert_eq!(res.redis_connections, 0);
    let res = ask(json!({"subject": "ulf@example.com", "purpose": "reset_password",
                         "channel": "sms"}))
    .await;
    assert_error(&res, 400, "invalid_channel");

    // Without a format, the purpose's own: a link token for resets, 8 digits for login.
    let res = ask(json!({"subject": "ulf@example.com", "purpose": "reset_password"})).await;
    assert_eq!(res.json(), json!({"expires_in": 900, "resend_after": 60}));
    let token = sent_code(&mut client, "ulf@example.com", "reset_password").await;
    assert_eq!(token.len(), 43);
    let res = ask(json!({"subject": "ulf@example.com", "purpose": "login"})).await;
    assert_eq!(res.json(), json!({"expires_in": 120, "resend_after": 60}));
    let code = sent_code(&mut client, "ulf@example.com", "login").await;
    assert_eq!(code.len(), 8);
    assert_error(&verify(&app, "ulf@example.com", "login", &code[..6]).await, 400, "invalid_code");

    // A digit guess at the link's purpose finds no code (only a link is pending) and costs
    // the link nothing: guesses never burn a link.
    let digits = "123456";
    for _ in 0..6 {
        let res = verify(&app, "ulf@example.com", "reset_password", digits).await;
        assert_error(&res, 410, "code_expired");
    }
    assert_eq!(verify(&app, "ulf@example.com", "reset_password", &token).await.status, 200);
    assert_eq!(verify(&app, "ulf@example.com", "login", &code).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_token_verifies_without_its_subject_once() {
    for redis in [RedisServer::plain(), RedisServer::tls(AZURE_STYLE_KEY)] {
        let mut client = redis.client().await;
        let app = app_with(&redis, &[("otp_resend_cooldown_seconds", "0")]);
        let reset = json!({"subject": "Vera@Example.com", "purpose": "reset_password"});
        assert_eq!(backend(&app, "/api/otp", reset.clone()).await.status, 202);
        let first = sent_code(&mut client, "vera@example.com", "reset_password").await;
        assert_eq!(backend(&app, "/api/otp", reset).await.status, 202);
        let token = sent_code(&mut client, "vera@example.com", "reset_password").await;
        // The pointer shares the subject's slot (the token was drawn for it).
        let state = keys(&mut client, "srp:otp:{otp:*}:code:reset_password:*").await;
        let pointer = keys(&mut client, "srp:otp:{otp:*}:link:*").await;
        let tag = |k: &str| k.split_once('{').unwrap().1.split_once('}').unwrap().0.to_owned();
        assert_eq!(tag(&pointer[pointer.len() - 1]), tag(&state[0]));

        let link = |code: &str, purpose: &str| {
            backend(&app, "/api/otp/verify", json!({"purpose": purpose, "code": code}))
        };
        // The replaced link no longer works; the wrong purpose finds nothing.
        assert_error(&link(&first, "reset_password").await, 410, "code_expired");
        assert_error(&link(&token, "login").await, 410, "code_expired");
        let res = link(&token, "reset_password").await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json(), json!({"verified": true, "subject": "vera@example.com"}));
        assert_eq!(res.redis_connections, 1);
        // Single use, by either path.
        assert_error(&link(&token, "reset_password").await, 410, "code_expired");
        assert_error(
            &verify(&app, "vera@example.com", "reset_password", &token).await,
            410,
            "code_expired",
        );
        // A digit code still needs its subject.
        let res =
            backend(&app, "/api/otp/verify", json!({"purpose": "login", "code": "123456"})).await;
        assert_error(&res, 400, "invalid_subject");
        assert_eq!(res.redis_connections, 0);
    }
}
