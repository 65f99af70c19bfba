//! The outage row (issue 14): Redis stopped under a steady request rate, kept down a few
//! seconds, then restarted on the same port, with the fast path off and on.
//!
//! Open-loop load: each route gets a request every `1 / rate` seconds, each on its own task,
//! so a request that hangs (a pooled call waiting on Spin's store) never slows the load down
//! or hangs the bench. A request still unanswered when the row ends is reported as stuck.
//!
//! Recovery is measured without knowing how the fast path recovers: from the restart, the
//! time until every answer of a route is right again, and the time until every answer comes
//! without a new Redis connection (the host's per-request count of outbound connections),
//! cross-checked with `total_connections_received` read from Redis every 100 ms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};
use spin_test_host::redis::{self, aio::MultiplexedConnection};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::TestResponse;

use crate::load::{self, Req};
use crate::routes;

/// The bound: a request arriving more than 1 s after Redis went away answers within 1 s.
pub const BOUND: Duration = Duration::from_secs(1);
/// Redis `INFO` is read this often during the row.
const POLL: Duration = Duration::from_millis(100);

/// The row's timeline and load.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Requests per second of each route.
    pub rate: f64,
    /// Load before Redis is stopped.
    pub before: Duration,
    /// Redis down.
    pub down: Duration,
    /// Load after Redis is back.
    pub after: Duration,
    /// How long the requests still in flight at the end are waited for; after that they
    /// count as stuck.
    pub grace: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            rate: 50.0,
            before: Duration::from_secs(2),
            down: Duration::from_secs(3),
            after: Duration::from_secs(6),
            grace: Duration::from_secs(2),
        }
    }
}

/// The routes under load during the outage, each at `Plan::rate`.
const ROUTES: [&str; 3] =
    ["cache hit", "session read", "rate-limit decision, fixed window (fail_closed)"];

/// One request: when it started (since the load began), how long it took (`None`: never
/// answered within the row), what it got.
#[derive(Clone, Debug)]
struct Sample {
    route: usize,
    started: Duration,
    took: Option<Duration>,
    label: String,
    right: bool,
    connections: usize,
}

/// Latency of the requests that started in one interval.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub requests: usize,
    /// `None` when the percentile falls on a stuck request.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
    /// Answered after more than [`BOUND`], or never.
    pub over_bound: usize,
}

impl Window {
    fn of(samples: &[&Sample]) -> Self {
        let mut took: Vec<Option<Duration>> = samples.iter().map(|s| s.took).collect();
        // Unanswered last.
        took.sort_by_key(|t| t.unwrap_or(Duration::MAX));
        let pick = |p: f64| -> Option<Duration> {
            if took.is_empty() {
                // Printed as "–" (no requests).
                return Some(Duration::ZERO);
            }
            let rank = ((p / 100.0) * took.len() as f64).ceil() as usize;
            took[rank.clamp(1, took.len()) - 1]
        };
        Self {
            requests: took.len(),
            p50: pick(50.0),
            p99: pick(99.0),
            max: pick(100.0),
            over_bound: took.iter().filter(|t| t.is_none_or(|t| t > BOUND)).count(),
        }
    }
}

/// What one route did during the row.
#[derive(Clone, Debug, Default)]
pub struct RouteOutage {
    pub name: &'static str,
    pub before: Window,
    /// Requests that started in the first second of the outage.
    pub first_second: Window,
    /// Requests that started later in the outage.
    pub later: Window,
    /// Requests that started in the first second after Redis was back.
    pub after_first_second: Window,
    /// Answers of requests that started while Redis was down: label, count.
    pub mix: Vec<(String, usize)>,
    /// From the restart until every later answer was right and within the bound.
    pub right_again: Option<Duration>,
    /// From the restart until every later answer was right, within the bound and opened no
    /// Redis connection (the pooled path).
    pub pooled_again: Option<Duration>,
    pub stuck: usize,
    /// When the stuck requests started, in ms from the stop (first, last), and how long the
    /// one that started last had waited when the row gave up on it.
    pub stuck_started_ms: Option<(i64, i64)>,
    pub stuck_waited: Duration,
}

