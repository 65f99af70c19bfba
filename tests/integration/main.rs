//! The integration tests, one binary. The service modules drive the built `.wasm` components
//! through the Spin-compatible test host (tests/host) into real Redis servers they start
//! themselves, plain and TLS with a password; `deploy` checks the SpinKube tree and scripts,
//! `docs` the README and docs against spin.toml. `support` holds what the modules share.

mod support;

mod cache;
mod deploy;
mod docs;
mod entra;
mod every_service;
mod fast_path_outage;
mod health;
mod http_cache;
mod leaderboard;
mod library;
mod locks;
mod logs;
mod openapi;
mod otp;
mod ratelimit;
mod sessions;
mod sessions_library;
mod silent_redis;
mod wasm_size;
mod write_behind;
