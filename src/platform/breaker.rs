//! The circuit breaker for Redis calls that may hang.
//!
//! Spin 3.6.3 sets no timeout on outbound Redis, nor on its Redis key-value store, and a
//! WASIp2 guest cannot interrupt a host call: a call to a Redis that stopped answering (a
//! failover that drops packets, an overloaded server, a pooled connection in its reconnect
//! backoff) waits for minutes. So the components never make a call that is likely to hang.
//! Every Redis call is registered, while it runs, in Spin's in-memory store `breaker`
//! (`type = "spin"`, no `path`), which every instance of the Spin process shares:
//!
//! - `call:{target}:{start_ms}:{nonce}`: one key per call in flight, deleted when it returns.
//!   A target is a pooled store label or `outbound`. Each call has its own key, so a call that
//!   fails at once can never hide one that hangs (a shared "last finished" time could).
//! - A target is **stuck** while one of its calls has been pending longer than
//!   `redis_stall_ms` (default 250 ms), and nothing proved Redis reachable since that call
//!   started: `ok:outbound` holds the start of the latest outbound call that succeeded. For
//!   outbound Redis, also no call may have succeeded within the bound (Redis that answers is
//!   busy, not silent).
//!
//! While outbound Redis is stuck, every request gets [`RedisError::Unavailable`] at once and
//! answers with its documented fallback (the cache serves the origin with `BYPASS`, rate
//! limits apply their failure mode, sessions, OTP and health answer 503). After answering,
//! such a request may **probe** ([`probe_after_response`]): it opens a connection and sends
//! `PING`, at most one probe a second and [`MAX_PROBES`] hanging at once, so no client ever
//! waits for a probe. A probe's `PONG` sets `ok:outbound`: the calls that hang since before it
//! are written off (their sockets are dead) and requests call Redis again. So only the
//! requests that started a call in the first `redis_stall_ms` of a silence wait with it (at
//! most the request rate times that bound), and answers come from Redis again within about a
//! second of Redis answering.
//!
//! The pooled fast path ([`super::fast_path`]) reads the same state for its store labels.

use std::cell::RefCell;

use spin_sdk::wit::wasi::keyvalue::store;

use super::clock::unix_now_ms;
use super::redis::RedisError;
use super::secrets::random_bytes;
use super::settings::{ConfigError, Variables};

/// The in-memory store (`type = "spin"`, no `path`) that holds the breaker's state.
pub const LABEL: &str = "breaker";
/// The Spin variable: how long a Redis call may be pending before the target counts as stuck.
pub const STALL_VARIABLE: &str = "redis_stall_ms";
/// The target name of outbound Redis calls.
pub const OUTBOUND: &str = "outbound";
/// Probes that may hang at once (each holds an instance of the component until it returns).
pub const MAX_PROBES: usize = 4;
/// At most one probe starts per this many milliseconds.
const PROBE_INTERVAL_MS: i64 = 1000;
/// The target name of probes: they must not keep outbound Redis stuck themselves.
const PROBE: &str = "probe";
/// When outbound Redis last answered: `{start},{done}`, the start of the latest-started call
/// that succeeded and when a call last succeeded.
const OUTBOUND_OK: &str = "ok:outbound";
/// When the latest probe started.
const PROBE_AT: &str = "probe_at";
/// When a refusal was last logged, so an outage logs once a second, not once per request.
const LOGGED_AT: &str = "logged_at";

thread_local! {
    /// When the pooled connection this request skipped got stuck ([`pooled_stuck_since`]).
    static POOLED_STUCK_SINCE: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
    /// The outbound Redis address of a request the breaker refused, for its probe after the
    /// response. Spin runs every request in a fresh instance, so this is per request.
    static PROBE_ADDRESS: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// One call in flight, as its key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    target: String,
    start_ms: i64,
}

impl Pending {
    fn parse(key: &str) -> Option<Self> {
        let mut parts = key.strip_prefix("call:")?.rsplitn(3, ':');
        let _nonce = parts.next()?;
        let start_ms = parts.next()?.parse().ok()?;
        Some(Self { target: parts.next()?.to_owned(), start_ms })
    }
}

/// The breaker's state as this request found it: one `list_keys` of the in-memory store.
pub struct Breaker {
    state: store::Bucket,
    stall_ms: i64,
    pending: Vec<Pending>,
    /// Every key of the state, as listed when opened.
    keys: Vec<String>,
}

