//! Delivery webhook: one JSON POST per issued code, through the platform's HTTP client.

use crate::platform::outbound::{self, OutboundRequest, Timeouts};

/// Longest wait for the connection, for the answer to start, and for the whole exchange.
const TIMEOUTS: Timeouts = Timeouts {
    connect_ms: 2_000,
    first_byte_ms: 5_000,
    between_bytes_ms: 5_000,
    deadline_ms: 8_000,
};
/// The answer's body is not used; a little is read so the connection closes cleanly.
const MAX_ANSWER: usize = 64 * 1024;

/// POSTs `body` (JSON) to `url`; `Ok` only for a 2xx answer. The error is safe to log: it
/// names the failure, never the body (which holds the code) or the token.
pub fn post(url: &str, bearer: &str, idempotency_key: &str, body: &[u8]) -> Result<(), String> {
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
        ("idempotency-key".into(), idempotency_key.as_bytes().to_vec()),
    ];
    if !bearer.is_empty() {
        headers.push(("authorization".into(), format!("Bearer {bearer}").into_bytes()));
    }
    let request = OutboundRequest { method: &http::Method::POST, url, headers: &headers, body };
    match outbound::send(&request, TIMEOUTS, MAX_ANSWER) {
        Ok(answer) if (200..300).contains(&answer.status) => Ok(()),
        Ok(answer) => Err(format!("the webhook answered {}", answer.status)),
        Err(outbound::OutboundError::Denied) => Err(
            "webhook delivery failed: not permitted by allowed_outbound_hosts (otp_webhook_origin)"
                .into(),
        ),
        Err(outbound::OutboundError::InvalidRequest(_)) => {
            Err("webhook delivery failed: the request could not be built (check the token)".into())
        }
        Err(e) => Err(format!("webhook delivery failed: {e}")),
    }
}
