//! What the end-to-end tests share: Spin found or the test skipped, the project's app under
//! `spin up` against a TLS-only Redis with an Azure-shaped password, and requests.

use std::time::Duration;

use http::Method;
use serde_json::Value;
use spin_test_host::manifest::Manifest;
use spin_test_host::real_spin::{self, RealSpin, SpinResponse, SpinUp};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::SentRequest;

/// The app's manifest and runtime config, the files a user runs.
pub const SPIN_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml");
pub const RUNTIME_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config.toml");

/// An Azure access key's shape: base64 with `+`, `/` and `=`.
pub const AZURE_STYLE_KEY: &str = "Az+ure/Key==0123456789abcdefghij";
/// The bearer token of every token-guarded route in these tests (32+ characters).
pub const TOKEN: &str = "e2e-backend-token-7f3a9c-0123456789abcdef";

/// Every bearer-token route opened with [`TOKEN`].
pub const ALL_TOKENS: [(&str, &str); 5] = [
    ("sessions_api_token", TOKEN),
    ("ratelimit_api_token", TOKEN),
    ("leaderboard_api_token", TOKEN),
    ("locks_api_token", TOKEN),
    ("otp_api_token", TOKEN),
];

/// The Spin binary, or `None` after printing why `test` is skipped.
pub fn spin_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let found = real_spin::spin_binary();
    if found.is_none() {
        println!(
            "skipped {test}: no Spin (set SPIN, or put spin at ../shared/bin/spin or on PATH)"
        );
    }
    found
}

/// Which path serves hot reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Outbound,
    FastPath,
}

impl Mode {
    pub fn fast_path(self) -> &'static str {
        match self {
            Mode::Outbound => "false",
            Mode::FastPath => "true",
        }
    }
}

/// For each `async fn name(spin: &Path, mode: Mode)`, a module `name` with the tests
/// `outbound` and `fast_path`, each skipped with a line when there is no Spin.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn outbound() {
                let test = concat!(module_path!(), "::outbound");
                if let Some(spin) = $crate::support::spin_or_skip(test) {
                    super::$name(&spin, $crate::support::Mode::Outbound).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fast_path() {
                let test = concat!(module_path!(), "::fast_path");
                if let Some(spin) = $crate::support::spin_or_skip(test) {
                    super::$name(&spin, $crate::support::Mode::FastPath).await
                }
            }
        }
    )*};
}
pub(crate) use in_both_modes;

/// The project's runtime config with every Redis store pointed at `redis` (the file's
/// shape kept: a table the file lacks is missing here too).
pub fn runtime_config_for(redis: &RedisServer) -> String {
    let text = std::fs::read_to_string(RUNTIME_CONFIG).expect("runtime-config.toml");
    let mut config: toml::Table = toml::from_str(&text).expect("runtime-config.toml parses");
    if let Some(toml::Value::Table(stores)) = config.get_mut("key_value_store") {
        for (_, store) in stores.iter_mut() {
            if store.get("type").and_then(|t| t.as_str()) == Some("redis") {
                store["url"] = toml::Value::String(redis.url().replace("127.0.0.1", "localhost"));
            }
        }
    }
    toml::to_string(&config).unwrap()
}

/// The app and its Redis.
pub struct App {
    /// Shared with load tasks.
    pub spin: std::sync::Arc<RealSpin>,
    pub redis: RedisServer,
}

/// The project's app under the real Spin, on a new TLS-only Redis with an Azure-shaped
/// password, with `variables` set (as `SPIN_VARIABLE_*`).
pub async fn start(spin: &std::path::Path, mode: Mode, variables: &[(&str, &str)]) -> App {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let spin = start_on(spin, &redis, mode, variables).await;
    App { spin: std::sync::Arc::new(spin), redis }
}

/// The app on an existing Redis.
pub async fn start_on(
    spin: &std::path::Path,
    redis: &RedisServer,
    mode: Mode,
    variables: &[(&str, &str)],
) -> RealSpin {
    build();
    let mut up = SpinUp::new(spin, SPIN_TOML, &runtime_config_for(redis))
        .variable("redis_host", "localhost")
        .variable("redis_port", redis.port().to_string())
        .variable("redis_tls", "true")
        .variable("redis_access_key", AZURE_STYLE_KEY)
        .variable("redis_fast_path", mode.fast_path())
        .variable("origin_delay_ms", "0");
    for (name, value) in variables {
        up = up.variable(name, *value);
    }
    up.start().await.expect("spin up starts the app")
}

