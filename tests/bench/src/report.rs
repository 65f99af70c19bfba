//! Rows, the Markdown report, machine details and component sizes.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::routes::{Route, RouteId, ROUTES};

/// The size limit of each component's release `.wasm` (issue 8).
pub const SIZE_TARGET: u64 = 512 * 1024;

/// One measured row: a route, one Redis mode, one concurrency, fast path off or on.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub mode: String,
    pub concurrency: usize,
    /// Index into `ROUTES`.
    pub route: usize,
    pub fast_path: Option<bool>,
    /// The baseline measured again at the end of its group, to show drift.
    pub repeat: bool,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Per request, by command: sent by the component after connecting (one round trip
    /// each), run inside Lua scripts (no round trip), connection set-up (pipelined).
    pub sent: Vec<(String, f64)>,
    pub in_script: Vec<(String, f64)>,
    pub set_up: Vec<(String, f64)>,
    /// New Redis connections per request (`INFO stats`), and the host's own count.
    pub connections: f64,
    pub host_connections: f64,
    /// The most outbound connections any one request opened (host count).
    pub max_host_connections: u64,
    /// Commands per request, everything included (`total_commands_processed`).
    pub all_commands: f64,
}

impl Row {
    pub fn route(&self) -> &'static Route {
        &ROUTES[self.route]
    }

    pub fn round_trips(&self) -> f64 {
        self.sent.iter().map(|(_, n)| n).sum()
    }

    pub fn failed(&self) -> bool {
        self.errors > 0 || self.requests == 0
    }

    pub fn to_json(&self) -> Value {
        let pairs = |v: &[(String, f64)]| v.iter().map(|(k, n)| json!([k, n])).collect::<Vec<_>>();
        json!({
            "mode": self.mode, "concurrency": self.concurrency, "route": self.route,
            "fast_path": self.fast_path, "repeat": self.repeat, "requests": self.requests, "errors": self.errors,
            "first_error": self.first_error, "seconds": self.seconds, "rps": self.rps,
            "p50": self.p50, "p99": self.p99, "max": self.max,
            "sent": pairs(&self.sent), "in_script": pairs(&self.in_script), "set_up": pairs(&self.set_up),
            "connections": self.connections, "host_connections": self.host_connections,
            "max_host_connections": self.max_host_connections, "all_commands": self.all_commands,
        })
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let pairs = |k: &str| -> Vec<(String, f64)> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((p[0].as_str()?.to_owned(), p[1].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Self {
            mode: v["mode"].as_str()?.to_owned(),
            concurrency: v["concurrency"].as_u64()? as usize,
            route: v["route"].as_u64()? as usize,
            fast_path: v["fast_path"].as_bool(),
            repeat: v["repeat"].as_bool().unwrap_or(false),
            requests: v["requests"].as_u64()?,
            errors: v["errors"].as_u64()?,
            first_error: v["first_error"].as_str().map(str::to_owned),
            seconds: f("seconds"),
            rps: f("rps"),
            p50: f("p50"),
            p99: f("p99"),
            max: f("max"),
            sent: pairs("sent"),
            in_script: pairs("in_script"),
            set_up: pairs("set_up"),
            connections: f("connections"),
            host_connections: f("host_connections"),
            max_host_connections: v["max_host_connections"].as_u64().unwrap_or(0),
            all_commands: f("all_commands"),
        })
    }
}

/// `1`, `0.5`, `2.01`: at most two decimals, no trailing zeros.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