/// One outage row.
#[derive(Clone, Debug, Default)]
pub struct OutageRow {
    pub mode: String,
    pub fast_path: bool,
    pub routes: Vec<RouteOutage>,
    /// New Redis connections per request (`INFO stats`, the bench's own left out) before the
    /// stop, and for each second after the restart: (connections, requests started).
    pub connections_before: (u64, usize),
    pub connections_after: Vec<(u64, usize)>,
    /// How long Redis was actually down (stop to ready again).
    pub down: Duration,
    /// How long the load ran after the restart: the limit of the recovery times.
    pub after: Duration,
    pub error: Option<String>,
}

fn classify(route: usize, res: &TestResponse) -> (String, bool) {
    let mut label = res.status.to_string();
    let x_cache = res.header("x-cache").map(str::to_ascii_uppercase);
    if let Some(x) = &x_cache {
        let _ = write!(label, " {x}");
    }
    if res.status >= 400 {
        let code = serde_json::from_slice::<Value>(&res.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned));
        if let Some(code) = code {
            let _ = write!(label, " {code}");
        }
    }
    let unchecked = res.header("x-ratelimit-unchecked").is_some();
    if unchecked {
        label.push_str(" unchecked");
    }
    let right = match route {
        0 => res.status == 200 && matches!(x_cache.as_deref(), Some("HIT" | "MISS" | "STALE")),
        1 => res.status == 200,
        _ => res.status == 200 && !unchecked,
    };
    (label, right)
}

/// `INFO` readings: (since the load began, the server's `run_id`, `total_connections_received`).
type Readings = Arc<Mutex<Vec<(Duration, String, u64)>>>;

/// Reads `INFO` every [`POLL`] until `done`, reconnecting after the restart. Returns the
/// times at which it connected (its own connections, left out of the counts).
async fn poll_info(
    url: String,
    t0: Instant,
    readings: Readings,
    done: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut own = Vec::new();
    let mut conn: Option<MultiplexedConnection> = None;
    while !done.load(Ordering::Relaxed) {
        if conn.is_none() {
            let connect = async {
                redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await
            };
            if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
                own.push(t0.elapsed());
                conn = Some(c);
            }
        }
        if let Some(c) = conn.as_mut() {
            let mut cmd = redis::cmd("INFO");
            cmd.arg("server").arg("stats");
            let info = cmd.query_async::<String>(c);
            match tokio::time::timeout(Duration::from_millis(300), info).await {
                Ok(Ok(text)) => {
                    let field =
                        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
                    let run_id = field("run_id:").unwrap_or_default().to_owned();
                    let conns = field("total_connections_received:").and_then(|v| v.parse().ok());
                    if let Some(conns) = conns {
                        readings.lock().unwrap().push((t0.elapsed(), run_id, conns));
                    }
                }
                _ => conn = None,
            }
        }
        tokio::time::sleep(POLL).await;
    }
    own
}

/// Runs one outage row on `redis` (a fresh server: stopped and restarted here).
pub async fn run(mut redis: RedisServer, mode: &str, fast_path: bool, plan: Plan) -> OutageRow {
    let mut row =
        OutageRow { mode: mode.to_owned(), fast_path, after: plan.after, ..OutageRow::default() };
    if let Err(e) = run_inner(&mut redis, &mut row, plan).await {
        row.error = Some(e);
    }
    row
}

