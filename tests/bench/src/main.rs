//! Benchmarks every route through the Spin-compatible test host against local `redis-server`s,
//! plain and TLS with a password, at concurrency 1 and 16, with the fast path off and on where
//! a route has one, and reports throughput, latency, exact Redis commands and connections per
//! request, and each component's `.wasm` size. See docs/benchmarks.md.
//!
//! ```sh
//! cargo run -p bench                       # everything, writes docs/benchmarks-latest.md
//! cargo run -p bench -- --seconds 1 --filter session --concurrency 16
//! cargo run -p bench -- --chaining --seconds 5   # the library against service chaining
//! ```

mod chaining;
mod load;
mod outage;
mod redis_stats;
mod report;
mod routes;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spin_test_host::real_spin::{self, SpinUp};
use spin_test_host::redis::{self, aio::MultiplexedConnection};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::TestApp;

use load::App;
use report::Row;
use routes::{Group, Route, ROUTES};

/// An access key of the shape Azure gives (base64: `+`, `/`, `=`).
const TLS_PASSWORD: &str = "Bench+Azure/Key=0123456789abcdefABCDEF==";
/// Requests watched by `MONITOR` per row, to tell sent commands from script-internal ones.
const SAMPLE_REQUESTS: u64 = 10;
const ROW_PREFIX: &str = "BENCH-ROW ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The real Spin (`spin up`, see tests/host/src/real_spin.rs) over TLS with a password,
    /// keep-alive clients: the figures that count.
    Spin,
    Plain,
    Tls,
    /// TLS with `SSL_CERT_FILE` naming the whole system CA bundle (plus the test CA), run
    /// in a child process because OpenSSL reads that variable at every handshake.
    TlsSystemCa,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Spin => "Real Spin, TLS",
            Mode::Plain => "Test host, plain Redis",
            Mode::Tls => "Test host, TLS",
            Mode::TlsSystemCa => "Test host, TLS, system CA bundle",
        }
    }
}

struct Opts {
    seconds: f64,
    filters: Vec<String>,
    concurrency: Vec<usize>,
    modes: Vec<Mode>,
    out: Option<PathBuf>,
    write: bool,
    /// Internal: run as the system-CA child, print rows as JSON lines.
    child: bool,
    /// Only the library-against-service-chaining rows (chaining.rs).
    chaining: bool,
    /// Run the outage rows (`--no-outage` skips them; a filtered run has them only when a
    /// filter matches "outage").
    outage: bool,
    outage_plan: outage::Plan,
    args: Vec<String>,
}

const USAGE: &str = "usage: cargo run -p bench -- [--seconds S] [--filter TEXT]... \
[--concurrency 1,16] [--redis plain,tls,system-ca] [--outage-rate N | --no-outage]
[--out FILE | --no-write]

  --seconds S        length of each timed row (default 1)
  --filter TEXT      only routes whose name or request contains TEXT (repeatable; the
                     baselines always run). A filtered run does not write the report file.
  --concurrency LIST concurrent clients per row (default 1,16)
  --redis LIST       plain, tls, system-ca (TLS with the full system CA bundle as
                     SSL_CERT_FILE, for a few routes) (default: all three)
  --outage-rate N    requests/s of each route in the outage rows (default 50)
  --no-outage        skip the outage rows (Redis stopped under load, fast path off and on,
                     plain and TLS: about 15 s each)
  --out FILE         write the Markdown report here (default docs/benchmarks-latest.md)
  --no-write         print only
  --chaining         only the library in-process against service chaining (real Spin;
                     --seconds per row, --out FILE for the Markdown table)";

