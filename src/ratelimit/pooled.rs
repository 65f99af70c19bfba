//! Fixed and sliding windows on the pooled store (issue 14): with `redis_fast_path` on, a
//! decision of one window limit is an `INCRBY` of the window's counter through Spin's pooled
//! key-value store, so it opens no Redis connection; outbound Redis is used only by the first
//! request of a window, to give the new counter its expiry.
//!
//! - One state and one clock with the script: the counters, window indexes, clock and expiry
//!   rules are those of `windows.rs`, which the decision script uses too. So the fast path can
//!   be switched on or off, a multi-limit decision can count the same limit, and the breaker
//!   can send a request to the script, all without a quota starting afresh.
//! - Exact: `INCRBY` hands each request its own total, a request is admitted when that total
//!   is within the quota, and a refused request takes its units back, so N concurrent checks
//!   at limit L admit exactly min(N, L) (at cost 1; a larger refused cost can, while it is
//!   being taken back, refuse a request that would have fitted, never admit one too many).
//!   The script increments only what it admits, so mixing the paths keeps this.
//! - Self-expiring: see `windows.rs`.

use crate::args;
use crate::lua_script;
use crate::platform::fast_path::FastPath;
use crate::platform::log;
use crate::platform::redis::{Redis, RedisError};
use crate::platform::script::Script;

use super::decide::{Check, Mode, State};
use super::windows::Window;

static EXPIRE_TWO: Script = lua_script!(include_str!("expire_two.lua"));

fn read(store: &FastPath, key: &str) -> Result<i64, RedisError> {
    Ok(store
        .get(key)?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(0))
}

/// Decides one window limit on the pool, in its window `w`.
pub(crate) fn decide(
    store: &FastPath,
    redis: &Redis,
    check: &Check,
    w: &Window,
    cost: u64,
    mode: Mode,
) -> Result<State, RedisError> {
    let quota = i64::try_from(check.limit.quota).unwrap_or(i64::MAX);
    let cost = i64::try_from(cost).unwrap_or(i64::MAX);
    let (current, previous) = (w.current(), w.previous());
    let left = w.left();
    // The previous window's weight (sliding only): its share still inside the window.
    // The decision script (decide.lua) computes every figure below with the same formulas,
    // in the same order of floating-point operations.
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
    // The wait until `cost` fits, with `used` units in this window.
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
            return Ok(state(false, used, wait(used)));
        }
        let total = if mode == Mode::Peek { used } else { used + cost };
        return Ok(state(true, total, 0));
    }
    let total = store.increment(&current, cost)?;
    if total == cost {
        // This request created the window's counter: its expiry, and the previous counter's
        // repair (windows.rs). One outbound round trip per window.
        let (ttl, prev_ttl) = w.expiries();
        if let Err(e) = redis.eval(&EXPIRE_TWO, &[&current, &previous], args![ttl, prev_ttl]) {
            log::warn(
                "window_expiry_not_set",
                format_args!("pooled window expiry not set (the next window repairs it): {e}"),
            );
        }
    }
    if fits(total) {
        return Ok(state(true, total, 0));
    }
    // Take the units back, so the counter holds admitted units only.
    store.increment(&current, -cost)?;
    let used = total - cost;
    Ok(state(false, used, wait(used)))
}
