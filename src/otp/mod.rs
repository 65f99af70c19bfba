//! One-time codes and reset tokens that resist guessing, replay, races and abuse. A backend
//! API: the browser talks to the app, the app's backend calls this component.
//!
//! | Route | Reached by | Handler |
//! |---|---|---|
//! | `POST http://otp.spin.internal/api/otp` | service chaining (private, no token) | [`issue`] |
//! | `POST http://otp.spin.internal/api/otp/verify` | service chaining | [`verify`] |
//! | `POST /api/otp`, `POST /api/otp/verify` | public, `Authorization: Bearer <otp_api_token>`; off (403) while the token is empty | the same |
//!
//! Issue `{"subject", "purpose", "client"?, "channel"?, "format"?}` answers
//! `202 {"expires_in", "resend_after"}`; verify `{"subject", "purpose", "code", "client"?}`
//! answers `200 {"verified": true}` or an error with `attempts_remaining`. `client` is the end
//! user's address or device key as the backend sees it: issuing and failed verifications are
//! limited per client too, and clients that verified a subject's code before get their own
//! lane, which a flood from other clients cannot exhaust or lock (see keys.rs).
//!
//! Only HMAC-SHA-256(pepper, purpose, subject, code) is stored. Each route is one Lua script,
//! one round trip, on the subject's hash slot (store.rs). A run of `otp_max_failures` failed
//! verifications across codes locks the subject and purpose out with a doubling backoff.
//!
//! The chained routes are recognised by the route Spin reports for service chaining (`/...`,
//! read as Spin's own last `spin-component-route`): never give this component a `/...` route.

mod input;
mod keys;
mod policy;
pub(crate) mod settings;
mod store;
mod webhook;

use http::Method;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::auth::require_bearer;
use crate::platform::redis::Redis;
use crate::platform::redis_settings::is_loopback;
use crate::platform::response::problem;
use crate::platform::settings::ConfigError;
use crate::platform::{secrets, serve, ApiError, Request, Response};
use input::Format;
use keys::Keys;
use policy::Policy;
use settings::{vars, Settings};
use store::{Issued, NewCode, Refused, Verdict};

/// Largest request body accepted.
const MAX_BODY: usize = 2048;

#[derive(Clone, Copy)]
enum Route {
    Issue,
    Verify,
}

/// The component's entry point: the route table.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        req.allow(&[Method::POST])?;
        let settings = Settings::from_spin_variables()?;
        match route(&req, &settings)? {
            Route::Issue => issue(&mut req, &settings),
            Route::Verify => verify(&mut req, &settings),
        }
    })
}

/// Service chaining (Spin reports the synthetic `/...` route, so the component route is
/// empty) routes on the path; the public routes need the bearer token.
fn route(req: &Request, settings: &Settings) -> Result<Route, ApiError> {
    let chained = req.component_route().is_empty();
    let path = if chained { req.path_info() } else { req.component_route() };
    let route = match path {
        "/api/otp" => Route::Issue,
        "/api/otp/verify" => Route::Verify,
        _ => return Err(ApiError::not_found("no such OTP route")),
    };
    if !chained {
        require_bearer(req, &settings.api_token, || {
            ApiError::new(
                403,
                "otp_public_disabled",
                "the public OTP routes are off: the app's backend calls \
                 http://otp.spin.internal/api/otp (set otp_api_token to enable them)",
            )
        })?;
    }
    Ok(route)
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

/// Whole seconds for a client, rounded up so that waiting that long is always enough.
fn ceil_secs(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

fn too_many(code: &'static str, message: &str, retry_ms: i64) -> ApiError {
    ApiError::new(429, code, message)
        .with_header("retry-after", ceil_secs(retry_ms).max(1).to_string())
}

fn purpose<'a>(settings: &'a Settings, raw: &str) -> Result<&'a Policy, ApiError> {
    settings.policy(raw).ok_or_else(|| {
        bad("invalid_purpose", format!("purpose must be one of: {}", settings.purposes.join(", ")))
    })
}

