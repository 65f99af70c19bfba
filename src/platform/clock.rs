//! The one clock of the components, read from WASI directly (`std::time::SystemTime` costs
//! about 5 KB of `.wasm`).
//!
//! Most decisions that several instances must agree on (expiries, deadlines, token buckets)
//! use Redis `TIME` inside the scripts instead. The wall clock here defines rate-limit
//! windows on every path (the pooled path cannot read Redis `TIME` without a round trip, so
//! the script takes the same reading: one clock), compares with stored deadlines on the
//! pooled path, and times the breaker; all of that assumes NTP-synced hosts. The monotonic
//! clock is for timing and waiting within one request.

/// The host's wall clock in Unix milliseconds.
pub fn unix_now_ms() -> i64 {
    let now = wasi::clocks::wall_clock::now();
    i64::try_from(now.seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
        .saturating_add(i64::from(now.nanoseconds / 1_000_000))
}

/// Milliseconds on the host's monotonic clock: for durations within one request.
pub fn monotonic_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

/// Nanoseconds on the host's monotonic clock.
pub fn monotonic_ns() -> u64 {
    wasi::clocks::monotonic_clock::now()
}

/// Sleeps without burning CPU, on a WASI monotonic-clock pollable.
pub fn sleep_ms(ms: u64) {
    wasi::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
}