fn parse_args() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Opts {
        seconds: 1.0,
        filters: Vec::new(),
        concurrency: vec![1, 16],
        modes: vec![Mode::Spin, Mode::Plain, Mode::Tls, Mode::TlsSystemCa],
        out: None,
        write: true,
        child: false,
        chaining: false,
        outage: true,
        outage_plan: outage::Plan::default(),
        args: args.clone(),
    };
    let mut defaults = true;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--seconds" => {
                opts.seconds =
                    value()?.parse().map_err(|_| "--seconds takes a number".to_owned())?;
                if !(opts.seconds > 0.0 && opts.seconds <= 600.0) {
                    return Err("--seconds must be between 0 and 600".into());
                }
            }
            "--filter" => {
                opts.filters.push(value()?.to_ascii_lowercase());
                defaults = false;
            }
            "--concurrency" => {
                opts.concurrency = value()?
                    .split(',')
                    .map(|c| c.trim().parse().ok().filter(|&c: &usize| (1..=1024).contains(&c)))
                    .collect::<Option<_>>()
                    .ok_or("--concurrency takes numbers from 1 to 1024, comma separated")?;
                defaults = false;
            }
            "--redis" => {
                opts.modes = value()?
                    .split(',')
                    .map(|m| match m.trim() {
                        "spin" => Ok(Mode::Spin),
                        "plain" => Ok(Mode::Plain),
                        "tls" => Ok(Mode::Tls),
                        "system-ca" => Ok(Mode::TlsSystemCa),
                        other => Err(format!("unknown --redis mode {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
                defaults = false;
            }
            "--outage-rate" => {
                opts.outage_plan.rate =
                    value()?.parse().map_err(|_| "--outage-rate takes a number".to_owned())?;
                if !(opts.outage_plan.rate >= 1.0 && opts.outage_plan.rate <= 1000.0) {
                    return Err("--outage-rate must be between 1 and 1000".into());
                }
                defaults = false;
            }
            "--no-outage" => {
                opts.outage = false;
                defaults = false;
            }
            "--out" => opts.out = Some(PathBuf::from(value()?)),
            "--no-write" => opts.write = false,
            "--child" => opts.child = true,
            "--chaining" => opts.chaining = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !opts.filters.is_empty() && !opts.filters.iter().any(|f| "outage".contains(f.as_str())) {
        opts.outage = false;
    }
    // A partial run must not overwrite the figures the docs quote, unless asked to.
    if !defaults && opts.out.is_none() {
        opts.write = false;
    }
    Ok(opts)
}

/// The repository root (this crate is `tests/bench`).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/bench is two levels down")
}

fn selected(opts: &Opts, route: &Route) -> bool {
    route.id.is_floor()
        || opts.filters.is_empty()
        || opts.filters.iter().any(|f| {
            route.name.to_ascii_lowercase().contains(f)
                || route.request.to_ascii_lowercase().contains(f)
        })
}

/// spin.toml with the bench's settings and `redis_fast_path` as given, on `redis`. The stores
/// (the fast path's and its breaker's) come from `RedisServer::configure`, as in the tests,
/// so the bench follows whatever runtime config the app needs.
pub(crate) fn build_app(redis: &RedisServer, fast: bool) -> Result<TestApp, String> {
    let mut builder = redis
        .configure(TestApp::builder(root().join("spin.toml")))
        .variable("redis_fast_path", fast.to_string());
    for (name, value) in bench_settings() {
        builder = builder.variable(name, value);
    }
    builder.load().map_err(|e| format!("loading spin.toml: {e:#}"))
}

/// The bench's settings of spin.toml's variables, on the test host and under Spin alike.
fn bench_settings() -> Vec<(&'static str, String)> {
    vec![
        ("otp_pepper", routes::OTP_PEPPER.into()),
        ("otp_dev_echo", "true".into()),
        ("sessions_api_token", routes::SESSIONS_TOKEN.into()),
        ("ratelimit_policies", routes::ratelimit_policies()),
        ("ratelimit_gateway_policy", "bench_gw".into()),
        ("ratelimit_admin_token", routes::ADMIN_TOKEN.into()),
        ("ratelimit_api_token", routes::RATELIMIT_API_TOKEN.into()),
        ("otp_api_token", routes::OTP_API_TOKEN.into()),
        ("leaderboard_api_token", routes::LEADERBOARD_TOKEN.into()),
        ("locks_api_token", routes::LOCKS_TOKEN.into()),
        // The demo origin answers at once: a miss then costs what the cache adds.
        ("origin_delay_ms", "0".into()),
    ]
}

/// The app (fast path off and on) and the floors app under the real Spin, on `redis`.
async fn load_spin_group(redis: &RedisServer, spin: &Path) -> Result<Group, String> {
    let rc = || {
        // Every Redis store of the file on this server (as the end-to-end suite does).
        let text = std::fs::read_to_string(root().join("runtime-config.toml"))
            .map_err(|e| e.to_string())?;
        let mut config: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
        if let Some(toml::Value::Table(stores)) = config.get_mut("key_value_store") {
            for (_, store) in stores.iter_mut() {
                if store.get("type").and_then(|t| t.as_str()) == Some("redis") {
                    store["url"] = toml::Value::String(redis.url());
                }
            }
        }
        toml::to_string(&config).map_err(|e| e.to_string())
    };
    let with_redis = |up: SpinUp| {
        up.variable("redis_host", "127.0.0.1")
            .variable("redis_port", redis.port().to_string())
            .variable("redis_tls", "true")
            .variable("redis_access_key", TLS_PASSWORD)
    };
    let app = |fast: bool| {
        let up = SpinUp::new(spin, root().join("spin.toml"), &rc()?);
        Ok::<_, String>(
            bench_variables(with_redis(up)).variable("redis_fast_path", fast.to_string()),
        )
    };
    let start = |up: SpinUp| async move {
        up.start().await.map(|s| App::Spin(Arc::new(s))).map_err(|e| format!("{e:#}"))
    };
    let floors = SpinUp::new(spin, root().join("tests/floors/spin.toml"), &rc()?)
        .variable("redis_url", redis.url());
    Ok(Group {
        app: start(app(false)?).await?,
        app_fast: start(app(true)?).await?,
        probe: start(with_redis(floors)).await?,
        redis_url: redis.url(),
        tag: routes::next_tag("g"),
        otp_codes: Arc::new(Mutex::new(Vec::new())),
        sessions: Arc::new(Mutex::new(Vec::new())),
    })
}

/// The bench's settings, as Spin variables.
fn bench_variables(up: SpinUp) -> SpinUp {
    bench_settings().into_iter().fold(up, |up, (name, value)| up.variable(name, value))
}

fn load_group(redis: &RedisServer) -> Result<Group, String> {
    let app = |fast: bool| build_app(redis, fast);
    let probe = redis
        .configure(TestApp::builder(root().join("tests/host/fixtures/probe.toml")))
        .variable("secret_thing", "unused")
        .load()
        .map_err(|e| format!("loading the probe fixture: {e:#}"))?;
    Ok(Group {
        app: App::Host(app(false)?),
        app_fast: App::Host(app(true)?),
        probe: App::Host(probe),
        redis_url: redis.url(),
        tag: routes::next_tag("g"),
        otp_codes: Arc::new(Mutex::new(Vec::new())),
        sessions: Arc::new(Mutex::new(Vec::new())),
    })
}

fn per_request(calls: u64, requests: u64) -> f64 {
    if requests == 0 {
        f64::NAN
    } else {
        calls as f64 / requests as f64
    }
}

/// Warm-up, a `MONITOR` sample, then the timed run between two `INFO` readings.
async fn measure(
    group: &Group,
    conn: &mut MultiplexedConnection,
    mode: Mode,
    index: usize,
    fast_path: Option<bool>,
    concurrency: usize,
    seconds: f64,
) -> Row {
    let route = &ROUTES[index];
    let mut row = Row {
        mode: mode.label().to_owned(),
        concurrency,
        route: index,
        fast_path,
        ..Row::default()
    };
    let fp = fast_path.unwrap_or(false);
    let app = group.app_for(route, fp).clone();
    let workload = match routes::workload(group, route, fp, concurrency).await {
        Ok(w) => Arc::new(w),
        Err(e) => {
            row.first_error = Some(format!("set-up failed: {e}"));
            row.errors = 1;
            return row;
        }
    };
    // Warm-up: compiled code paths, scripts loaded into Redis, the fast path's pooled
    // connection opened. Not counted.
    let warm_requests = (2 * concurrency as u64).max(10);
    let warm =
        load::run(&app, &workload, concurrency, Duration::from_secs(30), Some(warm_requests)).await;
    let sample = redis_stats::monitor_sample(
        &group.redis_url,
        conn,
        load::run(&app, &workload, 1, Duration::from_secs(30), Some(SAMPLE_REQUESTS)),
    )
    .await;
    let sample = match sample {
        Ok((_, sample)) => sample,
        Err(e) => {
            eprintln!("  MONITOR failed ({e}); treating every command as sent");
            redis_stats::Sample::default()
        }
    };

    let before = redis_stats::snapshot(conn).await;
    let result =
        load::run(&app, &workload, concurrency, Duration::from_secs_f64(seconds), None).await;
    let after = redis_stats::snapshot(conn).await;

    row.requests = result.requests;
    row.errors = result.errors + warm.errors;
    row.first_error = warm.first_error.clone().or_else(|| result.first_error.clone());
    row.seconds = result.elapsed.as_secs_f64();
    row.rps = result.rps();
    row.p50 = result.percentile_ms(50.0);
    row.p99 = result.percentile_ms(99.0);
    row.max = result.max_ms();
    row.host_connections = per_request(result.host_connections, result.requests);
    row.max_host_connections = result.max_host_connections;
    match (before, after) {
        (Ok(before), Ok(after)) => {
            let d = redis_stats::delta(&before, &after);
            row.connections = per_request(d.connections, result.requests);
            row.all_commands = per_request(d.commands, result.requests);
            let mut sent = Vec::new();
            let mut in_script = Vec::new();
            let mut set_up = Vec::new();
            for (name, &calls) in &d.calls {
                let n = per_request(calls, result.requests);
                if redis_stats::SET_UP.contains(&name.as_str()) {
                    set_up.push((name.clone(), n));
                    continue;
                }
                let share = sample.sent_fraction(name);
                if share > 0.0 {
                    sent.push((name.clone(), n * share));
                }
                if share < 1.0 {
                    in_script.push((name.clone(), n * (1.0 - share)));
                }
            }
            let by_count = |v: &mut Vec<(String, f64)>| {
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)))
            };
            by_count(&mut sent);
            by_count(&mut in_script);
            by_count(&mut set_up);
            (row.sent, row.in_script, row.set_up) = (sent, in_script, set_up);
        }
        (Err(e), _) | (_, Err(e)) => {
            row.first_error.get_or_insert(format!("INFO failed: {e}"));
            row.errors += 1;
        }
    }
    row
}

