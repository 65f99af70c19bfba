//! `cargo run -p bench -- --chaining`: the library in-process against service chaining
//! (issue 29, item 5), under the real Spin.
//!
//! One app: the project's spin.toml with the bench component `tests/chaining` added (sources
//! made absolute, written to a temporary directory). Its two routes do the same work, a
//! rate-limited, session-checked, cached profile read: `/bench/library/{id}` through the
//! library on one Redis connection, `/bench/chained/{id}` by calling the `sessions`,
//! `ratelimit` and `cache` components over service chaining. Each row: req/s, p50, p99, and
//! per request the Redis connections (`INFO stats`), the commands Redis ran and the round
//! trips (commands sent, told from those run inside scripts by a `MONITOR` sample).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use spin_test_host::real_spin::{self, SpinUp};
use spin_test_host::redis_server::RedisServer;

use crate::load::{self, App, Req, Workload};
use crate::redis_stats;

/// Sessions, one per worker (the most workers a row uses).
const SESSIONS: usize = 16;

struct Row {
    redis: &'static str,
    way: &'static str,
    concurrency: usize,
    rps: f64,
    p50: f64,
    p99: f64,
    connections: f64,
    commands: f64,
    round_trips: f64,
    errors: u64,
    first_error: Option<String>,
}

pub async fn run(seconds: f64, out: Option<&Path>) -> Result<(), String> {
    let Some(spin) = real_spin::spin_binary() else {
        eprintln!("skipped: no Spin (set SPIN, or put spin at ../shared/bin/spin or on PATH)");
        return Ok(());
    };
    eprintln!("== library vs service chaining, {}", real_spin::spin_version(&spin));
    let root = crate::root();
    let manifest = spin_test_host::manifest::Manifest::load(&root.join("spin.toml"))
        .map_err(|e| e.to_string())?;
    spin_test_host::spin_build(&manifest).map_err(|e| e.to_string())?;
    let status = std::process::Command::new("cargo")
        .args(["build", "--target", "wasm32-wasip2", "--release", "-p", "chaining"])
        .current_dir(root)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("building tests/chaining failed".into());
    }
    let dir = tempfile_dir()?;
    let manifest_path = dir.join("spin.toml");
    std::fs::write(&manifest_path, bench_manifest(root)?).map_err(|e| e.to_string())?;

    let mut rows = Vec::new();
    for (label, redis) in
        [("TLS + password", RedisServer::tls(crate::TLS_PASSWORD)), ("plain", RedisServer::plain())]
    {
        let rc = runtime_config(root, &redis)?;
        let mut up = SpinUp::new(&spin, &manifest_path, &rc)
            .variable("redis_host", "127.0.0.1")
            .variable("redis_port", redis.port().to_string())
            .variable("redis_tls", redis.is_tls().to_string())
            .variable("redis_access_key", redis.password().unwrap_or_default());
        up = crate::bench_variables(up).variable("ratelimit_policies", policies()?);
        let app = up.start().await.map_err(|e| format!("{e:#}"))?;
        let app = App::Spin(Arc::new(app));
        let sessions = create_sessions(&app).await?;
        let mut conn = redis.client().await;
        for concurrency in [1, 16] {
            for way in ["library", "chained"] {
                let workload = Arc::new(reads(way, &sessions).expect_header("x-cache", "hit"));
                // Warm-up (not counted): every profile cached, scripts loaded, code compiled.
                let warm = Arc::new(reads(way, &sessions));
                load::run(&app, &warm, 16, Duration::from_secs(60), Some(64)).await;
                let sample = redis_stats::monitor_sample(
                    &redis.url(),
                    &mut conn,
                    load::run(&app, &workload, 1, Duration::from_secs(30), Some(10)),
                )
                .await
                .map(|(_, s)| s)
                .unwrap_or_default();
                let before = redis_stats::snapshot(&mut conn).await.map_err(|e| e.to_string())?;
                let result =
                    load::run(&app, &workload, concurrency, Duration::from_secs_f64(seconds), None)
                        .await;
                let after = redis_stats::snapshot(&mut conn).await.map_err(|e| e.to_string())?;
                let d = redis_stats::delta(&before, &after);
                let n = result.requests.max(1) as f64;
                let round_trips: f64 = d
                    .calls
                    .iter()
                    .map(|(name, &calls)| calls as f64 * sample.sent_fraction(name))
                    .sum();
                let row = Row {
                    redis: label,
                    way,
                    concurrency,
                    rps: result.rps(),
                    p50: result.percentile_ms(50.0),
                    p99: result.percentile_ms(99.0),
                    connections: d.connections as f64 / n,
                    commands: d.commands as f64 / n,
                    round_trips: round_trips / n,
                    errors: result.errors,
                    first_error: result.first_error.clone(),
                };
                eprintln!("{}", line(&row));
                rows.push(row);
            }
        }
    }
    let report = table(&rows);
    println!("{report}");
    if let Some(out) = out {
        std::fs::write(out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    if rows.iter().any(|r| r.errors > 0) {
        return Err("some rows had errors".into());
    }
    Ok(())
}

/// Profile reads the given way: worker `w` presents session `w` and reads profile `w % 8 + 1`.
fn reads(way: &'static str, sessions: &Arc<Vec<String>>) -> Workload {
    let sessions = sessions.clone();
    Workload::new(200, move |worker, _| {
        Some(
            Req::new(Method::GET, format!("/bench/{way}/{}", worker % 8 + 1))
                .bearer(&sessions[worker % SESSIONS]),
        )
    })
}

/// The bench's policies plus `bench_profile`, which never refuses here (the rows measure the
/// work of an admitted request).
fn policies() -> Result<String, String> {
    let mut all: serde_json::Value =
        serde_json::from_str(&crate::routes::ratelimit_policies()).map_err(|e| e.to_string())?;
    all["bench_profile"] = serde_json::json!({"algorithm": "sliding_window", "limit": 1_000_000_000u64, "window": "60s"});
    Ok(all.to_string())
}

/// The project's manifest with the bench component and its route added, every source an
/// absolute path.
fn bench_manifest(root: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(root.join("spin.toml")).map_err(|e| e.to_string())?;
    let mut manifest: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    let release = root.join("target/wasm32-wasip2/release");
    let components = manifest
        .get_mut("component")
        .and_then(|c| c.as_table_mut())
        .ok_or("spin.toml has no components")?;
    for (_, component) in components.iter_mut() {
        if let Some(source) = component.get("source").and_then(|s| s.as_str()) {
            let absolute = root.join(source).display().to_string();
            component["source"] = toml::Value::String(absolute);
        }
    }
    let redis_variables = [
        "redis_host",
        "redis_port",
        "redis_tls",
        "redis_access_key",
        "redis_username",
        "redis_allow_insecure",
        "redis_key_prefix",
        "redis_stall_ms",
        "ratelimit_policies",
    ];
    let variables: toml::Table = redis_variables
        .iter()
        .map(|name| (name.to_string(), toml::Value::String(format!("{{{{ {name} }}}}"))))
        .collect();
    let bench: toml::Table = toml::from_str(&format!(
        r#"
source = "{}"
allowed_outbound_hosts = [
  "redis://{{{{ redis_host }}}}:{{{{ redis_port }}}}",
  "rediss://{{{{ redis_host }}}}:{{{{ redis_port }}}}",
  "http://ratelimit.spin.internal",
  "http://sessions.spin.internal",
  "http://cache.spin.internal",
  "http://origin.spin.internal",
]
key_value_stores = ["breaker"]
"#,
        release.join("chaining.wasm").display()
    ))
    .map_err(|e| e.to_string())?;
    let mut bench = bench;
    bench.insert("variables".into(), toml::Value::Table(variables));
    components.insert("chaining".into(), toml::Value::Table(bench));
    let triggers = manifest
        .get_mut("trigger")
        .and_then(|t| t.get_mut("http"))
        .and_then(|h| h.as_array_mut())
        .ok_or("spin.toml has no HTTP triggers")?;
    let mut trigger = toml::Table::new();
    trigger.insert("route".into(), toml::Value::String("/bench/...".into()));
    trigger.insert("component".into(), toml::Value::String("chaining".into()));
    triggers.push(toml::Value::Table(trigger));
    toml::to_string(&manifest).map_err(|e| e.to_string())
}

/// The project's runtime config with every Redis store on `redis`.
fn runtime_config(root: &Path, redis: &RedisServer) -> Result<String, String> {
    let text =
        std::fs::read_to_string(root.join("runtime-config.toml")).map_err(|e| e.to_string())?;
    let mut config: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    if let Some(toml::Value::Table(stores)) = config.get_mut("key_value_store") {
        for (_, store) in stores.iter_mut() {
            if store.get("type").and_then(|t| t.as_str()) == Some("redis") {
                store["url"] = toml::Value::String(redis.url());
            }
        }
    }
    toml::to_string(&config).map_err(|e| e.to_string())
}

/// One session per worker, created through `POST /api/sessions` (the backend's route).
async fn create_sessions(app: &App) -> Result<Arc<Vec<String>>, String> {
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let req = Req::new(Method::POST, "/api/sessions")
            .bearer(crate::routes::SESSIONS_TOKEN)
            .json(serde_json::json!({ "user_id": format!("bench-user-{i}") }));
        let res = load::send(app, &req).await;
        if res.status != 201 {
            return Err(format!("creating a session: {} {}", res.status, res.text()));
        }
        let body: serde_json::Value =
            serde_json::from_slice(&res.body).map_err(|e| e.to_string())?;
        ids.push(body["session_id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(Arc::new(ids))
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = crate::root().join("target/bench-chaining");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn line(r: &Row) -> String {
    format!(
        "  {:<15} {:<8} c={:<2} {:>6.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  conns {:.2}  commands {:.2}  round trips {:.2}{}",
        r.redis,
        r.way,
        r.concurrency,
        r.rps,
        r.p50,
        r.p99,
        r.connections,
        r.commands,
        r.round_trips,
        match (&r.first_error, r.errors) {
            (_, 0) => String::new(),
            (e, n) => format!("  ERRORS {n}: {}", e.as_deref().unwrap_or("")),
        }
    )
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| Redis | Way | c | req/s | p50 ms | p99 ms | Redis connections / req | commands / req | round trips / req |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.redis,
            r.way,
            r.concurrency,
            r.rps,
            r.p50,
            r.p99,
            r.connections,
            r.commands,
            r.round_trips
        );
    }
    out
}
