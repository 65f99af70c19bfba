//! Redis stopped under load and restarted, and Redis silent (frozen: connections accepted,
//! nothing answered), under the real Spin, with the fast path off and on. The documented
//! bounds (docs/fast-path.md, "Failing fast"):
//! - every request arriving 1 s or more into the outage answers within 1 s, with its fallback:
//!   the cache serves the origin (`BYPASS`), a `fail_open` limit admits unchecked, a session
//!   read answers 503 and keeps the cookie;
//! - only requests that reached Redis in the first `redis_stall_ms` of it wait;
//! - from 5 s after Redis is back, answers are right again, pooled ones from the pool.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;
use spin_test_host::real_spin::RealSpin;

use crate::support::{bearer, in_both_modes, info_stat, req, start, Mode, TOKEN};

/// The bound on answers during an outage.
const BOUND: Duration = Duration::from_secs(1);
/// How long Redis stays away.
const OUTAGE: Duration = Duration::from_secs(3);
/// How long the load runs after Redis is back.
const AFTER: Duration = Duration::from_secs(7);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// The process ends: connections are refused.
    Stopped,
    /// The process is frozen: connections hang.
    Silent,
}

/// One request of the load.
#[derive(Debug, Clone)]
struct Sample {
    route: &'static str,
    /// When it started, relative to the outage's start (negative: before).
    started_ms: i64,
    took: Duration,
    status: u16,
    x_cache: Option<String>,
    clears_cookie: bool,
    unchecked: Option<String>,
}

async fn one(
    spin: &RealSpin,
    route: &'static str,
    cookie: &str,
) -> Option<(u16, Option<String>, bool, Option<String>)> {
    let request = match route {
        "session" => req(Method::GET, "/api/sessions/current", &[("cookie", cookie)], None),
        "cache" => req(Method::GET, "/api/cache/profile/7", &[], None),
        _ => req(
            Method::POST,
            "/api/ratelimit/check",
            &[("authorization", &bearer())],
            Some(json!({"policy": "api", "key": "load"})),
        ),
    };
    // Requests stuck past a minute are left behind (counted as unanswered).
    let res = spin.send_within(Duration::from_secs(60), request).await.ok()?;
    Some((
        res.status.as_u16(),
        res.header("x-cache").map(str::to_owned),
        res.header("set-cookie").is_some(),
        res.header("x-ratelimit-unchecked").map(str::to_owned),
    ))
}

in_both_modes!(redis_stopped_under_load, redis_silent_under_load);

async fn redis_stopped_under_load(spin: &Path, mode: Mode) {
    scenario(spin, mode, Outage::Stopped).await
}

async fn redis_silent_under_load(spin: &Path, mode: Mode) {
    scenario(spin, mode, Outage::Silent).await
}

