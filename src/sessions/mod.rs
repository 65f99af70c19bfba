//! Server-side web sessions in Redis, to OWASP's session management standard.
//!
//! | Route | Caller | Handler |
//! |---|---|---|
//! | `POST /api/sessions` | the app's backend (`sessions_api_token`) | `backend::create` |
//! | `POST /api/sessions/admin/revoke` `{"user_id", "handle"?}` | backend | `backend::revoke` |
//! | `PATCH /api/sessions/admin/data` `{"user_id", "handle", "data"}` | backend | `backend::server_data` |
//! | `GET, PATCH, DELETE /api/sessions/current` | the session holder | `current::get`, `current::patch`, `current::logout` |
//! | `POST /api/sessions/current/rotate` | the session holder | `current::rotate` |
//! | `GET, DELETE /api/sessions` | the session holder | `current::list`, `current::revoke_all` |
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
mod library;
mod settings;
mod store;
mod time;

use std::time::Duration;

use http::Method;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::redis::Redis;
use crate::platform::url::HttpUrl;
use crate::platform::{serve, ApiError, Request, Response};
use id::SessionId;
use settings::Settings;

pub use library::{Created, ListedSession, NewSession, Session, Sessions};

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        let sessions = Sessions::from_settings(Settings::from_spin_variables()?);
        route(&mut req, &sessions)
    })
}

/// The route table. Every route parses the request, checks the caller, and leaves the work
/// to the library's [`Sessions`], which apps call in-process.
fn route(req: &mut Request, sessions: &Sessions) -> Result<Response, ApiError> {
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
        ("", Method::POST) => backend::create(req, sessions),
        ("/admin/revoke", _) => backend::revoke(req, sessions),
        ("/admin/data", _) => backend::server_data(req, sessions),
        ("", Method::GET) => with_session(req, sessions, current::list),
        ("", Method::DELETE) => with_session(req, sessions, current::revoke_all),
        ("/current", Method::GET) => with_session(req, sessions, current::get),
        ("/current", Method::PATCH) => with_session(req, sessions, current::patch),
        ("/current", Method::DELETE) => with_session(req, sessions, current::logout),
        (_, _) => with_session(req, sessions, current::rotate),
    }
}

/// How the holder presented the session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Cookie,
    Bearer,
}

/// 401 that also deletes the session cookie in the browser.
fn unauthorized(sessions: &Sessions, message: &str) -> ApiError {
    ApiError::unauthorized(message).with_header("set-cookie", sessions.clear_cookie())
}

/// The holder's session id: `Authorization: Bearer` if present, else the session cookie. An
/// `Authorization` header of another scheme (a proxy's Basic credentials) is not ours: the
/// cookie is used, so such a header never ends the session nor clears the cookie. Malformed
/// ids are refused here, without a Redis round trip.
fn credential(req: &Request, sessions: &Sessions) -> Result<(SessionId, Via), ApiError> {
    let bearer_scheme = req
        .header_values("authorization")
        .iter()
        .any(|v| v.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("bearer ")));
    if bearer_scheme || req.header_count("authorization") > 1 {
        return req
            .bearer_token()
            .and_then(SessionId::parse)
            .map(|id| (id, Via::Bearer))
            .ok_or_else(|| unauthorized(sessions, "the bearer token is not a valid session id"));
    }
    // HTTP/2 clients send one `Cookie` field per cookie.
    let cookies: Vec<String> = req.header_values("cookie").into_iter().map(str::to_owned).collect();
    let values = cookie::values(&cookies, &sessions.settings().cookie.name);
    if values.is_empty() {
        return Err(unauthorized(
            sessions,
            "no session: send the session cookie or a bearer token",
        ));
    }
    values
        .into_iter()
        .find_map(SessionId::parse)
        .map(|id| (id, Via::Cookie))
        .ok_or_else(|| unauthorized(sessions, "the session cookie is not a valid session id"))
}

/// Whether a cookie-carried write may not be trusted to come from the app's own pages.
///
/// Browsers that send `Sec-Fetch-Site` say where a request comes from: `same-origin` and
/// `none` (the user's own action) pass; `same-site` (a sibling subdomain, which may be less
/// trusted than the app) passes only with `sessions_accept_same_site`; `cross-site` and
/// anything else do not. For browsers without it, an `Origin` must be the app's own origin,
/// scheme, host and port alike (`sessions_public_origin`, else Spin's own `spin-full-url`),
/// read by the platform's one URL parser; `null` or anything unparsable is refused. A request
/// with neither (not from a browser) passes: the cookie's `SameSite` covers browsers.
fn cross_site(req: &Request, settings: &Settings) -> bool {
    match req.header_count("sec-fetch-site") {
        0 => {}
        1 => {
            return match req.header("sec-fetch-site") {
                Some("same-origin" | "none") => false,
                Some("same-site") => !settings.accept_same_site,
                _ => true,
            }
        }
        // A browser sends it once; a repeated one is not a browser's word.
        _ => return true,
    }
    if req.header_count("origin") == 0 {
        return false;
    }
    let Some(origin) = req.header("origin").and_then(|o| HttpUrl::parse(o).ok()) else {
        // "null" (a sandboxed or privacy-sensitive context), repeated, or not an origin.
        return true;
    };
    let spin_url = req.spin_header("spin-full-url").and_then(|u| HttpUrl::parse(u).ok());
    match settings.public_origin.as_ref().or(spin_url.as_ref()) {
        Some(ours) => origin.path_and_query != "/" || !origin.same_origin(ours),
        None => true,
    }
}

