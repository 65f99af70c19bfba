//! Fixed and sliding windows on the pooled store (issue 14): with `redis_fast_path` on, a
//! decision of one window limit is an `INCRBY` of a per-window counter through Spin's pooled
//! key-value store, so it opens no Redis connection; outbound Redis is used only by the first
//! request of a window, to give the new counter its expiry.
//!
//! - Exact: `INCRBY` hands each request its own total, a request is admitted when that total
//!   is within the quota, and a refused request takes its units back, so N concurrent checks
//!   at limit L admit exactly min(N, L) (at cost 1; a larger refused cost can, while it is
//!   being taken back, refuse a request that would have fitted, never admit one too many).
//! - One definition of windows and one clock for a policy: every decision of a one-limit
//!   window policy takes this path while the fast path is on (consume, dry run, state), and
//!   windows follow the instances' wall clock (NTP-synchronised), fixed windows with the same
//!   per-key offset as the script. The script path (fast path off) keeps its own state under
//!   Redis time; switching the fast path starts those quotas afresh.
//! - Self-expiring: the creator of a window's counter sets its expiry and repairs the previous
//!   window's, so a counter whose expiry failed once gets one from the next window's creator.
//! - One state when the pool is stuck: while the fast path's breaker keeps requests off the
//!   pooled connection, the same counters are read and incremented over outbound Redis
//!   ([`Counters`]), so a caller never finds a fresh quota on another path.

use crate::args;
use crate::lua_script;
use crate::platform::clock::unix_now_ms;
use crate::platform::fast_path::FastPath;
use crate::platform::redis::{Redis, RedisError};
use crate::platform::script::Script;

use super::decide::{Check, Mode, State};
use super::keys;
use super::policy::Algorithm;

static EXPIRE_TWO: Script = lua_script!(include_str!("expire_two.lua"));

/// The window counters of a limit, for a reset: the current and previous window's.
pub(crate) fn counters(full_key: &str, check: &Check) -> Vec<String> {
    match window(full_key, check) {
        Some(w) => vec![w.key(w.idx), w.key(w.idx - 1)],
        None => Vec::new(),
    }
}

struct Window<'a> {
    base: &'a str,
    sliding: bool,
    window_ms: i64,
    idx: i64,
    /// Milliseconds into the window.
    elapsed: i64,
}

impl Window<'_> {
    fn key(&self, idx: i64) -> String {
        format!("{}:{idx}", self.base)
    }
}

fn window<'a>(full_key: &'a str, check: &Check) -> Option<Window<'a>> {
    let (window_ms, sliding) = match check.limit.algorithm {
        Algorithm::FixedWindow { window_ms } => (window_ms, false),
        Algorithm::SlidingWindow { window_ms } => (window_ms, true),
        Algorithm::TokenBucket { .. } => return None,
    };
    let window_ms = i64::try_from(window_ms).ok()?;
    let offset = i64::try_from(keys::window_offset_ms(full_key, check.limit)).ok()?;
    let shifted = unix_now_ms() - offset;
    let idx = shifted.div_euclid(window_ms);
    Some(Window { base: full_key, sliding, window_ms, idx, elapsed: shifted - idx * window_ms })
}

/// Where a window's counters live: the pooled store, or the same keys over outbound Redis.
pub(crate) trait Counters {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError>;
    fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisError>;
}

impl Counters for FastPath {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        FastPath::get(self, key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisError> {
        FastPath::increment(self, key, delta)
    }
}

impl Counters for Redis {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        Ok(self.execute("GET", args![key])?.opt_bytes(0)?.map(<[u8]>::to_vec))
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisError> {
        self.execute("INCRBY", args![key, delta])?.int(0)
    }
}

fn read(store: &dyn Counters, key: &str) -> Result<i64, RedisError> {
    Ok(store
        .get(key)?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(0))
}

/// Decides one window limit on the pool; `None` for a token bucket.
pub(crate) fn decide(
    store: &dyn Counters,
    redis: &Redis,
    check: &Check,
    cost: u64,
    mode: Mode,
) -> Result<Option<State>, RedisError> {
    let full_key = redis.key(&check.key);
    let Some(w) = window(&full_key, check) else { return Ok(None) };
    let quota = i64::try_from(check.limit.quota).unwrap_or(i64::MAX);
    let cost = i64::try_from(cost).unwrap_or(i64::MAX);
    let (current, previous) = (w.key(w.idx), w.key(w.idx - 1));
    let left = w.window_ms - w.elapsed;
    // The previous window's weight (sliding only): its share still inside the window.
    let prev = if w.sliding { read(store, &previous)? } else { 0 };
    let weighted = prev as f64 * left as f64 / w.window_ms as f64;
    let fits = |total: i64| weighted + total as f64 <= quota as f64;
    let remaining = |total: i64| ((quota as f64 - weighted - total as f64).floor() as i64).max(0);
    let reset = |total: i64| {
        if !w.sliding {
            if total > 0 {
                left
            } else {
                0
            }
        } else if total > 0 {
            left + w.window_ms
        } else if prev > 0 {
            left
        } else {
            0
        }
    };
    // The wait until `cost` fits, with `used` units in this window (as the script computes).
    let wait = |used: i64| -> i64 {
        if !w.sliding {
            return left;
        }
        let window = w.window_ms as f64;
        let ms = if used + cost <= quota && prev > 0 {
            window * (1.0 - (quota - used - cost) as f64 / prev as f64) - w.elapsed as f64
        } else {
            left as f64 + window * (1.0 - (quota - cost) as f64 / used.max(1) as f64)
        };
        (ms.ceil() as i64).max(1)
    };
    let ms = |v: i64| u64::try_from(v).unwrap_or(0);
    let state = |allowed: bool, total: i64, retry: i64| State {
        allowed,
        remaining: ms(remaining(total)),
        reset_after_ms: ms(reset(total)),
        retry_after_ms: ms(retry),
    };
    if mode != Mode::Consume {
        let used = read(store, &current)?;
        if !fits(used + cost) {
            return Ok(Some(state(false, used, wait(used))));
        }
        let total = if mode == Mode::Peek { used } else { used + cost };
        return Ok(Some(state(true, total, 0)));
    }
    let total = store.increment(&current, cost)?;
    if total == cost {
        // This request opened the window: give the counter its expiry (the end of the window,
        // or of the next one for a sliding window, which still weighs it), and repair the
        // previous counter's in case that failed once. One outbound round trip per window.
        let (ttl, prev_ttl) = if w.sliding { (left + w.window_ms, left) } else { (left, 1) };
        if let Err(e) = redis.eval(&EXPIRE_TWO, &[&current, &previous], args![ttl, prev_ttl]) {
            eprintln!("ratelimit: pooled window expiry not set (the next window repairs it): {e}");
        }
    }
    if fits(total) {
        return Ok(Some(state(true, total, 0)));
    }
    // Take the units back, so the counter holds admitted units only.
    store.increment(&current, -cost)?;
    let used = total - cost;
    Ok(Some(state(false, used, wait(used))))
}
