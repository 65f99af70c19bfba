//! One-time codes and reset tokens that resist guessing, replay, races and abuse. A backend
//! API: the browser talks to the app, the app's backend calls this component.
//!
//! | Route | Reached by | Handler |
//! |---|---|---|
//! | `POST http://otp.spin.internal/api/otp` | service chaining (private, no token) | `issue` |
//! | `POST http://otp.spin.internal/api/otp/verify` | service chaining | `verify` |
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
mod library;
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
use crate::platform::{serve, ApiError, Request, Response};
pub use input::Format;
pub use library::{IssueRequest, Issued, Otp, Verification, VerifyRequest};
use settings::{vars, Settings};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequestBody {
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

/// `POST /api/otp`: a thin user of [`Otp::issue`].
fn issue(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    let body: IssueRequestBody = req.json(MAX_BODY)?;
    let format = body
        .format
        .as_deref()
        .map(|f| Format::parse(Some(f)))
        .transpose()
        .map_err(|m| bad("invalid_format", m))?;
    let redis = Redis::from_spin_variables()?;
    if settings.dev_echo && (!is_loopback(&redis.settings().host) || settings.webhook.is_some()) {
        return Err(ConfigError::new(
            vars::DEV_ECHO,
            "is refused unless Redis is on loopback and no webhook is set: codes are never echoed \
             outside local development",
        )
        .into());
    }
    let otp = Otp::from_settings(settings.clone());
    let issued = otp.issue(
        &redis,
        &IssueRequest {
            subject: &body.subject,
            purpose: &body.purpose,
            client: body.client.as_deref(),
            channel: body.channel.as_deref(),
            format,
        },
    )?;
    Ok(Response::json(
        202,
        &IssuedBody {
            expires_in: issued.expires_in().as_secs(),
            resend_after: otp.settings().cooldown_ms / 1000,
            code: settings.dev_echo.then_some(issued.code()),
        },
    ))
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

fn with_retry(mut res: Response, retry: std::time::Duration) -> Response {
    let retry_ms = retry.as_millis() as i64;
    if retry_ms > 0 {
        res.set_header("retry-after", ceil_secs(retry_ms).to_string());
    }
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequestBody {
    /// Optional for link tokens, which find their subject themselves.
    subject: Option<String>,
    purpose: String,
    code: String,
    client: Option<String>,
}

/// `POST /api/otp/verify`: a thin user of [`Otp::verify`].
fn verify(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    let body: VerifyRequestBody = req.json(MAX_BODY)?;
    let redis = Redis::from_spin_variables()?;
    let otp = Otp::from_settings(settings.clone());
    let request = VerifyRequest {
        subject: body.subject.as_deref(),
        purpose: &body.purpose,
        code: &body.code,
        client: body.client.as_deref(),
    };
    let by_link_alone = body.subject.is_none();
    Ok(match otp.verify(&redis, &request)? {
        Verification::Verified { subject } => Response::json(
            200,
            &Verified { verified: true, subject: by_link_alone.then_some(subject.as_str()) },
        ),
        Verification::Wrong { attempts_left } => {
            not_verified(401, "wrong_code", "the code is not correct", attempts_left as i64)
                .with_header("www-authenticate", "OTP")
        }
        Verification::Burned { retry_after } => with_retry(
            not_verified(
                429,
                "too_many_attempts",
                "too many wrong codes: this code no longer works; request a new one",
                0,
            ),
            retry_after,
        ),
        Verification::Locked { retry_after } => with_retry(
            not_verified(
                429,
                "too_many_failures",
                "too many wrong codes in a row for this subject: locked out for a while",
                0,
            ),
            retry_after,
        ),
        Verification::ClientLimited { retry_after } => with_retry(
            not_verified(
                429,
                "client_limit",
                "this client entered too many wrong codes in the last hour",
                0,
            ),
            retry_after,
        ),
        Verification::NoCode if by_link_alone => ApiError::new(
            410,
            "code_expired",
            "there is no active link: it expired, was used, was replaced or was never issued",
        )
        .to_response(),
        Verification::NoCode => ApiError::new(
            410,
            "code_expired",
            "there is no active code: it expired, was used, or was never issued",
        )
        .to_response(),
    })
}
