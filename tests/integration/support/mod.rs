//! What every module of the integration tests shares: the app under test, the error shape,
//! the two Redis paths, and `MONITOR` round-trip counting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use spin_test_host::monitor::{parse_line, SET_UP};
use spin_test_host::redis;
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{SentRequest, TestApp, TestAppBuilder, TestResponse};

/// The app's manifest.
pub const SPIN_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml");

/// An Azure access key's shape: base64 with `+`, `/` and `=`, which the Redis URL must
/// percent-encode.
pub const AZURE_STYLE_KEY: &str = "Az+ure/Key==0123456789abcdefghij";

/// The app of `spin.toml` with this Redis in its settings and its runtime config's stores.
///
/// The breaker's bound is [`PATIENT_STALL_MS`] here, not the default 250 ms: these tests fire
/// bursts of up to a thousand TLS handshakes through an in-process host on a loaded 2-core
/// machine, where the first answer of a burst can take seconds, and they check what the
/// services answer, not the bound. The breaker's own tests (`fast_path_outage`,
/// `silent_redis`) and the end-to-end suite run with the default.
pub fn builder(redis: &RedisServer) -> TestAppBuilder {
    redis
        .configure(TestApp::builder(SPIN_TOML).check_responses(check_response))
        .variable("redis_stall_ms", PATIENT_STALL_MS)
}

/// Where the app's problem types live (README "Errors").
pub const PROBLEM_TYPE_PREFIX: &str = "https://spin-redis-patterns.dev/problems/";
/// The problem type of a refused request (draft-ietf-httpapi-ratelimit-headers).
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// The error every route answers with: this status and an RFC 9457 problem with this `code`.
pub fn assert_error(res: &TestResponse, status: u16, code: &str) {
    assert_eq!(res.status, status, "{} {}", res.text(), res.logs);
    assert_problem(res);
    assert_eq!(res.json()["code"], code, "{}", res.text());
}

/// An `application/problem+json` body with `type` (the app's for its `code`, or the
/// rate limits' `quota-exceeded`), a non-empty `title`, `status` equal to the HTTP status, a
/// non-empty `detail` and a snake_case `code`.
pub fn assert_problem(res: &TestResponse) {
    let text = res.text();
    assert_eq!(res.header("content-type"), Some("application/problem+json"), "{text}");
    let body = res.json();
    let non_empty = |name: &str| body[name].as_str().is_some_and(|s| !s.is_empty());
    assert!(non_empty("title") && non_empty("detail"), "{text}");
    assert_eq!(body["status"], res.status, "{text}");
    let code = body["code"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "{text}"
    );
    let kind = body["type"].as_str().unwrap_or_default();
    if code == "rate_limited" {
        assert_eq!(kind, QUOTA_EXCEEDED, "{text}");
    } else {
        assert_eq!(kind, format!("{PROBLEM_TYPE_PREFIX}{code}"), "{text}");
    }
}

/// Run on every response an app built here answers a test with ([`builder`]): the exchange
/// must be one docs/openapi.yaml describes (`spin_test_host::openapi`, which also lists the
/// answers it leaves out: Spin's own), every answer of the app's components carries an
/// `x-request-id`, and every error of theirs is a problem (see [`assert_problem`]). Left out
/// of the last two: Spin's own answers (`/.well-known/spin/`, an empty 404 for an unrouted
/// path, an empty 500 when a component fails), and what the cache passes on from an origin
/// (`X-Cache` set: the body is the origin's).
pub fn check_response(sent: &SentRequest, res: &TestResponse) {
    spin_test_host::openapi::check(&sent.exchange(res.status, &res.headers, &res.body));
    let spins_own = res.body.is_empty() && res.header("content-type").is_none();
    if sent.path.starts_with("/.well-known/spin/") || spins_own && matches!(res.status, 404 | 500) {
        return;
    }
    assert!(
        res.header("x-request-id").is_some_and(|id| !id.is_empty()),
        "no x-request-id: {} {:?}",
        res.status,
        res.headers
    );
    if res.status >= 400 && res.header("x-cache").is_none() {
        assert_problem(res);
    }
}

