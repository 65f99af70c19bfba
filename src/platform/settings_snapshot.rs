//! The component's non-secret Spin variables, kept for a few seconds in the process-wide
//! in-memory store `breaker`, so a request reads them with one store `get` instead of one
//! host call each.
//!
//! Spin runs every request in a fresh instance, so nothing in the guest outlives a request,
//! and a pooled read resolves its ~30 settings anew each time: measured under the real Spin,
//! 32 variable reads cost a pooled `GET` 16% of its throughput (docs/benchmarks.md). A
//! snapshot is the values this component read, under a key of its own, re-read from Spin
//! after [`MAX_AGE_MS`] so that a changed provider value (a rotated Key Vault secret, say)
//! lands within seconds. Secrets are never put there ([`is_secret`]): they are read from
//! Spin on every use, as before. Without the store (a component that does not list it) every
//! read goes to Spin.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spin_sdk::wit::wasi::keyvalue::store;

use super::breaker;
use super::clock::unix_now_ms;

/// How long a snapshot is used before its values are read from Spin again.
pub const MAX_AGE_MS: i64 = 10_000;

/// Names of secret variables (tokens, keys, peppers, passwords) by their suffix: never kept
/// in the snapshot. A test holds every `secret = true` variable of spin.toml to this rule.
pub fn is_secret(name: &str) -> bool {
    ["_token", "_key", "_pepper", "_secret", "_password"].iter().any(|s| name.ends_with(s))
}

#[derive(Serialize, Deserialize, Default)]
struct Stored {
    /// When the values were read from Spin (Unix ms).
    at: i64,
    values: BTreeMap<String, String>,
}

#[derive(Default)]
struct Snapshot {
    loaded: bool,
    /// The store key: one snapshot per component (see [`set_component`]).
    key: String,
    stored: Stored,
    /// Values read from Spin during this request that the stored snapshot lacks.
    dirty: bool,
}

thread_local! {
    static SNAPSHOT: RefCell<Snapshot> = RefCell::new(Snapshot::default());
}

/// Names the snapshot of this component. `serve` passes the source file of the component's
/// handler, which differs between components (they map different variables).
pub(crate) fn set_component(name: &str) {
    SNAPSHOT.with(|s| s.borrow_mut().key = format!("settings:{name}"));
}

fn open() -> Option<store::Bucket> {
    store::open(breaker::LABEL).ok()
}

/// A variable's value: from the snapshot when it holds it, else from Spin.
pub(crate) fn lookup(
    name: &'static str,
    from_spin: impl Fn(&'static str) -> Result<String, String>,
) -> Result<String, String> {
    if is_secret(name) {
        return from_spin(name);
    }
    let cached = SNAPSHOT.with(|s| {
        let mut s = s.borrow_mut();
        if !s.loaded {
            s.loaded = true;
            let stored = open()
                .and_then(|state| state.get(&s.key).ok().flatten())
                .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
                .filter(|stored| (0..MAX_AGE_MS).contains(&(unix_now_ms() - stored.at)));
            s.stored = stored.unwrap_or_else(|| Stored { at: unix_now_ms(), ..Stored::default() });
        }
        s.stored.values.get(name).cloned()
    });
    if let Some(value) = cached {
        return Ok(value);
    }
    let value = from_spin(name)?;
    SNAPSHOT.with(|s| {
        let mut s = s.borrow_mut();
        s.stored.values.insert(name.to_owned(), value.clone());
        s.dirty = true;
    });
    Ok(value)
}

/// Writes back a snapshot that this request completed. Called by `serve` after the answer.
pub(crate) fn save() {
    SNAPSHOT.with(|s| {
        let mut s = s.borrow_mut();
        if !s.dirty {
            return;
        }
        s.dirty = false;
        if let (Some(state), Ok(bytes)) = (open(), serde_json::to_vec(&s.stored)) {
            let _ = state.set(&s.key, &bytes);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_told_by_their_names() {
        for name in ["redis_access_key", "sessions_api_token", "otp_pepper", "cache_purge_token"] {
            assert!(is_secret(name), "{name}");
        }
        for name in ["redis_host", "redis_key_prefix", "cache_ttl_seconds", "ratelimit_policies"] {
            assert!(!is_secret(name), "{name}");
        }
    }
}
