//! A Spin-compatible test host: runs an app's `.wasm` components from its `spin.toml` the way
//! Spin 3.6 does, so tests can drive real HTTP requests through the built components into a
//! real Redis. Test infrastructure only; the product runs on Spin.
//!
//! What it reproduces (each with tests in this crate or in the workspace's `tests/`):
//! - `spin.toml` v2: HTTP routes with Spin's precedence ([`routes`]), component sources,
//!   `allowed_outbound_hosts` with templates ([`allowed_hosts`]), application and component
//!   variables with defaults, `required` and `secret` ([`variables`]);
//! - variables from a runtime config's providers, then `SPIN_VARIABLE_*`, then defaults;
//! - a fresh instance per request, with the `spin-*` request headers Spin sets;
//! - `fermyon:spin/redis@2.0.0` with Spin's client, TLS stack, errors and reply flattening,
//!   one new connection per `open`, counted per request ([`TestResponse::redis_connections`]);
//! - Spin's Redis key-value store ([`key_value`]): stores from the runtime config (or
//!   [`TestAppBuilder::key_value_store`]), one connection per label for the app's life,
//!   counted by [`TestApp::key_value_connections`];
//! - outbound HTTP only to allowed hosts, `*.spin.internal` service chaining in-process;
//! - `spin build`: each component's `[component.X.build] command`, run once per process.

pub mod allowed_hosts;
mod compiled;
mod instance;
mod key_value;
pub mod manifest;
pub mod monitor;
pub mod openapi;
pub mod real_spin;
pub mod redis_server;
pub mod routes;
mod spin_host;
pub mod variables;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::bindings::ProxyPre;
use wasmtime_wasi_http::body::{HostIncomingBody, HyperIncomingBody, HyperOutgoingBody};
use wasmtime_wasi_http::types::{HostIncomingRequest, IncomingResponse};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use instance::InstanceState;
pub use instance::RequestStats;
use manifest::{Manifest, RouteConfig};
/// The `redis` client the host uses, for tests that read back what components wrote.
pub use redis;
use routes::{RouteMatch, Router};
use variables::{ProviderConfig, Variables};

/// Spin's limit on one header field's size for incoming requests.
const FIELD_SIZE_LIMIT: usize = 128 * 1024;
/// The address `spin up` listens on by default; used as the `Host` of test requests.
const DEFAULT_HOST: &str = "127.0.0.1:3000";
/// Service-chained requests report this client address, as in Spin.
const CHAINED_CLIENT_ADDR: &str = "0.0.0.0:0";

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let mut config = Config::new();
    config.wasm_component_model(true);
    Engine::new(&config).expect("wasmtime engine")
});

static LINKER: LazyLock<Linker<InstanceState>> = LazyLock::new(|| {
    let mut linker = Linker::new(&ENGINE);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link wasi");
    wasmtime_wasi_http::add_only_http_to_linker_async(&mut linker).expect("link wasi:http");
    spin_host::redis_iface::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |s| s)
        .expect("link redis");
    spin_host::variables_iface::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |s| s)
        .expect("link variables");
    spin_host::key_value_iface::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |s| s)
        .expect("link key-value");
    spin_host::wasi_kv_store::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |s| s)
        .expect("link wasi:keyvalue/store");
    spin_host::wasi_kv_atomics::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |s| s)
        .expect("link wasi:keyvalue/atomics");
    linker
});

/// Build commands already run by this process.
static BUILT: LazyLock<Mutex<HashSet<(PathBuf, String)>>> = LazyLock::new(Default::default);