/// Every selected route of one Redis mode, at each concurrency, baseline first.
async fn run_mode(
    opts: &Opts,
    mode: Mode,
    rows: &mut Vec<Row>,
    emit: &dyn Fn(&Row),
) -> Result<(), String> {
    let redis = match mode {
        Mode::Plain => RedisServer::plain(),
        Mode::Spin | Mode::Tls | Mode::TlsSystemCa => RedisServer::tls(TLS_PASSWORD),
    };
    eprintln!(
        "== {}: redis-server on 127.0.0.1:{}; loading the apps (builds the components)",
        mode.label(),
        redis.port()
    );
    let loading = Instant::now();
    let group = if mode == Mode::Spin {
        let Some(spin) = real_spin::spin_binary() else {
            eprintln!(
                "   skipped: no Spin (set SPIN, or put spin at ../shared/bin/spin or on PATH)"
            );
            return Ok(());
        };
        eprintln!("   {}", real_spin::spin_version(&spin));
        let manifest = spin_test_host::manifest::Manifest::load(&root().join("spin.toml"))
            .map_err(|e| e.to_string())?;
        spin_test_host::spin_build(&manifest).map_err(|e| e.to_string())?;
        let floors =
            spin_test_host::manifest::Manifest::load(&root().join("tests/floors/spin.toml"))
                .map_err(|e| e.to_string())?;
        spin_test_host::spin_build(&floors).map_err(|e| e.to_string())?;
        load_spin_group(&redis, &spin).await?
    } else {
        load_group(&redis)?
    };
    eprintln!("   loaded in {:.1} s", loading.elapsed().as_secs_f64());
    let mut conn = redis.client().await;
    let _: () = redis::cmd("SET")
        .arg("bench:baseline")
        .arg("a small value")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    for &c in &opts.concurrency {
        for (index, route) in ROUTES.iter().enumerate() {
            if !selected(opts, route)
                || (mode == Mode::TlsSystemCa && !route.ca_comparison)
                || (mode != Mode::Spin && route.id.spin_only())
            {
                continue;
            }
            let variants: &[Option<bool>] =
                if route.fast_path { &[Some(false), Some(true)] } else { &[None] };
            for &fp in variants {
                let row = measure(&group, &mut conn, mode, index, fp, c, opts.seconds).await;
                emit(&row);
                rows.push(row);
            }
        }
        // The baseline again: if the machine got slower or faster during the group (other
        // work on it), the two baseline runs differ and the ratios use their mean.
        let mut row = measure(&group, &mut conn, mode, 0, None, c, opts.seconds).await;
        row.repeat = true;
        emit(&row);
        rows.push(row);
    }
    Ok(())
}

