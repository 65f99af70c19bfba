//! The integration tests, one binary: each module drives the built `.wasm` components through
//! the Spin-compatible test host (tests/host) into real Redis servers it starts itself, plain
//! and TLS with a password. `support` holds what the modules share.

mod support;

mod cache;
mod fast_path_outage;
mod health;
mod leaderboard;
mod locks;
mod otp;
mod ratelimit;
mod sessions;
mod wasm_size;
