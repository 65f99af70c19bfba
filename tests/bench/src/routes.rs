//! The routes measured: every route of every component in spin.toml that a user's traffic
//! reaches, plus the baseline (the probe fixture: one connection, one `GET`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::Method;
use serde_json::{json, Value};

use crate::load::{self, App, Req, Workload};

pub const SESSIONS_TOKEN: &str = "bench-sessions-token-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdefghij";
/// Bearer tokens of the public routes of the decision API and of OTP (both are private by
/// default; the bench calls them as a service outside the app would).
pub const RATELIMIT_API_TOKEN: &str = "bench-ratelimit-api-token-0123456789ab";
pub const OTP_API_TOKEN: &str = "bench-otp-api-token-0123456789abcdefgh";
/// An OTP pepper of the shape `openssl rand -base64 32` gives.
pub const OTP_PEPPER: &str = "bench+pepper/0123456789abcdefghijklmnopqrs=";

/// Bearer tokens of the leaderboard (writes) and locks components: at least 32 characters.
pub const LEADERBOARD_TOKEN: &str = "bench-leaderboard-token-0123456789abcdef";
pub const LOCKS_TOKEN: &str = "bench-locks-token-0123456789abcdefghijkl";

/// Policies that never refuse during a run (the decision's cost is the same either way, and
/// a refused caller would not show the common case), and one that blocks a caller after its
/// first request, for the refused-client row.
pub fn ratelimit_policies() -> String {
    json!({
        "bench_sw": {"algorithm": "sliding_window", "limit": 1_000_000_000u64, "window": "60s"},
        "bench_fw": {"algorithm": "fixed_window", "limit": 1_000_000_000u64, "window": "1h"},
        "bench_tb": {"algorithm": "token_bucket", "capacity": 1_000_000_000u64, "refill_per_sec": 1_000_000},
        // One token, one more every 1,000 s: the second request of a key is refused, and so
        // is every later one during a run.
        "bench_tb_block": {"algorithm": "token_bucket", "capacity": 1, "refill_per_sec": 0.001},
        "bench_gw": {"algorithm": "fixed_window", "limit": 1_000_000_000u64, "window": "1h"}
    })
    .to_string()
}

/// Callers of the rate-limit decision rows: a request checks key `user:{n % RATELIMIT_KEYS}`.
/// Each key is checked once during the set-up, so that the timed run shows the steady state
/// of an API's callers: on the fast path a window's first check of a key also sets the
/// counter's expiry over outbound Redis (one connection per key and window), later ones do not.
pub const RATELIMIT_KEYS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteId {
    Baseline,
    BaselineStore,
    /// The floors that exist only under the real Spin (tests/floors).
    Noop,
    FloorVariables,
    FloorBreaker,
    Health,
    CacheHit,
    CacheMiss,
    CacheDemo,
    CacheStats,
    RateLimitFixed,
    RateLimitSliding,
    RateLimitBucket,
    RateLimitBucketRefused,
    RateLimitState,
    Gateway,
    OtpIssue,
    OtpVerify,
    SessionCreate,
    SessionRead,
    SessionPatch,
    SessionRotate,
    SessionList,
    SessionLogout,
    LeaderboardSubmit,
    LeaderboardTop,
    LeaderboardMember,
    LockAcquire,
    LockRenew,
}

impl RouteId {
    /// A baseline or floor, answered by the probe or floors app.
    pub fn is_floor(self) -> bool {
        matches!(
            self,
            RouteId::Baseline
                | RouteId::BaselineStore
                | RouteId::Noop
                | RouteId::FloorVariables
                | RouteId::FloorBreaker
        )
    }

    /// Measured only under the real Spin (the floors app).
    pub fn spin_only(self) -> bool {
        matches!(self, RouteId::Noop | RouteId::FloorVariables | RouteId::FloorBreaker)
    }
}

