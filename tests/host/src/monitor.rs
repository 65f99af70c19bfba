//! `MONITOR` samples: which commands clients sent to Redis (one round trip each) and which a
//! Lua script ran inside Redis (none). Shared by the integration tests and the benchmark.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;

/// Sent once per connection, pipelined in one round trip by the `redis` client (0.32) that
/// Spin and the test host use: `AUTH` (with a password), then `CLIENT SETINFO` twice.
pub const SET_UP: [&str; 4] = ["auth", "hello", "select", "client|setinfo"];

/// Commands with subcommands, which `INFO commandstats` counts as `name|sub`.
pub const CONTAINERS: [&str; 14] = [
    "acl", "client", "cluster", "command", "config", "debug", "function", "latency", "memory",
    "module", "object", "pubsub", "script", "xinfo",
];

/// Commands seen by `MONITOR`, by name: sent by a client, or run inside a script.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub sent: BTreeMap<String, u64>,
    pub in_script: BTreeMap<String, u64>,
}

impl Sample {
    /// The fraction of `name`'s calls that clients sent; a name the sample never saw counts
    /// as sent (so round trips are never under-counted).
    pub fn sent_fraction(&self, name: &str) -> f64 {
        let sent = self.sent.get(name).copied().unwrap_or(0) as f64;
        let inside = self.in_script.get(name).copied().unwrap_or(0) as f64;
        if sent + inside == 0.0 {
            1.0
        } else {
            sent / (sent + inside)
        }
    }
}

/// One `MONITOR` line: `1700000000.123456 [0 127.0.0.1:5000] "evalsha" "ab12" "1" ...`,
/// or `[0 lua]` for a command a script ran. Returns (inside a script?, command name).
pub fn parse_line(line: &str) -> Option<(bool, String)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let in_script =
        line[open + 1..close].trim_start_matches(|c: char| c.is_ascii_digit()).trim() == "lua";
    let mut args = quoted_args(&line[close + 1..]);
    let mut name = args.next()?.to_ascii_lowercase();
    if CONTAINERS.contains(&name.as_str()) {
        if let Some(sub) = args.next() {
            name = format!("{name}|{}", sub.to_ascii_lowercase());
        }
    }
    Some((in_script, name))
}

/// The double-quoted arguments of a `MONITOR` line (escapes kept as they are: only the
/// command and subcommand names are needed, and those never contain quotes).
fn quoted_args(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find('"')? + 1;
        let mut end = start;
        let bytes = rest.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let arg = rest.get(start..end.min(rest.len()))?.to_owned();
        rest = rest.get(end + 1..).unwrap_or("");
        Some(arg)
    })
}

/// Runs `work` while a `MONITOR` connection watches the server, and classifies what it saw.
/// `probe` is the bench's own connection: an `ECHO` on it marks the end of the sample.
pub async fn monitor_sample<F: Future>(
    url: &str,
    probe: &mut MultiplexedConnection,
    work: F,
) -> redis::RedisResult<(F::Output, Sample)> {
    let client = redis::Client::open(url)?;
    let monitor = client.get_async_monitor().await?;
    let mut stream = monitor.into_on_message::<String>();
    let output = work.await;
    let marker = format!("monitor-sample-end-{}", std::process::id());
    let _: String = redis::cmd("ECHO").arg(&marker).query_async(probe).await?;
    let mut sample = Sample::default();
    let collect = async {
        while let Some(line) = stream.next().await {
            if line.contains(&marker) {
                break;
            }
            if let Some((in_script, name)) = parse_line(&line) {
                let map = if in_script { &mut sample.in_script } else { &mut sample.sent };
                *map.entry(name).or_insert(0) += 1;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), collect).await.is_err() {
        eprintln!("  (MONITOR sample timed out; treating unseen commands as sent)");
    }
    Ok((output, sample))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_command_and_where_it_ran() {
        let sent = r#"1700000000.123456 [0 127.0.0.1:5000] "evalsha" "ab\"12" "1""#;
        assert_eq!(parse_line(sent), Some((false, "evalsha".to_owned())));
        let inside = r#"1700000000.123457 [0 lua] "GET" "k""#;
        assert_eq!(parse_line(inside), Some((true, "get".to_owned())));
        let sub = r#"1700000000.1 [0 127.0.0.1:5000] "CLIENT" "SETINFO" "lib-name" "x""#;
        assert_eq!(parse_line(sub), Some((false, "client|setinfo".to_owned())));
        assert_eq!(parse_line("OK"), None);
    }
}