fn ms(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

fn ratio(x: f64, base: f64) -> String {
    if x.is_finite() && base.is_finite() && base > 0.0 {
        format!("{:.2}", x / base)
    } else {
        "–".into()
    }
}

fn breakdown(v: &[(String, f64)]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    v.iter()
        .map(|(k, n)| format!("{} {}", k.replace('|', " "), num(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fast_path_cell(row: &Row) -> &'static str {
    match row.fast_path {
        Some(true) => "on",
        Some(false) => "off",
        None => "",
    }
}

/// The modes and concurrencies present, in the order they were run.
fn groups(rows: &[Row]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for r in rows {
        if !out.iter().any(|(m, c)| *m == r.mode && *c == r.concurrency) {
            out.push((r.mode.clone(), r.concurrency));
        }
    }
    out
}

/// Network round trips of one request with Redis `rtt` away: each new connection costs
/// TCP (1) + the TLS 1.3 handshake (1, TLS only) + the pipelined AUTH/CLIENT SETINFO (1),
/// and each command sent after connecting one more.
pub fn network_round_trips(row: &Row, tls: bool) -> f64 {
    let per_connection = if tls { 3.0 } else { 2.0 };
    row.connections * per_connection + row.round_trips()
}

pub struct Machine {
    pub lines: Vec<(String, String)>,
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn machine(seconds: f64, root: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        })
        .and_then(|kb| kb.trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_default();
    let redis = command_output("redis-server", &["--version"]).unwrap_or_default();
    let redis =
        redis.split_whitespace().find_map(|w| w.strip_prefix("v=")).unwrap_or("unknown").to_owned();
    let root = root.to_string_lossy();
    let commit = command_output("git", &["-C", &root, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let dirty = command_output("git", &["-C", &root, "status", "--porcelain"])
        .is_some_and(|s| !s.is_empty());
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let rustc = command_output("rustc", &["--version"]).unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    Machine {
        lines: vec![
            ("Date".into(), date),
            ("CPU".into(), format!("{cpu}, {cores} cores")),
            ("Memory".into(), memory),
            ("OS".into(), format!("{os}, Linux {kernel}")),
            ("redis-server".into(), redis),
            ("Rust".into(), rustc),
            (
                "Commit".into(),
                format!("{commit}{}", if dirty { " (with uncommitted changes)" } else { "" }),
            ),
            ("Seconds per row".into(), num(seconds)),
            ("Load average at start".into(), load),
        ],
    }
}

/// `(component, file, bytes)` of every component in spin.toml.
pub fn sizes(manifest: &Path) -> Vec<(String, String, Option<u64>)> {
    let Ok(m) = spin_test_host::manifest::Manifest::load(manifest) else { return Vec::new() };
    m.components
        .keys()
        .map(|id| {
            let path = m.source_path(id).ok();
            let file = path
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = path.and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len());
            (id.clone(), file, bytes)
        })
        .collect()
}

pub struct Report<'a> {
    pub rows: &'a [Row],
    pub outages: &'a [crate::outage::OutageRow],
    pub outage_plan: &'a crate::outage::Plan,
    pub machine: &'a Machine,
    pub sizes: &'a [(String, String, Option<u64>)],
    pub command: String,
    pub total_seconds: f64,
    pub notes: &'a [String],
}

impl Report<'_> {
    /// The baseline of a group: the mean of its runs at the start and the end of the group
    /// (req/s, p50), and the runs themselves.
    fn baseline(&self, mode: &str, concurrency: usize) -> Option<(f64, f64, Vec<&Row>)> {
        let runs: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| {
                r.mode == mode && r.concurrency == concurrency && r.route == 0 && !r.failed()
            })
            .collect();
        if runs.is_empty() {
            return None;
        }
        let n = runs.len() as f64;
        let rps = runs.iter().map(|r| r.rps).sum::<f64>() / n;
        let p50 = runs.iter().map(|r| r.p50).sum::<f64>() / n;
        Some((rps, p50, runs))
    }

    /// Req/s of a floor row of a group (the pooled `GET`, the no-op component), if measured.
    fn floor_rps(&self, mode: &str, concurrency: usize, id: RouteId) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| {
                r.mode == mode && r.concurrency == concurrency && r.route().id == id && !r.failed()
            })
            .map(|r| r.rps)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "# Benchmark figures (generated)\n");
        let _ = writeln!(
            w,
            "Written by `{}`; see [benchmarks.md](benchmarks.md) for the method and what the columns mean. \
             The whole run took {:.0} s.\n",
            self.command, self.total_seconds
        );
        let _ = writeln!(w, "| Machine | |\n|---|---|");
        for (k, v) in &self.machine.lines {
            let _ = writeln!(w, "| {k} | {v} |");
        }
        let _ = writeln!(w);
        self.targets(w);
        self.fast_path_table(w);
        w.push_str(&crate::outage::markdown(self.outages, self.outage_plan));
        self.commands(w);
        for (mode, c) in groups(self.rows) {
            self.group_table(w, &mode, c);
        }
        self.size_table(w);
        if !self.notes.is_empty() {
            let _ = writeln!(w, "## Notes\n");
            for n in self.notes {
                let _ = writeln!(w, "- {n}");
            }
            let _ = writeln!(w);
        }
        out
    }

    fn group_table(&self, w: &mut String, mode: &str, c: usize) {
        let base = self.baseline(mode, c);
        let pooled = self.floor_rps(mode, c, RouteId::BaselineStore);
        let noop = self.floor_rps(mode, c, RouteId::Noop);
        let _ = writeln!(w, "## {mode}, concurrency {c}\n");
        let _ = writeln!(
            w,
            "| Route | Fast path | req/s | ÷ baseline | ÷ pooled floor | ÷ no-op | p50 ms | ÷ baseline | p99 ms | max ms | Round trips/req | Commands/req (all) | Connections/req |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        let mut errors = Vec::new();
        for r in self.rows.iter().filter(|r| r.mode == mode && r.concurrency == c) {
            let (rps_ratio, p50_ratio) = match &base {
                Some((rps, p50, _)) => (ratio(r.rps, *rps), ratio(r.p50, *p50)),
                None => ("–".into(), "–".into()),
            };
            let mut name = r.route().name.to_owned();
            if r.repeat {
                name = "baseline, again at the end".into();
            }
            if r.failed() {
                name.push_str(" **(errors)**");
            }
            let of = |floor: Option<f64>| floor.map_or("–".to_owned(), |f| ratio(r.rps, f));
            let _ = writeln!(
                w,
                "| {name} | {} | {:.0} | {rps_ratio} | {} | {} | {} | {p50_ratio} | {} | {} | {} | {} | {} |",
                fast_path_cell(r),
                r.rps,
                of(pooled),
                of(noop),
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                num(r.round_trips()),
                num(r.all_commands),
                num(r.connections),
            );
            if r.failed() {
                errors.push(format!(
                    "{} ({}): {} of {} requests wrong; first: {}",
                    r.route().name,
                    fast_path_cell(r),
                    r.errors,
                    r.requests,
                    r.first_error.as_deref().unwrap_or("no requests completed")
                ));
            }
        }
        let _ = writeln!(w);
        for e in errors {
            let _ = writeln!(w, "- {}", e.replace('\n', " "));
        }
        if let Some((rps, p50, runs)) = base {
            let each: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.rps)).collect();
            let _ = writeln!(
                w,
                "Baseline (the ratios' denominator): {rps:.0} req/s, p50 {} ms, the mean of its runs at the start and \
                 the end of this group ({} req/s): the difference shows how much the machine's speed drifted meanwhile.\n",
                ms(p50),
                each.join(" and ")
            );
        }
    }

    /// Every route that can use the pooled store, fast path off beside on, per Redis set-up
    /// and concurrency.
    fn fast_path_table(&self, w: &mut String) {
        let pooled: Vec<usize> = (0..ROUTES.len()).filter(|&i| ROUTES[i].fast_path).collect();
        if !self.rows.iter().any(|r| r.fast_path == Some(true)) {
            return;
        }
        let _ = writeln!(
            w,
            "## Fast path off and on
"
        );
        let _ = writeln!(
            w,
            "Every route whose code can use the pooled store, with `redis_fast_path` off | on. Round trips: \
             commands the component sent (`PING` + store calls on the pooled path); connections: new Redis \
             connections per request counted by Redis over the timed run. Every other route never opens the \
             pooled store (no fast path in its code): the setting does not change it, so it runs once.\n"
        );
        let _ = writeln!(
            w,
            "| Redis | c | Route | req/s | p50 ms | p99 ms | Round trips/req | Commands/req (all) | Connections/req |"
        );
        let _ = writeln!(w, "|---|--:|---|--:|--:|--:|--:|--:|--:|");
        for (mode, c) in groups(self.rows) {
            for &index in &pooled {
                let find = |fp: bool| {
                    self.rows.iter().find(|r| {
                        r.mode == mode
                            && r.concurrency == c
                            && r.route == index
                            && r.fast_path == Some(fp)
                    })
                };
                let (Some(off), Some(on)) = (find(false), find(true)) else { continue };
                let pair = |f: &dyn Fn(&Row) -> String| format!("{} \\| {}", f(off), f(on));
                let mut name = ROUTES[index].name.to_owned();
                if off.failed() || on.failed() {
                    name.push_str(" **(errors)**");
                }
                let _ = writeln!(
                    w,
                    "| {mode} | {c} | {name} | {} | {} | {} | {} | {} | {} |",
                    pair(&|r| format!("{:.0}", r.rps)),
                    pair(&|r| ms(r.p50)),
                    pair(&|r| ms(r.p99)),
                    pair(&|r| num(r.round_trips())),
                    pair(&|r| num(r.all_commands)),
                    pair(&|r| num(r.connections)),
                );
            }
        }
        let _ = writeln!(w);
    }

    /// One row per route and fast-path setting: the commands of one request, from the
    /// first TLS row at concurrency 1 (or the first row there is).
    fn commands(&self, w: &mut String) {
        let _ = writeln!(w, "## Redis work per request\n");
        let _ = writeln!(
            w,
            "Exact counts from `INFO commandstats` / `INFO stats` over each timed run, divided by the requests \
             served; a `MONITOR` sample of the same route tells commands the component sent (one round trip \
             each) from those its Lua scripts ran inside Redis. \"Network round trips\" adds the connection \
             set-up: TCP 1, TLS 1.3 handshake 1, the pipelined `AUTH` + `CLIENT SETINFO` 1.\n"
        );
        let _ = writeln!(
            w,
            "| Route | Request | Fast path | Sent after connecting (round trips) | Inside scripts | Connection set-up | Connections/req | Network round trips/req (TLS) | TLS p50 here | ≈ p50 at 1 ms RTT |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|--:|--:|--:|--:|");
        let mut seen: Vec<(usize, Option<bool>)> = Vec::new();
        let pick = |route: usize, fp: Option<bool>| {
            let same = |r: &&Row| r.route == route && r.fast_path == fp && !r.failed();
            self.rows
                .iter()
                .filter(same)
                .find(|r| r.mode == "TLS" && r.concurrency == 1)
                .or_else(|| self.rows.iter().filter(same).find(|r| r.mode == "TLS"))
                .or_else(|| self.rows.iter().find(same))
        };
        for r in self.rows.iter().filter(|r| !r.repeat) {
            if seen.contains(&(r.route, r.fast_path)) {
                continue;
            }
            seen.push((r.route, r.fast_path));
            let Some(r) = pick(r.route, r.fast_path) else { continue };
            let tls = r.mode.starts_with("TLS");
            let trips = network_round_trips(r, tls);
            let (here, at_1ms) =
                if tls { (ms(r.p50), ms(r.p50 + trips)) } else { ("–".into(), "–".into()) };
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {here} | {at_1ms} |",
                r.route().name,
                r.route().request,
                fast_path_cell(r),
                breakdown(&r.sent),
                breakdown(&r.in_script),
                breakdown(&r.set_up),
                num(r.connections),
                if tls { num(trips) } else { "–".into() },
            );
        }
        let _ = writeln!(w);
    }

    fn targets(&self, w: &mut String) {
        let _ = writeln!(w, "## Targets\n");
        let _ = writeln!(w, "| Target | Measured | Holds |\n|---|---|---|");
        let worst_size =
            self.sizes.iter().filter_map(|(id, _, b)| b.map(|b| (id, b))).max_by_key(|(_, b)| *b);
        let missing: Vec<&String> =
            self.sizes.iter().filter(|(_, _, b)| b.is_none()).map(|(id, _, _)| id).collect();
        if let Some((id, bytes)) = worst_size {
            let holds = bytes <= SIZE_TARGET && missing.is_empty();
            let _ = writeln!(
                w,
                "| Each component's release `.wasm` ≤ 512 KiB (524,288 bytes) | largest: {id}, {bytes} bytes{} | {} |",
                if missing.is_empty() { String::new() } else { format!("; not built: {missing:?}") },
                yes(holds)
            );
        }
        for route in ROUTES.iter().filter(|r| r.target_round_trips.is_some()) {
            let target = route.target_round_trips.unwrap_or(0) as f64;
            let index = ROUTES.iter().position(|r| std::ptr::eq(r, route)).unwrap_or(0);
            // Issue 8's targets are for outbound Redis; the pooled path has its own below.
            for fp in [None, Some(false)] {
                let rows: Vec<&Row> = self
                    .rows
                    .iter()
                    .filter(|r| r.route == index && r.fast_path == fp && !r.failed())
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let Some(worst) =
                    rows.iter().max_by(|a, b| a.round_trips().total_cmp(&b.round_trips()))
                else {
                    continue;
                };
                let label = if fp.is_some() { " (fast path off)" } else { "" };
                let _ = writeln!(
                    w,
                    "| {}{label}: ≤ {} command sent after connecting | worst row: {} ({}); connections/req {} | {} |",
                    route.name,
                    num(target),
                    num(worst.round_trips()),
                    breakdown(&worst.sent),
                    num(worst.connections),
                    yes(worst.round_trips() <= target + 0.005)
                );
            }
        }
        // Issue 14: with the fast path on, these open no new connection per request in steady
        // state (a window's first check of a key does, to set the counter's expiry).
        for id in [
            RouteId::CacheHit,
            RouteId::SessionRead,
            RouteId::RateLimitFixed,
            RouteId::RateLimitSliding,
            RouteId::RateLimitBucketRefused,
        ] {
            let Some(index) = ROUTES.iter().position(|r| r.id == id) else { continue };
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.route == index && r.fast_path == Some(true) && !r.failed())
                .collect();
            let Some(worst) = rows.iter().max_by(|a, b| a.connections.total_cmp(&b.connections))
            else {
                continue;
            };
            let _ = writeln!(
                w,
                "| {} (fast path on): no new Redis connection per request (≤ 0.01, `INFO stats`) | worst row: {} connections/req ({}, c={}) | {} |",
                ROUTES[index].name,
                num(worst.connections),
                worst.mode,
                worst.concurrency,
                yes(worst.connections <= 0.01)
            );
        }
        let ok_rows: Vec<&Row> = self.rows.iter().filter(|r| !r.failed()).collect();
        if let Some(worst) = ok_rows.iter().max_by(|a, b| a.connections.total_cmp(&b.connections)) {
            let max_one = ok_rows.iter().map(|r| r.max_host_connections).max().unwrap_or(0);
            let _ = writeln!(
                w,
                "| No route opens a second connection | most per request: {} (host count); highest average: {} ({}, {}, c={}) | {} |",
                max_one,
                num(worst.connections),
                worst.route().name,
                worst.mode,
                worst.concurrency,
                yes(max_one <= 1 && worst.connections <= 1.005)
            );
        }
        let _ = writeln!(w);
    }

    fn size_table(&self, w: &mut String) {
        let _ = writeln!(w, "## Component sizes\n");
        let _ =
            writeln!(w, "| Component | Release `.wasm` | Bytes | ≤ 524,288 |\n|---|---|--:|---|");
        for (id, file, bytes) in self.sizes {
            match bytes {
                Some(b) => {
                    let _ = writeln!(w, "| {id} | `{file}` | {b} | {} |", yes(*b <= SIZE_TARGET));
                }
                None => {
                    let _ = writeln!(w, "| {id} | `{file}` | not built | – |");
                }
            }
        }
        let _ = writeln!(w);
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}