pub struct Route {
    pub id: RouteId,
    /// Short name in the tables.
    pub name: &'static str,
    /// The request, as the README names it.
    pub request: &'static str,
    /// Measured with `redis_fast_path` off and on: the route's code can use the pooled store.
    /// The others never open it (no `FastPath` in their code), so the setting cannot change
    /// them and they run once.
    pub fast_path: bool,
    /// Also measured with the full system CA bundle (the `SSL_CERT_FILE` comparison).
    pub ca_comparison: bool,
    /// At most this many Redis commands sent per request after connecting (issue 8).
    pub target_round_trips: Option<u32>,
}

const fn route(id: RouteId, name: &'static str, request: &'static str) -> Route {
    Route { id, name, request, fast_path: false, ca_comparison: false, target_round_trips: None }
}

pub const ROUTES: &[Route] = &[
    Route {
        ca_comparison: true,
        ..route(
            RouteId::Baseline,
            "outbound floor (baseline): 1 open + GET",
            "probe fixture; GET /outbound of tests/floors under Spin",
        )
    },
    Route {
        ca_comparison: true,
        ..route(
            RouteId::BaselineStore,
            "pooled floor: 1 GET via the key-value store",
            "POST /x (tests/host/fixtures/probe)",
        )
    },
    route(RouteId::Noop, "no-op component (the platform's ceiling)", "GET /noop (tests/floors)"),
    route(
        RouteId::FloorVariables,
        "pooled floor + 32 variable reads",
        "GET /kv+variables (tests/floors)",
    ),
    route(
        RouteId::FloorBreaker,
        "pooled floor + the breaker's store operations",
        "GET /kv+breaker (tests/floors)",
    ),
    route(RouteId::Health, "health", "GET /health/cache"),
    Route {
        fast_path: true,
        ca_comparison: true,
        target_round_trips: Some(1),
        ..route(RouteId::CacheHit, "cache hit", "GET /api/cache/proxy/profiles/42")
    },
    Route {
        fast_path: true,
        ..route(
            RouteId::CacheMiss,
            "cache miss (demo origin)",
            "GET /api/cache/proxy/profiles/N?bench=unique",
        )
    },
    route(RouteId::CacheDemo, "cache demo counter", "GET /api/cache/demo"),
    route(RouteId::CacheStats, "cache stats (16 buckets)", "GET /api/cache/stats"),
    Route {
        fast_path: true,
        target_round_trips: Some(1),
        ..route(
            RouteId::RateLimitFixed,
            "rate-limit decision, fixed window",
            "POST /api/ratelimit/check",
        )
    },
    Route {
        fast_path: true,
        target_round_trips: Some(1),
        ..route(
            RouteId::RateLimitSliding,
            "rate-limit decision, sliding window",
            "POST /api/ratelimit/check",
        )
    },
    Route {
        fast_path: true,
        target_round_trips: Some(1),
        ..route(
            RouteId::RateLimitBucket,
            "rate-limit decision, token bucket",
            "POST /api/ratelimit/check",
        )
    },
    Route {
        fast_path: true,
        target_round_trips: Some(1),
        ..route(
            RouteId::RateLimitBucketRefused,
            "rate-limit decision, token bucket, refused client",
            "POST /api/ratelimit/check (429)",
        )
    },
    Route {
        fast_path: true,
        ..route(RouteId::RateLimitState, "rate-limit state", "GET /api/ratelimit/{policy}/{key}")
    },
    // The gateway's decision takes the pooled path when it is one window limit, as here (the
    // gateway policy `bench_gw`, a fixed window; with no address policy set and no API key, the
    // address policy is the same limit on the same key, so there is one check).
    Route {
        fast_path: true,
        ..route(RouteId::Gateway, "rate-limit gateway (demo origin)", "GET /api/limited/profiles/N")
    },
    route(RouteId::OtpIssue, "OTP issue", "POST /api/otp"),
    Route {
        target_round_trips: Some(1),
        ..route(RouteId::OtpVerify, "OTP verify", "POST /api/otp/verify")
    },
    route(RouteId::SessionCreate, "session create", "POST /api/sessions"),
    Route {
        fast_path: true,
        ca_comparison: true,
        target_round_trips: Some(1),
        ..route(RouteId::SessionRead, "session read", "GET /api/sessions/current")
    },
    route(RouteId::SessionPatch, "session patch", "PATCH /api/sessions/current"),
    route(RouteId::SessionRotate, "session rotate", "POST /api/sessions/current/rotate"),
    route(RouteId::SessionList, "session list", "GET /api/sessions"),
    route(RouteId::SessionLogout, "session logout", "DELETE /api/sessions/current"),
    Route {
        target_round_trips: Some(1),
        ..route(
            RouteId::LeaderboardSubmit,
            "leaderboard submit (increment, weekly board)",
            "POST /api/leaderboards/weekly_xp/scores",
        )
    },
    Route {
        target_round_trips: Some(1),
        ..route(RouteId::LeaderboardTop, "leaderboard top 10", "GET /api/leaderboards/global")
    },
    Route {
        target_round_trips: Some(1),
        ..route(
            RouteId::LeaderboardMember,
            "leaderboard member with 2 neighbours",
            "GET /api/leaderboards/global/members/{member}",
        )
    },
    Route {
        target_round_trips: Some(1),
        ..route(RouteId::LockAcquire, "lock acquire", "POST /api/locks/{name}")
    },
    Route {
        target_round_trips: Some(1),
        ..route(RouteId::LockRenew, "lock renew", "PUT /api/locks/{name}")
    },
];

