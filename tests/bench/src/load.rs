//! Driving one route: N concurrent workers sending requests in a loop for a fixed time, and
//! the latency figures of what they got back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use spin_test_host::real_spin::{self, RealSpin};
use spin_test_host::{TestApp, TestResponse};

/// Where the requests go: the test host in this process, or the real Spin (`spin up`), whose
/// workers each keep one connection open (keep-alive, as browsers and ingresses do).
#[derive(Clone)]
pub enum App {
    Host(TestApp),
    Spin(Arc<RealSpin>),
}

impl App {
    pub fn is_spin(&self) -> bool {
        matches!(self, App::Spin(_))
    }
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.body = value.to_string().into_bytes();
        self.header("content-type", "application/json")
    }
}

type NextFn = dyn Fn(usize, u64) -> Option<Req> + Send + Sync;
type AfterFn = dyn Fn(usize, &TestResponse) + Send + Sync;

/// What a route's workers send and what counts as a correct answer.
pub struct Workload {
    /// The request a worker sends next (worker index, global sequence number); `None` stops
    /// the worker (a pool of one-use items ran out).
    next: Box<NextFn>,
    /// The status every answer must have.
    expect_status: u16,
    /// A header every answer must carry, e.g. `X-Cache: HIT` for the cache-hit row.
    expect_header: Option<(&'static str, &'static str)>,
    /// Called with each correct answer (collects codes, session ids, ...).
    after: Option<Box<AfterFn>>,
}

impl Workload {
    pub fn new(
        expect_status: u16,
        next: impl Fn(usize, u64) -> Option<Req> + Send + Sync + 'static,
    ) -> Self {
        Self { next: Box::new(next), expect_status, expect_header: None, after: None }
    }

    pub fn expect_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.expect_header = Some((name, value));
        self
    }

    pub fn after(mut self, f: impl Fn(usize, &TestResponse) + Send + Sync + 'static) -> Self {
        self.after = Some(Box::new(f));
        self
    }

    fn check(&self, res: &TestResponse) -> Result<(), String> {
        if res.status != self.expect_status {
            return Err(format!("status {} (expected {})", res.status, self.expect_status));
        }
        if let Some((name, value)) = self.expect_header {
            let got = res.header(name).unwrap_or("");
            if !got.eq_ignore_ascii_case(value) {
                return Err(format!("{name}: {got:?} (expected {value:?})"));
            }
        }
        Ok(())
    }
}

/// What one load run measured.
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    /// The first wrong answer: what was wrong, the body and the component's logs.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
    /// Outbound Redis connections the host counted (`TestResponse::redis_connections`):
    /// in all, and the most that one request opened.
    pub host_connections: u64,
    pub max_host_connections: u64,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

/// One request; to the real Spin on a connection of its own.
pub async fn send(app: &App, req: &Req) -> TestResponse {
    match app {
        App::Host(app) => {
            let mut r = app.request(req.method.clone(), &req.path);
            for (name, value) in &req.headers {
                r = r.header(name, value);
            }
            r.body(req.body.clone()).send().await
        }
        App::Spin(spin) => match spin.connect().await {
            Ok(mut conn) => send_on(&mut conn, req).await,
            Err(e) => failed(&e.to_string()),
        },
    }
}

/// A request on a kept connection to the real Spin. Spin reports no per-request Redis
/// connections: the rows read them from Redis's `INFO` instead.
async fn send_on(conn: &mut real_spin::Connection, req: &Req) -> TestResponse {
    let headers: Vec<(&str, &str)> =
        req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let request = real_spin::request(req.method.clone(), &req.path, &headers, req.body.clone());
    match conn.send(request).await {
        Ok(res) => TestResponse {
            status: res.status.as_u16(),
            headers: res.headers,
            body: res.body,
            redis_connections: 0,
            logs: String::new(),
        },
        Err(e) => failed(&e.to_string()),
    }
}

/// A request that got no answer, as a status-0 response (counted as an error).
fn failed(why: &str) -> TestResponse {
    TestResponse {
        status: 0,
        headers: Default::default(),
        body: why.to_owned().into_bytes().into(),
        redis_connections: 0,
        logs: String::new(),
    }
}

/// `concurrency` workers, each sending its next request as soon as the previous one was
/// answered, until `duration` has passed (or `max_requests` were sent in all). Requests in
/// flight at the deadline are waited for and counted; the rate uses the real elapsed time.
pub async fn run(
    app: &App,
    workload: &Arc<Workload>,
    concurrency: usize,
    duration: Duration,
    max_requests: Option<u64>,
) -> LoadResult {
    let seq = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let host_connections = Arc::new(AtomicUsize::new(0));
    let max_host_connections = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (app, workload, seq) = (app.clone(), workload.clone(), seq.clone());
        let (errors, host_connections, max_host_connections, first_error) = (
            errors.clone(),
            host_connections.clone(),
            max_host_connections.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            // The real Spin: one kept connection per worker, made before the clock matters.
            let mut kept = match &app {
                App::Spin(spin) => spin.connect().await.ok(),
                App::Host(_) => None,
            };
            while start.elapsed() < duration {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if max_requests.is_some_and(|max| n >= max) {
                    break;
                }
                let Some(req) = (workload.next)(worker, n) else { break };
                let sent = Instant::now();
                let res = match kept.as_mut() {
                    Some(conn) => send_on(conn, &req).await,
                    None => send(&app, &req).await,
                };
                if res.status == 0 && app.is_spin() {
                    // The connection broke: a new one for the next request.
                    if let App::Spin(spin) = &app {
                        kept = spin.connect().await.ok();
                    }
                }
                latencies.push(sent.elapsed());
                host_connections.fetch_add(res.redis_connections, Ordering::Relaxed);
                max_host_connections.fetch_max(res.redis_connections, Ordering::Relaxed);
                match workload.check(&res) {
                    Ok(()) => {
                        if let Some(after) = &workload.after {
                            after(worker, &res);
                        }
                    }
                    Err(what) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error.lock().unwrap();
                        if first.is_none() {
                            let logs: String = res.logs.chars().take(600).collect();
                            let body: String = res.text().chars().take(400).collect();
                            *first = Some(format!(
                                "{} {}: {what}; body {body:?}; logs {logs:?}",
                                req.method, req.path
                            ));
                        }
                    }
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("worker panicked"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let first_error = first_error.lock().unwrap().take();
    LoadResult {
        requests: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed,
        latencies,
        host_connections: host_connections.load(Ordering::Relaxed) as u64,
        max_host_connections: max_host_connections.load(Ordering::Relaxed) as u64,
    }
}
