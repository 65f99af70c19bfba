//! One GET to the origin through the platform's HTTP client.

use crate::platform::outbound::{self, OutboundError, OutboundRequest, OutboundResponse, Timeouts};

/// Largest origin body read at all; bigger answers are a 502 (entries over the configured
/// maximum but under this are served, not stored).
pub const MAX_ORIGIN_BODY: usize = 16 * 1024 * 1024;

/// GETs `origin_url` + `target` (a normalised `/path?query`). Each phase and the whole
/// exchange are bounded by `timeout_ms`, so the stampede lock (which lives longer) outlives
/// the fetch even when the origin trickles.
pub fn get(
    origin_url: &str,
    target: &str,
    timeout_ms: u64,
) -> Result<OutboundResponse, OutboundError> {
    // No request headers are forwarded: the key is the target alone, so the origin must not
    // answer differently by header.
    let url = format!("{origin_url}{target}");
    let request =
        OutboundRequest { method: &http::Method::GET, url: &url, headers: &[], body: &[] };
    outbound::send(&request, Timeouts::uniform(timeout_ms), MAX_ORIGIN_BODY)
}
