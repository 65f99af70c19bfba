//! Requests to the origin through the platform's HTTP client.

use crate::platform::outbound::{self, OutboundError, OutboundRequest, OutboundResponse, Timeouts};

/// Largest origin body read at all; bigger answers are a 502 (entries over the configured
/// maximum but under this are served, not stored).
pub const MAX_ORIGIN_BODY: usize = 16 * 1024 * 1024;

/// Sends `method` to `origin_url` + `target` (a normalised `/path?query`) with `headers`.
/// Each phase and the whole exchange are bounded by `timeout_ms` (the overall deadline is
/// enforced by the client even against a trickling origin), so the single-flight lock,
/// which lives longer, outlives the fetch.
pub fn send(
    method: &http::Method,
    origin_url: &str,
    target: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    timeout_ms: u64,
) -> Result<OutboundResponse, OutboundError> {
    let url = format!("{origin_url}{target}");
    let request = OutboundRequest { method, url: &url, headers, body };
    outbound::send(&request, Timeouts::uniform(timeout_ms), MAX_ORIGIN_BODY)
}

/// Request fields never forwarded on a write: hop-by-hop fields, the framing wasi-http
/// sets itself, `Host` (the origin's own is used) and Spin's `spin-*` fields.
pub fn forwardable(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(name.starts_with("spin-")
        || matches!(
            name.as_str(),
            "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
                | "proxy-authorization"
                | "expect"
        ))
}
