//! The one definition of fixed and sliding windows, shared by both decision paths (issue 14):
//! the pooled path (`pooled.rs`, `INCRBY` through Spin's key-value store) and the decision
//! script (`decide.lua`, outbound Redis). Both keep a window limit's state in the same
//! per-window counters, computed here from the same clock, so a unit counted by one path is
//! what the other reads: switching `redis_fast_path`, a breaker keeping requests off a stuck
//! pool, or a policy checked alone and together with others never starts a quota afresh.
//!
//! - State: a string counter per window, `<state key>:<window index>`, holding the units
//!   admitted in that window. The current and the previous window's counters are the only
//!   ones ever read; both share the state key's hash tag, so they are in the limit's slot.
//! - Clock: the deciding instance's wall clock (Unix ms), read once per decision. The pooled
//!   path cannot read Redis `TIME` without the round trip it exists to avoid, so the script
//!   is handed the same reading instead of using Redis time for windows. Hosts are expected to
//!   be NTP-synchronised; an instance `s` ms off moves its window boundaries by `s` ms (it
//!   counts into the neighbouring window's counter for those `s` ms), it never loses or
//!   invents units. A reading before 2024 or after 2100 is refused (a host without a set
//!   clock would otherwise count into windows that no other instance uses).
//! - Fixed windows start at a per-key offset (`keys::window_offset_ms`); sliding windows at
//!   multiples of the window.
//! - Expiry: whoever creates a window's counter (its increment returns exactly the cost)
//!   gives it its expiry (the end of the window; for a sliding window the end of the next,
//!   which still weighs it) and gives the previous window's counter one if it has none
//!   (`PTTL` -1), so a counter whose expiry failed once is repaired by the next window.

use crate::platform::log;
use crate::platform::ApiError;

use super::keys;
use super::policy::{Algorithm, Limit};

/// 2024-01-01T00:00:00Z: no instance deciding today reads an earlier time unless its clock
/// was never set.
pub(crate) const EARLIEST_PLAUSIBLE_MS: i64 = 1_704_067_200_000;
/// 2100-01-01T00:00:00Z.
pub(crate) const LATEST_PLAUSIBLE_MS: i64 = 4_102_444_800_000;

/// The instance's wall clock, for windows: refused when it cannot be a real time.
pub(crate) fn now_ms() -> Result<i64, ApiError> {
    plausible(crate::platform::clock::unix_now_ms())
}

fn plausible(now: i64) -> Result<i64, ApiError> {
    if (EARLIEST_PLAUSIBLE_MS..LATEST_PLAUSIBLE_MS).contains(&now) {
        return Ok(now);
    }
    log::error(
        "clock_unset",
        format_args!("the wall clock reads {now} ms since 1970; windows need a set clock"),
    );
    Err(ApiError::new(
        500,
        "clock_unset",
        "the server's clock is not set, so rate-limit windows cannot be computed",
    ))
}

/// One window limit's window at a given instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// The limit's state key (with the deployment's prefix): the counters' common stem.
    base: String,
    pub sliding: bool,
    pub window_ms: i64,
    pub idx: i64,
    /// Milliseconds into the window.
    pub elapsed: i64,
}

impl Window {
    /// The window of `limit` (whose full state key is `full_key`) at `now_ms`; `None` for a
    /// token bucket.
    pub fn of(full_key: &str, limit: &Limit, now_ms: i64) -> Option<Self> {
        let (window_ms, sliding) = match limit.algorithm {
            Algorithm::FixedWindow { window_ms } => (window_ms, false),
            Algorithm::SlidingWindow { window_ms } => (window_ms, true),
            Algorithm::TokenBucket { .. } => return None,
        };
        // Windows are at most 31 days (policy.rs) and offsets shorter than the window, so
        // these conversions never saturate: every window limit has a window.
        let window_ms = i64::try_from(window_ms).unwrap_or(i64::MAX);
        let offset = i64::try_from(keys::window_offset_ms(full_key, limit)).unwrap_or(0);
        let shifted = now_ms - offset;
        let idx = shifted.div_euclid(window_ms);
        Some(Self {
            base: full_key.to_owned(),
            sliding,
            window_ms,
            idx,
            elapsed: shifted - idx * window_ms,
        })
    }

    /// The counter of the current window.
    pub fn current(&self) -> String {
        format!("{}:{}", self.base, self.idx)
    }

    /// The counter of the window before.
    pub fn previous(&self) -> String {
        format!("{}:{}", self.base, self.idx - 1)
    }

    /// Milliseconds until the window ends.
    pub fn left(&self) -> i64 {
        self.window_ms - self.elapsed
    }

    /// The expiries a new current counter gets, and the previous counter gets when it has
    /// none: (current, previous), in ms.
    pub fn expiries(&self) -> (i64, i64) {
        if self.sliding {
            (self.left() + self.window_ms, self.left())
        } else {
            (self.left(), 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::policy::Policies;

    #[test]
    fn windows_counters_and_expiries() {
        let p = Policies::parse(
            r#"{"f": {"algorithm": "fixed_window", "limit": 5, "window": "1s"},
                "s": {"algorithm": "sliding_window", "limit": 5, "window": "1s"},
                "t": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 1}}"#,
        )
        .unwrap();
        let limit = |name: &str| p.get(name).unwrap().limits[0].clone();
        let now = 1_800_000_000_250;
        let s = Window::of("rl:a:{s:k}:sw", &limit("s"), now).unwrap();
        assert_eq!((s.idx, s.elapsed, s.left()), (1_800_000_000, 250, 750));
        assert_eq!(
            (s.current(), s.previous()),
            ("rl:a:{s:k}:sw:1800000000".to_owned(), "rl:a:{s:k}:sw:1799999999".to_owned())
        );
        assert_eq!(s.expiries(), (1750, 750));
        // A fixed window is shifted by the key's offset, the same on every instance.
        let key = "rl:a:{f:k}:fw";
        let offset = keys::window_offset_ms(key, &limit("f")) as i64;
        let f = Window::of(key, &limit("f"), now).unwrap();
        assert_eq!(f.idx * 1000 + offset + f.elapsed, now);
        assert!((0..1000).contains(&f.elapsed));
        assert_eq!(f.expiries(), (f.left(), 1));
        assert_eq!(Window::of("rl:a:{t:k}:tb", &limit("t"), now), None);
    }

    #[test]
    fn an_unset_clock_is_refused() {
        assert_eq!(plausible(1_800_000_000_000).unwrap(), 1_800_000_000_000);
        for absurd in [0, -1, EARLIEST_PLAUSIBLE_MS - 1, LATEST_PLAUSIBLE_MS, i64::MAX] {
            let e = plausible(absurd).unwrap_err();
            assert_eq!((e.status, e.code), (500, "clock_unset"));
        }
    }
}
