//! The attacker's requests of issue 27, under the real Spin: a rotated-away session id, a
//! session hiding in its own data, JSON arrays for objects, a respelled client key, a sloppy
//! percent-escape and a sibling site's write.

use std::path::Path;

use http::Method;
use serde_json::json;

use crate::support::{assert_error, bearer, in_both_modes, req, start, Mode, ALL_TOKENS};

fn cookie_id(res: &spin_test_host::real_spin::SpinResponse) -> String {
    res.header("set-cookie")
        .and_then(|c| c.strip_prefix("__Host-session="))
        .and_then(|rest| rest.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

in_both_modes!(strangers_cannot_take_over_hide_or_respell);

async fn strangers_cannot_take_over_hide_or_respell(spin: &Path, mode: Mode) {
    let mut variables = ALL_TOKENS.to_vec();
    variables.push(("sessions_rotation_grace_seconds", "60"));
    let app = start(spin, mode, &variables).await;
    let auth = bearer();
    let create = || {
        req(
            Method::POST,
            "/api/sessions",
            &[("authorization", &auth)],
            Some(json!({"user_id": "u1"})),
        )
    };
    let old = app.send(create()).await.json()["session_id"].as_str().unwrap().to_owned();
    let old_cookie = format!("__Host-session={old}");

    // Rotation: the old id may read during the grace, and do nothing else.
    let rotated = app
        .send(req(Method::POST, "/api/sessions/current/rotate", &[("cookie", &old_cookie)], None))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_cookie = format!("__Host-session={}", cookie_id(&rotated));
    let read =
        app.send(req(Method::GET, "/api/sessions/current", &[("cookie", &old_cookie)], None)).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let takeover = app
        .send(req(Method::POST, "/api/sessions/current/rotate", &[("cookie", &old_cookie)], None))
        .await;
    assert_error(&takeover, 409, "session_rotated");
    let logout = app
        .send(req(Method::DELETE, "/api/sessions/current", &[("cookie", &old_cookie)], None))
        .await;
    assert_error(&logout, 409, "session_rotated");
    let still =
        app.send(req(Method::GET, "/api/sessions/current", &[("cookie", &new_cookie)], None)).await;
    assert_eq!(still.status, 200, "the rightful holder keeps the session: {}", still.text());

    // A second session that writes a forward record's field into its data still shows.
    let other = app.send(create()).await.json()["session_id"].as_str().unwrap().to_owned();
    let other_cookie = format!("__Host-session={other}");
    let patched = app
        .send(req(
            Method::PATCH,
            "/api/sessions/current",
            &[("cookie", &other_cookie)],
            Some(json!({"fwd": "x"})),
        ))
        .await;
    assert!(patched.status.is_success(), "{}", patched.text());
    let list = app.send(req(Method::GET, "/api/sessions", &[("cookie", &new_cookie)], None)).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json()["sessions"].as_array().map(Vec::len), Some(2), "{}", list.text());

    // Arrays where the docs say object: 400 invalid_json, nothing done.
    let arrays = [
        (Method::POST, "/api/sessions", json!(["u1"])),
        (Method::POST, "/api/ratelimit/check", json!(["e2e", "k"])),
        (Method::POST, "/api/leaderboards/global/scores", json!(["member", 5, null])),
        (Method::POST, "/api/locks/a", json!([60000])),
    ];
    for (method, path, body) in arrays {
        let res = app.send(req(method, path, &[("authorization", &auth)], Some(body))).await;
        assert_error(&res, 400, "invalid_json");
    }

    // A percent-escape with a sign is no escape.
    let res = app
        .send(req(Method::GET, "/api/ratelimit/api/a%+f", &[("authorization", &auth)], None))
        .await;
    assert_eq!(res.status, 400, "{}", res.text());

    // A sibling subdomain's write with the cookie: refused by default.
    let res = app
        .send(req(
            Method::PATCH,
            "/api/sessions/current",
            &[("cookie", &new_cookie), ("sec-fetch-site", "same-site")],
            Some(json!({"n": 1})),
        ))
        .await;
    assert_eq!(res.status, 403, "{}", res.text());
}

/// One normalisation of the OTP `client` key: a respelled address buys no fresh budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_respelled_client_key_buys_no_fresh_otp_budget() {
    let Some(spin) =
        crate::support::spin_or_skip("security::a_respelled_client_key_buys_no_fresh_otp_budget")
    else {
        return;
    };
    let mut variables = ALL_TOKENS.to_vec();
    variables.extend([
        ("otp_pepper", "e2e-pepper-0123456789abcdef0123456789abcdef"),
        ("otp_client_issues_per_hour", "2"),
        // Client budgets count per outbox shard (docs/otp.md): one shard, one budget.
        ("otp_outbox_shards", "1"),
    ]);
    let app = start(&spin, Mode::Outbound, &variables).await;
    let auth = bearer();
    let issue = |subject: &str, client: &str| {
        req(
            Method::POST,
            "/api/otp",
            &[("authorization", &auth)],
            Some(json!({"subject": subject, "purpose": "login", "client": client})),
        )
    };
    for subject in ["+15550100000", "+15550100001"] {
        let res = app.send(issue(subject, "2001:db8::66")).await;
        assert_eq!(res.status, 202, "{}", res.text());
    }
    for spelling in [" 2001:db8::66", "2001:DB8:0:0::66"] {
        assert_error(&app.send(issue("+15550100002", spelling)).await, 429, "client_limit");
    }
}