/// The apps and shared state of one Redis server.
pub struct Group {
    /// spin.toml with `redis_fast_path` off and on.
    pub app: App,
    pub app_fast: App,
    /// The baselines' app: the probe fixture on the test host, the floors app
    /// (tests/floors) under the real Spin.
    pub probe: App,
    /// The probe's Redis address (the password percent-encoded).
    pub redis_url: String,
    /// Makes keys, subjects and user ids unique to this group.
    pub tag: String,
    /// OTP codes issued by the issue row, verified by the verify row.
    pub otp_codes: Arc<Mutex<Vec<(String, String)>>>,
    /// Sessions made by the create row, ended by the logout row.
    pub sessions: Arc<Mutex<Vec<String>>>,
}

impl Group {
    pub fn app_for(&self, route: &Route, fast_path: bool) -> &App {
        match (route.id, fast_path) {
            (id, _) if id.is_floor() => &self.probe,
            (_, true) => &self.app_fast,
            (_, false) => &self.app,
        }
    }
}

pub async fn create_session(app: &App, user: &str) -> Result<String, String> {
    let req = Req::new(Method::POST, "/api/sessions")
        .bearer(SESSIONS_TOKEN)
        .json(json!({"user_id": user, "data": {"role": "member", "theme": "dark"}}));
    let res = load::send(app, &req).await;
    if res.status != 201 {
        return Err(format!("creating a session: {} {}", res.status, res.text()));
    }
    session_id(&res.body).ok_or_else(|| format!("no session_id in {}", res.text()))
}

fn session_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(v["session_id"].as_str()?.to_owned())
}

fn otp_issue_req(subject: &str) -> Req {
    Req::new(Method::POST, "/api/otp")
        .bearer(OTP_API_TOKEN)
        .json(json!({"subject": subject, "purpose": "login", "channel": "email"}))
}

/// One session per worker, for the routes that act on the caller's own session.
async fn worker_sessions(
    app: &App,
    tag: &str,
    workers: usize,
) -> Result<Arc<Vec<Mutex<String>>>, String> {
    let mut ids = Vec::new();
    for w in 0..workers {
        ids.push(Mutex::new(create_session(app, &format!("bench-{tag}-w{w}")).await?));
    }
    Ok(Arc::new(ids))
}