async fn scenario(spin: &Path, mode: Mode, outage: Outage) {
    let mut app = start(
        spin,
        mode,
        &[
            ("sessions_api_token", TOKEN),
            ("ratelimit_api_token", TOKEN),
            (
                "ratelimit_policies",
                r#"{"api": {"algorithm": "sliding_window", "limit": 1000000, "window": "1h",
                            "failure_mode": "fail_open"}}"#,
            ),
        ],
    )
    .await;
    let created = app
        .send(req(
            Method::POST,
            "/api/sessions",
            &[("authorization", &bearer())],
            Some(json!({"user_id": "u1"})),
        ))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let cookie = format!("__Host-session={}", created.json()["session_id"].as_str().unwrap());
    // Warm: a stored entry, pooled connections made.
    for _ in 0..3 {
        assert_eq!(app.get("/api/cache/profile/7").await.status, 200);
        assert_eq!(one(&app.spin, "session", &cookie).await.unwrap().0, 200);
        assert_eq!(one(&app.spin, "ratelimit", &cookie).await.unwrap().0, 200);
    }

    // Load: three clients (session reads, cache hits, rate-limit checks), each starting a
    // request every 30 ms on a task of its own, so a stuck request never stops its client.
    let spin = app.spin.clone();
    let zero = Instant::now() + Duration::from_millis(300);
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let started = Arc::new(Mutex::new(0usize));
    let end = zero + OUTAGE + AFTER;
    let mut clients = Vec::new();
    for route in ["session", "cache", "ratelimit"] {
        let (spin, cookie, samples, started) =
            (spin.clone(), cookie.clone(), samples.clone(), started.clone());
        clients.push(tokio::spawn(async move {
            let mut tasks = Vec::new();
            while Instant::now() < end {
                let (spin, cookie, samples) = (spin.clone(), cookie.clone(), samples.clone());
                *started.lock().unwrap() += 1;
                tasks.push(tokio::spawn(async move {
                    let begun = Instant::now();
                    let started_ms = if begun >= zero {
                        begun.duration_since(zero).as_millis() as i64
                    } else {
                        -(zero.duration_since(begun).as_millis() as i64)
                    };
                    if let Some((status, x_cache, clears_cookie, unchecked)) =
                        one(&spin, route, &cookie).await
                    {
                        samples.lock().unwrap().push(Sample {
                            route,
                            started_ms,
                            took: begun.elapsed(),
                            status,
                            x_cache,
                            clears_cookie,
                            unchecked,
                        });
                    }
                }));
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            tasks
        }));
    }
    tokio::time::sleep_until(zero.into()).await;
    match outage {
        Outage::Stopped => app.redis.stop(),
        Outage::Silent => app.redis.pause(),
    }
    tokio::time::sleep(OUTAGE).await;
    match outage {
        Outage::Stopped => app.redis.start(),
        Outage::Silent => app.redis.resume(),
    }
    let back_ms = zero.elapsed().as_millis() as i64;
    let mut tasks = Vec::new();
    for client in clients {
        tasks.extend(client.await.unwrap());
    }
    // Stuck requests of the stall window answer when Redis does (silent) or after Spin's
    // store reconnects (minutes): not waited for past a few seconds.
    let _ =
        tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(tasks)).await;
    let samples = samples.lock().unwrap().clone();
    let logs = spin.output();
    let context = || format!("{mode:?} {outage:?}, back at {back_ms} ms\n{}", tail(&logs));

    // During the outage, from 1 s in: within the bound, with the fallback.
    let during: Vec<&Sample> =
        samples.iter().filter(|s| s.started_ms >= 1000 && s.started_ms < back_ms - 200).collect();
    assert!(
        during.len() > 30,
        "the load ran during the outage: {} samples\n{}",
        during.len(),
        context()
    );
    for s in &during {
        assert!(s.took <= BOUND, "{s:?} waited past the bound\n{}", context());
        match s.route {
            "session" => {
                assert_eq!((s.status, s.clears_cookie), (503, false), "{s:?}\n{}", context())
            }
            "cache" => assert_eq!(
                (s.status, s.x_cache.as_deref()),
                (200, Some("BYPASS")),
                "{s:?}\n{}",
                context()
            ),
            _ => assert_eq!(
                (s.status, s.unchecked.as_deref()),
                (200, Some("redis_unavailable")),
                "{s:?}\n{}",
                context()
            ),
        }
    }
    // Only requests in flight when Redis went away or started in the stall window (plus one
    // outbound try per stuck pooled connection) waited: none from 1 s into the outage.
    let total = *started.lock().unwrap();
    let slow: Vec<&Sample> = samples.iter().filter(|s| s.took > BOUND).collect();
    for s in &slow {
        assert!(
            s.started_ms < 1000 || s.started_ms >= back_ms - 200,
            "{s:?} waited past the bound\n{}",
            context()
        );
    }
    let unanswered = total - samples.len();
    println!(
        "{mode:?} {outage:?}: {total} requests, {} answered past {BOUND:?}, {unanswered} not answered within a minute",
        slow.len()
    );

    // From 5 s after Redis is back: right answers within the bound.
    let recovered: Vec<&Sample> =
        samples.iter().filter(|s| s.started_ms > back_ms + 5000).collect();
    assert!(recovered.len() > 10, "the load ran after the outage\n{}", context());
    // A stopped Redis restarts empty (no persistence in the test): the session is gone.
    let session_status = match outage {
        Outage::Stopped => 401,
        Outage::Silent => 200,
    };
    for s in &recovered {
        assert!(s.took <= BOUND, "{s:?}\n{}", context());
        match s.route {
            "session" => assert_eq!(s.status, session_status, "{s:?}\n{}", context()),
            "cache" => assert!(
                s.status == 200 && s.x_cache.as_deref() != Some("BYPASS"),
                "{s:?}\n{}",
                context()
            ),
            _ => {
                assert_eq!((s.status, s.unchecked.as_deref()), (200, None), "{s:?}\n{}", context())
            }
        }
    }
    // And pooled ones come from the pool again: cache hits open no connection. After a stop,
    // on the standby label, which Spin connected on its first open while the first label
    // still waits for its reconnect backoff.
    if mode == Mode::FastPath {
        if outage == Outage::Stopped {
            assert!(
                // The log line is JSON: the message's quotes are escaped.
                logs.contains(r#"moving to store \"redis_standby\""#),
                "the fast path moved to the standby store\n{}",
                context()
            );
        }
        let hit = spin.get("/api/cache/profile/7").await.unwrap();
        assert_eq!(hit.header("x-cache"), Some("HIT"), "{}", context());
        let before = info_stat(&app.redis, "total_connections_received").await;
        for _ in 0..20 {
            let hit = spin.get("/api/cache/profile/7").await.unwrap();
            assert_eq!(hit.header("x-cache"), Some("HIT"));
        }
        let after = info_stat(&app.redis, "total_connections_received").await;
        // The test's own INFO client is the one connection allowed.
        assert!(
            after - before <= 1,
            "{} connections for 20 pooled hits\n{}",
            after - before,
            context()
        );
    }
}

/// The last lines of the logs, for failure messages.
fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