fn progress(row: &Row) {
    let fp = match row.fast_path {
        Some(true) => " [fast path]",
        Some(false) => " [outbound]",
        None => "",
    };
    eprintln!(
        "  c={:<2} {:<40} {:>6.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  round trips {:>5}  conns {:>5}{}",
        row.concurrency,
        format!("{}{fp}", row.route().name),
        row.rps,
        row.p50,
        row.p99,
        report::num(row.round_trips()),
        report::num(row.connections),
        if row.failed() {
            format!("  ERRORS {}: {}", row.errors, row.first_error.as_deref().unwrap_or("no requests"))
        } else {
            String::new()
        }
    );
}

/// The system CA bundle plus the test CA, in the test-TLS directory (the test host insists
/// that `SSL_CERT_FILE` lies there).
fn system_ca_file() -> Result<PathBuf, String> {
    let test_ca = PathBuf::from(
        std::env::var("SSL_CERT_FILE")
            .map_err(|_| "SSL_CERT_FILE is not set (run through cargo)")?,
    );
    if !test_ca.exists() {
        // Starting a TLS server generates the test CA.
        drop(RedisServer::tls(TLS_PASSWORD));
    }
    // BENCH_CA_BUNDLE measures another bundle in its place, such as the Azure roots of
    // deploy/scripts/build-ca-bundle.sh.
    let chosen = std::env::var("BENCH_CA_BUNDLE").ok();
    let system = match &chosen {
        Some(path) => path.as_str(),
        None => [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no system CA bundle found")?,
    };
    let mut bundle = std::fs::read(system).map_err(|e| format!("{system}: {e}"))?;
    bundle.extend(std::fs::read(&test_ca).map_err(|e| format!("{}: {e}", test_ca.display()))?);
    let path = test_ca.with_file_name("system-plus-test-ca.pem");
    std::fs::write(&path, bundle).map_err(|e| format!("{}: {e}", path.display()))?;
    let roots = String::from_utf8_lossy(&std::fs::read(system).unwrap_or_default())
        .matches("BEGIN CERTIFICATE")
        .count();
    eprintln!("== system CA bundle: {system} ({roots} roots) + the test CA");
    Ok(path)
}

/// Runs the system-CA rows in a child process with `SSL_CERT_FILE` pointing at the bundle.
fn run_system_ca_child(opts: &Opts) -> Result<Vec<Row>, String> {
    let bundle = system_ca_file()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "--child",
        "--redis",
        "system-ca",
        "--no-write",
        "--seconds",
        &opts.seconds.to_string(),
    ])
    .arg("--concurrency")
    .arg(opts.concurrency.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","));
    for f in &opts.filters {
        cmd.args(["--filter", f]);
    }
    let out = cmd
        .env("SSL_CERT_FILE", &bundle)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("the system-CA run failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(ROW_PREFIX))
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter_map(|v| Row::from_json(&v))
        .collect())
}

