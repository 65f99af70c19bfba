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
//! its next retry (up to two minutes later). Every pooled call goes through the
//! [`super::breaker`], as outbound calls do, under its store label:
//! - a label with a call pending longer than `redis_stall_ms` is stuck: every request skips
//!   the fast path and uses outbound Redis, which fails at once when Redis is down (503,
//!   bypass or the rate-limit policy's failure mode), is refused by the breaker when Redis is
//!   silent, and works as soon as Redis is back;
//! - once an outbound call made after the stuck call started has succeeded, Redis is
//!   reachable again while the pooled connection still hangs, so the next request moves the
//!   fast path to the next label of [`STORE_LABELS`] that is not stuck: a store Spin has not
//!   connected yet (or whose connection has recovered), which connects at once. The stuck
//!   label's calls finish whenever its own reconnect does; it is used again after a later
//!   failover. Recovery therefore takes one outbound answer, not Spin's backoff. With every
//!   label stuck (failovers closer together than the store's reconnect), requests stay on
//!   outbound Redis until one recovers.
//!
//! Requests that start a pooled call in the stall window before the breaker opens wait with
//! the stuck ones: at most the request rate times `redis_stall_ms`, per failover.
//!
//! Off unless `redis_fast_path` is true. When a store cannot be opened the caller falls back
//! to outbound Redis, which then reports Redis being down as it always does.

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use super::breaker::{self, Breaker};
use super::clock::unix_now_ms;
use super::redis::RedisError;
use super::settings::{ConfigError, Variables};

/// The labels of the pooled store, all on the same Redis, which the components list in
/// `key_value_stores` and the runtime config defines. Spin keeps one connection per label,
/// made on its first open: the first is used until it hangs, the others stand by (see the
/// module doc) and cost nothing until then.
pub const STORE_LABELS: [&str; 2] = ["redis", "redis_standby"];
/// The in-memory store (`type = "spin"`, no `path`) that holds the breaker's state.
pub const BREAKER_LABEL: &str = breaker::LABEL;
/// The Spin variable that turns the fast path on.
pub const VARIABLE: &str = "redis_fast_path";

/// The key, in the breaker's store, that says which label is in use (its presence, read
/// from the listing the breaker makes anyway): `fast_path:active:{index}`; none means 0.
fn active_key(index: usize) -> String {
    format!("fast_path:active:{index}")
}

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
        let Some(breaker) = Breaker::open(&variables)? else { return Ok(None) };
        let Some(label) = usable_label(&breaker) else { return Ok(None) };
        // Spin's open sends a PING on the pooled connection: it can hang like any call.
        match breaker.guard(label, || store::open(label)) {
            Ok(bucket) => Ok(Some(Self { bucket, label, breaker })),
            Err(e) => {
                super::log::warn(
                    "fast_path_unavailable",
                    format_args!(
                        "key-value store {label:?} unavailable, using outbound Redis: {}",
                        breaker::describe(&e)
                    ),
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

/// The label to use now, or `None` for outbound Redis.
fn usable_label(breaker: &Breaker) -> Option<&'static str> {
    let active = (1..STORE_LABELS.len()).find(|&i| breaker.listed(&active_key(i))).unwrap_or(0);
    let label = STORE_LABELS[active];
    let Some(since) = breaker.stuck_since(label, i64::MIN) else { return Some(label) };
    let waited = unix_now_ms() - since;
    // Stuck. Once outbound Redis has answered a call made since, Redis is back (or only this
    // connection hangs, as a half-open socket after a failover would): move to a label that
    // is not stuck. Instances racing here pick the same one.
    if breaker.outbound_ok_at() > since {
        let idle = (1..STORE_LABELS.len())
            .map(|step| (active + step) % STORE_LABELS.len())
            .find(|&i| breaker.stuck_since(STORE_LABELS[i], i64::MIN).is_none());
        if let Some(next) = idle {
            let flags: Vec<String> = (0..STORE_LABELS.len()).map(active_key).collect();
            breaker.set_flag(&active_key(next), &flags);
            super::log::warn(
                "fast_path_moved",
                format_args!(
                    "the pooled connection of store {label:?} has hung for {waited} ms while \
                     outbound Redis answers; moving to store {:?}",
                    STORE_LABELS[next]
                ),
            );
            return Some(STORE_LABELS[next]);
        }
    }
    breaker::pooled_stuck_since(since);
    breaker.log_once_a_second(&format!(
        "fast path: a pooled Redis call on store {label:?} has been pending for {waited} ms; \
         using outbound Redis"
    ));
    None
}

/// Spin's Redis store reports every failure, connection or reply, as `other(Debug text)`:
/// read the same way as outbound Redis's, so a wrong-type key or a refused key is a mistake
/// (500), not an outage that a `fail_open` policy would wave through.
fn store_failure(e: &store::Error) -> RedisError {
    super::redis::classify_failure(breaker::describe(e))
}
