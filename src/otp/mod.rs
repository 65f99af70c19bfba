//! One-time codes and reset tokens that resist guessing, replay and races.
//!
//! Routes (component `otp`):
//! - `POST /api/otp` `{"subject", "purpose", "channel"?, "format"?}`: issue a code (digits)
//!   or a link token, deliver it through the outbox stream (and the webhook, if configured),
//!   answer `202 {"expires_in", "resend_after"}`;
//! - `POST /api/otp/verify` `{"subject", "purpose", "code"}`: check and consume it.
//!
//! Only HMAC-SHA-256(pepper, purpose, subject, code) is stored. Each route is one Lua script,
//! one round trip. The keys of a subject share one hash tag, `{otp:N}`, where N is a shard
//! number derived from a keyed hash of the subject; the shard's outbox stream carries the
//! same tag, so issuing (state + outbox entry) is a single atomic script even on clustered
//! Redis, and the raw subject never appears in a key name.

mod body;
pub mod config;
pub mod input;
mod webhook;

use spin_sdk::http::{Method, Request, Response};

use crate::args;
use crate::error::ApiError;
use crate::http::{allow_methods, respond};
use crate::json;
use crate::redis::{Redis, Script};
use crate::secrets;
use config::{OtpConfig, OtpConfigError};
use input::Format;

static ISSUE: Script = Script::new(include_str!("issue.lua"));
static VERIFY: Script = Script::new(include_str!("verify.lua"));
static ROLLBACK: Script = Script::new(include_str!("rollback.lua"));

/// Largest request body accepted.
const MAX_BODY: usize = 2048;

/// The component's entry point.
pub fn handle(req: Request) -> Response {
    respond(|| {
        allow_methods(&req, &[Method::Post])?;
        let config = OtpConfig::from_spin_variables().map_err(misconfigured)?;
        match req.path() {
            "/api/otp/verify" => verify(&req, &config),
            _ => issue(&req, &config),
        }
    })
}

fn misconfigured(e: OtpConfigError) -> ApiError {
    eprintln!("otp misconfigured: {e}");
    ApiError::new(500, "otp_misconfigured", e.to_string())
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

/// Whole seconds for a client, rounded up so that waiting that long is always enough.
fn ceil_secs(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

/// The Redis keys of one subject and purpose. All carry the subject's shard tag.
struct Keys {
    code: String,
    cooldown: String,
    hourly: String,
    outbox: String,
}

impl Keys {
    fn new(redis: &Redis, config: &OtpConfig, subject: &str, purpose: &str) -> Self {
        // Keyed, so key names reveal nothing about subjects to whoever can read Redis.
        let digest = keyed(config, &[b"otp-subject", subject.as_bytes()]);
        let shard =
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % config.outbox_shards;
        let id = secrets::base64url(&digest[4..20]);
        let tag = format!("{{otp:{shard}}}");
        Self {
            code: redis.key(&format!("otp:{tag}:code:{purpose}:{id}")),
            cooldown: redis.key(&format!("otp:{tag}:cooldown:{purpose}:{id}")),
            hourly: redis.key(&format!("otp:{tag}:hourly:{id}")),
            outbox: redis.key(&format!("otp:outbox:{tag}")),
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.code, &self.cooldown, &self.hourly, &self.outbox]
    }
}

/// HMAC-SHA-256 under the pepper of NUL-separated parts (domain label first).
fn keyed(config: &OtpConfig, parts: &[&[u8]]) -> [u8; 32] {
    secrets::hmac_sha256(config.pepper.expose().as_bytes(), &parts.join(&0u8))
}

/// What is stored for a code: bound to its purpose and subject, so a code never verifies
/// another purpose or subject even if state were copied between keys.
fn code_hmac(config: &OtpConfig, purpose: &str, subject: &str, code: &str) -> String {
    secrets::hex(&keyed(
        config,
        &[b"otp-code", purpose.as_bytes(), subject.as_bytes(), code.as_bytes()],
    ))
}

fn purpose<'a>(config: &'a OtpConfig, raw: &str) -> Result<&'a str, ApiError> {
    config.purposes.iter().map(String::as_str).find(|p| *p == raw).ok_or_else(|| {
        bad("invalid_purpose", format!("purpose must be one of: {}", config.purposes.join(", ")))
    })
}