/// Runs every component's build command, as `spin build` does, once per process.
pub fn spin_build(manifest: &Manifest) -> Result<()> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else { continue };
        let workdir = match &build.workdir {
            Some(w) => manifest.dir.join(w),
            None => manifest.dir.clone(),
        };
        if !built.insert((workdir.clone(), build.command.clone())) {
            continue;
        }
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&workdir)
            .output()
            .with_context(|| format!("running build command of {id}"))?;
        if !output.status.success() {
            bail!(
                "build of component {id} failed ({}):\n{}",
                build.command,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}

/// Configures and loads a [`TestApp`].
pub struct TestAppBuilder {
    manifest: PathBuf,
    runtime_config: Option<PathBuf>,
    key_value_stores: HashMap<String, String>,
    in_memory_stores: Vec<String>,
    env: HashMap<String, String>,
    working_dir: Option<PathBuf>,
    build: bool,
    response_check: Option<ResponseCheck>,
}

/// A check run on every response a test receives from [`TestApp::send`] (or a request
/// builder's `send`), with the request: it panics, failing the test that received the
/// response.
pub type ResponseCheck = fn(&SentRequest, &TestResponse);

/// A request as a test sent it, for [`ResponseCheck`]s.
#[derive(Debug, Clone)]
pub struct SentRequest {
    pub method: Method,
    /// Without the query.
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SentRequest {
    /// This request and `response` as an exchange for [`openapi::check`].
    pub fn exchange<'a>(
        &'a self,
        status: u16,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> openapi::Exchange<'a> {
        openapi::Exchange {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            request_headers: &self.headers,
            request_body: &self.body,
            status,
            headers,
            body,
        }
    }
}

impl TestAppBuilder {
    /// A runtime config file, as `spin up --runtime-config-file`.
    pub fn runtime_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_config = Some(path.into());
        self
    }

    /// A Redis key-value store, as a runtime config's `[key_value_store.LABEL]` with
    /// `type = "redis"` and this `url` would define it (and overriding one the file defines).
    pub fn key_value_store(mut self, label: &str, url: impl Into<String>) -> Self {
        self.key_value_stores.insert(label.to_owned(), url.into());
        self
    }

    /// An in-memory store, as `[key_value_store.LABEL]` with `type = "spin"` and no `path`
    /// defines it: one map for the app's life, shared by every instance.
    pub fn in_memory_key_value_store(mut self, label: &str) -> Self {
        self.in_memory_stores.push(label.to_owned());
        self
    }

    /// Runs `check` on every response the app answers a test with (not on service-chained
    /// calls between its components).
    pub fn check_responses(mut self, check: ResponseCheck) -> Self {
        self.response_check = Some(check);
        self
    }

    /// An environment variable of the `spin up` process (e.g. `SPIN_VARIABLE_REDIS_PORT`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets `SPIN_VARIABLE_<NAME>` for an application variable.
    pub fn variable(self, name: &str, value: impl Into<String>) -> Self {
        let key = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        self.env(key, value)
    }

    /// The directory `spin up` runs in, where Spin reads `.env`. Unset, no `.env` is read,
    /// so a developer's local `.env` beside spin.toml cannot change test outcomes.
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Skip running the build commands (the `.wasm` files must already exist).
    pub fn skip_build(mut self) -> Self {
        self.build = false;
        self
    }

    pub fn load(self) -> Result<TestApp> {
        let manifest = Manifest::load(&self.manifest)?;
        if self.build {
            spin_build(&manifest)?;
        }
        let runtime_config = match &self.runtime_config {
            Some(path) => RuntimeConfig::read(path)?,
            None => RuntimeConfig::default(),
        };
        let providers = runtime_config.providers();
        let mut key_value_stores =
            key_value::stores_from_runtime_config(&runtime_config.key_value_store)?;
        for (label, url) in &self.key_value_stores {
            key_value_stores
                .insert(label.clone(), key_value::Store::Redis(key_value::RedisStore::new(url)?));
        }
        for label in &self.in_memory_stores {
            key_value_stores.insert(label.clone(), key_value::Store::Memory(Default::default()));
        }
        let variables =
            Variables::resolve(&manifest, &providers, &self.env, self.working_dir.as_deref())?;
        for (id, component) in &manifest.components {
            for label in &component.key_value_stores {
                if !key_value_stores.contains_key(label) {
                    bail!("unknown key_value_stores label {label:?} for component {id:?}");
                }
            }
        }

        let router = Router::build(manifest.http_triggers.iter().map(|t| {
            let route = match &t.route {
                RouteConfig::Route(r) => Some(r.as_str()),
                RouteConfig::Private { .. } => None,
            };
            (t.component.as_str(), route)
        }))?;

        let ids: Vec<String> = manifest.components.keys().cloned().collect();
        let mut allowed_hosts = HashMap::new();
        let mut components = HashMap::new();
        for (id, component) in &manifest.components {
            let resolved = component
                .allowed_outbound_hosts
                .iter()
                .map(|h| variables.expand(h))
                .collect::<Result<Vec<_>>>()
                .and_then(|hosts| allowed_hosts::AllowedHosts::parse(&hosts, &ids))
                .map_err(|e| format!("{e:#}"));
            allowed_hosts.insert(id.clone(), resolved);

            let component = compiled::load(&ENGINE, &manifest.source_path(id)?)?;
            let pre = LINKER
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("linking component {id}"))?;
            components.insert(id.clone(), ProxyPre::new(pre)?);
        }

        Ok(TestApp {
            inner: Arc::new(AppInner {
                manifest,
                router,
                variables,
                allowed_hosts,
                key_value_stores,
                components,
                logs: Mutex::new(String::new()),
                background: Mutex::new(Vec::new()),
                response_check: self.response_check,
            }),
        })
    }
}