async fn run_inner(redis: &mut RedisServer, row: &mut OutageRow, plan: Plan) -> Result<(), String> {
    let app = crate::load::App::Host(crate::build_app(redis, row.fast_path)?);
    let tag = routes::next_tag("outage");
    let session = routes::create_session(&app, &format!("bench-{tag}")).await?;
    let requests: Arc<Vec<Req>> = Arc::new(vec![
        Req::new(Method::GET, "/api/cache/proxy/profiles/42"),
        Req::new(Method::GET, "/api/sessions/current").bearer(&session),
        Req::new(Method::POST, "/api/ratelimit/check")
            .bearer(routes::RATELIMIT_API_TOKEN)
            .json(json!({"policy": "bench_fw", "key": format!("outage:{tag}")})),
    ]);
    // Set-up and warm-up: the cache entry stored, the window opened, the pooled store's
    // connection made (fast path on). Every answer must be right before Redis goes away.
    for round in 0..5 {
        for (route, req) in requests.iter().enumerate() {
            let res = load::send(&app, req).await;
            let (label, right) = classify(route, &res);
            if !right && round > 0 {
                return Err(format!(
                    "{} before the outage: {label}: {}",
                    ROUTES[route],
                    res.text()
                ));
            }
        }
    }
    let mut client = redis.client().await;

    let t0 = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let readings: Readings = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_info(redis.url(), t0, readings.clone(), done.clone()));
    // Stops the poller on every way out, errors included (dropping `stop_tx` stops the load).
    struct Done(Arc<AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _done = Done(done.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut spawners = Vec::new();
    for route in 0..ROUTES.len() {
        let (app, requests, samples, mut stop_rx) =
            (app.clone(), requests.clone(), samples.clone(), stop_rx.clone());
        spawners.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate));
            // A starved machine sends fewer requests, not a burst afterwards.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                let index = {
                    let mut all = samples.lock().unwrap();
                    all.push(Sample {
                        route,
                        started: t0.elapsed(),
                        took: None,
                        label: "no answer".into(),
                        right: false,
                        connections: 0,
                    });
                    all.len() - 1
                };
                let (app, requests, samples) = (app.clone(), requests.clone(), samples.clone());
                // Its own task: a request that hangs must not hold up the load.
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let res = load::send(&app, &requests[route]).await;
                    let took = sent.elapsed();
                    let (label, right) = classify(route, &res);
                    let mut all = samples.lock().unwrap();
                    let s = &mut all[index];
                    (s.took, s.label, s.right, s.connections) =
                        (Some(took), label, right, res.redis_connections);
                });
            }
        }));
    }

    tokio::time::sleep_until((t0 + plan.before).into()).await;
    // Redis's data survives the restart, as it does an Azure failover (the replica has it):
    // saved here, loaded by the restarted server from its directory. Otherwise the session
    // would be gone and the cache empty, which measures a data loss, not a recovery.
    redis::cmd("SAVE")
        .query_async::<()>(&mut client)
        .await
        .map_err(|e| format!("SAVE before the stop: {e}"))?;
    drop(client);
    let stop = t0.elapsed();
    tokio::task::block_in_place(|| redis.stop());
    tokio::time::sleep(plan.down).await;
    // `start` panics when the server does not come back (its port taken meanwhile, say):
    // that fails this row, not the whole bench.
    let started = tokio::task::block_in_place(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| redis.start()))
    });
    if started.is_err() {
        return Err("redis-server did not restart on its port".into());
    }
    let restart = t0.elapsed();
    row.down = restart - stop;
    tokio::time::sleep_until((t0 + restart + plan.after).into()).await;
    let _ = stop_tx.send(true);
    for s in spawners {
        let _ = s.await;
    }
    let end = t0.elapsed();
    // Wait for the requests still in flight, up to the grace time.
    while t0.elapsed() < end + plan.grace {
        if samples.lock().unwrap().iter().all(|s| s.took.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gave_up = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    let own = poller.await.unwrap_or_default();
    let samples = samples.lock().unwrap().clone();
    let readings = readings.lock().unwrap().clone();

    for (route, name) in ROUTES.iter().enumerate() {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.route == route).collect();
        let between = |from: Duration, to: Duration| -> Vec<&Sample> {
            mine.iter().copied().filter(|s| s.started >= from && s.started < to).collect()
        };
        let first_second_end = (stop + BOUND).min(restart);
        let mut mix = BTreeMap::<String, usize>::new();
        for s in between(stop, restart) {
            *mix.entry(s.label.clone()).or_default() += 1;
        }
        let mut mix: Vec<(String, usize)> = mix.into_iter().collect();
        mix.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let since_restart = between(restart, Duration::MAX);
        let ok = |s: &Sample| s.right && s.took.is_some_and(|t| t <= BOUND);
        let recovered = |good: &dyn Fn(&Sample) -> bool| -> Option<Duration> {
            let last_bad = since_restart.iter().rposition(|s| !good(s));
            let first_good = match last_bad {
                Some(i) => since_restart.get(i + 1)?,
                None => since_restart.first()?,
            };
            Some(first_good.started.saturating_sub(restart))
        };
        let stuck: Vec<&Sample> = mine.iter().copied().filter(|s| s.took.is_none()).collect();
        let from_stop = |s: &Sample| s.started.as_millis() as i64 - stop.as_millis() as i64;
        let stuck_started_ms = match (stuck.first(), stuck.last()) {
            (Some(a), Some(b)) => Some((from_stop(a), from_stop(b))),
            _ => None,
        };
        let stuck_waited =
            stuck.last().map_or(Duration::ZERO, |s| gave_up.saturating_sub(s.started));
        row.routes.push(RouteOutage {
            name,
            before: Window::of(&between(Duration::ZERO, stop)),
            first_second: Window::of(&between(stop, first_second_end)),
            later: Window::of(&between(first_second_end, restart)),
            after_first_second: Window::of(&between(restart, restart + Duration::from_secs(1))),
            mix,
            right_again: recovered(&ok),
            pooled_again: recovered(&|s: &Sample| ok(s) && s.connections == 0),
            stuck: stuck.len(),
            stuck_started_ms,
            stuck_waited,
        });
    }

    // Redis's own count of new connections: the counter at a moment of one server run (the
    // restarted server starts again from 0), less the bench's own connections.
    let counter = |run: &str, at: Duration| -> u64 {
        readings.iter().filter(|r| r.1 == run && r.0 <= at).map(|r| r.2).next_back().unwrap_or(0)
    };
    let own_between =
        |from: Duration, to: Duration| own.iter().filter(|&&t| t > from && t <= to).count() as u64;
    let started_between = |from: Duration, to: Duration| {
        samples.iter().filter(|s| s.started >= from && s.started < to).count()
    };
    let first_run = readings.first().map(|r| r.1.clone()).unwrap_or_default();
    let last_run = readings.last().map(|r| r.1.clone()).unwrap_or_default();
    if first_run == last_run {
        return Err("no INFO reading after the restart".into());
    }
    // From the first reading (the load already running) to the last one before the stop.
    let first_at = readings.first().map(|r| r.0).unwrap_or_default();
    let last_before =
        readings.iter().filter(|r| r.1 == first_run).map(|r| r.0).next_back().unwrap_or(stop);
    row.connections_before = (
        counter(&first_run, last_before).saturating_sub(counter(&first_run, first_at)),
        started_between(first_at, last_before),
    );
    let seconds = plan.after.as_secs();
    for k in 0..seconds {
        let from = restart + Duration::from_secs(k);
        let to = from + Duration::from_secs(1);
        let conns = counter(&last_run, to).saturating_sub(counter(&last_run, from));
        row.connections_after
            .push((conns.saturating_sub(own_between(from, to)), started_between(from, to)));
    }
    Ok(())
}

