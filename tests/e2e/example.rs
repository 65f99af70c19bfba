//! The login example (`examples/login`, issue 29) under the real Spin, on a plain local
//! `redis-server` (dev echo needs Redis on loopback): its pages over HTTP, and the whole login
//! flow in headless Chromium (`$CHROMIUM`, else `chromium` / `chromium-browser` /
//! `google-chrome` on `PATH`), driven over the DevTools protocol. Without Spin or Chromium
//! a test prints one line and passes.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};
use spin_test_host::manifest::Manifest;
use spin_test_host::real_spin::{self, RealSpin, SpinResponse, SpinUp};
use spin_test_host::redis;
use spin_test_host::redis_server::RedisServer;
use tungstenite::{Message, WebSocket};

const EXAMPLE_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/login/spin.toml");
const EXAMPLE_RUNTIME_CONFIG: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/login/runtime-config.toml");
const PEPPER: &str = "example-e2e-pepper-0123456789abcdefghijklmnop";
/// How long a page may take to appear: generous, the machine is shared.
const PAGE_WAIT: Duration = Duration::from_secs(60);

/// The example app, built with its own build command, on `redis`.
async fn start_example(spin: &Path, redis: &RedisServer) -> RealSpin {
    let manifest = Manifest::load(Path::new(EXAMPLE_TOML)).expect("examples/login/spin.toml");
    spin_test_host::spin_build(&manifest).expect("the example builds");
    let config = std::fs::read_to_string(EXAMPLE_RUNTIME_CONFIG).expect("its runtime config");
    SpinUp::new(spin, EXAMPLE_TOML, &config)
        .variable("redis_port", redis.port().to_string())
        .variable("otp_pepper", PEPPER)
        .variable("otp_dev_echo", "true")
        .start()
        .await
        .expect("spin up starts the example")
}

