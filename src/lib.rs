//! The shared library behind every spin-redis-patterns component.
//!
//! Components are thin: each `components/<name>` crate parses its routes and calls in here.
//! - [`config`]: Redis settings from Spin variables, the `redis://`/`rediss://` URL, TLS policy.
//! - [`redis`]: the one Redis access layer: a lazily opened connection per request, Lua
//!   scripts run with `EVALSHA`/`EVAL`, typed views of Spin's flattened replies.
//! - [`fast_path`]: hot reads through Spin's key-value store, pooled by the host.
//! - [`error`]: the JSON error shape every route answers with.
//! - [`http`]: responses, bearer tokens, method checks, path info.
//! - [`json`]: the one strict JSON reader for request bodies (small `.wasm`, raw number text).
//! - [`health`]: the `/health/cache` check.
//! - [`secrets`]: CSPRNG tokens and digits, HMAC/SHA-256, constant-time comparison.
//! - [`ratelimit`]: `/api/ratelimit/...` and the `/api/limited/...` gateway.
//! - [`sessions`]: server-side web sessions under `/api/sessions...`.
//! - [`cache`]: cache-aside in front of an HTTP origin, `/api/cache/...`.
//! - [`otp`]: one-time codes and reset tokens, `/api/otp` and `/api/otp/verify`.

pub mod cache;
pub mod config;
pub mod error;
pub mod fast_path;
pub mod health;
pub mod http;
pub mod json;
pub mod otp;
pub mod ratelimit;
pub mod redis;
pub mod secrets;
pub mod sessions;

pub use error::ApiError;
