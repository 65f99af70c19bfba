//! A Redis that accepts connections and never answers (frozen with `SIGSTOP`), through the
//! test host, fast path off and on: only requests of the first `redis_stall_ms` wait; every
//! later one answers within 1 s with its fallback; answers are right again within 5 s of Redis
//! answering. The same scenario runs under the real Spin in tests/e2e/outage.rs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use spin_test_host::redis_server::RedisServer;
use spin_test_host::TestApp;

use crate::support::{builder, in_both_modes, Mode, AZURE_STYLE_KEY};

const TOKEN: &str = "backend-token-7f3a9c-0123456789abcdef";
const BOUND: Duration = Duration::from_secs(1);

/// (route, started ms since the silence, took, status, x-cache or unchecked marker)
type Sample = (&'static str, i64, Duration, u16, Option<String>);

async fn one(app: &TestApp, route: &'static str, cookie: &str) -> (u16, Option<String>) {
    let res = match route {
        "session" => app.get("/api/sessions/current").header("cookie", cookie).send().await,
        "cache" => app.get("/api/cache/proxy/profiles/7").send().await,
        "health" => app.get("/health/cache").send().await,
        _ => {
            app.post("/api/ratelimit/check")
                .header("authorization", &format!("Bearer {TOKEN}"))
                .json(&json!({"policy": "api", "key": "load"}))
                .send()
                .await
        }
    };
    let marker = res.header("x-cache").or(res.header("x-ratelimit-unchecked")).map(str::to_owned);
    (res.status, marker)
}

in_both_modes!(silent_redis);

async fn silent_redis(mode: Mode) {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let app = builder(&redis)
        .variable("redis_fast_path", mode.variable())
        // The default bound, which this test measures.
        .variable("redis_stall_ms", "250")
        .variable("sessions_api_token", TOKEN)
        .variable("ratelimit_api_token", TOKEN)
        .variable(
            "ratelimit_policies",
            r#"{"api": {"algorithm": "sliding_window", "limit": 1000000, "window": "1h",
                        "failure_mode": "fail_open"}}"#,
        )
        .variable("origin_delay_ms", "0")
        .load()
        .expect("app loads");
    let created = app
        .post("/api/sessions")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .json(&json!({"user_id": "u1"}))
        .send()
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let cookie = format!("__Host-session={}", created.json()["session_id"].as_str().unwrap());
    for route in ["cache", "cache", "session", "ratelimit", "health"] {
        assert_eq!(one(&app, route, &cookie).await.0, 200, "{route} before the silence");
    }

    let zero = Instant::now() + Duration::from_millis(200);
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let end = zero + Duration::from_secs(10);
    let mut clients = Vec::new();
    for route in ["session", "cache", "ratelimit", "health"] {
        let (app, cookie, samples) = (app.clone(), cookie.clone(), samples.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < end {
                let (app, cookie, samples) = (app.clone(), cookie.clone(), samples.clone());
                tokio::spawn(async move {
                    let begun = Instant::now();
                    let started_ms = begun.duration_since(zero).as_millis() as i64
                        - zero.saturating_duration_since(begun).as_millis() as i64;
                    let (status, marker) = one(&app, route, &cookie).await;
                    samples.lock().unwrap().push((
                        route,
                        started_ms,
                        begun.elapsed(),
                        status,
                        marker,
                    ));
                });
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }
    tokio::time::sleep_until(zero.into()).await;
    redis.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.resume();
    let back_ms = zero.elapsed().as_millis() as i64;
    for client in clients {
        client.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = samples.lock().unwrap().clone();

    let during: Vec<&Sample> =
        samples.iter().filter(|s| s.1 >= 1000 && s.1 < back_ms - 200).collect();
    assert!(during.len() > 20, "the load ran during the silence: {}", during.len());
    for s in &during {
        assert!(s.2 <= BOUND, "{mode:?}: {s:?} waited past the bound");
        let expected: (u16, Option<&str>) = match s.0 {
            "session" => (503, None),
            "cache" => (200, Some("BYPASS")),
            "health" => (503, None),
            _ => (200, Some("redis_unavailable")),
        };
        assert_eq!((s.3, s.4.as_deref()), expected, "{mode:?}: {s:?}");
    }
    for s in samples.iter().filter(|s| s.2 > BOUND) {
        assert!(s.1 < 1000 || s.1 >= back_ms - 200, "{mode:?}: {s:?} waited past the bound");
    }
    let after: Vec<&Sample> = samples.iter().filter(|s| s.1 > back_ms + 5000).collect();
    assert!(!after.is_empty(), "the load ran after the silence");
    for s in after {
        assert!(s.2 <= BOUND, "{mode:?}: {s:?}");
        match s.0 {
            "cache" => assert!(s.3 == 200 && s.4.as_deref() != Some("BYPASS"), "{mode:?}: {s:?}"),
            "ratelimit" => assert_eq!((s.3, s.4.as_deref()), (200, None), "{mode:?}: {s:?}"),
            _ => assert_eq!(s.3, 200, "{mode:?}: {s:?}"),
        }
    }
}