impl Breaker {
    /// Opens the state with the bound from `redis_stall_ms`. `Ok(None)` when the store cannot
    /// be opened (logged): the caller then calls Redis unguarded, as before this breaker.
    pub fn open(variables: &Variables) -> Result<Option<Self>, ConfigError> {
        let stall_ms = variables.whole_setting(STALL_VARIABLE)? as i64;
        Ok(Self::open_with(stall_ms))
    }

    /// Opens the state with this bound (ms).
    pub fn open_with(stall_ms: i64) -> Option<Self> {
        let opened = store::open(LABEL).and_then(|state| {
            let keys = state.list_keys(None)?.keys;
            Ok((state, keys))
        });
        match opened {
            Ok((state, keys)) => {
                let pending = keys.iter().filter_map(|k| Pending::parse(k)).collect();
                Some(Self { state, stall_ms, pending, keys })
            }
            Err(e) => {
                super::log::warn(
                    "breaker_unguarded",
                    format_args!(
                        "store {LABEL:?} unavailable ({}); calls are unguarded",
                        describe(&e)
                    ),
                );
                None
            }
        }
    }

    fn read(&self, key: &str) -> i64 {
        match self.state.get(key) {
            Ok(Some(v)) => std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok()).unwrap_or(0),
            _ => 0,
        }
    }

    pub(crate) fn write(&self, key: &str, value: i64) {
        // The in-memory store fails only if Spin cannot take its lock; then the breaker
        // simply learns nothing from this call.
        let _ = self.state.set(key, value.to_string().as_bytes());
    }

    /// Whether `key` was in the state when it was listed (a flag that costs no `get`).
    pub(crate) fn listed(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Sets a flag key ([`Self::listed`]) and clears the others of `flags`.
    pub(crate) fn set_flag(&self, key: &str, flags: &[String]) {
        let _ = self.state.set(key, b"");
        for other in flags.iter().filter(|f| *f != key) {
            let _ = self.state.delete(other);
        }
    }

    /// When outbound Redis last answered (the start of that call), 0 if never.
    pub(crate) fn outbound_ok_at(&self) -> i64 {
        self.outbound_ok().0
    }

    /// (start of the latest-started call that succeeded, when a call last succeeded).
    fn outbound_ok(&self) -> (i64, i64) {
        let value = self.state.get(OUTBOUND_OK).ok().flatten().unwrap_or_default();
        let text = String::from_utf8_lossy(&value);
        let mut parts = text.split(',').map(|p| p.parse::<i64>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// The oldest call on `target` pending since `from` or later.
    fn oldest_call(&self, target: &str, from: i64) -> Option<i64> {
        self.pending
            .iter()
            .filter(|p| p.target == target && p.start_ms >= from)
            .map(|p| p.start_ms)
            .min()
    }

    /// Since when `target` is stuck: its oldest call pending longer than the bound. A call
    /// on `target` pending since before `written_off_before` does not count.
    pub(crate) fn stuck_since(&self, target: &str, written_off_before: i64) -> Option<i64> {
        let now = unix_now_ms();
        self.pending
            .iter()
            .filter(|p| p.target == target && p.start_ms >= written_off_before)
            .map(|p| p.start_ms)
            .filter(|&start| now - start > self.stall_ms)
            .min()
    }

    /// Outbound Redis is stuck: the error to answer with at once, or `None` to call it.
    ///
    /// A request that the fast path sent here because its pooled connection is stuck waits
    /// for no second bound: while outbound Redis has not answered since the pooled connection
    /// got stuck, one outbound call at a time tries, and the others answer at once.
    ///
    /// Redis that answered any call within the bound is busy, not silent: a burst of TLS
    /// handshakes on a loaded machine can keep a call pending longer than the bound while
    /// others complete.
    pub(crate) fn refuse_outbound(&self, address: &str) -> Option<RedisError> {
        let pooled_stuck = POOLED_STUCK_SINCE.get();
        if pooled_stuck.is_none() {
            // Cheap first: no call pending too long, no need to read when Redis last answered.
            self.stuck_since(OUTBOUND, i64::MIN)?;
        }
        let (ok_at, ok_done) = self.outbound_ok();
        if unix_now_ms() - ok_done <= self.stall_ms {
            return None;
        }
        let since = match pooled_stuck {
            Some(pooled_since) => {
                let trying = (ok_at < pooled_since)
                    .then(|| self.oldest_call(OUTBOUND, pooled_since))
                    .flatten();
                match trying {
                    Some(start) => start,
                    None => self.stuck_since(OUTBOUND, ok_at)?,
                }
            }
            None => self.stuck_since(OUTBOUND, ok_at)?,
        };
        PROBE_ADDRESS.with(|a| *a.borrow_mut() = Some(address.to_owned()));
        let waited = unix_now_ms() - since;
        self.log_once_a_second(&format!(
            "redis breaker: an outbound Redis call has been pending for {waited} ms; answering \
             without Redis until a probe gets an answer"
        ));
        Some(RedisError::Unavailable(format!(
            "Redis has not answered a call for {waited} ms (circuit open)"
        )))
    }

    pub(crate) fn log_once_a_second(&self, message: &str) {
        let now = unix_now_ms();
        if now - self.read(LOGGED_AT) >= 1000 {
            self.write(LOGGED_AT, now);
            super::log::warn("breaker", message);
        }
    }

    /// Runs one call on `target` with its key in the store while it runs.
    pub fn guard<T, E>(&self, target: &str, call: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = unix_now_ms();
        let nonce: [u8; 4] = random_bytes(4).try_into().unwrap_or([0; 4]);
        let key = format!("call:{target}:{start}:{}", u32::from_le_bytes(nonce));
        let registered = self.state.set(&key, b"").is_ok();
        let result = call();
        if registered {
            let _ = self.state.delete(&key);
        }
        if result.is_ok() && target == OUTBOUND {
            self.outbound_answered(start);
        }
        result
    }

    /// An outbound call that started at `start_ms` succeeded: Redis answers.
    fn outbound_answered(&self, start_ms: i64) {
        let latest_start = self.outbound_ok().0.max(start_ms);
        let value = format!("{latest_start},{}", unix_now_ms());
        let _ = self.state.set(OUTBOUND_OK, value.as_bytes());
    }

    /// Whether a probe may start now: none started within the last interval, and fewer than
    /// [`MAX_PROBES`] hang.
    fn probe_due(&self) -> bool {
        let hanging = self.pending.iter().filter(|p| p.target == PROBE).count();
        hanging < MAX_PROBES && unix_now_ms() - self.read(PROBE_AT) >= PROBE_INTERVAL_MS
    }
}

/// The fast path found its pooled connection stuck since `since` and sends this request to
/// outbound Redis ([`Breaker::refuse_outbound`]).
pub(crate) fn pooled_stuck_since(since: i64) {
    POOLED_STUCK_SINCE.set(Some(since));
}

/// After a response that the breaker answered without Redis: if a probe is due, open a
/// connection and `PING`; a `PONG` closes the breaker. Called by [`super::serve`] once the
/// client has its answer; free for every other request.
pub fn probe_after_response() {
    let Some(address) = PROBE_ADDRESS.with(|a| a.borrow_mut().take()) else { return };
    let Some(breaker) = Breaker::open_with(i64::MAX) else { return };
    if !breaker.probe_due() {
        return;
    }
    let start = unix_now_ms();
    breaker.write(PROBE_AT, start);
    let answered = breaker.guard(PROBE, || {
        let conn = spin_sdk::redis::Connection::open(&address)?;
        conn.execute("PING", &[])
    });
    if answered.is_ok() {
        breaker.outbound_answered(start);
        super::log::info("breaker_closed", "a probe got an answer; calling Redis again");
    }
}

pub(crate) fn describe(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store (define it in the runtime config)".into(),
        store::Error::AccessDenied => {
            "access denied (list the store in the component's key_value_stores)".into()
        }
        store::Error::Other(m) => m.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_keys_name_target_and_start() {
        let p = Pending::parse("call:redis_standby:1733550000123:42").unwrap();
        assert_eq!(p, Pending { target: "redis_standby".into(), start_ms: 1733550000123 });
        assert_eq!(Pending::parse("call:outbound:17:1").unwrap().target, "outbound");
        assert_eq!(Pending::parse("ok:outbound"), None);
        assert_eq!(Pending::parse("call:outbound:notanumber:1"), None);
        assert_eq!(Pending::parse("call:1:2"), None);
    }
}
