//! The pooled fast path: hot reads through Spin's key-value store.
//!
//! Outbound Redis (`crate::redis`) opens a new connection, TLS handshake and AUTH included,
//! for every request: Spin pools nothing there. Spin's Redis-backed key-value store instead
//! keeps one reconnecting connection per store label for the app's whole life and uses raw
//! Redis keys. So a component may read a key that its Lua scripts wrote through this store
//! without connecting at all, when the runtime config points the store at the same Redis:
//!
//! ```toml
//! [key_value_store.redis]
//! type = "redis"
//! url = "rediss://:ACCESS_KEY@NAME.redis.cache.windows.net:6380"
//! ```
//!
//! The store does only `GET`, `SET` (no TTL), `DEL`, `EXISTS` and `INCRBY`, and opening it
//! costs a `PING`. So it serves reads and counters only; anything with expiry, a lock or more
//! than one key stays on outbound Redis, and a read that the fast path cannot answer for sure
//! goes there too. Both paths reach the same primary, so a write is seen by the next read.
//!
//! Off unless `redis_fast_path` is true. When the store cannot be opened the caller falls
//! back to outbound Redis, which then reports Redis being down as it always does.

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use super::redis::RedisError;
use super::settings::{ConfigError, Variables};

/// The store label the components list in `key_value_stores` and the runtime config defines.
pub const STORE_LABEL: &str = "redis";
/// The Spin variable that turns the fast path on.
pub const VARIABLE: &str = "redis_fast_path";

/// An open handle on the pooled store.
pub struct FastPath(store::Bucket);

impl FastPath {
    /// The store, when `redis_fast_path` is on and Spin opens it. `Ok(None)` means: use
    /// outbound Redis (fast path off, or the store unavailable, which is logged).
    pub fn open() -> Result<Option<Self>, ConfigError> {
        if !Variables::spin().flag(VARIABLE)? {
            return Ok(None);
        }
        match store::open(STORE_LABEL) {
            Ok(bucket) => Ok(Some(Self(bucket))),
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
        self.0.get(key).map_err(|e| unavailable(&e))
    }

    /// `INCRBY key delta` on the pooled connection. The key gets no expiry if it is new.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisError> {
        atomics::increment(&self.0, key, delta).map_err(|e| unavailable(&e))
    }
}

fn describe(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store (define it in the runtime config)".into(),
        store::Error::AccessDenied => {
            format!("access denied (list {STORE_LABEL:?} in the component's key_value_stores)")
        }
        store::Error::Other(m) => m.clone(),
    }
}

/// Spin's Redis store reports every failure, connection or reply, as `other(Debug text)`.
fn unavailable(e: &store::Error) -> RedisError {
    RedisError::Unavailable(format!("key-value store: {}", describe(e)))
}
