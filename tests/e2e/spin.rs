//! The Spin behaviours that the test host (tests/host) copies from Spin's sources, checked
//! against the real Spin: private routes, `spin-component-route` on chained requests, work
//! after the response. The standby label's reconnect and the in-memory store shared by every
//! instance are what the outage tests rely on (tests/e2e/outage.rs).

use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use crate::support::{assert_error, bearer, req, spin_or_skip, start, Mode, TOKEN};

/// A private component (`route = { private = true }`) has no public route: Spin itself
/// answers 404 for its paths, while the app's components reach it by service chaining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_components_answer_only_by_service_chaining() {
    let Some(spin) = spin_or_skip("spin::private_components_answer_only_by_service_chaining")
    else {
        return;
    };
    let app = start(&spin, Mode::Outbound, &[]).await;
    // The demo origin's own path, asked of the app: no route.
    let direct = app.get("/profiles/7").await;
    assert_eq!(direct.status, 404, "{}", direct.text());
    assert!(direct.body.is_empty(), "Spin's own 404: {}", direct.text());
    // The cache reaches it as http://origin.spin.internal.
    let through_cache = app.get("/api/cache/proxy/profiles/7").await;
    assert_eq!(through_cache.status, 200, "{}", through_cache.text());
    assert!(through_cache.text().contains("\"id\":\"7\""), "{}", through_cache.text());
}

/// A chained request reaches the rate limiter's private decision API, which the component
/// tells from its public route by `spin-component-route` (empty for a chained request, as
/// the test host sets it); the public route stays closed without `ratelimit_api_token`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_requests_reach_the_private_route_by_their_component_route() {
    let Some(spin) =
        spin_or_skip("spin::chained_requests_reach_the_private_route_by_their_component_route")
    else {
        return;
    };
    let app = start(
        &spin,
        Mode::Outbound,
        &[
            // The gateway forwards to the rate limiter itself, by service chaining.
            ("ratelimit_upstream", "http://ratelimit.spin.internal"),
            ("ratelimit_policies", r#"{"api": {"algorithm": "fixed_window", "limit": 100, "window": "1h"},
                                      "inner": {"algorithm": "fixed_window", "limit": 1, "window": "1h"}}"#),
        ],
    )
    .await;
    let decision = json!({"policy": "inner", "key": "k"});
    let public =
        app.send(req(Method::POST, "/api/ratelimit/check", &[], Some(decision.clone()))).await;
    assert_eq!(public.status, 404, "the public decision API is closed: {}", public.text());
    let chained = app
        .send(req(Method::POST, "/api/limited/api/ratelimit/check", &[], Some(decision.clone())))
        .await;
    assert_eq!(chained.status, 200, "{}", chained.text());
    assert_eq!(chained.json()["allowed"], true, "{}", chained.text());
    let second =
        app.send(req(Method::POST, "/api/limited/api/ratelimit/check", &[], Some(decision))).await;
    assert_eq!(second.status, 429, "the inner policy's one unit is spent: {}", second.text());
}

/// Work after the response: a stale entry is answered at once and refreshed after the
/// answer, within the same invocation (Spin keeps the instance until the handler returns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_answer_is_sent_before_the_refresh_runs() {
    let Some(spin) = spin_or_skip("spin::a_stale_answer_is_sent_before_the_refresh_runs") else {
        return;
    };
    let app = start(
        &spin,
        Mode::Outbound,
        &[
            ("cache_ttl_seconds", "3"),
            ("cache_stale_seconds", "600"),
            ("cache_ttl_jitter", "0"),
            // The demo origin takes 2 s to answer: a refresh inside the request would show.
            ("origin_delay_ms", "2000"),
        ],
    )
    .await;
    let _ = app.get("/api/cache/profile/7").await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let started = Instant::now();
    let stale = app.get("/api/cache/profile/7").await;
    let took = started.elapsed();
    assert_eq!(
        (stale.status.as_u16(), stale.header("x-cache")),
        (200, Some("STALE")),
        "{}\n{}",
        stale.text(),
        app.spin.output()
    );
    assert!(took < Duration::from_millis(1500), "the answer waited for the refresh: {took:?}");
    // Then a fresh entry, stored by the refresh after that answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = app.get("/api/cache/profile/7").await;
        if res.header("x-cache") == Some("HIT") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never refreshed: {:?}\n{}",
            res.header("x-cache"),
            app.spin.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("stale answer in {took:?}");
}

/// Bearer-token routes refuse a wrong token the same way under the real Spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_routes_refuse_strangers() {
    let Some(spin) = spin_or_skip("spin::token_routes_refuse_strangers") else { return };
    let app = start(&spin, Mode::Outbound, &[("locks_api_token", TOKEN)]).await;
    let wrong = app
        .send(req(
            Method::POST,
            "/api/locks/a",
            &[("authorization", "Bearer not-the-token-0123456789abcdef")],
            Some(json!({"ttl_ms": 1000})),
        ))
        .await;
    assert_error(&wrong, 401, "unauthorized");
    let right = app
        .send(req(
            Method::POST,
            "/api/locks/a",
            &[("authorization", &bearer())],
            Some(json!({"ttl_ms": 1000})),
        ))
        .await;
    assert_eq!(right.status, 201, "{}", right.text());
}