/// A latency of a window, "–" when no request started in it.
fn lat(w: &Window, d: Option<Duration>) -> String {
    if w.requests == 0 {
        "–".into()
    } else {
        ms(d)
    }
}

fn ms(d: Option<Duration>) -> String {
    match d {
        None => "stuck".into(),
        Some(d) => {
            let x = d.as_secs_f64() * 1000.0;
            if x < 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.0}")
            }
        }
    }
}

fn seconds(d: Option<Duration>, fast_path: bool, limit: Duration) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None if !fast_path => "never (outbound: a connection per request)".into(),
        None => format!("not within {} s", limit.as_secs()),
    }
}

fn per_request((conns, requests): (u64, usize)) -> String {
    if requests == 0 {
        "–".into()
    } else {
        format!("{:.2} ({conns}/{requests})", conns as f64 / requests as f64)
    }
}

/// The outage section of the report.
pub fn markdown(rows: &[OutageRow], plan: &Plan) -> String {
    let mut w = String::new();
    if rows.is_empty() {
        return w;
    }
    let _ = writeln!(w, "## Redis stopped under load\n");
    let _ = writeln!(
        w,
        "{} routes at {:.0} requests/s each (open loop: every request on its own task), a fresh `redis-server` \
         and app per row. {:.0} s of load, then Redis killed, down {:.0} s, restarted on the same port with its \
         data (saved just before the stop), and {:.0} s more load. Requests unanswered {:.0} s after the load \
         ended count as stuck. Latency windows are by when a request *started*: the first second of the \
         outage, the rest of it (the issue's bound: within 1 s), and the first second after the restart.\n",
        ROUTES.len(),
        plan.rate,
        plan.before.as_secs_f64(),
        plan.down.as_secs_f64(),
        plan.after.as_secs_f64(),
        plan.grace.as_secs_f64(),
    );
    let _ = writeln!(
        w,
        "| Redis | Fast path | Route | before: p50 / p99 ms | outage 1st s: n, p99 / max ms | outage after 1st s: n, p99 / max ms | > 1 s (1st s / after) | stuck | answers during the outage | after restart, 1st s: p99 / max ms | right again after restart | pooled again after restart |"
    );
    let _ = writeln!(w, "|---|---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|");
    for row in rows {
        if let Some(e) = &row.error {
            let _ = writeln!(
                w,
                "| {} | {} | **failed**: {} | | | | | | | | | |",
                row.mode,
                on_off(row.fast_path),
                e.replace('|', "/").replace('\n', " ")
            );
            continue;
        }
        for r in &row.routes {
            let mix: Vec<String> = r.mix.iter().map(|(l, n)| format!("{n} × {l}")).collect();
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} / {} | {}, {} / {} | {}, {} / {} | {} / {} | {} | {} | {} / {} | {} | {} |",
                row.mode,
                on_off(row.fast_path),
                r.name,
                lat(&r.before, r.before.p50),
                lat(&r.before, r.before.p99),
                r.first_second.requests,
                lat(&r.first_second, r.first_second.p99),
                lat(&r.first_second, r.first_second.max),
                r.later.requests,
                lat(&r.later, r.later.p99),
                lat(&r.later, r.later.max),
                r.first_second.over_bound,
                r.later.over_bound,
                stuck_cell(r),
                mix.join(", "),
                lat(&r.after_first_second, r.after_first_second.p99),
                lat(&r.after_first_second, r.after_first_second.max),
                seconds(r.right_again, true, plan.after),
                seconds(r.pooled_again, row.fast_path, plan.after),
            );
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "New Redis connections per request, counted by Redis (`total_connections_received`, read every \
         100 ms; the bench's own connection left out), all routes together: before the stop, and in each \
         second after the restart.\n"
    );
    let seconds_after = rows.iter().map(|r| r.connections_after.len()).max().unwrap_or(0);
    let _ = write!(w, "| Redis | Fast path | Down | before the stop |");
    for k in 0..seconds_after {
        let _ = write!(w, " +{k}-{} s |", k + 1);
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "|---|---|--:|--:|{}", "--:|".repeat(seconds_after));
    for row in rows.iter().filter(|r| r.error.is_none()) {
        let _ = write!(
            w,
            "| {} | {} | {:.2} s | {} |",
            row.mode,
            on_off(row.fast_path),
            row.down.as_secs_f64(),
            per_request(row.connections_before)
        );
        for c in &row.connections_after {
            let _ = write!(w, " {} |", per_request(*c));
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w);
    w
}