fn issue(req: &Request, config: &OtpConfig) -> Result<Response, ApiError> {
    let [subject, purpose, channel, format] = body::string_fields(
        req,
        MAX_BODY,
        ["subject", "purpose", "channel", "format"],
        &["subject", "purpose"],
    )?;
    let subject = input::normalize_subject(subject.as_deref().unwrap_or(""))
        .map_err(|m| bad("invalid_subject", m))?;
    let purpose = self::purpose(config, purpose.as_deref().unwrap_or(""))?;
    let channel =
        input::parse_channel(channel.as_deref()).map_err(|m| bad("invalid_channel", m))?;
    let format = Format::parse(format.as_deref()).map_err(|m| bad("invalid_format", m))?;

    let redis = Redis::from_spin_variables()?;
    if config.dev_echo && !crate::config::is_loopback(&redis.settings().host) {
        return Err(misconfigured(OtpConfigError {
            variable: config::vars::DEV_ECHO,
            message: "is refused because Redis is not on loopback: codes are never echoed outside local development".into(),
        }));
    }

    let (code, ttl_ms) = match format {
        Format::Code => (secrets::random_digits(config.code_length), config.code_ttl_ms),
        Format::Link => (secrets::random_token(input::LINK_TOKEN_BYTES), config.link_ttl_ms),
    };
    let keys = Keys::new(&redis, config, &subject, purpose);
    let reply = redis.eval(
        &ISSUE,
        &keys.all(),
        args![
            code_hmac(config, purpose, &subject, &code),
            ttl_ms,
            config.cooldown_ms,
            config.max_per_hour,
            config.max_attempts,
            format.as_str(),
            config.outbox_maxlen,
            config.outbox_retention_ms(),
            subject.as_str(),
            purpose,
            channel.as_str(),
            code.as_str(),
        ],
    )?;

    if reply.int(0)? == 0 {
        let retry_after = ceil_secs(reply.int(2)?).max(1);
        let (code, message) = match reply.string(1)? {
            "cooldown" => {
                ("resend_cooldown", "a code was sent moments ago; wait before asking for another")
            }
            _ => {
                ("hourly_limit", "too many codes were requested for this subject in the last hour")
            }
        };
        return Err(
            ApiError::new(429, code, message).with_header("retry-after", retry_after.to_string())
        );
    }
    let delivery_id = reply.string(1)?.to_owned();
    let expires_at_ms = reply.int(2)?;

    if let Some(hook) = &config.webhook {
        // Purposes, channels, formats and codes have known alphabets: only the subject and
        // the id need JSON escaping.
        let payload = format!(
            r#"{{"id":{},"subject":{},"purpose":"{purpose}","channel":"{channel}","format":"{}","code":"{code}","expires_at_ms":{expires_at_ms},"expires_in":{}}}"#,
            json::quote(&delivery_id),
            json::quote(&subject),
            format.as_str(),
            ttl_ms / 1000,
        );
        if let Err(e) =
            webhook::post(&hook.url, hook.token.expose(), &delivery_id, payload.as_bytes())
        {
            eprintln!("otp: delivery {delivery_id}: {e}; withdrawing the code");
            // The code must not stay valid (and the cooldown running) when the user cannot
            // receive it. If this fails too, the code simply expires.
            if let Err(e) = redis.eval(&ROLLBACK, &keys.all(), args![delivery_id.as_str()]) {
                eprintln!("otp: delivery {delivery_id}: withdrawing the code failed: {e}");
            }
            return Err(ApiError::new(
                502,
                "delivery_failed",
                "the code could not be sent; try again",
            )
            .with_header("retry-after", "1"));
        }
    }

    let echo = if config.dev_echo { format!(r#","code":"{code}""#) } else { String::new() };
    let body = format!(
        r#"{{"expires_in":{},"resend_after":{}{echo}}}"#,
        ttl_ms / 1000,
        config.cooldown_ms / 1000
    );
    Ok(json::text_response(202, body))
}

/// A failed verification: the usual error object plus `verified` and `attempts_remaining`.
fn not_verified(status: u16, code: &str, message: &str, attempts_remaining: i64) -> Response {
    json::text_response(
        status,
        format!(
            r#"{{"verified":false,"attempts_remaining":{attempts_remaining},"error":{{"code":"{code}","message":"{message}"}}}}"#
        ),
    )
}

fn verify(req: &Request, config: &OtpConfig) -> Result<Response, ApiError> {
    let fields = ["subject", "purpose", "code"];
    let [subject, purpose, code] = body::string_fields(req, MAX_BODY, fields, &fields)?;
    let subject = input::normalize_subject(subject.as_deref().unwrap_or(""))
        .map_err(|m| bad("invalid_subject", m))?;
    let purpose = self::purpose(config, purpose.as_deref().unwrap_or(""))?;
    let code = input::parse_code(code.as_deref().unwrap_or(""), config.code_length)
        .map_err(|m| bad("invalid_code", m))?;

    let redis = Redis::from_spin_variables()?;
    let keys = Keys::new(&redis, config, &subject, purpose);
    let reply = redis.eval(
        &VERIFY,
        &[&keys.code, &keys.cooldown, &keys.hourly],
        args![code_hmac(config, purpose, &subject, code), config.max_per_hour],
    )?;
    let attempts_left = reply.int(1)?;
    Ok(match reply.int(0)? {
        1 => json::text_response(200, r#"{"verified":true}"#.into()),
        2 => {
            let mut res = not_verified(401, "wrong_code", "the code is not correct", attempts_left);
            res.set_header("www-authenticate", "OTP");
            res
        }
        3 => {
            let mut res = not_verified(
                429,
                "too_many_attempts",
                "too many wrong codes: this code no longer works; request a new one",
                0,
            );
            let retry_ms = reply.int(2)?;
            if retry_ms > 0 {
                res.set_header("retry-after", ceil_secs(retry_ms).to_string());
            }
            res
        }
        _ => ApiError::new(
            410,
            "code_expired",
            "there is no active code: it expired, was used, or was never issued",
        )
        .to_response(),
    })
}
