//! The pooled fast path: hot reads and counters through Spin's key-value store, guarded by a
//! circuit breaker so that it fails fast when Redis fails over.
//!
//! Outbound Redis ([`super::redis`]) opens a new connection, TLS handshake and AUTH included,
//! for every request: Spin pools nothing there. Spin's Redis-backed key-value store instead
//! keeps one reconnecting connection per store label for the app's whole life and uses raw
//! Redis keys. So a component may read a key that its Lua scripts wrote through this store
//! without connecting at all, when the runtime config points the store at the same Redis:
//!
//! ```toml
//! [key_value_store.redis]
//! type = "redis"
//! url = "rediss://:ACCESS_KEY@NAME.redis.cache.windows.net:6380"
//!
//! [key_value_store.redis_standby]   # the same Redis: see "Failing fast"
//! type = "redis"
//! url = "rediss://:ACCESS_KEY@NAME.redis.cache.windows.net:6380"
//!
//! [key_value_store.breaker]
//! type = "spin"   # no path: in memory, shared by every instance of this process
//! ```
//!
//! The store does only `GET`, `SET` (no TTL), `DEL`, `EXISTS` and `INCRBY`, and opening it
//! costs a `PING`. So it serves reads and counters only; anything with expiry, a lock or more
//! than one key stays on outbound Redis, and a read that the fast path cannot answer for sure
//! goes there too. Both paths reach the same primary, so a write is seen by the next read.
//!
//! # Failing fast
//! Spin 3.6.3's Redis store never times out: while Redis is unreachable, a call waits for the
//! store's reconnect retries (minutes), and after Redis returns the store reconnects only at
//! its next retry (up to two minutes later). A WASIp2 guest cannot interrupt a host call, so
//! the components never make one that is likely to hang. The [`Breaker`] keeps its state in
//! Spin's in-memory store `breaker`, which every instance of the process shares:
//! - per store label, `pending_since` (a pooled call started and has not finished) and
//!   `done_at` (the last call finished). A call still pending after `redis_fast_path_stall_ms`
//!   means that label's connection is stuck: every request skips the fast path and uses
//!   outbound Redis, which fails at once when Redis is down (503, bypass or the rate-limit
//!   policy's failure mode) and works as soon as Redis is back;
//! - `outbound_ok_at`: when outbound Redis last answered a request the breaker had diverted.
//!   That is proof Redis is reachable again while the pooled connection still hangs, so the
//!   next request moves the fast path to the next idle label of [`STORE_LABELS`]: a store
//!   Spin has not connected yet (or whose connection has recovered), which connects at once.
//!   The stuck label's calls finish whenever its own reconnect does; it is used again after a
//!   later failover, once idle. Recovery therefore takes one outbound answer, not Spin's
//!   backoff. With every label stuck (failovers closer together than the store's reconnect),
//!   requests stay on outbound Redis until one recovers.
//!
//! Requests that start a pooled call in the stall window before the breaker opens wait with
//! the stuck ones: at most the request rate times `redis_fast_path_stall_ms`, per failover.
//!
//! Off unless `redis_fast_path` is true. When a store cannot be opened the caller falls back
//! to outbound Redis, which then reports Redis being down as it always does.

use std::sync::atomic::{AtomicBool, Ordering};

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use super::clock::unix_now_ms;
use super::redis::RedisError;
use super::settings::{ConfigError, Variables};

/// The labels of the pooled store, all on the same Redis, which the components list in
/// `key_value_stores` and the runtime config defines. Spin keeps one connection per label,
/// made on its first open: the first is used until it hangs, the others stand by (see the
/// module doc) and cost nothing until then.
pub const STORE_LABELS: [&str; 2] = ["redis", "redis_standby"];
/// The in-memory store (`type = "spin"`, no `path`) that holds the breaker's state.
pub const BREAKER_LABEL: &str = "breaker";
/// The Spin variable that turns the fast path on.
pub const VARIABLE: &str = "redis_fast_path";
/// How long a pooled call may be pending before every request skips the fast path.
pub const STALL_VARIABLE: &str = "redis_fast_path_stall_ms";

/// Index into [`STORE_LABELS`] of the label in use.
const ACTIVE: &str = "fast_path:active";
/// When outbound Redis last answered a request the breaker had diverted.
const OUTBOUND_OK_AT: &str = "fast_path:outbound_ok_at";
/// When a diverted request last logged, so an outage logs once a second, not per request.
const LOGGED_AT: &str = "fast_path:logged_at";

/// Set when the breaker sent this request to outbound Redis. Spin runs every request in a
/// fresh instance, so this is per request.
static DIVERTED: AtomicBool = AtomicBool::new(false);

/// An open handle on the pooled store, behind the breaker.
pub struct FastPath {
    bucket: store::Bucket,
    label: &'static str,
    breaker: Breaker,
}

impl FastPath {
    /// The store, when `redis_fast_path` is on, a label is usable and Spin opens it.
    /// `Ok(None)` means: use outbound Redis (fast path off, every pooled connection stuck, or
    /// the store unavailable, which is logged).
    pub fn open() -> Result<Option<Self>, ConfigError> {
        let variables = Variables::spin();
        if !variables.flag(VARIABLE)? {
            return Ok(None);
        }
        let stall_ms = variables.whole(STALL_VARIABLE, 10..=60_000)? as i64;
        let breaker = match Breaker::open(stall_ms) {
            Ok(breaker) => breaker,
            Err(e) => {
                eprintln!("fast path: breaker store {BREAKER_LABEL:?} unavailable ({e}); using outbound Redis");
                return Ok(None);
            }
        };
        let Some(label) = breaker.usable_label() else {
            DIVERTED.store(true, Ordering::Relaxed);
            return Ok(None);
        };
        // Spin's open sends a PING on the pooled connection: it can hang like any call.
        let opened = breaker.guard(label, || store::open(label));
        match opened {
            Ok(bucket) => Ok(Some(Self { bucket, label, breaker })),
            Err(e) => {
                eprintln!(
                    "fast path: key-value store {label:?} unavailable, using outbound Redis: {}",
                    describe(&e)
                );
                Ok(None)
            }
        }
    }

