//! The one clock of the components, read from WASI directly (`std::time::SystemTime` costs
//! about 5 KB of `.wasm`).
//!
//! Decisions that several instances must agree on (windows, expiries, deadlines) use Redis
//! `TIME` inside the scripts instead; the wall clock here is for comparing with such stored
//! deadlines on the pooled path (so it assumes NTP-synced hosts) and the monotonic clock for
//! timing and waiting within one request.

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