/// Runs a timed scenario until one attempt ran fast enough to mean something: `attempt(n)`
/// returns false, before asserting anything that depends on it, when its steps did not fit
/// the time they had (a key's window ended, a deadline passed), and uses fresh keys or a
/// fresh server for each `n`. An idle machine passes on the first attempt; a busy one gets
/// more tries instead of a false failure, and every attempt that is judged is judged in full.
pub async fn until_fast_enough<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for n in 0..20 {
        if attempt(n).await {
            return;
        }
        eprintln!("{what}: attempt {n} was too slow to judge; again");
    }
    panic!("{what}: the machine never ran the scenario in time");
}

/// The breaker's bound in these tests ([`builder`]): far above anything a busy test machine
/// makes a healthy call take, so a slow moment cannot send a read the outbound way or refuse
/// it (the breaker has its own tests, in fast_path_outage.rs and silent_redis.rs).
pub const PATIENT_STALL_MS: &str = "60000";

/// Which Redis path serves hot reads: a connection per request, or Spin's pooled store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Outbound,
    FastPath,
}

impl Mode {
    /// The `redis_fast_path` setting.
    pub fn variable(self) -> &'static str {
        match self {
            Mode::Outbound => "false",
            Mode::FastPath => "true",
        }
    }

    /// Outbound connections of a read the fast path can answer: none on the fast path.
    pub fn read_connections(self) -> usize {
        match self {
            Mode::Outbound => 1,
            Mode::FastPath => 0,
        }
    }

    /// Pooled-store connections the app makes over its life once it read through it.
    pub fn store_connections(self) -> usize {
        match self {
            Mode::Outbound => 0,
            Mode::FastPath => 1,
        }
    }
}

/// For each `async fn name(mode: Mode)`, a module `name` with the tests `outbound` and
/// `fast_path`.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn outbound() {
                super::$name($crate::support::Mode::Outbound).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn fast_path() {
                super::$name($crate::support::Mode::FastPath).await
            }
        }
    )*};
}
pub(crate) use in_both_modes;

/// `INFO commandstats` as command -> calls (scripts' `redis.call`s included).
pub async fn command_calls(redis: &RedisServer) -> HashMap<String, u64> {
    let mut conn = redis.client().await;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands the host's clients send to set up a connection, and the test's own `INFO`.
pub const CONNECTION_SET_UP: &[&str] = &["info", "auth", "hello", "client", "client|setinfo"];

/// Commands run between two [`command_calls`] readings, leaving out those named in `ignored`.
pub fn commands_between(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    ignored: &[&[&str]],
) -> HashMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| !ignored.iter().any(|list| list.contains(&name.as_str())))
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, delta)| *delta > 0)
        .collect()
}

/// The commands clients send to a Redis server, watched with `MONITOR` and read with the
/// parser the benchmark uses: commands that scripts run inside Redis and connection set-up
/// (`AUTH`, `HELLO`, `CLIENT SETINFO`) are not round trips of a request and are left out.
pub struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
    probe: redis::aio::MultiplexedConnection,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    pub async fn start(redis: &RedisServer) -> Self {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut stream = client.get_async_monitor().await.unwrap().into_on_message::<String>();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let task = tokio::spawn(async move {
            while let Some(line) = stream.next().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut monitor = Self { lines, probe: redis.client().await, task };
        monitor.take().await;
        monitor
    }

    /// Top-level commands sent since the last call (upper case), in order. An `ECHO` on the
    /// monitor's own connection marks the end, so nothing sent before it is missed.
    pub async fn take(&mut self) -> Vec<String> {
        self.take_raw()
            .await
            .iter()
            .filter_map(|l| parse_line(l))
            .filter(|(in_script, name)| !in_script && !SET_UP.contains(&name.as_str()))
            .map(|(_, name)| name.to_ascii_uppercase())
            .collect()
    }

    /// Every `MONITOR` line since the last call, as Redis printed it (arguments included,
    /// commands scripts ran too), but for the monitor's own markers.
    pub async fn take_raw(&mut self) -> Vec<String> {
        let marker = format!("monitor-mark-{}", rand_suffix());
        let _: String = redis::cmd("ECHO").arg(&marker).query_async(&mut self.probe).await.unwrap();
        // A generous deadline: on a busy machine the stream may lag by seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(&marker)) {
            assert!(std::time::Instant::now() < deadline, "MONITOR never showed {marker}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        lines
            .into_iter()
            .take_while(|l| !l.contains(&marker))
            .filter(|l| !l.contains("\"ECHO\"") && !l.contains("\"echo\""))
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
