//! The logs of a representative run: every line one JSON object with the fields a log
//! pipeline queries, one access line per request, the request id returned as
//! `x-request-id`, and none of the run's secrets, session ids, lock tokens or codes.

use serde_json::{json, Value};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};

use crate::support::{assert_error, builder, AZURE_STYLE_KEY};

const SESSIONS_TOKEN: &str = "sessions+T0ken/=sessions+T0ken/=0123";
const OTP_TOKEN: &str = "otp+T0ken/=otp+T0ken/=otp+T0ken/=0123";
const OTP_PEPPER: &str = "pepper+/=for-log-tests-0123456789abcdefghij";
const LOCKS_TOKEN: &str = "locks+T0ken/=locks+T0ken/=locks+T0ken/=";
const RATELIMIT_TOKEN: &str = "ratelimit+T0ken/=ratelimit+T0ken/=0123";
const WRONG_REDIS_KEY: &str = "Wr0ng+Key/With==Symbols";
const FIELDS: [&str; 6] = ["level", "component", "route", "request_id", "event", "message"];

fn app(redis: &RedisServer, vars: &[(&str, &str)]) -> TestApp {
    let mut b = builder(redis)
        .variable("sessions_api_token", SESSIONS_TOKEN)
        .variable("otp_api_token", OTP_TOKEN)
        .variable("otp_pepper", OTP_PEPPER)
        .variable("otp_dev_echo", "true")
        .variable("locks_api_token", LOCKS_TOKEN)
        .variable("ratelimit_api_token", RATELIMIT_TOKEN)
        .variable("origin_delay_ms", "0");
    for (name, value) in vars {
        b = b.variable(name, *value);
    }
    b.load().expect("app loads")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What a secret may look like in a line: as is, and percent-encoded as in a Redis URL.
fn forms(secret: &str) -> Vec<String> {
    let encoded: String = secret
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' => c.to_string(),
            c => format!("%{:02X}", c as u32),
        })
        .collect();
    vec![secret.to_owned(), encoded]
}