async fn post_form(
    spin: &RealSpin,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> SpinResponse {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra);
    let request = real_spin::request(Method::POST, path, &headers, body.to_owned());
    spin.send_within(Duration::from_secs(30), request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", spin.output()))
}

/// The `data-status` of each panel entry of `pattern`, in order.
fn acted(page: &str, pattern: &str) -> Vec<String> {
    let marker = format!("data-pattern=\"{pattern}\" data-status=\"");
    page.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &page[at + marker.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The pages over plain HTTP: refusals a browser would not show easily.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_refusals() {
    let Some(spin) = crate::support::spin_or_skip("example::pages_and_refusals") else { return };
    let redis = RedisServer::plain();
    let app = start_example(&spin, &redis).await;
    // Two components within the 512 KiB per component (tests/integration/wasm_size.rs checks
    // every manifest; this keeps the example's own test honest about it too).
    let manifest = Manifest::load(Path::new(EXAMPLE_TOML)).unwrap();
    for id in ["login", "pages"] {
        let wasm = manifest.source_path(id).unwrap();
        let bytes = std::fs::metadata(&wasm).unwrap().len();
        assert!(bytes <= 512 * 1024, "{}: {bytes} bytes", wasm.display());
    }

    let home = app.get("/").await.unwrap();
    assert_eq!(home.status, 200, "{}", app.output());
    assert_eq!(home.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(home
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
    assert_eq!(acted(&home.text(), "session"), ["none"]);

    assert_eq!(app.get("/nope").await.unwrap().status, 404);
    assert_eq!(app.get("/login").await.unwrap().status, 405);
    let bad = post_form(&app, "/login", "email=not-an-address", &[]).await;
    assert_eq!(bad.status, 422, "{}", bad.text());

    // A form posted from another site is refused before any pattern runs.
    let cross =
        post_form(&app, "/login", "email=a%40b.example", &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(cross.status, 403, "{}", cross.text());
    assert!(acted(&cross.text(), "ratelimit").is_empty());

    // Per account: 5 codes asked for, whoever asks; the OTP cooldown answers 2-5 (the code
    // sent first is still good), the account's limit the 6th.
    let first = post_form(&app, "/login", "email=Eve%40Example.com", &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(acted(&first.text(), "ratelimit"), ["allowed", "allowed"]);
    assert_eq!(acted(&first.text(), "otp"), ["issued"]);
    assert!(first.text().contains("4 of 5 left"), "{}", first.text());
    for _ in 2..=5 {
        let again = post_form(&app, "/login", "email=eve%40example.com", &[]).await;
        assert_eq!(again.status, 429, "{}", again.text());
        assert_eq!(acted(&again.text(), "ratelimit"), ["allowed", "allowed"]);
        assert_eq!(acted(&again.text(), "otp"), ["refused"]);
        assert!(again.header("retry-after").is_some());
    }
    let sixth = post_form(&app, "/login", "email=eve%40example.com", &[]).await;
    assert_eq!(sixth.status, 429, "{}", sixth.text());
    assert_eq!(acted(&sixth.text(), "ratelimit"), ["allowed", "refused"]);
    assert!(acted(&sixth.text(), "otp").is_empty(), "no code asked for");
    assert!(sixth.header("retry-after").is_some(), "{:?}", sixth.headers);
    assert!(sixth.header("ratelimit-policy").is_some(), "{:?}", sixth.headers);
    // Another account from the same address still gets a code.
    let other = post_form(&app, "/login", "email=bob%40example.com", &[]).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert!(other.text().contains("13 of 20 left"), "{}", other.text());
    // The limits' keys are keyed hashes: no key name holds an email or the client's address.
    let mut client = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut client).await.unwrap();
    assert!(keys.iter().any(|k| k.contains("example_login_account")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("example.com") || k.contains("127.0.0.1")), "{keys:?}");

    // Without a session the profile sends the browser to the login page.
    let profile = app.get("/profile").await.unwrap();
    assert_eq!(profile.status, 303);
    assert_eq!(profile.header("location"), Some("/"));
}

/// The whole flow as a user clicks it, in headless Chromium: email, the code (a wrong one
/// first), the session cookie, the profile through the cache (miss, then hit), the
/// leaderboard, logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flow_in_chromium() {
    let test = "example::login_flow_in_chromium";
    let Some(spin) = crate::support::spin_or_skip(test) else { return };
    let Some(chromium) = chromium_binary() else {
        println!("skipped {test}: no Chromium (apt-get install chromium, or set CHROMIUM)");
        return;
    };
    let redis = RedisServer::plain();
    let app = start_example(&spin, &redis).await;
    let base = app.base_url();
    let result = tokio::task::spawn_blocking(move || login_flow(&chromium, &base)).await.unwrap();
    if let Err(e) = result {
        panic!("{e}\n--- the app's output:\n{}", app.output());
    }
}

fn login_flow(chromium: &Path, base: &str) -> Result<(), String> {
    let mut b = Browser::launch(chromium)?;
    b.goto(&format!("{base}/"))?;
    b.expect("document.querySelector('h1').textContent", "Log in")?;
    b.expect(&status_of("session"), "none")?;

    b.act(
        "document.getElementById('email').value = 'ada@example.com'; \
           document.getElementById('send-code').click()",
    )?;
    b.expect("location.pathname", "/login")?;
    b.expect("document.querySelector('h1').textContent", "Enter your code")?;
    b.expect(&statuses_of("ratelimit"), "allowed,allowed")?;
    b.expect(&status_of("otp"), "issued")?;
    let panel = b.text("document.getElementById('patterns').innerText")?;
    for quota in ["19 of 20 left", "4 of 5 left"] {
        check(panel.contains(quota), &format!("the panel shows {quota}: {panel}"))?;
    }
    let code = b.text("document.getElementById('dev-code').textContent")?;
    check(code.len() == 6 && code.bytes().all(|c| c.is_ascii_digit()), &format!("code {code:?}"))?;

    let wrong = if code == "000000" { "111111" } else { "000000" };
    b.act(&format!(
        "document.getElementById('code').value = '{wrong}'; document.getElementById('verify').click()"
    ))?;
    b.expect("location.pathname", "/login/code")?;
    let error = b.text("document.querySelector('.error').textContent")?;
    check(error.starts_with("Wrong code: 4 attempts left"), &format!("wrong code: {error}"))?;

    b.act(&format!(
        "document.getElementById('code').value = '{code}'; document.getElementById('verify').click()"
    ))?;
    b.expect("location.pathname", "/profile")?;
    b.expect("document.getElementById('name').textContent", "Ada")?;
    b.expect("document.getElementById('email').textContent", "ada@example.com")?;
    b.expect(&status_of("session"), "active")?;
    b.expect(&status_of("cache"), "miss")?;
    let served = b.text("document.getElementById('served-at').textContent")?;

    // The cookie as the browser stored it.
    let cookies = b.call("Network.getCookies", json!({ "urls": [base] }))?;
    let cookie = cookies["cookies"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "__Host-login-example"))
        .ok_or_else(|| format!("no session cookie: {cookies}"))?;
    check(cookie["httpOnly"] == true && cookie["secure"] == true, &format!("cookie {cookie}"))?;
    check(cookie["path"] == "/" && cookie["sameSite"] == "Lax", &format!("cookie {cookie}"))?;

    b.goto(&format!("{base}/profile"))?;
    b.expect(&status_of("cache"), "hit")?;
    b.expect("document.getElementById('served-at').textContent", &served)?;

    b.goto(&format!("{base}/leaderboard"))?;
    b.expect(&status_of("leaderboard"), "unranked")?;
    b.act("document.getElementById('play').click()")?;
    b.expect("location.pathname", "/leaderboard")?;
    b.expect("document.getElementById('my-rank').textContent", "you: rank 1, 1 points")?;
    b.act("document.getElementById('play').click()")?;
    b.expect("document.getElementById('my-rank').textContent", "you: rank 1, 2 points")?;
    let board = b.text("document.getElementById('board').innerText")?;
    check(
        board.contains("a***@example.com") && !board.contains("ada@"),
        &format!("board {board}"),
    )?;

    b.act("document.getElementById('logout').click()")?;
    b.expect("location.pathname", "/")?;
    b.expect("document.querySelector('h1').textContent", "Log in")?;
    b.expect(&status_of("session"), "none")?;
    b.goto(&format!("{base}/profile"))?;
    b.expect("location.pathname", "/")?;
    b.expect(&status_of("session"), "none")?;
    Ok(())
}

fn status_of(pattern: &str) -> String {
    format!("document.querySelector('[data-pattern={pattern}]')?.dataset.status")
}

fn statuses_of(pattern: &str) -> String {
    format!(
        "[...document.querySelectorAll('[data-pattern={pattern}]')].map(e => e.dataset.status).join()"
    )
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    ok.then_some(()).ok_or_else(|| format!("failed: {what}"))
}

fn chromium_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
    })
}

/// Headless Chromium and one page, over the DevTools protocol on one WebSocket.
struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _dir: tempfile::TempDir,
}