/// The parts of a Spin runtime config file the test host uses.
#[derive(Default, serde::Deserialize)]
struct RuntimeConfig {
    variables_provider: Option<Vec<ProviderConfig>>,
    config_provider: Option<Vec<ProviderConfig>>,
    #[serde(default)]
    key_value_store: HashMap<String, toml::Table>,
}

impl RuntimeConfig {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading runtime config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing runtime config {}", path.display()))
    }

    fn providers(&self) -> Vec<ProviderConfig> {
        self.variables_provider.clone().or_else(|| self.config_provider.clone()).unwrap_or_default()
    }
}

/// The variables providers of a Spin runtime config file, in order.
pub fn read_runtime_config(path: &Path) -> Result<Vec<ProviderConfig>> {
    Ok(RuntimeConfig::read(path)?.providers())
}

pub(crate) struct AppInner {
    pub(crate) manifest: Manifest,
    router: Router,
    pub(crate) variables: Variables,
    pub(crate) allowed_hosts: HashMap<String, Result<allowed_hosts::AllowedHosts, String>>,
    pub(crate) key_value_stores: key_value::Stores,
    components: HashMap<String, ProxyPre<InstanceState>>,
    logs: Mutex<String>,
    /// Handlers still running after their response was sent (work after the response).
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    response_check: Option<ResponseCheck>,
}

/// A loaded app, ready to serve requests.
#[derive(Clone)]
pub struct TestApp {
    inner: Arc<AppInner>,
}

/// What a request produced.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Outbound Redis connections opened while serving it (chained components included).
    pub redis_connections: usize,
    /// What the component instances wrote to stdout and stderr.
    pub logs: String,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body's text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// A request being built: `app.get("/health/cache").send().await`.
pub struct TestRequest<'a> {
    app: &'a TestApp,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    client_addr: SocketAddr,
}

impl TestRequest<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json").body(value.to_string())
    }

    /// The peer address Spin would see (`spin-client-addr`).
    pub fn client_addr(mut self, addr: &str) -> Self {
        self.client_addr = addr.parse().expect("socket address");
        self
    }

    pub async fn send(self) -> TestResponse {
        let mut builder = Request::builder().method(self.method).uri(&self.path);
        let has_host = self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
        if !has_host {
            builder = builder.header("host", DEFAULT_HOST);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        // As an HTTP/1.1 client does (curl, hyper): a body goes with its length, which Spin
        // passes on to the component among the request's headers.
        let framed = self.headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
        });
        if !self.body.is_empty() && !framed {
            builder = builder.header("content-length", self.body.len().to_string());
        }
        let request = builder.body(Bytes::from(self.body)).expect("valid request");
        self.app.send(request, self.client_addr).await
    }
}

impl TestApp {
    /// Starts configuring an app from a `spin.toml`.
    pub fn builder(manifest: impl Into<PathBuf>) -> TestAppBuilder {
        TestAppBuilder {
            manifest: manifest.into(),
            runtime_config: None,
            key_value_stores: HashMap::new(),
            in_memory_stores: Vec::new(),
            env: HashMap::new(),
            working_dir: None,
            build: true,
            response_check: None,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> TestRequest<'_> {
        TestRequest {
            app: self,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            client_addr: "127.0.0.1:54321".parse().unwrap(),
        }
    }

    pub fn get(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::POST, path)
    }

    pub fn delete(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::DELETE, path)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Connections the app's key-value stores have made or tried so far, all labels together:
    /// one per label used, for the app's life (the connection manager's own reconnects after
    /// Redis restarts are not counted; a failed first connect is, and is tried again).
    pub fn key_value_connections(&self) -> usize {
        self.inner.key_value_stores.values().map(key_value::Store::connections).sum()
    }

    /// Waits until every handler has finished, work after its response included (Spin
    /// answers as soon as a response's body is complete; the handler may go on).
    pub async fn settle(&self) {
        loop {
            let pending: Vec<_> = std::mem::take(&mut *self.inner.background.lock().unwrap());
            if pending.is_empty() {
                return;
            }
            for handle in pending {
                let _ = handle.await;
            }
        }
    }

    /// Everything every instance of this app has logged so far.
    pub fn logs(&self) -> String {
        self.inner.logs.lock().unwrap().clone()
    }

    /// Values of `secret = true` variables, to check that none was logged or returned.
    pub fn secret_values(&self) -> Vec<String> {
        self.inner.variables.secret_values().to_vec()
    }

