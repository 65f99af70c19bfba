//! The real Spin, for the end-to-end suite and the benchmark: `spin up` of an app's own
//! `spin.toml` as a child process, and an HTTP/1.1 client that can keep one connection.
//!
//! Spin is found at `$SPIN`, else `../shared/bin/spin` beside the checkout, else `spin` on
//! `PATH` ([`spin_binary`]). Without one, callers skip with a printed line.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

/// The Spin binary the suite runs: `$SPIN`, else `../shared/bin/spin` beside the checkout,
/// else `spin` on `PATH`.
pub fn spin_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SPIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bin/spin");
    if shared.is_file() {
        return shared.canonicalize().ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("spin")).find(|p| p.is_file())
}

/// The version line Spin prints (`spin 3.6.3 (...)`).
pub fn spin_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How to start an app under the real Spin.
pub struct SpinUp {
    binary: PathBuf,
    manifest: PathBuf,
    runtime_config: String,
    env: Vec<(String, String)>,
}

impl SpinUp {
    /// `manifest` run with `runtime_config` (the file's text) by `binary`.
    pub fn new(binary: &Path, manifest: impl Into<PathBuf>, runtime_config: &str) -> Self {
        Self {
            binary: binary.to_owned(),
            manifest: manifest.into(),
            runtime_config: runtime_config.to_owned(),
            env: Vec::new(),
        }
    }

    /// Sets an application variable, as `SPIN_VARIABLE_<NAME>` (Spin's env provider).
    pub fn variable(self, name: &str, value: impl Into<String>) -> Self {
        self.env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()), value)
    }

    /// Sets an environment variable of the Spin process.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Starts Spin and waits until it answers `/.well-known/spin/health`.
    pub async fn start(self) -> Result<RealSpin> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut spin = self.spawn(Some(addr))?;
        // A cold start compiles every component (seconds on a busy 2-core machine).
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(res) = spin.get("/.well-known/spin/health").await {
                if res.status == StatusCode::OK {
                    return Ok(spin);
                }
            }
            if let Some(status) = spin.child.as_mut().unwrap().try_wait()? {
                bail!("spin up exited ({status}):\n{}", spin.output());
            }
            if Instant::now() > deadline {
                bail!("spin up did not answer within 180 s:\n{}", spin.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts an app with no HTTP trigger (Spin refuses `--listen` for it) and waits until
    /// its output holds `ready` (the Redis trigger prints `Active Channels` once subscribed).
    pub async fn start_without_http(self, ready: &str) -> Result<RealSpin> {
        let mut spin = self.spawn(None)?;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if spin.output().contains(ready) {
                return Ok(spin);
            }
            if let Some(status) = spin.child.as_mut().unwrap().try_wait()? {
                bail!("spin up exited ({status}):\n{}", spin.output());
            }
            if Instant::now() > deadline {
                bail!("spin up did not print {ready:?} within 180 s:\n{}", spin.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(self, listen: Option<SocketAddr>) -> Result<RealSpin> {
        let dir = tempfile::Builder::new().prefix("srp-spin-").tempdir()?;
        let config = dir.path().join("runtime-config.toml");
        std::fs::write(&config, &self.runtime_config)?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("up").arg("--from").arg(&self.manifest).arg("--runtime-config-file").arg(&config);
        if let Some(addr) = listen {
            cmd.arg("--listen").arg(addr.to_string());
        }
        cmd.arg("--log-dir")
            .arg(dir.path().join("logs"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            // Only what the test sets: no `.env` of the developer's, no variables of their shell.
            .current_dir(dir.path())
            .env_remove("RUNTIME_CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.path().join("spin.out"))?))
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("spin.err"))?));
        for (name, _) in std::env::vars() {
            if name.starts_with("SPIN_VARIABLE_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // `spin up` starts a child `spin trigger http`: a group of its own, stopped whole.
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", self.binary.display()))?;
        let addr = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        Ok(RealSpin { child: Some(child), addr, dir })
    }
}

/// A running `spin up`, stopped (its whole process group) when dropped.
pub struct RealSpin {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// One answer.
#[derive(Debug, Clone)]
pub struct SpinResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SpinResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 connection, kept open across requests (keep-alive).
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    /// Sends a request on this connection and reads the whole answer.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<SpinResponse> {
        let mut request = request;
        request.headers_mut().insert(http::header::HOST, self.host.parse()?);
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(SpinResponse { status: parts.status, headers: parts.headers, body })
    }

    pub async fn get(&mut self, path: &str) -> Result<SpinResponse> {
        self.send(request(Method::GET, path, &[], Vec::new())).await
    }
}

/// A request with these header lines and body.
pub fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).expect("a valid request")
}

impl RealSpin {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new keep-alive connection to the app.
    pub async fn connect(&self) -> Result<Connection> {
        let stream = TcpStream::connect(self.addr).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender, host: self.addr.to_string() })
    }

    /// One request on a connection of its own.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<SpinResponse> {
        self.connect().await?.send(request).await
    }

    pub async fn get(&self, path: &str) -> Result<SpinResponse> {
        self.send(request(Method::GET, path, &[], Vec::new())).await
    }

    /// One request, failing if no answer comes within `limit`.
    pub async fn send_within(
        &self,
        limit: Duration,
        request: Request<Full<Bytes>>,
    ) -> Result<SpinResponse> {
        tokio::time::timeout(limit, self.send(request))
            .await
            .map_err(|_| anyhow!("no answer within {limit:?}"))?
    }

    /// What the components wrote to stderr and stdout so far, and Spin's own output.
    pub fn output(&self) -> String {
        let mut out = String::new();
        for name in ["spin.out", "spin.err"] {
            out += &std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        }
        out.push_str(&self.component_logs());
        out
    }

    /// The components' stdout and stderr (`--log-dir`), every file.
    pub fn component_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths {
                out += &format!("--- {}\n", path.display());
                out += &std::fs::read_to_string(&path).unwrap_or_default();
            }
        }
        out
    }

    /// The Spin processes' CPU time so far (user + system), for CPU per request.
    pub fn cpu_time(&self) -> Duration {
        let Some(child) = &self.child else { return Duration::ZERO };
        let group = child.id();
        let mut ticks = 0u64;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
                // Fields after the command name, which ends with the last ')'.
                let Some((_, rest)) = stat.rsplit_once(')') else { continue };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                // rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
                if fields.len() > 13 && fields[2].parse::<u32>() == Ok(group) {
                    ticks += fields[11].parse::<u64>().unwrap_or(0);
                    ticks += fields[12].parse::<u64>().unwrap_or(0);
                }
            }
        }
        // Linux reports CPU time in clock ticks of 1/100 s.
        Duration::from_millis(ticks * 10)
    }

    /// Whether `spin up` has exited, and how.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops Spin (the whole process group).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[cfg(unix)]
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGKILL to a process group, through the `kill` command (no libc dependency).
#[cfg(unix)]
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for RealSpin {
    fn drop(&mut self) {
        self.stop();
    }
}
