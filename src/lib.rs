//! Redis patterns for Spin components: rate limiting, cache-aside, sessions, one-time codes,
//! leaderboards and leases, in-process from any `spin-sdk` 5 component (`wasm32-wasip2`),
//! and the same patterns as ready-made HTTP components.
//!
//! # The library
//!
//! One [`Redis`] per request, opened lazily from a [`Config`] (settings given in code, then
//! the component's Spin variables, then built-in defaults); every pattern borrows it, so a
//! handler that uses several patterns opens one connection:
//!
//! - [`ratelimit::Limiter`]: fixed window, sliding window and token bucket, policies of
//!   several limits, `RateLimit` header fields;
//! - [`otp::Otp`]: one-time codes and link tokens;
//! - [`sessions::Sessions`]: create, read (from a `Cookie` header), rotate, end, list, cookies;
//! - [`cache::ValueCache`]: cache-aside for any value, with single flight, TTL jitter, tags
//!   and purges; [`cache::HttpCache`]: the cache component's HTTP cache (RFC 9111) in front of
//!   your own origin fetch;
//! - [`leaderboard::Leaderboards`]: submit, top, rank;
//! - [`locks::Lease`]: acquire, renew, release, fencing tokens.
//!
//! Every pattern returns the one [`Error`], whose [`Error::status`] and [`Error::code`] are
//! what the HTTP components answer for the same failure. The library uses the components'
//! Lua scripts and Redis key layout, so the two share state on one Redis (under the same
//! `redis_key_prefix`): see docs/library.md.
//!
//! ```no_run
//! use spin_redis_patterns::ratelimit::Limiter;
//! use spin_redis_patterns::sessions::Sessions;
//! use spin_redis_patterns::{Config, Error, Redis};
//!
//! /// A handler's Redis work: limit the caller, then find its session.
//! fn whoami(client_ip: &str, cookie_header: &str) -> Result<Option<String>, Error> {
//!     let config = Config::spin();
//!     let redis = Redis::from_config(&config)?; // no connection yet
//!     let decision = Limiter::new(&config)?.limit(&redis, "api", client_ip)?;
//!     if !decision.allowed() {
//!         return Ok(None); // answer 429 with decision.headers()
//!     }
//!     let session = Sessions::new(&config)?.current(&redis, &[cookie_header])?;
//!     Ok(session.map(|s| s.user_id)) // one connection for both
//! }
//! ```
//!
//! # The HTTP components
//!
//! Each `components/<name>` crate hands its requests to a `handle` function here:
//! [`ratelimit`] (`/api/ratelimit/...`, the `/api/limited/...` gateway), [`sessions`]
//! (`/api/sessions...`), [`cache`] (`/api/cache/...`), [`otp`] (`/api/otp`,
//! `/api/otp/verify`), [`health`] (`/health/cache`), [`leaderboard`]
//! (`/api/leaderboards/...`) and [`locks`] (`/api/locks/{name}`).

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod error;
pub mod health;
pub mod http;
pub mod leaderboard;
pub mod locks;
pub mod otp;
/// The layer every service is written on (requests, responses, settings, Redis, scripts):
/// public for the components and the test fixtures, not part of the library API, which
/// re-exports what it needs ([`Redis`], [`RedisSettings`], [`ConfigError`]).
#[doc(hidden)]
pub mod platform;
pub mod ratelimit;
pub mod sessions;
pub mod subscriber;

pub use config::Config;
pub use error::Error;
pub use platform::redis::{Redis, RedisError};
pub use platform::redis_settings::RedisSettings;
pub use platform::settings::{ConfigError, Secret};

/// A kind of key that services leave in Redis without an expiry, and what bounds it.
pub struct KeyWithoutExpiry {
    /// The key without the `redis_key_prefix`; `*` stands for any run of characters.
    pub pattern: &'static str,
    /// What keeps the number of such keys bounded.
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