async fn run(opts: Opts) -> Result<(), String> {
    let started = Instant::now();
    let mut machine = report::machine(opts.seconds, root());
    let mut rows = Vec::new();
    let mut outages = Vec::new();
    let mut notes = Vec::new();

    if opts.child {
        let emit = |row: &Row| {
            progress(row);
            println!("{ROW_PREFIX}{}", row.to_json());
        };
        return run_mode(&opts, Mode::TlsSystemCa, &mut rows, &emit).await;
    }
    for &mode in opts.modes.iter().filter(|&&m| m != Mode::TlsSystemCa) {
        run_mode(&opts, mode, &mut rows, &progress).await?;
    }
    if opts.modes.contains(&Mode::TlsSystemCa) {
        eprintln!(
            "== {}: in a child process with SSL_CERT_FILE = system bundle + test CA",
            Mode::TlsSystemCa.label()
        );
        match run_system_ca_child(&opts) {
            Ok(child_rows) => rows.extend(child_rows),
            Err(e) => notes.push(format!("The system-CA comparison did not run: {e}.")),
        }
    }

    if opts.outage {
        for &mode in opts.modes.iter().filter(|&&m| m != Mode::TlsSystemCa) {
            for fast_path in [false, true] {
                // A fresh server and app per row: an earlier outage leaves the fast path's
                // store connections in whatever state Spin's reconnects put them.
                let redis = match mode {
                    Mode::Plain => RedisServer::plain(),
                    _ => RedisServer::tls(TLS_PASSWORD),
                };
                let row = outage::run(redis, mode.label(), fast_path, opts.outage_plan).await;
                outage::progress(&row);
                outages.push(row);
            }
        }
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    machine.lines.push((
        "Load average at end".into(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    ));
    let sizes = report::sizes(&root().join("spin.toml"));
    let command = if opts.args.is_empty() {
        "cargo run -p bench".to_owned()
    } else {
        format!("cargo run -p bench -- {}", opts.args.join(" "))
    };
    let total_seconds = started.elapsed().as_secs_f64();
    let markdown = report::Report {
        rows: &rows,
        outages: &outages,
        outage_plan: &opts.outage_plan,
        machine: &machine,
        sizes: &sizes,
        command,
        total_seconds,
        notes: &notes,
    }
    .markdown();
    println!("{markdown}");
    if opts.write {
        let path = opts.out.clone().unwrap_or_else(|| root().join("docs/benchmarks-latest.md"));
        std::fs::write(&path, &markdown).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("== wrote {} ({total_seconds:.0} s in all)", path.display());
    } else {
        eprintln!(
            "== done in {total_seconds:.0} s (report not written: partial run or --no-write)"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = if opts.chaining {
        runtime.block_on(chaining::run(opts.seconds, opts.out.as_deref()))
    } else {
        runtime.block_on(run(opts))
    };
    // Requests stuck in an outage row wait on Spin's store for minutes: do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