impl Browser {
    fn launch(binary: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("srp-chromium-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary);
        cmd.args([
            "--headless",
            // Root in containers and CI: Chromium's sandbox refuses to start as root.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", dir.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr")).map_err(|e| e.to_string())?,
        ));
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Chromium starts helper processes: a group of its own, stopped whole.
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", binary.display()))?;
        // Chromium writes the port it chose and the browser's WebSocket path here.
        let port_file = dir.path().join("DevToolsActivePort");
        let deadline = Instant::now() + PAGE_WAIT;
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.to_owned(), path.to_owned());
                }
            }
            if Instant::now() > deadline {
                let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
                return Err(format!("Chromium gave no DevTools port: {err}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| e.to_string())?;
        let mut browser = Self { child, ws, session: String::new(), next_id: 0, _dir: dir };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )?;
        browser.session = attached["sessionId"].as_str().unwrap_or_default().to_owned();
        browser.ws.get_mut().set_read_timeout(Some(PAGE_WAIT)).map_err(|e| e.to_string())?;
        Ok(browser)
    }

    /// One command (to the page once attached); events in between are skipped.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(message.to_string())).map_err(|e| e.to_string())?;
        loop {
            let text = match self.ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(format!("{method}: no answer"))
                }
                Err(e) => return Err(format!("{method}: {e}")),
            };
            let reply: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok(reply["result"].clone());
            }
        }
    }

    /// The value of a JavaScript expression in the page (an error while a page loads).
    fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let reply = self
            .call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }))?;
        if let Some(exception) = reply.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(reply["result"]["value"].clone())
    }

    fn text(&mut self, expression: &str) -> Result<String, String> {
        let value = self.eval(expression)?;
        Ok(value.as_str().map(|s| s.trim().to_owned()).unwrap_or_else(|| value.to_string()))
    }

    /// Runs `script`, which navigates (a click on a form's button, a new location), and waits
    /// for the next page to have loaded: the old page's marker gone, the new one complete.
    fn act(&mut self, script: &str) -> Result<(), String> {
        self.eval(&format!("window.srpOldPage = true; {script}; true"))?;
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let loaded = "window.srpOldPage === undefined && document.readyState === 'complete'";
            if self.eval(loaded).ok() == Some(json!(true)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no new page after {script}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn goto(&mut self, url: &str) -> Result<(), String> {
        self.act(&format!("location.href = {}", json!(url)))
    }

    /// The expression's text equals `expected` on the loaded page.
    fn expect(&mut self, expression: &str, expected: &str) -> Result<(), String> {
        let got = self.text(expression)?;
        if got != expected {
            let page = self.text("document.body.innerText").unwrap_or_default();
            return Err(format!("{expression}: {got:?}, expected {expected:?}; the page:\n{page}"));
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
