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
//! store's reconnect retries (minutes). A WASIp2 guest cannot interrupt a host call, so the
//! components never make one that is likely to hang. The [`Breaker`] keeps two timestamps in
//! Spin's in-memory store `breaker`, which every instance of the process shares:
//! `pending_since` (a pooled call started and has not finished) and `done_at` (the last call
//! finished). A call still pending after `redis_fast_path_stall_ms` means the pooled
//! connection is stuck: until some call finishes, every request skips the fast path and uses
//! outbound Redis, which fails at once when Redis is down (503, bypass or the rate-limit
//! policy's failure mode) and works as soon as Redis is back. The stuck calls are the probes:
//! when the store reconnects they finish, `done_at` moves, and the fast path is used again.
//! Requests that start a pooled call in the stall window before the breaker opens wait with
//! the stuck ones: at most the request rate times `redis_fast_path_stall_ms`.
//!
//! Off unless `redis_fast_path` is true. When a store cannot be opened the caller falls back
//! to outbound Redis, which then reports Redis being down as it always does.

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use super::clock::unix_now_ms;
use super::redis::RedisError;
use super::settings::{ConfigError, Variables};

/// The store label the components list in `key_value_stores` and the runtime config defines.
pub const STORE_LABEL: &str = "redis";
/// The in-memory store (`type = "spin"`, no `path`) that holds the breaker's state.
pub const BREAKER_LABEL: &str = "breaker";
/// The Spin variable that turns the fast path on.
pub const VARIABLE: &str = "redis_fast_path";
/// How long a pooled call may be pending before every request skips the fast path.
pub const STALL_VARIABLE: &str = "redis_fast_path_stall_ms";

const PENDING_SINCE: &str = "fast_path:pending_since";
const DONE_AT: &str = "fast_path:done_at";

/// An open handle on the pooled store, behind the breaker.
pub struct FastPath {
    bucket: store::Bucket,
    breaker: Breaker,
}

impl FastPath {
    /// The store, when `redis_fast_path` is on, the breaker is closed and Spin opens it.
    /// `Ok(None)` means: use outbound Redis (fast path off, the pooled connection stuck, or
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
        if breaker.is_open() {
            return Ok(None);
        }
        // Spin's open sends a PING on the pooled connection: it can hang like any call.
        let opened = breaker.guard(|| store::open(STORE_LABEL));
        match opened {
            Ok(bucket) => Ok(Some(Self { bucket, breaker })),
            Err(e) => {
                eprintln!(
                    "fast path: key-value store {STORE_LABEL:?} unavailable, using outbound Redis: {}",
                    describe(&e)
                );
                Ok(None)
            }
        }
    }

    /// `GET key` on the pooled connection.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        self.breaker.guard(|| self.bucket.get(key)).map_err(|e| unavailable(&e))
    }

    /// `INCRBY key delta` on the pooled connection. The key gets no expiry if it is new.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisError> {
        self.breaker
            .guard(|| atomics::increment(&self.bucket, key, delta))
            .map_err(|e| unavailable(&e))
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

    fn write(&self, key: &str, ms: i64) {
        // The in-memory store fails only if Spin cannot take its lock; then the breaker
        // simply learns nothing from this call.
        let _ = self.state.set(key, ms.to_string().as_bytes());
    }

    /// True while a pooled call has been pending for longer than the stall limit.
    fn is_open(&self) -> bool {
        let pending_since = self.read(PENDING_SINCE);
        let stuck =
            pending_since > self.read(DONE_AT) && unix_now_ms() - pending_since > self.stall_ms;
        if stuck {
            eprintln!(
                "fast path: a pooled Redis call has been pending for {} ms; using outbound Redis",
                unix_now_ms() - pending_since
            );
        }
        stuck
    }

    /// Runs one pooled call with its start and end recorded. Only the first of overlapping
    /// calls marks `pending_since`, so it keeps the age of the oldest unfinished one (races
    /// between instances can only make it a little younger, which delays tripping by as much).
    fn guard<T>(&self, call: impl FnOnce() -> T) -> T {
        let now = unix_now_ms();
        if self.read(PENDING_SINCE) <= self.read(DONE_AT) {
            self.write(PENDING_SINCE, now);
        }
        let result = call();
        self.write(DONE_AT, unix_now_ms().max(now + 1));
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

/// Spin's Redis store reports every failure, connection or reply, as `other(Debug text)`.
fn unavailable(e: &store::Error) -> RedisError {
    RedisError::Unavailable(format!("key-value store: {}", describe(e)))
}