/// The caller's client key, normalised once and as its keyed hash ("" when none was given):
/// the one value every client key (budgets, known-client mark) is derived from.
fn client_id(settings: &Settings, raw: Option<&str>) -> Result<String, ApiError> {
    match raw {
        None => Ok(String::new()),
        Some(c) => input::normalize_client(c)
            .map(|c| keys::client_id(settings, &c))
            .map_err(|m| bad("invalid_client", m)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    subject: String,
    purpose: String,
    client: Option<String>,
    channel: Option<String>,
    format: Option<String>,
}

#[derive(Serialize)]
struct IssuedBody<'a> {
    expires_in: u64,
    resend_after: u64,
    /// Only with `otp_dev_echo`, on a loopback Redis, without a webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

fn issue(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    let body: IssueRequest = req.json(MAX_BODY)?;
    let subject = input::normalize_subject(&body.subject).map_err(|m| bad("invalid_subject", m))?;
    let policy = self::purpose(settings, &body.purpose)?;
    let purpose = policy.name.as_str();
    let channel =
        input::parse_channel(body.channel.as_deref()).map_err(|m| bad("invalid_channel", m))?;
    if !policy.allows_channel(&channel) {
        return Err(bad(
            "invalid_channel",
            format!("purpose {purpose:?} is not sent by {channel:?}"),
        ));
    }
    let asked = body
        .format
        .as_deref()
        .map(|f| Format::parse(Some(f)))
        .transpose()
        .map_err(|m| bad("invalid_format", m))?;
    let format = policy.format_for(asked).map_err(|m| bad("invalid_format", m))?;
    let client = client_id(settings, body.client.as_deref())?;

    let redis = Redis::from_spin_variables()?;
    if settings.dev_echo && (!is_loopback(&redis.settings().host) || settings.webhook.is_some()) {
        return Err(ConfigError::new(
            vars::DEV_ECHO,
            "is refused unless Redis is on loopback and no webhook is set: codes are never echoed \
             outside local development",
        )
        .into());
    }

    let keys = Keys::new(&redis, settings, &subject, purpose, &client);
    let (code, keys) = match format {
        Format::Code => (secrets::random_digits(policy.length), keys),
        Format::Link => {
            // Drawn until the token's own shard is the subject's (about `otp_outbox_shards`
            // draws), so the token alone leads to the subject's slot.
            let token = loop {
                let t = secrets::random_token(input::LINK_TOKEN_BYTES);
                if keys::link_key(&redis, settings, &t).0 == keys.shard() {
                    break t;
                }
            };
            let keys = keys.with_link(&redis, settings, &token);
            (token, keys)
        }
    };
    let ttl_ms = policy.ttl_ms(format);
    let delivery_id = secrets::random_token(12);
    let new = NewCode {
        subject: &subject,
        purpose,
        channel: &channel,
        format: format.as_str(),
        code: &code,
        ttl_ms,
        delivery_id: &delivery_id,
        client: &client,
        outbox: settings.webhook.is_none(),
    };
    let (expires_at_ms, lane) = match store::issue(&redis, settings, &keys, &new)? {
        Issued::Stored { expires_at_ms, lane } => (expires_at_ms, lane),
        Issued::Refused(refused) => {
            let link_instead =
                format == Format::Code && policy.format_for(Some(Format::Link)).is_ok();
            return Err(refusal(refused, link_instead));
        }
    };
    if let Some(hook) = &settings.webhook {
        webhook::deliver(hook, &new, expires_at_ms).map_err(|failure| {
            if failure.definite {
                // The message was not sent: withdraw the code (it stays counted in the caps,
                // so failing deliveries cannot be used to send more). If this fails too, the
                // code simply expires.
                if let Err(e) = store::rollback(&redis, &keys, lane, &delivery_id) {
                    crate::platform::log::error(
                        "rollback_failed",
                        format_args!("delivery {delivery_id}: withdrawing the code failed: {e}"),
                    );
                }
                ApiError::new(502, "delivery_failed", "the code could not be sent; try again")
                    .with_header("retry-after", "1")
            } else {
                // It may have been sent: the code stays valid and counted.
                ApiError::new(
                    504,
                    "delivery_uncertain",
                    "the delivery service did not answer in time; the code may arrive",
                )
                .with_header(
                    "retry-after",
                    ceil_secs(settings.cooldown_ms as i64).max(1).to_string(),
                )
            }
        })?;
    }

    Ok(Response::json(
        202,
        &IssuedBody {
            expires_in: ttl_ms / 1000,
            resend_after: settings.cooldown_ms / 1000,
            code: settings.dev_echo.then_some(code.as_str()),
        },
    ))
}

/// `link_instead`: a digit code was refused for a purpose that also sends links, which no
/// lockout stops (they cannot be guessed): the message says so.
fn refusal(refused: Refused, link_instead: bool) -> ApiError {
    match refused {
        Refused::Locked(ms) if link_instead => too_many(
            "too_many_failures",
            "too many wrong codes in a row for this subject: no new code until the lockout ends; \
             a link (format \"link\") can still be sent",
            ms,
        ),
        Refused::Locked(ms) => too_many(
            "too_many_failures",
            "too many wrong codes in a row for this subject: no new code until the lockout ends",
            ms,
        ),
        Refused::Client(ms) => {
            too_many("client_limit", "this client asked for too many codes in the last hour", ms)
        }
        Refused::Cooldown(ms) => too_many(
            "resend_cooldown",
            "a code was sent moments ago; wait before asking for another",
            ms,
        ),
        Refused::Hourly(ms) => too_many(
            "hourly_limit",
            "too many codes were requested for this subject in the last hour",
            ms,
        ),
        Refused::OutboxFull(ms) => {
            ApiError::new(503, "outbox_full", "the delivery queue is full; try again shortly")
                .with_header("retry-after", ceil_secs(ms).max(1).to_string())
        }
    }
}

#[derive(Serialize)]
struct Verified<'a> {
    verified: bool,
    /// Only when a link token was verified without its subject: whose it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
}

#[derive(Serialize)]
struct NotVerified {
    verified: bool,
    attempts_remaining: i64,
}

/// A failed verification: the usual problem plus `verified` and `attempts_remaining`.
fn not_verified(status: u16, code: &str, message: &str, attempts_remaining: i64) -> Response {
    problem(status, code, message, NotVerified { verified: false, attempts_remaining })
}

fn with_retry(mut res: Response, retry_ms: i64) -> Response {
    if retry_ms > 0 {
        res.set_header("retry-after", ceil_secs(retry_ms).to_string());
    }
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    /// Optional for link tokens, which find their subject themselves.
    subject: Option<String>,
    purpose: String,
    code: String,
    client: Option<String>,
}

fn verify(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    let body: VerifyRequest = req.json(MAX_BODY)?;
    let policy = self::purpose(settings, &body.purpose)?;
    let purpose = policy.name.as_str();
    let (code, format) =
        input::parse_code(&body.code, policy.length).map_err(|m| bad("invalid_code", m))?;
    let client = client_id(settings, body.client.as_deref())?;
    let Some(subject) = body.subject.as_deref() else {
        if format != Format::Link {
            return Err(bad("invalid_subject", "subject is required to verify a digit code"));
        }
        let redis = Redis::from_spin_variables()?;
        let (_, pointer) = keys::link_key(&redis, settings, code);
        return Ok(match store::verify_link(&redis, &pointer, purpose)? {
            Some(subject) => {
                Response::json(200, &Verified { verified: true, subject: Some(&subject) })
            }
            None => ApiError::new(
                410,
                "code_expired",
                "there is no active link: it expired, was used, was replaced or was never issued",
            )
            .to_response(),
        });
    };
    let subject = input::normalize_subject(subject).map_err(|m| bad("invalid_subject", m))?;

    let redis = Redis::from_spin_variables()?;
    let keys = Keys::new(&redis, settings, &subject, purpose, &client);
    let verdict =
        store::verify(&redis, settings, &keys, &client, &subject, purpose, code, format.as_str())?;
    Ok(match verdict {
        Verdict::Verified => Response::json(200, &Verified { verified: true, subject: None }),
        Verdict::Wrong { attempts_left } => {
            not_verified(401, "wrong_code", "the code is not correct", attempts_left)
                .with_header("www-authenticate", "OTP")
        }
        Verdict::Burned { retry_after_ms } => with_retry(
            not_verified(
                429,
                "too_many_attempts",
                "too many wrong codes: this code no longer works; request a new one",
                0,
            ),
            retry_after_ms,
        ),
        Verdict::Locked { retry_after_ms } => with_retry(
            not_verified(
                429,
                "too_many_failures",
                "too many wrong codes in a row for this subject: locked out for a while",
                0,
            ),
            retry_after_ms,
        ),
        Verdict::ClientLimited { retry_after_ms } => with_retry(
            not_verified(
                429,
                "client_limit",
                "this client entered too many wrong codes in the last hour",
                0,
            ),
            retry_after_ms,
        ),
        Verdict::NoCode => ApiError::new(
            410,
            "code_expired",
            "there is no active code: it expired, was used, or was never issued",
        )
        .to_response(),
    })
}