fn stuck_cell(r: &RouteOutage) -> String {
    match r.stuck_started_ms {
        None => "0".into(),
        Some((a, b)) => format!(
            "{} (started {a:+} to {b:+} ms from the stop; unanswered after {:.0} s and more)",
            r.stuck,
            r.stuck_waited.as_secs_f64().floor()
        ),
    }
}

fn on_off(fast_path: bool) -> &'static str {
    if fast_path {
        "on"
    } else {
        "off"
    }
}

/// One line per route for the progress output.
pub fn progress(row: &OutageRow) {
    if let Some(e) = &row.error {
        eprintln!("  outage {} [{}]: FAILED: {e}", row.mode, on_off(row.fast_path));
        return;
    }
    for r in &row.routes {
        eprintln!(
            "  outage {} [fast path {}] {:<48} 1st s max {:>6} ms, later max {:>6} ms, >1 s {}/{}, stuck {}, right again {}, pooled again {}",
            row.mode,
            on_off(row.fast_path),
            r.name,
            ms(r.first_second.max),
            ms(r.later.max),
            r.first_second.over_bound,
            r.later.over_bound,
            stuck_cell(r),
            seconds(r.right_again, true, row.after),
            seconds(r.pooled_again, row.fast_path, row.after),
        );
    }
    let after: Vec<String> = row.connections_after.iter().map(|c| per_request(*c)).collect();
    eprintln!(
        "  outage {} [fast path {}] Redis connections/request: before {}, after restart by second: {}",
        row.mode,
        on_off(row.fast_path),
        per_request(row.connections_before),
        after.join(", ")
    );
}
