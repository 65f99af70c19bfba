//! The shared library behind every spin-redis-patterns component.
//!
//! Components are thin: each `components/<name>` crate hands its requests to one service
//! module here. Two layers:
//!
//! - [`platform`]: what every service needs from Spin and Redis, written once (requests,
//!   responses and errors, bearer auth, settings, outbound HTTP, Redis, the pooled fast path,
//!   Lua scripts, clocks, secrets).
//! - The services, each a folder in one shape (`mod.rs` with the doc and the route table,
//!   then `settings.rs`, `keys.rs`, scripts and domain files):
//!   [`ratelimit`] (`/api/ratelimit/...`, the `/api/limited/...` gateway),
//!   [`sessions`] (`/api/sessions...`), [`cache`] (`/api/cache/...`),
//!   [`otp`] (`/api/otp`, `/api/otp/verify`), [`health`] (`/health/cache`),
//!   [`leaderboard`] (`/api/leaderboards/...`) and [`locks`] (`/api/locks/{name}`).

pub mod cache;
pub mod health;
pub mod leaderboard;
pub mod locks;
pub mod otp;
pub mod platform;
pub mod ratelimit;
pub mod sessions;

/// A kind of key that services leave in Redis without an expiry, and what bounds it.
pub struct KeyWithoutExpiry {
    /// The key without the `redis_key_prefix`; `*` stands for any run of characters.
    pub pattern: &'static str,
    pub bound: &'static str,
}

/// Every kind of key written without an expiry: the one list docs/architecture.md cites and
/// `tests/integration/every_service.rs` checks a full run of every service against. Every
/// other key expires by itself.
pub const KEYS_WITHOUT_EXPIRY: &[KeyWithoutExpiry] = &[
    KeyWithoutExpiry {
        pattern: "lb:{*}:all:z",
        bound: "an all-time leaderboard: kept by design, one per configured board, trimmed to \
                its max_members",
    },
    KeyWithoutExpiry {
        pattern: "lb:{*}:all:h",
        bound: "the member index of an all-time leaderboard: as its sorted set",
    },
    KeyWithoutExpiry {
        pattern: "cache:{b*}:stats:hits",
        bound: "a cache bucket's hit counter when the pooled fast path creates it (Spin's \
                key-value store has no TTL): one per bucket, at most cache_key_buckets; the \
                first outbound hit counted in its bucket gives it the 30-day expiry of the \
                other counters",
    },
    KeyWithoutExpiry {
        pattern: "cache:{b*}:wb:queue",
        bound: "a bucket's write-behind queue: writes acknowledged to clients and not yet to \
                the origin, which an expiry would lose; one per bucket, each at most \
                cache_write_behind_max_queue entries (docs/write-behind.md)",
    },
    KeyWithoutExpiry {
        pattern: "cache:{b*}:wb:dead",
        bound: "a bucket's write-behind dead letters: writes the origin refused or never took, \
                kept for an operator; one per bucket, growing only by failed writes",
    },
];
