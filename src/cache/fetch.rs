//! Requests to the origin through the platform's HTTP client.

use crate::platform::fields;
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

/// The request fields forwarded to the origin: end-to-end ones (the platform's hop-by-hop
/// list and the fields `Connection` names dropped, `Content-Length` recomputed, `spin-*`
/// dropped), less `Expect` (the body is sent whole).
pub fn forwardable(lines: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut kept = fields::end_to_end(lines);
    kept.retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
    kept
}