    /// `GET key` on the pooled connection.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        self.breaker.guard(self.label, || self.bucket.get(key)).map_err(|e| store_failure(&e))
    }

    /// `INCRBY key delta` on the pooled connection. The key gets no expiry if it is new.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisError> {
        self.breaker
            .guard(self.label, || atomics::increment(&self.bucket, key, delta))
            .map_err(|e| store_failure(&e))
    }
}

/// Outbound Redis answered this request. When the breaker had diverted it, that is news:
/// Redis is reachable, so the next request may move the fast path to a fresh label. Called by
/// [`super::redis`] after every successful command; free unless the request was diverted.
pub(crate) fn outbound_answered() {
    if !DIVERTED.swap(false, Ordering::Relaxed) {
        return;
    }
    if let Ok(state) = store::open(BREAKER_LABEL) {
        let _ = state.set(OUTBOUND_OK_AT, unix_now_ms().to_string().as_bytes());
    }
}

/// The circuit breaker's state in the process-wide in-memory store (see the module doc).
struct Breaker {
    state: store::Bucket,
    stall_ms: i64,
}

impl Breaker {
    fn open(stall_ms: i64) -> Result<Self, String> {
        let state = store::open(BREAKER_LABEL).map_err(|e| describe(&e))?;
        Ok(Self { state, stall_ms })
    }

    fn read(&self, key: &str) -> i64 {
        match self.state.get(key) {
            Ok(Some(v)) => std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok()).unwrap_or(0),
            _ => 0,
        }
    }

    fn write(&self, key: &str, value: i64) {
        // The in-memory store fails only if Spin cannot take its lock; then the breaker
        // simply learns nothing from this call.
        let _ = self.state.set(key, value.to_string().as_bytes());
    }

    fn pending_since_key(label: &str) -> String {
        format!("fast_path:{label}:pending_since")
    }

    fn done_at_key(label: &str) -> String {
        format!("fast_path:{label}:done_at")
    }

    /// When the oldest unfinished call on `label` started, if one is unfinished.
    fn pending_since(&self, label: &str) -> Option<i64> {
        let since = self.read(&Self::pending_since_key(label));
        (since > self.read(&Self::done_at_key(label))).then_some(since)
    }

    /// The label to use now, or `None` for outbound Redis.
    fn usable_label(&self) -> Option<&'static str> {
        let active = usize::try_from(self.read(ACTIVE)).unwrap_or(0) % STORE_LABELS.len();
        let label = STORE_LABELS[active];
        let Some(since) = self.pending_since(label) else { return Some(label) };
        let now = unix_now_ms();
        if now - since <= self.stall_ms {
            return Some(label);
        }
        // Stuck. Once outbound Redis has answered since, Redis is back (or only this
        // connection hangs, as a half-open socket after a failover would): move to an idle
        // label. Instances racing here pick the same one.
        if self.read(OUTBOUND_OK_AT) > since {
            let idle = (1..STORE_LABELS.len())
                .map(|step| (active + step) % STORE_LABELS.len())
                .find(|&i| self.pending_since(STORE_LABELS[i]).is_none());
            if let Some(next) = idle {
                self.write(ACTIVE, next as i64);
                eprintln!(
                    "fast path: the pooled connection of store {label:?} has hung for {} ms \
                     while outbound Redis answers; moving to store {:?}",
                    now - since,
                    STORE_LABELS[next]
                );
                return Some(STORE_LABELS[next]);
            }
        }
        if now - self.read(LOGGED_AT) >= 1000 {
            self.write(LOGGED_AT, now);
            eprintln!(
                "fast path: a pooled Redis call on store {label:?} has been pending for {} ms; \
                 using outbound Redis",
                now - since
            );
        }
        None
    }

    /// Runs one pooled call on `label` with its start and end recorded. Only the first of
    /// overlapping calls marks `pending_since`, so it keeps the age of the oldest unfinished
    /// one (races between instances can only make it a little younger, which delays tripping
    /// by as much).
    fn guard<T>(&self, label: &str, call: impl FnOnce() -> T) -> T {
        let now = unix_now_ms();
        if self.pending_since(label).is_none() {
            self.write(&Self::pending_since_key(label), now);
        }
        let result = call();
        self.write(&Self::done_at_key(label), unix_now_ms().max(now + 1));
        result
    }
}

fn describe(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store (define it in the runtime config)".into(),
        store::Error::AccessDenied => {
            "access denied (list the store in the component's key_value_stores)".into()
        }
        store::Error::Other(m) => m.clone(),
    }
}

/// Spin's Redis store reports every failure, connection or reply, as `other(Debug text)`:
/// read the same way as outbound Redis's, so a wrong-type key or a refused key is a mistake
/// (500), not an outage that a `fail_open` policy would wave through.
fn store_failure(e: &store::Error) -> RedisError {
    super::redis::classify_failure(describe(e))
}