    /// Serves one request as `spin up` would.
    pub async fn send(&self, request: Request<Bytes>, client_addr: SocketAddr) -> TestResponse {
        let stats = Arc::new(RequestStats::default());
        let sent = SentRequest {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or("").to_owned(),
            headers: request.headers().clone(),
            body: request.body().clone(),
        };
        let (parts, body) = request.into_parts();
        let body: HyperIncomingBody =
            Full::new(body).map_err(|never| match never {}).boxed_unsync();
        let request = Request::from_parts(parts, body);
        let (response, logs) = self.inner.serve(request, client_addr, &stats).await;
        let (parts, body) = response.into_parts();
        let response = TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            redis_connections: stats.redis_connections.load(Ordering::SeqCst),
            logs,
        };
        if let Some(check) = self.inner.response_check {
            check(&sent, &response);
        }
        response
    }
}

fn empty(status: StatusCode) -> Response<Bytes> {
    Response::builder().status(status).body(Bytes::new()).unwrap()
}

impl AppInner {
    /// Spin's `HttpServer::handle`: well-known paths, routing, 404 for unmatched paths,
    /// an empty 500 when the component fails.
    async fn serve(
        self: &Arc<Self>,
        mut request: Request<HyperIncomingBody>,
        client_addr: SocketAddr,
        stats: &Arc<RequestStats>,
    ) -> (Response<Bytes>, String) {
        let is_chaining_host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(allowed_hosts::service_chaining_target)
            .is_some();
        if is_chaining_host {
            request.headers_mut().remove(http::header::HOST);
        }
        let path = request.uri().path().to_owned();
        if let Some(well_known) = path.strip_prefix("/.well-known/spin/") {
            let response = match well_known {
                "health" => Response::new(Bytes::from_static(b"OK")),
                _ => empty(StatusCode::NOT_FOUND),
            };
            return (response, String::new());
        }
        let Some(route) = self.router.route(&path) else {
            return (empty(StatusCode::NOT_FOUND), String::new());
        };
        self.run(request, route, client_addr, stats).await
    }

    /// Runs a service-chained request (`http://COMPONENT.spin.internal/...`) in-process.
    async fn serve_chained(
        self: &Arc<Self>,
        component: &str,
        request: Request<HyperOutgoingBody>,
        stats: Arc<RequestStats>,
    ) -> Result<IncomingResponse, ErrorCode> {
        if !self.components.contains_key(component) {
            return Err(ErrorCode::DestinationNotFound);
        }
        let mut request = request;
        request.headers_mut().remove(http::header::HOST);
        let route = RouteMatch::synthetic(component, request.uri().path());
        let client_addr: SocketAddr = CHAINED_CLIENT_ADDR.parse().unwrap();
        let (response, _logs) = self.run(request, route, client_addr, &stats).await;
        let (parts, body) = response.into_parts();
        let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
        Ok(IncomingResponse {
            resp: Response::from_parts(parts, body),
            worker: None,
            between_bytes_timeout: Duration::from_secs(600),
        })
    }

    /// Instantiates the component afresh and calls its `wasi:http/incoming-handler`.
    async fn run(
        self: &Arc<Self>,
        request: Request<HyperIncomingBody>,
        route: RouteMatch,
        client_addr: SocketAddr,
        stats: &Arc<RequestStats>,
    ) -> (Response<Bytes>, String) {
        let logs = MemoryOutputPipe::new(1 << 20);
        let result = self.run_inner(request, &route, client_addr, stats, logs.clone()).await;
        let (response, text) = match result {
            Ok((response, answered_logs)) => (response, answered_logs),
            Err(e) => {
                let mut text = String::from_utf8_lossy(&logs.contents()).into_owned();
                // Spin logs the error and answers an empty 500.
                text.push_str(&format!("[host] error processing request: {e:#}\n"));
                (empty(StatusCode::INTERNAL_SERVER_ERROR), text)
            }
        };
        self.logs.lock().unwrap().push_str(&text);
        (response, text)
    }

    async fn run_inner(
        self: &Arc<Self>,
        request: Request<HyperIncomingBody>,
        route: &RouteMatch,
        client_addr: SocketAddr,
        stats: &Arc<RequestStats>,
        logs: MemoryOutputPipe,
    ) -> Result<(Response<Bytes>, String)> {
        let component = &self.manifest.components[&route.component];
        let mut wasi = WasiCtx::builder();
        wasi.stdout(logs.clone()).stderr(logs.clone());
        for (k, v) in &component.environment {
            wasi.env(k, v);
        }
        let state = InstanceState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            app: self.clone(),
            component: route.component.clone(),
            stats: stats.clone(),
            open_redis_connections: 0,
            open_key_value_stores: 0,
        };
        let mut store = Store::new(&ENGINE, state);
        let proxy = self.components[&route.component].instantiate_async(&mut store).await?;

