//! Keep-alive clients (every browser, every ingress controller's upstream pool): hundreds of
//! sequential requests over one connection, each answered in full with its length.
//!
//! Spin 3.6.3 leaves Nagle's algorithm on for the connections it accepts, so an answer sent in
//! two writes waited for the client's delayed ACK: ~25 ms per pooled answer over a kept
//! connection, against ~1 ms on a fresh one. The test compares the two in the same run (a
//! ratio, so a busy machine does not fail it); the benchmark measures the speed.

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use crate::support::{bearer, in_both_modes, req, start, Mode, TOKEN};

const REQUESTS: usize = 300;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

in_both_modes!(one_connection_serves_hundreds_of_requests_without_a_stall);

async fn one_connection_serves_hundreds_of_requests_without_a_stall(spin: &Path, mode: Mode) {
    let app = start(
        spin,
        mode,
        &[
            ("sessions_api_token", TOKEN),
            ("ratelimit_api_token", TOKEN),
            (
                "ratelimit_policies",
                r#"{"api": {"algorithm": "sliding_window", "limit": 1000000, "window": "1h"}}"#,
            ),
        ],
    )
    .await;
    let auth = bearer();
    let created = app
        .send(req(
            Method::POST,
            "/api/sessions",
            &[("authorization", &auth)],
            Some(json!({"user_id": "u1"})),
        ))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let cookie = format!("__Host-session={}", created.json()["session_id"].as_str().unwrap());
    assert_eq!(app.get("/api/cache/profile/7").await.status, 200);

    let requests = [
        ("cache hit", req(Method::GET, "/api/cache/profile/7", &[], None)),
        ("session read", req(Method::GET, "/api/sessions/current", &[("cookie", &cookie)], None)),
        (
            "rate-limit decision",
            req(
                Method::POST,
                "/api/ratelimit/check",
                &[("authorization", &auth)],
                Some(json!({"policy": "api", "key": "k"})),
            ),
        ),
    ];
    for (name, request) in requests {
        let mut kept = app.spin.connect().await.unwrap();
        let (mut on_kept, mut on_fresh) = (Vec::new(), Vec::new());
        for i in 0..REQUESTS {
            let started = Instant::now();
            let res =
                kept.send(request.clone()).await.unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
            on_kept.push(started.elapsed());
            assert_eq!(res.status, 200, "{name} #{i}: {}", res.text());
            assert_eq!(
                res.header("content-length"),
                Some(res.body.len().to_string().as_str()),
                "{name} #{i}: the length is known, so it is sent"
            );
            if i % 10 == 0 {
                let started = Instant::now();
                let res = app.spin.send(request.clone()).await.unwrap();
                on_fresh.push(started.elapsed());
                assert_eq!(res.status, 200, "{name}: {}", res.text());
            }
        }
        let (kept_p50, fresh_p50) = (median(on_kept), median(on_fresh));
        println!("{mode:?} {name}: p50 {kept_p50:?} over one kept connection, {fresh_p50:?} on fresh ones");
        assert!(
            kept_p50 <= fresh_p50 * 2 + Duration::from_millis(2),
            "{name}: a kept connection waits (p50 {kept_p50:?}) where a fresh one does not ({fresh_p50:?})"
        );
    }
}
