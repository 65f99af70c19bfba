//! Each service's main contract under the real Spin, with the fast path off and on: the
//! answers a user of the README's routes gets, over TLS Redis with a password.

use std::path::Path;

use http::Method;
use serde_json::json;

use crate::support::{assert_error, bearer, in_both_modes, req, start, Mode, ALL_TOKENS};

in_both_modes!(every_service_answers_its_contract);

async fn every_service_answers_its_contract(spin: &Path, mode: Mode) {
    let mut variables = ALL_TOKENS.to_vec();
    variables.extend([
        ("otp_pepper", "e2e-pepper-0123456789abcdef0123456789abcdef"),
        ("otp_dev_echo", "true"),
        (
            "ratelimit_policies",
            r#"{"e2e": {"algorithm": "fixed_window", "limit": 3, "window": "1h"},
                "api": {"algorithm": "sliding_window", "limit": 100, "window": "60s"}}"#,
        ),
    ]);
    let app = start(spin, mode, &variables).await;
    let auth = bearer();
    let auth = [("authorization", auth.as_str())];

    // Health: a PING over TLS with the password.
    let health = app.get("/health/cache").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["redis"], "ok");

    // Cache-aside: the demo route and the proxy in front of the demo origin (service
    // chaining), a miss then hits, each with its length.
    for path in ["/api/cache/profile/7", "/api/cache/proxy/profiles/8"] {
        let miss = app.get(path).await;
        assert_eq!(
            (miss.status.as_u16(), miss.header("x-cache")),
            (200, Some("MISS")),
            "{path}: {}",
            miss.text()
        );
        for _ in 0..3 {
            let hit = app.get(path).await;
            assert_eq!((hit.status.as_u16(), hit.header("x-cache")), (200, Some("HIT")), "{path}");
            // The demo route says where its answer came from; the proxy replays the origin's.
            let (hit_body, miss_body) = (hit.json(), miss.json());
            match miss_body.get("source") {
                Some(source) => {
                    assert_eq!((source, &hit_body["source"]), (&json!("origin"), &json!("cache")));
                    assert_eq!(hit_body["profile"], miss_body["profile"], "{path}");
                }
                None => assert_eq!(hit_body, miss_body, "{path}"),
            }
            assert_eq!(hit.header("content-length"), Some(hit.body.len().to_string().as_str()));
        }
    }

    // Rate limiting: exactly the quota is admitted, then 429 with Retry-After.
    for n in 1..=4 {
        let res = app
            .send(req(
                Method::POST,
                "/api/ratelimit/check",
                &auth,
                Some(json!({"policy": "e2e", "key": "k"})),
            ))
            .await;
        if n <= 3 {
            assert_eq!(res.status, 200, "check {n}: {}", res.text());
        } else {
            assert_eq!(res.status, 429, "check {n}: {}", res.text());
            assert!(res.header("retry-after").is_some());
        }
    }
    // The gateway: forwards to the origin by service chaining, with the caller's quota.
    let gw = app.get("/api/limited/profiles/7").await;
    assert_eq!(gw.status, 200, "{}", gw.text());
    assert!(gw.header("ratelimit").is_some(), "{:?}", gw.headers);

    // Sessions: create, read, rotate, log out.
    let created =
        app.send(req(Method::POST, "/api/sessions", &auth, Some(json!({"user_id": "u1"})))).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["session_id"].as_str().unwrap().to_owned();
    let cookie = format!("__Host-session={id}");
    let read =
        app.send(req(Method::GET, "/api/sessions/current", &[("cookie", &cookie)], None)).await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["user_id"], "u1", "{}", read.text());
    let rotated = app
        .send(req(Method::POST, "/api/sessions/current/rotate", &[("cookie", &cookie)], None))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    // A cookie caller gets the new id in the cookie only: page scripts never see it.
    let set_cookie = rotated.header("set-cookie").expect("a new cookie").to_owned();
    let new_id = set_cookie
        .strip_prefix("__Host-session=")
        .and_then(|rest| rest.split(';').next())
        .expect("the session cookie")
        .to_owned();
    assert_ne!(new_id, id);
    let new_cookie = format!("__Host-session={new_id}");
    let out = app
        .send(req(Method::DELETE, "/api/sessions/current", &[("cookie", &new_cookie)], None))
        .await;
    assert!(out.status.is_success(), "{}", out.text());
    let gone =
        app.send(req(Method::GET, "/api/sessions/current", &[("cookie", &new_cookie)], None)).await;
    assert_error(&gone, 401, "unauthorized");

    // One-time codes (dev echo): issued, verified once, never twice.
    let issued = app
        .send(req(
            Method::POST,
            "/api/otp",
            &auth,
            Some(json!({"subject": "ada@example.com", "purpose": "login", "channel": "email"})),
        ))
        .await;
    assert_eq!(issued.status, 202, "{}", issued.text());
    let code = issued.json()["code"].as_str().expect("dev echo returns the code").to_owned();
    let verify = json!({"subject": "ada@example.com", "purpose": "login", "code": code});
    let ok = app.send(req(Method::POST, "/api/otp/verify", &auth, Some(verify.clone()))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let again = app.send(req(Method::POST, "/api/otp/verify", &auth, Some(verify))).await;
    assert!(again.status.is_client_error(), "a code works once: {}", again.text());

    // Leaderboards: scores in, ranked out.
    for (member, score) in [("alice", 10), ("bob", 30), ("carol", 20)] {
        let res = app
            .send(req(
                Method::POST,
                "/api/leaderboards/global/scores",
                &auth,
                Some(json!({"member": member, "score": score})),
            ))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let top = app.get("/api/leaderboards/global?limit=2").await;
    assert_eq!(top.status, 200, "{}", top.text());
    let text = top.text();
    assert!(text.find("bob").unwrap() < text.find("carol").unwrap(), "{text}");
    assert!(!text.contains("alice"), "{text}");

    // Leases: acquired with a fencing token, held, renewed, released.
    let taken = app
        .send(req(Method::POST, "/api/locks/order-1", &auth, Some(json!({"ttl_ms": 60000}))))
        .await;
    assert_eq!(taken.status, 201, "{}", taken.text());
    let token = taken.json()["token"].as_str().unwrap().to_owned();
    assert!(taken.json()["fencing_token"].as_u64().is_some());
    let busy = app
        .send(req(Method::POST, "/api/locks/order-1", &auth, Some(json!({"ttl_ms": 60000}))))
        .await;
    assert_eq!(busy.status, 409, "{}", busy.text());
    let lock_auth = [auth[0], ("lock-token", token.as_str())];
    let renewed = app
        .send(req(Method::PUT, "/api/locks/order-1", &lock_auth, Some(json!({"ttl_ms": 60000}))))
        .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let released = app.send(req(Method::DELETE, "/api/locks/order-1", &lock_auth, None)).await;
    assert!(released.status.is_success(), "{}", released.text());
}
