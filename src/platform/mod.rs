//! The platform layer: what every service needs from Spin and Redis, written once.
//!
//! A service module holds only its domain: its routes, settings, keys, scripts and rules. It
//! reaches Spin and Redis through these modules and never re-implements them:
//!
//! - `request`: the incoming request (methods, `spin-*` headers as Spin defines them,
//!   singleton headers, bearer tokens, a body read with a limit, JSON bodies through serde);
//! - `response`: the response as a list of field lines, the problem+json error shape,
//!   `serve`;
//! - `log`: structured logs, one JSON line per event, with the request id;
//! - `auth`: bearer-token checks with one constant-time comparison;
//! - `settings`: typed Spin variables with ranges and one `misconfigured` answer;
//! - `settings_snapshot`: non-secret variables kept a few seconds per process;
//! - `fields`: hop-by-hop fields (one list for every proxy) and list splitting;
//! - `outbound`: the one outbound HTTP client, with per-phase timeouts and a deadline;
//! - `redis`, `redis_settings`: outbound Redis, one lazily opened connection per request;
//! - `breaker`: no Redis call is made while an earlier one hangs (Spin sets no timeouts);
//! - `fast_path`: reads and counters through Spin's pooled Redis key-value store;
//! - `script`: Lua scripts assembled with shared preludes, stripped at compile time;
//! - `clock`: wall and monotonic time, and sleeping;
//! - `json`: bodies that must be JSON objects; objects in order without duplicate names;
//! - `url`: the one http(s) URL parser (configured origins, outbound URLs, `Origin`);
//! - `percent`: the one strict percent-decoder;
//! - `secrets`: CSPRNG tokens, HMAC/SHA-256, constant-time comparison, encodings.

pub mod auth;
pub mod breaker;
pub mod clock;
pub mod fast_path;
pub mod fields;
pub mod json;
pub mod log;
pub mod outbound;
pub mod percent;
pub mod redis;
pub mod redis_settings;
pub mod request;
pub mod response;
pub mod script;
pub mod secrets;
pub mod settings;
pub mod settings_snapshot;
pub mod url;

pub use request::Request;
pub use response::{serve, ApiError, Response};
