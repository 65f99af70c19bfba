//! The pub/sub subscriber (component `subscriber`, Spin's Redis trigger): acts on each message
//! published on a subscribed channel, such as the cache's purge events (`cache_purge_channel`).
//!
//! For each message, in order:
//! 1. when `subscriber_webhook_url` is set, POSTs it there (the payload as is, with
//!    `Idempotency-Key` = the event id and `X-Event-Source` = the channel's label), retrying
//!    a 408, 429, 5xx, timeout or refused connection up to `subscriber_webhook_attempts`
//!    times with doubling backoff from 250 ms;
//! 2. records it to the capped audit stream `{prefix}events:{source}` (`XADD ... MAXLEN n`,
//!    unless `subscriber_audit_maxlen` is 0) with the event id, the payload, when it arrived
//!    and what the webhook did (`none`, `delivered`, `failed`) after how many attempts.
//!
//! Spin's trigger hands a component the payload only, not the channel: `subscriber_source`
//! names the channel this component subscribes to, for the records. Pub/sub delivers at most
//! once: a message published while the trigger is not connected is lost, and Spin 3.6.3's
//! trigger exits when its connection drops (docs/pubsub.md).

use serde::Serialize;

use crate::args;
use crate::platform::clock::{sleep_ms, unix_now_ms};
use crate::platform::log;
use crate::platform::outbound::{self, OutboundError, OutboundRequest, Timeouts};
use crate::platform::redis::{Redis, RedisError};
use crate::platform::secrets::random_token;
use crate::platform::settings::{ConfigError, Secret, Variables};
use crate::platform::url::webhook_url;

/// The Spin variables of the subscriber.
pub mod vars {
    /// The channel this component subscribes to, as named in its records.
    pub const SOURCE: &str = "subscriber_source";
    /// The audit stream's cap (0: no audit stream).
    pub const AUDIT_MAXLEN: &str = "subscriber_audit_maxlen";
    /// Where each event is POSTed (empty: no webhook).
    pub const WEBHOOK_URL: &str = "subscriber_webhook_url";
    /// The webhook's origin, also the component's `allowed_outbound_hosts` entry.
    pub const WEBHOOK_ORIGIN: &str = "subscriber_webhook_origin";
    /// The bearer token sent to the webhook (secret).
    pub const WEBHOOK_TOKEN: &str = "subscriber_webhook_token";
    /// Attempts per event before it is recorded as `failed`.
    pub const WEBHOOK_ATTEMPTS: &str = "subscriber_webhook_attempts";
}

/// Messages larger than this are recorded by size and digest only, never forwarded: a
/// publisher that can reach the channel must not fill the audit stream or a webhook.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Each webhook attempt: the trigger handles one message at a time, so this bounds the delay
/// a dead webhook adds to every later message.
const TIMEOUTS: Timeouts = Timeouts {
    connect_ms: 2_000,
    first_byte_ms: 5_000,
    between_bytes_ms: 5_000,
    deadline_ms: 5_000,
};
/// Backoff before the second attempt; doubled for each later one.
const FIRST_BACKOFF_MS: u64 = 250;

/// The subscriber's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The subscribed channel's label (`subscriber_source`).
    pub source: String,
    /// The audit stream's cap; 0 keeps no stream.
    pub audit_maxlen: u64,
    /// Where events are forwarded, if anywhere.
    pub webhook: Option<Webhook>,
}

/// The webhook events are forwarded to.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// An http(s) URL under `subscriber_webhook_origin`.
    pub url: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Secret,
    /// Attempts per event, 1 to 10.
    pub attempts: u32,
}