        let (mut parts, body) = request.into_parts();
        parts.headers = spin_request_headers(&parts, route, client_addr)?;
        if parts.uri.authority().is_none() {
            let host = parts.headers.get(http::header::HOST).map(|h| h.to_str()).transpose()?;
            let host = host.unwrap_or("localhost");
            let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            parts.uri = format!("http://{host}{pq}").parse()?;
        }
        let body = HostIncomingBody::new(body, Duration::from_secs(600), FIELD_SIZE_LIMIT);
        let view = store.data_mut();
        let incoming =
            HostIncomingRequest::new(view, parts, Scheme::Http, Some(body), FIELD_SIZE_LIMIT)?;
        let incoming = WasiHttpView::table(view).push(incoming)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let outparam = view.new_response_outparam(tx)?;

        let task = tokio::spawn(async move {
            proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, outparam).await
        });
        let response = match rx.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => {
                task.await??;
                bail!("component answered with error code {code:?}");
            }
            Err(_) => {
                task.await??;
                bail!("guest never invoked `response-outparam::set` method");
            }
        };
        let (parts, body) = response.into_parts();
        let collected =
            body.collect().await.map_err(|e| anyhow!("reading response body: {e:?}"))?;
        // As Spin does, the answer goes out once its body is complete; the handler may still
        // be running (work after the response), and finishes in the background. Its later
        // output reaches the app's logs; `TestApp::settle` waits for it.
        // One snapshot splits the output at its last whole line: the lines written by the
        // answer go with it, the rest follows from the background task (a second read here
        // would log a line twice, a split line would interleave with other requests' lines).
        let app = self.clone();
        let contents = logs.contents();
        let answered = contents.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let answered_logs = contents.slice(..answered);
        let handle = tokio::spawn(async move {
            let outcome = task.await;
            let contents = logs.contents();
            let mut text =
                String::from_utf8_lossy(&contents[answered.min(contents.len())..]).into_owned();
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => text.push_str(&format!("[host] error after the response: {e:#}\n")),
                Err(e) => text.push_str(&format!("[host] handler task failed: {e}\n")),
            }
            app.logs.lock().unwrap().push_str(&text);
        });
        let mut background = self.background.lock().unwrap();
        background.retain(|h| !h.is_finished());
        background.push(handle);
        let answered_logs = String::from_utf8_lossy(&answered_logs).into_owned();
        Ok((Response::from_parts(parts, collected.to_bytes()), answered_logs))
    }
}

/// The request headers a Spin component sees: the client's, followed by Spin's own
/// (`spin-full-url`, `spin-path-info`, `spin-matched-route`, `spin-base-path`,
/// `spin-raw-component-route`, `spin-component-route`, `spin-client-addr`,
/// `spin-path-match-<name>`). Like Spin, a client-sent `spin-*` header is not removed:
/// Spin's value is appended after it (spin-sdk's `Request` keeps the last value).
fn spin_request_headers(
    parts: &http::request::Parts,
    route: &RouteMatch,
    client_addr: SocketAddr,
) -> Result<HeaderMap> {
    let host = match parts.headers.get(http::header::HOST) {
        Some(h) => h.to_str()?.to_owned(),
        None => "localhost".to_owned(),
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let mut spin_headers = vec![
        ("spin-path-info".to_owned(), route.trailing_wildcard.clone()),
        ("spin-full-url".to_owned(), format!("{scheme}://{host}{path_and_query}")),
        ("spin-matched-route".to_owned(), route.based_route.clone()),
        ("spin-base-path".to_owned(), "/".to_owned()),
        ("spin-raw-component-route".to_owned(), route.raw_route.clone()),
        ("spin-component-route".to_owned(), route.raw_route_or_prefix().to_owned()),
        ("spin-client-addr".to_owned(), client_addr.to_string()),
    ];
    for (name, value) in &route.named_wildcards {
        spin_headers
            .push((format!("spin-path-match-{}", name.to_ascii_lowercase()), value.clone()));
    }
    let mut headers = parts.headers.clone();
    headers.extend(spin_headers.into_iter().filter_map(|(n, v)| {
        Some((n.parse::<HeaderName>().ok()?, HeaderValue::from_str(&v).ok()?))
    }));
    Ok(headers)
}
