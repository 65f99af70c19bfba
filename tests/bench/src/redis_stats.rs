//! Exact Redis work per request: `INFO stats` and `INFO commandstats` read before and after
//! a timed run, and a short `MONITOR` sample afterwards that tells which of those commands a
//! client sent (one round trip each) and which a Lua script ran inside Redis (none).

use std::collections::BTreeMap;

pub use spin_test_host::monitor::{monitor_sample, Sample, SET_UP};
use spin_test_host::redis::{self, aio::MultiplexedConnection};

/// Counters read with one `INFO stats commandstats`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    calls: BTreeMap<String, u64>,
    connections: u64,
    commands: u64,
}

pub async fn snapshot(conn: &mut MultiplexedConnection) -> redis::RedisResult<Snapshot> {
    let info: String =
        redis::cmd("INFO").arg("stats").arg("commandstats").query_async(conn).await?;
    let mut snap = Snapshot::default();
    for line in info.lines() {
        if let Some((name, stats)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) {
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="));
            if let Some(calls) = calls.and_then(|c| c.parse().ok()) {
                snap.calls.insert(name.to_owned(), calls);
            }
        } else if let Some(v) = line.strip_prefix("total_connections_received:") {
            snap.connections = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("total_commands_processed:") {
            snap.commands = v.trim().parse().unwrap_or(0);
        }
    }
    Ok(snap)
}

/// What happened between two snapshots, less the first snapshot's own `INFO` (an `INFO`
/// reply does not count itself, so the second one is not in the difference).
#[derive(Clone, Debug, Default)]
pub struct Delta {
    pub calls: BTreeMap<String, u64>,
    pub connections: u64,
    pub commands: u64,
}

pub fn delta(before: &Snapshot, after: &Snapshot) -> Delta {
    let mut calls = BTreeMap::new();
    for (name, &n) in &after.calls {
        let mut d = n.saturating_sub(before.calls.get(name).copied().unwrap_or(0));
        if name == "info" {
            d = d.saturating_sub(1);
        }
        if d > 0 {
            calls.insert(name.clone(), d);
        }
    }
    Delta {
        calls,
        connections: after.connections.saturating_sub(before.connections),
        commands: after.commands.saturating_sub(before.commands).saturating_sub(1),
    }
}