/// Builds the workload of `route`, after any set-up it needs (warming the cache entry,
/// creating sessions, topping up a pool of one-use items).
pub async fn workload(
    group: &Group,
    route: &Route,
    fast_path: bool,
    workers: usize,
) -> Result<Workload, String> {
    let app = group.app_for(route, fast_path);
    // Unique per workload, so that subjects, users and cache keys never repeat across the
    // warm-up, the sample and the timed run, or across rows.
    let tag = next_tag(&group.tag);
    let unique = Arc::new(AtomicU64::new(0));
    let next_unique = move || unique.fetch_add(1, Ordering::Relaxed);
    Ok(match route.id {
        // Under the real Spin, the floors app: the same work, the same response write.
        RouteId::Baseline if app.is_spin() => {
            Workload::new(200, |_, _| Some(Req::new(Method::GET, "/outbound")))
        }
        RouteId::BaselineStore if app.is_spin() => {
            Workload::new(200, |_, _| Some(Req::new(Method::GET, "/kv")))
        }
        RouteId::Noop => Workload::new(200, |_, _| Some(Req::new(Method::GET, "/noop"))),
        RouteId::FloorVariables => {
            Workload::new(200, |_, _| Some(Req::new(Method::GET, "/kv+variables")))
        }
        RouteId::FloorBreaker => {
            Workload::new(200, |_, _| Some(Req::new(Method::GET, "/kv+breaker")))
        }
        RouteId::Baseline => {
            let body = json!({"op": "redis", "address": group.redis_url, "command": "GET", "args": ["bench:baseline"]});
            Workload::new(200, move |_, _| Some(Req::new(Method::POST, "/x").json(body.clone())))
        }
        RouteId::BaselineStore => {
            // The same GET through Spin's key-value store, whose one connection stays open.
            let body = json!({"op": "kv", "api": "wasi", "store": "redis", "action": "get", "key": "bench:baseline"});
            Workload::new(200, move |_, _| Some(Req::new(Method::POST, "/x").json(body.clone())))
        }
        RouteId::Health => Workload::new(200, |_, _| Some(Req::new(Method::GET, "/health/cache"))),
        RouteId::CacheHit => {
            let path = "/api/cache/proxy/profiles/42";
            let res = load::send(app, &Req::new(Method::GET, path)).await;
            if res.status != 200 {
                return Err(format!("warming {path}: {} {}", res.status, res.text()));
            }
            Workload::new(200, move |_, _| Some(Req::new(Method::GET, path)))
                .expect_header("x-cache", "HIT")
        }
        RouteId::CacheMiss => Workload::new(200, move |_, _| {
            let n = next_unique();
            Some(Req::new(
                Method::GET,
                format!("/api/cache/proxy/profiles/{}?bench={tag}-{n}", n % 1000 + 1),
            ))
        })
        .expect_header("x-cache", "MISS"),
        RouteId::CacheDemo => {
            Workload::new(200, |_, _| Some(Req::new(Method::GET, "/api/cache/demo")))
        }
        RouteId::CacheStats => {
            Workload::new(200, |_, _| Some(Req::new(Method::GET, "/api/cache/stats")))
        }
        RouteId::RateLimitFixed | RouteId::RateLimitSliding | RouteId::RateLimitBucket => {
            let policy = match route.id {
                RouteId::RateLimitFixed => "bench_fw",
                RouteId::RateLimitSliding => "bench_sw",
                _ => "bench_tb",
            };
            let check = move |n: u64| {
                Req::new(Method::POST, "/api/ratelimit/check")
                    .bearer(RATELIMIT_API_TOKEN)
                    .json(json!({"policy": policy, "key": format!("user:{}", n % RATELIMIT_KEYS)}))
            };
            for k in 0..RATELIMIT_KEYS {
                let res = load::send(app, &check(k)).await;
                if res.status != 200 {
                    return Err(format!("first check of a key: {} {}", res.status, res.text()));
                }
            }
            Workload::new(200, move |_, n| Some(check(n)))
        }
        RouteId::RateLimitBucketRefused => {
            // Keys of this workload only, each emptied during the set-up: its first check is
            // admitted, its second refused (which writes the blocked marker on the fast path).
            let check = move |n: u64| {
                Req::new(Method::POST, "/api/ratelimit/check").bearer(RATELIMIT_API_TOKEN).json(
                    json!({"policy": "bench_tb_block", "key": format!("blocked:{tag}:{}", n % RATELIMIT_KEYS)}),
                )
            };
            for k in 0..RATELIMIT_KEYS {
                for expect in [200, 429] {
                    let res = load::send(app, &check(k)).await;
                    if res.status != expect {
                        return Err(format!("emptying a bucket: {} {}", res.status, res.text()));
                    }
                }
            }
            Workload::new(429, move |_, n| Some(check(n)))
        }
        RouteId::RateLimitState => {
            let state = |n: u64| {
                Req::new(
                    Method::GET,
                    format!("/api/ratelimit/bench_sw/user:{}", n % RATELIMIT_KEYS),
                )
                .bearer(RATELIMIT_API_TOKEN)
            };
            for k in 0..RATELIMIT_KEYS {
                let res = load::send(app, &state(k)).await;
                if res.status != 200 {
                    return Err(format!("reading a key's state: {} {}", res.status, res.text()));
                }
            }
            Workload::new(200, move |_, n| Some(state(n)))
        }
        RouteId::Gateway => Workload::new(200, |_, n| {
            Some(Req::new(Method::GET, format!("/api/limited/profiles/{}", n % 1000 + 1)))
        }),
        RouteId::OtpIssue => {
            let pool = group.otp_codes.clone();
            pool.lock().unwrap().clear();
            let subjects = Arc::new(Mutex::new(std::collections::HashMap::<usize, String>::new()));
            let sent = subjects.clone();
            // A new subject every time: one subject may have a code only once a minute.
            Workload::new(202, move |w, _| {
                let subject = format!("u{}-{tag}@example.com", next_unique());
                sent.lock().unwrap().insert(w, subject.clone());
                Some(otp_issue_req(&subject))
            })
            .after(move |w, res| {
                // otp_dev_echo returns the code, so the verify row can use it.
                let code = serde_json::from_slice::<Value>(&res.body)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned));
                let subject = subjects.lock().unwrap().get(&w).cloned();
                if let (Some(code), Some(subject)) = (code, subject) {
                    pool.lock().unwrap().push((subject, code));
                }
            })
        }
        RouteId::OtpVerify => {
            // The issue row normally fills the pool; top it up when it ran alone.
            let missing = 200usize.saturating_sub(group.otp_codes.lock().unwrap().len());
            for i in 0..missing {
                let subject = format!("pre{i}-{tag}@example.com");
                let res = load::send(app, &otp_issue_req(&subject)).await;
                let code = serde_json::from_slice::<Value>(&res.body)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned));
                match code {
                    Some(code) => group.otp_codes.lock().unwrap().push((subject, code)),
                    None => return Err(format!("issuing a code: {} {}", res.status, res.text())),
                }
            }
            let pool = group.otp_codes.clone();
            Workload::new(200, move |_, _| {
                let (subject, code) = pool.lock().unwrap().pop()?;
                Some(
                    Req::new(Method::POST, "/api/otp/verify")
                        .bearer(OTP_API_TOKEN)
                        .json(json!({"subject": subject, "purpose": "login", "code": code})),
                )
            })
        }
        RouteId::SessionCreate => {
            let pool = group.sessions.clone();
            pool.lock().unwrap().clear();
            Workload::new(201, move |_, _| {
                Some(
                    Req::new(Method::POST, "/api/sessions")
                        .bearer(SESSIONS_TOKEN)
                        .json(json!({"user_id": format!("bench-{tag}-{}", next_unique()), "data": {"role": "member", "theme": "dark"}})),
                )
            })
            .after(move |_, res| {
                if let Some(id) = session_id(&res.body) {
                    pool.lock().unwrap().push(id);
                }
            })
        }
        RouteId::SessionLogout => {
            let missing = 200usize.saturating_sub(group.sessions.lock().unwrap().len());
            for i in 0..missing {
                let id = create_session(app, &format!("bench-{tag}-pre{i}")).await?;
                group.sessions.lock().unwrap().push(id);
            }
            let pool = group.sessions.clone();
            Workload::new(204, move |_, _| {
                let id = pool.lock().unwrap().pop()?;
                Some(Req::new(Method::DELETE, "/api/sessions/current").bearer(&id))
            })
        }
        RouteId::SessionRead | RouteId::SessionPatch | RouteId::SessionList => {
            let ids = worker_sessions(app, &tag, workers).await?;
            let id = route.id;
            Workload::new(200, move |w, n| {
                let session = ids[w].lock().unwrap().clone();
                Some(match id {
                    RouteId::SessionRead => {
                        Req::new(Method::GET, "/api/sessions/current").bearer(&session)
                    }
                    RouteId::SessionPatch => Req::new(Method::PATCH, "/api/sessions/current")
                        .bearer(&session)
                        .json(json!({"last_page": format!("/page/{n}")})),
                    _ => Req::new(Method::GET, "/api/sessions").bearer(&session),
                })
            })
        }
        RouteId::SessionRotate => {
            let ids = worker_sessions(app, &tag, workers).await?;
            let next_ids = ids.clone();
            Workload::new(200, move |w, _| {
                let session = ids[w].lock().unwrap().clone();
                Some(Req::new(Method::POST, "/api/sessions/current/rotate").bearer(&session))
            })
            .after(move |w, res| {
                // The old id stops working: each worker carries on with the new one.
                if let Some(id) = session_id(&res.body) {
                    *next_ids[w].lock().unwrap() = id;
                }
            })
        }
        // Every submission changes the score (an increment), so each takes the same path
        // through the script: the MONITOR sample then sees every command the timed run sent.
        RouteId::LeaderboardSubmit => Workload::new(200, |_, n| {
            Some(
                Req::new(Method::POST, "/api/leaderboards/weekly_xp/scores")
                    .bearer(LEADERBOARD_TOKEN)
                    .json(json!({"member": format!("p{}", n % 100), "increment": 1})),
            )
        }),
        RouteId::LeaderboardTop => {
            fill_leaderboard(app).await?;
            Workload::new(200, |_, _| Some(Req::new(Method::GET, "/api/leaderboards/global")))
        }
        RouteId::LeaderboardMember => {
            fill_leaderboard(app).await?;
            Workload::new(200, |_, n| {
                Some(Req::new(
                    Method::GET,
                    format!("/api/leaderboards/global/members/p{}", n % 1000),
                ))
            })
        }
        RouteId::LockAcquire => Workload::new(201, move |_, _| {
            // A new name each time: every request takes a free lock.
            Some(
                Req::new(Method::POST, format!("/api/locks/bench-{tag}-{}", next_unique()))
                    .bearer(LOCKS_TOKEN)
                    .json(json!({"ttl_ms": 60_000})),
            )
        }),
        RouteId::LockRenew => {
            let leases = worker_leases(app, &tag, workers).await?;
            Workload::new(200, move |w, _| {
                let (name, token) = &leases[w];
                Some(
                    Req::new(Method::PUT, format!("/api/locks/{name}"))
                        .bearer(LOCKS_TOKEN)
                        .header("lock-token", token.as_str())
                        .json(json!({"ttl_ms": 300_000})),
                )
            })
        }
    })
}