/// `spin build`, once per test process (the build commands of spin.toml).
pub fn build() {
    let manifest = Manifest::load(std::path::Path::new(SPIN_TOML)).expect("spin.toml loads");
    spin_test_host::spin_build(&manifest).expect("the components build");
}

/// A request with a JSON body (or none) and header lines.
pub fn req(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut lines: Vec<(&str, &str)> = headers.to_vec();
    let body = match body {
        Some(v) => {
            lines.push(("content-type", "application/json"));
            serde_json::to_vec(&v).unwrap()
        }
        None => Vec::new(),
    };
    real_spin::request(method, path, &lines, body)
}

/// `Authorization: Bearer` with [`TOKEN`].
pub fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

impl App {
    pub async fn send(
        &self,
        request: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> SpinResponse {
        // Generous: a busy machine; the outage tests measure their own bounds.
        let sent = sent(&request).await;
        let res = self
            .spin
            .send_within(Duration::from_secs(30), request)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.spin.output()));
        check_response(&sent, &res);
        res
    }

    pub async fn get(&self, path: &str) -> SpinResponse {
        self.send(req(Method::GET, path, &[], None)).await
    }
}

/// An error answer: status and an RFC 9457 problem with this code.
pub fn assert_error(res: &SpinResponse, status: u16, code: &str) {
    assert_eq!(res.status.as_u16(), status, "{}", res.text());
    assert_problem(res);
    assert_eq!(res.json()["code"], code, "{}", res.text());
}

/// `application/problem+json` with `type` (the app's for its `code`, or the rate limits'
/// `quota-exceeded`), non-empty `title` and `detail`, `status` equal to the HTTP status, and a
/// snake_case `code` (README "Errors").
pub fn assert_problem(res: &SpinResponse) {
    let text = res.text();
    assert_eq!(res.header("content-type"), Some("application/problem+json"), "{text}");
    let body = res.json();
    let non_empty = |name: &str| body[name].as_str().is_some_and(|s| !s.is_empty());
    assert!(non_empty("title") && non_empty("detail"), "{text}");
    assert_eq!(body["status"], res.status.as_u16(), "{text}");
    let code = body["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    let expected = match code {
        "rate_limited" => "https://iana.org/assignments/http-problem-types#quota-exceeded".into(),
        _ => format!("https://spin-redis-patterns.dev/problems/{code}"),
    };
    assert_eq!(body["type"], expected, "{text}");
}

/// A request's parts, kept for [`check_response`] (the body is cheap to clone).
pub async fn sent(request: &http::Request<http_body_util::Full<bytes::Bytes>>) -> SentRequest {
    use http_body_util::BodyExt;
    let body = request.body().clone().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    SentRequest {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().unwrap_or("").to_owned(),
        headers: request.headers().clone(),
        body,
    }
}

/// Run on every answer [`App::send`] gets: the exchange must be one docs/openapi.yaml
/// describes (`spin_test_host::openapi`, shared with the integration suite), the components'
/// answers carry an `x-request-id` and their errors are problems. Spin's own answers
/// (`/.well-known/spin/`, empty 404 and 500) and what the cache passes on from an origin
/// (`X-Cache` set) are left out of the last two.
pub fn check_response(sent: &SentRequest, res: &SpinResponse) {
    let status = res.status.as_u16();
    spin_test_host::openapi::check(&sent.exchange(status, &res.headers, &res.body));
    let spins_own = res.body.is_empty() && res.header("content-type").is_none();
    if sent.path.starts_with("/.well-known/spin/") || spins_own && matches!(status, 404 | 500) {
        return;
    }
    assert!(res.header("x-request-id").is_some_and(|id| !id.is_empty()), "{:?}", res.headers);
    if status >= 400 && res.header("x-cache").is_none() {
        assert_problem(res);
    }
}

/// `INFO stats` counter of the test's Redis.
pub async fn info_stat(redis: &RedisServer, name: &str) -> u64 {
    let mut conn = redis.client().await;
    let info: String =
        spin_test_host::redis::cmd("INFO").arg("stats").query_async(&mut conn).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in INFO stats"))
}
