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

pub mod config;
pub mod input;
mod webhook;

use http::Method;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::args;
use crate::lua_script;
use crate::platform::redis::Redis;
use crate::platform::redis_settings::is_loopback;
use crate::platform::script::{Script, CLOCK};
use crate::platform::settings::ConfigError;
use crate::platform::{secrets, serve, ApiError, Request, Response};
use config::OtpConfig;
use input::Format;

static ISSUE: Script = lua_script!(CLOCK, include_str!("issue.lua"));
static VERIFY: Script = lua_script!(CLOCK, include_str!("verify.lua"));
static ROLLBACK: Script = lua_script!(include_str!("rollback.lua"));

/// Largest request body accepted.
const MAX_BODY: usize = 2048;

/// The component's entry point: the route table.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        req.allow(&[Method::POST])?;
        let config = OtpConfig::from_spin_variables()?;
        if req.component_route() == "/api/otp/verify" {
            verify(&mut req, &config)
        } else {
            issue(&mut req, &config)
        }
    })
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    subject: String,
    purpose: String,
    channel: Option<String>,
    format: Option<String>,
}

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

#[derive(Serialize)]
struct Issued<'a> {
    expires_in: u64,
    resend_after: u64,
    /// Only with `otp_dev_echo` on a loopback Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

fn issue(req: &mut Request, config: &OtpConfig) -> Result<Response, ApiError> {
    let body: IssueRequest = req.json(MAX_BODY)?;
    let subject = input::normalize_subject(&body.subject).map_err(|m| bad("invalid_subject", m))?;
    let purpose = self::purpose(config, &body.purpose)?;
    let channel =
        input::parse_channel(body.channel.as_deref()).map_err(|m| bad("invalid_channel", m))?;
    let format = Format::parse(body.format.as_deref()).map_err(|m| bad("invalid_format", m))?;

    let redis = Redis::from_spin_variables()?;
    if config.dev_echo && !is_loopback(&redis.settings().host) {
        return Err(ConfigError::new(
            config::vars::DEV_ECHO,
            "is refused because Redis is not on loopback: codes are never echoed outside local \
             development",
        )
        .into());
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
        let payload = serde_json::to_vec(&Delivery {
            id: &delivery_id,
            subject: &subject,
            purpose,
            channel: channel.as_str(),
            format: format.as_str(),
            code: &code,
            expires_at_ms,
            expires_in: ttl_ms / 1000,
        })
        .map_err(|_| ApiError::internal("the delivery could not be encoded"))?;
        if let Err(e) = webhook::post(&hook.url, hook.token.expose(), &delivery_id, &payload) {
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

    let issued = Issued {
        expires_in: ttl_ms / 1000,
        resend_after: config.cooldown_ms / 1000,
        code: config.dev_echo.then_some(code.as_str()),
    };
    Ok(Response::json(202, &issued))
}

#[derive(Serialize)]
struct Verified {
    verified: bool,
}

#[derive(Serialize)]
struct NotVerified<'a> {
    verified: bool,
    attempts_remaining: i64,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// A failed verification: the usual error object plus `verified` and `attempts_remaining`.
fn not_verified(status: u16, code: &str, message: &str, attempts_remaining: i64) -> Response {
    Response::json(
        status,
        &NotVerified { verified: false, attempts_remaining, error: ErrorDetail { code, message } },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    subject: String,
    purpose: String,
    code: String,
}

fn verify(req: &mut Request, config: &OtpConfig) -> Result<Response, ApiError> {
    let body: VerifyRequest = req.json(MAX_BODY)?;
    let subject = input::normalize_subject(&body.subject).map_err(|m| bad("invalid_subject", m))?;
    let purpose = self::purpose(config, &body.purpose)?;
    let code =
        input::parse_code(&body.code, config.code_length).map_err(|m| bad("invalid_code", m))?;

    let redis = Redis::from_spin_variables()?;
    let keys = Keys::new(&redis, config, &subject, purpose);
    let reply = redis.eval(
        &VERIFY,
        &[&keys.code, &keys.cooldown, &keys.hourly],
        args![code_hmac(config, purpose, &subject, code), config.max_per_hour],
    )?;
    let attempts_left = reply.int(1)?;
    Ok(match reply.int(0)? {
        1 => Response::json(200, &Verified { verified: true }),
        2 => not_verified(401, "wrong_code", "the code is not correct", attempts_left)
            .with_header("www-authenticate", "OTP"),
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