/// Scores for members `p0`..`p999` of the default `global` board, so reads have a board.
async fn fill_leaderboard(app: &App) -> Result<(), String> {
    for m in 0..1000u64 {
        let req = Req::new(Method::POST, "/api/leaderboards/global/scores")
            .bearer(LEADERBOARD_TOKEN)
            .json(json!({"member": format!("p{m}"), "score": m % 97}));
        let res = load::send(app, &req).await;
        if res.status != 200 {
            return Err(format!("filling the leaderboard: {} {}", res.status, res.text()));
        }
    }
    Ok(())
}

/// One long lease per worker, for the renew row: (name, holder token).
async fn worker_leases(
    app: &App,
    tag: &str,
    workers: usize,
) -> Result<Arc<Vec<(String, String)>>, String> {
    let mut leases = Vec::new();
    for w in 0..workers {
        let name = format!("bench-{tag}-w{w}");
        let req = Req::new(Method::POST, format!("/api/locks/{name}"))
            .bearer(LOCKS_TOKEN)
            .json(json!({"ttl_ms": 300_000}));
        let res = load::send(app, &req).await;
        let token = serde_json::from_slice::<Value>(&res.body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("acquiring a lease: {} {}", res.status, res.text()))?;
        leases.push((name, token));
    }
    Ok(Arc::new(leases))
}

/// A tag no other group or workload of this process (or an earlier run) has.
pub fn next_tag(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}{}x{now}", N.fetch_add(1, Ordering::Relaxed))
}
