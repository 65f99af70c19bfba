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