impl Settings {
    /// The settings from Spin variables, or the variable that is wrong.
    pub fn from_variables(variables: &Variables) -> Result<Self, ConfigError> {
        let source = variables.text(vars::SOURCE)?;
        if source.is_empty()
            || source.len() > 128
            || !source.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            return Err(ConfigError::new(
                vars::SOURCE,
                "must be 1 to 128 printable ASCII characters without spaces or braces",
            ));
        }
        let audit_maxlen = variables.whole(vars::AUDIT_MAXLEN, 0..=10_000_000)?;
        let url = variables.text(vars::WEBHOOK_URL)?;
        let webhook = if url.is_empty() {
            None
        } else {
            let origin = variables.text(vars::WEBHOOK_ORIGIN)?;
            Some(Webhook {
                url: parse_webhook_url(&url, &origin)?,
                token: variables.secret(vars::WEBHOOK_TOKEN, 32)?,
                attempts: variables.whole(vars::WEBHOOK_ATTEMPTS, 1..=10)? as u32,
            })
        };
        if webhook.is_none() && audit_maxlen == 0 {
            return Err(ConfigError::new(
                vars::AUDIT_MAXLEN,
                "is 0 and no subscriber_webhook_url is set: the subscriber would do nothing",
            ));
        }
        Ok(Self { source, audit_maxlen, webhook })
    }
}

/// The webhook URL, under its origin (the component's `allowed_outbound_hosts` entry); https
/// unless it is a component of this app or a loopback sidecar.
fn parse_webhook_url(url: &str, origin: &str) -> Result<String, ConfigError> {
    webhook_url(url, origin, vars::WEBHOOK_URL, vars::WEBHOOK_ORIGIN)?;
    Ok(url.to_owned())
}

/// What the webhook did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// No webhook is configured.
    None,
    /// The webhook answered 2xx.
    Delivered,
    /// Every attempt failed; the event is in the audit stream only.
    Failed,
    /// Too large to forward.
    Skipped,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// Handles one message. An error is logged by Spin and the trigger carries on.
pub fn handle_message(payload: &[u8]) -> Result<(), String> {
    let settings = Settings::from_variables(&Variables::spin()).map_err(|e| e.to_string())?;
    let redis = match settings.audit_maxlen {
        0 => None,
        _ => Some(Redis::from_spin_variables().map_err(|e| e.to_string())?),
    };
    let id = random_token(12);
    let oversized = payload.len() > MAX_PAYLOAD;
    let (delivery, attempts) = match (&settings.webhook, oversized) {
        (None, _) => (Delivery::None, 0),
        (Some(_), true) => (Delivery::Skipped, 0),
        (Some(hook), false) => deliver(hook, &settings.source, &id, payload),
    };
    if let Some(redis) = redis {
        record(&redis, &settings, &id, payload, delivery, attempts).map_err(|e| {
            log::error("audit_failed", format_args!("event {id}: {e}"));
            e.to_string()
        })?;
    }
    if delivery == Delivery::Failed {
        return Err(format!("event {id}: the webhook did not accept it after {attempts} attempts"));
    }
    Ok(())
}

/// One `XADD` to the capped audit stream (exact `MAXLEN`: audit rates are low, and the cap is
/// then a promise).
fn record(
    redis: &Redis,
    settings: &Settings,
    id: &str,
    payload: &[u8],
    delivery: Delivery,
    attempts: u32,
) -> Result<(), RedisError> {
    let key = redis.key(&format!("events:{{{}}}", settings.source));
    let mut args = args![
        key,
        "MAXLEN",
        settings.audit_maxlen,
        "*",
        "id",
        id,
        "received_ms",
        unix_now_ms(),
        "delivery",
        delivery.as_str(),
        "attempts",
        attempts
    ];
    if payload.len() > MAX_PAYLOAD {
        let digest = crate::platform::secrets::hex(&crate::platform::secrets::sha256(payload));
        args.extend(args!["payload_bytes", payload.len() as u64, "payload_sha256", digest]);
    } else {
        args.extend(args!["payload", payload]);
    }
    redis.execute("XADD", args).map(|_| ())
}

