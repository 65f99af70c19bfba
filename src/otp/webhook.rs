//! Delivery webhook: one JSON POST per issued code, through the platform's HTTP client. When a
//! webhook is set it is the delivery channel, and no plain code is written to Redis at all.

use serde::Serialize;

use super::settings::{vars, Webhook};
use super::store::NewCode;
use crate::platform::outbound::{self, OutboundError, OutboundRequest, Timeouts};
use crate::platform::settings::ConfigError;
use crate::platform::url;

/// Longest wait for the connection, for the answer to start, and for the whole exchange.
const TIMEOUTS: Timeouts = Timeouts {
    connect_ms: 2_000,
    first_byte_ms: 5_000,
    between_bytes_ms: 5_000,
    deadline_ms: 8_000,
};
/// The answer's body is not used; a little is read so the connection closes cleanly.
const MAX_ANSWER: usize = 64 * 1024;

/// What the webhook receives for each code.
#[derive(Serialize)]
struct Delivery<'a> {
    id: &'a str,
    subject: &'a str,
    purpose: &'a str,
    channel: &'a str,
    format: &'a str,
    code: &'a str,
    expires_at_ms: i64,
    expires_in: u64,
}

/// A failed delivery. `definite`: the message was certainly not accepted (a non-2xx answer,
/// no connection); otherwise (a timeout after sending) the provider may have sent it.
pub(crate) struct Failure {
    pub definite: bool,
}

pub(crate) fn deliver(hook: &Webhook, new: &NewCode, expires_at_ms: i64) -> Result<(), Failure> {
    let body = serde_json::to_vec(&Delivery {
        id: new.delivery_id,
        subject: new.subject,
        purpose: new.purpose,
        channel: new.channel,
        format: new.format,
        code: new.code,
        expires_at_ms,
        expires_in: new.ttl_ms / 1000,
    })
    .map_err(|_| Failure { definite: true })?;
    let id = new.delivery_id;
    // Logged without the body (it holds the code) or the token.
    post(&hook.url, hook.token.expose(), id, &body).map_err(|(definite, e)| {
        crate::platform::log::error("delivery_failed", format_args!("delivery {id}: {e}"));
        Failure { definite }
    })
}

fn post(url: &str, bearer: &str, idempotency_key: &str, body: &[u8]) -> Result<(), (bool, String)> {
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
        Ok(answer) => Err((true, format!("the webhook answered {}", answer.status))),
        Err(OutboundError::Denied) => Err((
            true,
            "webhook delivery failed: not permitted by allowed_outbound_hosts (otp_webhook_origin)"
                .into(),
        )),
        Err(OutboundError::InvalidRequest(_)) => Err((
            true,
            "webhook delivery failed: the request could not be built (check the token)".into(),
        )),
        Err(e @ OutboundError::Timeout) => Err((false, format!("webhook delivery uncertain: {e}"))),
        Err(e) => Err((true, format!("webhook delivery failed: {e}"))),
    }
}

/// The webhook URL, when one is set, read by the one URL parser (so an IPv6 loopback such as
/// `http://[::1]/hook` works, a port is 1-65535, a fragment is refused rather than sent). Spin
/// only lets the component reach the origin named in `otp_webhook_origin` (its
/// `allowed_outbound_hosts` entry), so the URL must be under it.
pub(crate) fn parse_url(url: &str, origin: &str) -> Result<Option<String>, ConfigError> {
    if url.is_empty() {
        return Ok(None);
    }
    url::webhook_url(url, origin, vars::WEBHOOK_URL, vars::WEBHOOK_ORIGIN)?;
    Ok(Some(url.to_owned()))
}
