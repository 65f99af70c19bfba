//! Server-side web sessions in Redis, to OWASP's session management standard.
//!
//! | Route | Caller | Handler |
//! |---|---|---|
//! | `POST /api/sessions` | the app's backend (`sessions_api_token`) | [`backend::create`] |
//! | `POST /api/sessions/admin/revoke` `{"user_id", "handle"?}` | backend | [`backend::revoke`] |
//! | `PATCH /api/sessions/admin/data` `{"user_id", "handle", "data"}` | backend | [`backend::server_data`] |
//! | `GET, PATCH, DELETE /api/sessions/current` | the session holder | [`current::get`], [`current::patch`], [`current::logout`] |
//! | `POST /api/sessions/current/rotate` | the session holder | [`current::rotate`] |
//! | `GET, DELETE /api/sessions` | the session holder | [`current::list`], [`current::revoke_all`] |
//!
//! The holder's session comes from `Authorization: Bearer <id>` or the session cookie. Ids
//! are checked for shape before Redis is asked; Redis holds only SHA-256 of each id. Data the
//! backend set (`server_data` at creation, or the admin data route) is read-only to the
//! holder. Routing reads Spin's own (last) `spin-path-info`, so a forged one changes nothing.

mod backend;
mod cookie;
mod current;
mod data;
mod id;
mod keys;
mod settings;
mod store;
mod time;

use http::Method;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::redis::Redis;
use crate::platform::{serve, ApiError, Request, Response};
use id::SessionId;
use settings::Settings;
use store::Store;

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        let settings = Settings::from_spin_variables()?;
        route(&mut req, &settings)
    })
}

/// The route table.
fn route(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    let path = req.path_info().trim_end_matches('/').to_owned();
    let allowed: &[Method] = match path.as_str() {
        "" => &[Method::GET, Method::POST, Method::DELETE],
        "/current" => &[Method::GET, Method::PATCH, Method::DELETE],
        "/current/rotate" | "/admin/revoke" => &[Method::POST],
        "/admin/data" => &[Method::PATCH],
        _ => return Err(ApiError::not_found("no such sessions route")),
    };
    req.allow(allowed)?;
    match (path.as_str(), req.method().clone()) {
        ("", Method::POST) => backend::create(req, settings),
        ("/admin/revoke", _) => backend::revoke(req, settings),
        ("/admin/data", _) => backend::server_data(req, settings),
        ("", Method::GET) => with_session(req, settings, current::list),
        ("", Method::DELETE) => with_session(req, settings, current::revoke_all),
        ("/current", Method::GET) => with_session(req, settings, current::get),
        ("/current", Method::PATCH) => with_session(req, settings, current::patch),
        ("/current", Method::DELETE) => with_session(req, settings, current::logout),
        (_, _) => with_session(req, settings, current::rotate),
    }
}

/// How the holder presented the session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Cookie,
    Bearer,
}

/// 401 that also deletes the session cookie in the browser.
fn unauthorized(settings: &Settings, message: &str) -> ApiError {
    ApiError::unauthorized(message).with_header("set-cookie", settings.cookie.clear())
}

/// The holder's session id: `Authorization: Bearer` if present, else the session cookie. An
/// `Authorization` header of another scheme (a proxy's Basic credentials) is not ours: the
/// cookie is used, so such a header never ends the session nor clears the cookie. Malformed
/// ids are refused here, without a Redis round trip.
fn credential(req: &Request, settings: &Settings) -> Result<(SessionId, Via), ApiError> {
    let bearer_scheme = req
        .header_values("authorization")
        .iter()
        .any(|v| v.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("bearer ")));
    if bearer_scheme || req.header_count("authorization") > 1 {
        return req
            .bearer_token()
            .and_then(SessionId::parse)
            .map(|id| (id, Via::Bearer))
            .ok_or_else(|| unauthorized(settings, "the bearer token is not a valid session id"));
    }
    // HTTP/2 clients send one `Cookie` field per cookie.
    let cookies: Vec<String> = req.header_values("cookie").into_iter().map(str::to_owned).collect();
    let values = cookie::values(&cookies, &settings.cookie.name);
    if values.is_empty() {
        return Err(unauthorized(
            settings,
            "no session: send the session cookie or a bearer token",
        ));
    }
    values
        .into_iter()
        .find_map(SessionId::parse)
        .map(|id| (id, Via::Cookie))
        .ok_or_else(|| unauthorized(settings, "the session cookie is not a valid session id"))
}

/// Whether a cookie-carried write comes from another site. Browsers that send
/// `Sec-Fetch-Site` say so; for the others, an `Origin` that is not this host's is.
fn cross_site(req: &Request) -> bool {
    if let Some(site) = req.header("sec-fetch-site") {
        return site == "cross-site";
    }
    let Some(origin) = req.header("origin") else { return false };
    // The host the app was reached at, as Spin reports it (its own, last `spin-full-url`).
    let ours = req
        .spin_header("spin-full-url")
        .and_then(|url| url.split_once("://"))
        .and_then(|(_, rest)| rest.split('/').next());
    match (origin.split_once("://").map(|(_, rest)| rest), ours) {
        (Some(theirs), Some(ours)) => !theirs.eq_ignore_ascii_case(ours),
        // "null" (a sandboxed or privacy-sensitive context) or no Host: not provably ours.
        _ => true,
    }
}

pub(crate) type Handler =
    fn(&mut Request, &Settings, &Store, &SessionId, Via) -> Result<Response, ApiError>;

fn with_session(
    req: &mut Request,
    settings: &Settings,
    handler: Handler,
) -> Result<Response, ApiError> {
    let (id, via) = credential(req, settings)?;
    // SameSite=Lax already keeps the cookie off cross-site POSTs; this refuses the rest of
    // cross-site writes outright.
    if via == Via::Cookie && *req.method() != Method::GET && cross_site(req) {
        return Err(ApiError::new(
            403,
            "cross_site_request",
            "cross-site requests cannot change a session",
        ));
    }
    let redis = Redis::from_spin_variables()?;
    let store = Store::new(&redis, settings);
    handler(req, settings, &store, &id, via)
}

fn no_session(settings: &Settings) -> ApiError {
    unauthorized(settings, "the session does not exist or has expired")
}

fn data_too_large(settings: &Settings, size: i64) -> ApiError {
    ApiError::new(
        422,
        "data_too_large",
        format!("the session data would be {size} bytes; the limit is {}", settings.max_data_bytes),
    )
}

/// Seconds until `until_ms`, rounded up so a live session never reports 0.
fn seconds_until(until_ms: i64, now_ms: i64) -> i64 {
    (until_ms - now_ms + 999).div_euclid(1000).max(0)
}

#[derive(Serialize)]
struct Issued<'a> {
    /// Only for bearer callers: a cookie caller's page scripts never see the id (HttpOnly).
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    /// The handle the backend lists and revokes this session by.
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
    expires_in: i64,
}