/// POSTs the payload, retrying what may succeed later. Returns the outcome and the attempts.
fn deliver(hook: &Webhook, source: &str, id: &str, payload: &[u8]) -> (Delivery, u32) {
    let content_type: &[u8] = if crate::platform::json::is_object(payload) {
        b"application/json"
    } else {
        b"application/octet-stream"
    };
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("content-type".into(), content_type.to_vec()),
        ("content-length".into(), payload.len().to_string().into_bytes()),
        ("idempotency-key".into(), id.as_bytes().to_vec()),
        ("x-event-source".into(), source.as_bytes().to_vec()),
    ];
    if !hook.token.is_empty() {
        headers.push(("authorization".into(), format!("Bearer {}", hook.token.expose()).into()));
    }
    let request = OutboundRequest {
        method: &http::Method::POST,
        url: &hook.url,
        headers: &headers,
        body: payload,
    };
    let mut backoff = FIRST_BACKOFF_MS;
    for attempt in 1..=hook.attempts {
        let outcome = outbound::send(&request, TIMEOUTS, 16 * 1024);
        let (retry, why) = match outcome {
            Ok(answer) if (200..300).contains(&answer.status) => {
                return (Delivery::Delivered, attempt)
            }
            Ok(answer) => {
                let s = answer.status;
                (s == 408 || s == 429 || s >= 500, format!("the webhook answered {s}"))
            }
            Err(e @ (OutboundError::Denied | OutboundError::InvalidRequest(_))) => {
                (false, e.to_string())
            }
            Err(e) => (true, e.to_string()),
        };
        log::warn("webhook_failed", format_args!("event {id}, attempt {attempt}: {why}"));
        if !retry {
            return (Delivery::Failed, attempt);
        }
        if attempt < hook.attempts {
            sleep_ms(backoff);
            backoff *= 2;
        }
    }
    (Delivery::Failed, hook.attempts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(overrides: &[(&'static str, &'static str)]) -> Result<Settings, ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::from([
            (vars::SOURCE, "srp:cache:purge"),
            (vars::AUDIT_MAXLEN, "1000"),
            (vars::WEBHOOK_URL, ""),
            (vars::WEBHOOK_ORIGIN, "https://webhook.invalid"),
            (vars::WEBHOOK_TOKEN, ""),
            (vars::WEBHOOK_ATTEMPTS, "3"),
        ]);
        map.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|n| Ok(map[n].to_owned()));
        Settings::from_variables(&variables)
    }

    #[test]
    fn audit_only_by_default() {
        let s = settings(&[]).unwrap();
        assert!(s.webhook.is_none());
        assert_eq!(s.audit_maxlen, 1000);
    }

    #[test]
    fn refuses_what_would_do_nothing_or_leak() {
        assert_eq!(
            settings(&[(vars::AUDIT_MAXLEN, "0")]).unwrap_err().variable,
            vars::AUDIT_MAXLEN
        );
        assert_eq!(settings(&[(vars::SOURCE, "a{b}")]).unwrap_err().variable, vars::SOURCE);
        let plain = [(vars::WEBHOOK_URL, "http://example.com/hook")];
        assert_eq!(settings(&plain).unwrap_err().variable, vars::WEBHOOK_URL);
        let elsewhere = [(vars::WEBHOOK_URL, "https://other.example/hook")];
        assert_eq!(settings(&elsewhere).unwrap_err().variable, vars::WEBHOOK_ORIGIN);
        let attempts =
            [(vars::WEBHOOK_URL, "https://webhook.invalid/hook"), (vars::WEBHOOK_ATTEMPTS, "0")];
        assert_eq!(settings(&attempts).unwrap_err().variable, vars::WEBHOOK_ATTEMPTS);
        let ok = settings(&[(vars::WEBHOOK_URL, "https://webhook.invalid/hook")]).unwrap();
        assert_eq!(ok.webhook.unwrap().attempts, 3);
    }
}