/// A holder's route: the request, the library, Redis, the holder's session id and how it came.
pub(crate) type Handler =
    fn(&mut Request, &Sessions, &Redis, &SessionId, Via) -> Result<Response, ApiError>;

fn with_session(
    req: &mut Request,
    sessions: &Sessions,
    handler: Handler,
) -> Result<Response, ApiError> {
    let (id, via) = credential(req, sessions)?;
    // SameSite=Lax already keeps the cookie off cross-site POSTs; this refuses the rest of
    // cross-site writes outright.
    if via == Via::Cookie && *req.method() != Method::GET && cross_site(req, sessions.settings()) {
        return Err(ApiError::new(
            403,
            "cross_site_request",
            "cross-site requests cannot change a session",
        ));
    }
    let redis = Redis::from_spin_variables()?;
    handler(req, sessions, &redis, &id, via)
}

/// Whole seconds of a time left, rounded up so a live session never reports 0.
fn seconds(left: Duration) -> i64 {
    i64::try_from(left.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::settings::Variables;

    fn settings(same_site: &str, public_origin: &str) -> Settings {
        let (same_site, public_origin) = (same_site.to_owned(), public_origin.to_owned());
        Settings::from_variables(&Variables::from_fn(move |name| {
            Ok(match name {
                settings::vars::IDLE_TIMEOUT => "1800",
                settings::vars::ABSOLUTE_TIMEOUT => "43200",
                settings::vars::SLIDE_THRESHOLD_PERCENT => "50",
                settings::vars::MAX_DATA_BYTES => "8192",
                settings::vars::MAX_PER_USER => "50",
                settings::vars::COOKIE_NAME => "__Host-session",
                settings::vars::COOKIE_SECURE => "true",
                settings::vars::COOKIE_SAME_SITE => "Lax",
                settings::vars::COOKIE_PATH => "/",
                settings::vars::ROTATION_GRACE => "10",
                settings::vars::ACCEPT_SAME_SITE => &same_site,
                settings::vars::PUBLIC_ORIGIN => &public_origin,
                _ => "",
            }
            .to_owned())
        }))
        .unwrap()
    }

    fn write(headers: &[(&str, &str)]) -> Request {
        let mut all = vec![("spin-full-url", "http://app.example:3000/api/sessions/current")];
        all.extend_from_slice(headers);
        Request::for_test(Method::PATCH, "/api/sessions/current", &all)
    }

    #[test]
    fn sec_fetch_site_decides_and_same_site_is_a_setting() {
        let (strict, lenient) = (settings("", ""), settings("true", ""));
        for (site, refused_by_default, refused_if_accepted) in [
            ("same-origin", false, false),
            ("none", false, false),
            ("same-site", true, false),
            ("cross-site", true, true),
            ("Same-Origin", true, true),
            ("", true, true),
        ] {
            let req = write(&[("sec-fetch-site", site)]);
            assert_eq!(cross_site(&req, &strict), refused_by_default, "{site}");
            assert_eq!(cross_site(&req, &lenient), refused_if_accepted, "{site}");
        }
        let twice = write(&[("sec-fetch-site", "same-origin"), ("sec-fetch-site", "same-origin")]);
        assert!(cross_site(&twice, &strict));
        // Sec-Fetch-Site wins over Origin.
        let req = write(&[("sec-fetch-site", "same-origin"), ("origin", "https://evil.example")]);
        assert!(!cross_site(&req, &strict));
    }

    #[test]
    fn origin_compares_scheme_host_and_port() {
        let s = settings("", "");
        for (origin, refused) in [
            ("http://app.example:3000", false),
            ("http://APP.example:3000", false),
            ("https://app.example:3000", true),
            ("http://app.example", true),
            ("http://app.example:3000.evil.example", true),
            ("http://evil.example", true),
            ("http://app.example:3000/path", true),
            ("null", true),
            ("", true),
        ] {
            assert_eq!(cross_site(&write(&[("origin", origin)]), &s), refused, "{origin}");
        }
        assert!(!cross_site(&write(&[]), &s), "no Sec-Fetch-Site, no Origin: not a browser");
        // Behind a proxy that terminates TLS, the configured public origin is the app's.
        let s = settings("", "https://app.example");
        assert!(!cross_site(&write(&[("origin", "https://app.example")]), &s));
        assert!(cross_site(&write(&[("origin", "http://app.example:3000")]), &s));
    }
}