/// Every non-empty line is a JSON object with the required string fields; returns them.
fn parse_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            for field in FIELDS {
                assert!(value[field].is_string(), "no {field}: {line}");
            }
            assert!(
                ["info", "warn", "error"].contains(&value["level"].as_str().unwrap()),
                "{line}"
            );
            assert!(!value["component"].as_str().unwrap().is_empty(), "{line}");
            assert!(!value["request_id"].as_str().unwrap().is_empty(), "{line}");
            value
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runs_logs_are_json_lines_without_its_secrets() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let app = app(&redis, &[]);
    let mut seen: Vec<String> = Vec::new();
    let mut responses: Vec<TestResponse> = Vec::new();

    responses.push(app.get("/health/cache").send().await);

    // Sessions: create, read, change, a forged id, a wrong backend token.
    let res = app
        .post("/api/sessions")
        .header("authorization", &bearer(SESSIONS_TOKEN))
        .json(&json!({"user_id": "ada", "data": {"plan": "pro"}}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let session = res.json()["session_id"].as_str().unwrap().to_owned();
    seen.push(session.clone());
    responses.push(res);
    let cookie = format!("__Host-session={session}");
    let res = app.get("/api/sessions/current").header("cookie", &cookie).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    responses.push(res);
    let forged = format!("__Host-session={}", "A".repeat(session.len()));
    let res = app.get("/api/sessions/current").header("cookie", &forged).send().await;
    assert_error(&res, 401, "unauthorized");
    responses.push(res);
    let res = app
        .post("/api/sessions")
        .header("authorization", "Bearer not-the-backend-token-0123456789")
        .json(&json!({"user_id": "ada"}))
        .send()
        .await;
    assert_error(&res, 401, "unauthorized");
    responses.push(res);

    // OTP: issue (echoed in dev), a wrong code, the right code.
    let otp = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            app.post(path).header("authorization", &bearer(OTP_TOKEN)).json(&body).send().await
        }
    };
    let subject = json!({"subject": "ada@example.com", "purpose": "login"});
    let mut issue = subject.clone();
    issue["channel"] = json!("email");
    let res = otp("/api/otp", issue).await;
    assert_eq!(res.status, 202, "{}", res.text());
    let code = res.json()["code"].as_str().unwrap().to_owned();
    seen.push(code.clone());
    responses.push(res);
    let wrong: String = code.chars().map(|c| if c == '0' { '1' } else { '0' }).collect::<String>();
    let mut verify = subject.clone();
    verify["code"] = json!(wrong);
    let res = otp("/api/otp/verify", verify.clone()).await;
    assert_error(&res, 401, "wrong_code");
    responses.push(res);
    verify["code"] = json!(code);
    let res = otp("/api/otp/verify", verify).await;
    assert_eq!(res.status, 200, "{}", res.text());
    responses.push(res);

    // Locks: acquire, release with a wrong token, release.
    let res = app
        .post("/api/locks/report")
        .header("authorization", &bearer(LOCKS_TOKEN))
        .json(&json!({"ttl_ms": 30000}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let token = res.json()["token"].as_str().unwrap().to_owned();
    seen.push(token.clone());
    responses.push(res);
    for lock_token in [&"B".repeat(token.len()), &token] {
        let res = app
            .delete("/api/locks/report")
            .header("authorization", &bearer(LOCKS_TOKEN))
            .header("lock-token", lock_token)
            .send()
            .await;
        assert!(res.status < 500, "{}", res.text());
        responses.push(res);
    }

    // Rate limiting: a decision on an unknown policy; the cache: a miss through the origin.
    let res = app
        .post("/api/ratelimit/check")
        .header("authorization", &bearer(RATELIMIT_TOKEN))
        .json(&json!({"policy": "no-such-policy", "key": "k"}))
        .send()
        .await;
    assert!((400..500).contains(&res.status), "{}", res.text());
    responses.push(res);
    responses.push(app.get("/api/cache/profiles/7").send().await);

    // The request id: the client's, a traceparent's trace id, else generated (and distinct).
    let res = app.get("/health/cache").header("x-request-id", "req-42.abc").send().await;
    assert_eq!(res.header("x-request-id"), Some("req-42.abc"));
    responses.push(res);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = app.get("/health/cache").header("traceparent", traceparent).send().await;
    assert_eq!(res.header("x-request-id"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    responses.push(res);
    let res = app.get("/health/cache").header("x-request-id", "has\tcontrol").send().await;
    let generated = res.header("x-request-id").unwrap().to_owned();
    assert!(generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()));
    responses.push(res);

    // Redis refusing the password: logged as a redacted error.
    let refused = app_refusing(&redis);
    let res = refused.get("/health/cache").send().await;
    assert_error(&res, 503, "redis_unavailable");
    let res = refused.get("/api/sessions/current").header("cookie", &cookie).send().await;
    assert!(res.status >= 500, "{}", res.text());

    app.settle().await;
    refused.settle().await;
    let logs = format!("{}{}", app.logs(), refused.logs());
    let lines = parse_lines(&logs);

    let mut secrets: Vec<String> = app.secret_values();
    secrets.extend(refused.secret_values());
    secrets.extend(seen);
    secrets.push(WRONG_REDIS_KEY.to_owned());
    secrets.retain(|s| !s.is_empty());
    assert!(secrets.iter().any(|s| s == AZURE_STYLE_KEY) && secrets.len() >= 10, "{secrets:?}");
    for secret in &secrets {
        for form in forms(secret) {
            assert!(!logs.contains(&form), "{form:?} was logged:\n{logs}");
        }
    }

    // One access line per request, carrying the id the client got back.
    let access: Vec<&Value> = lines.iter().filter(|l| l["event"] == "request").collect();
    for res in &responses {
        let id = res.header("x-request-id").expect("x-request-id");
        let line = access
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}:\n{logs}"));
        assert_eq!(line["status"], res.status, "{line}");
        assert!(line["duration_ms"].is_u64() && line["method"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l["level"] == "error" && l["component"] == "health"),
        "the refused password is logged as an error:\n{logs}"
    );
    assert!(access.iter().any(|l| l["route"] == "/api/sessions"), "{logs}");
}

fn app_refusing(redis: &RedisServer) -> TestApp {
    app(redis, &[("redis_access_key", WRONG_REDIS_KEY)])
}
