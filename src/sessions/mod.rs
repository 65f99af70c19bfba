//! Server-side web sessions in Redis, to OWASP's session management standard.
//!
//! Routes (component `sessions`):
//! - `POST /api/sessions` (the app's backend, with the `sessions_api_token` bearer token):
//!   create a session for a user, answer its id and a `Set-Cookie`;
//! - `GET | PATCH | DELETE /api/sessions/current`: read (and slide), merge into `data`, log out
//!   (with `redis_fast_path`, most reads are served from Spin's pooled key-value store);
//! - `POST /api/sessions/current/rotate`: a new id for the same session, the old one ended;
//! - `GET | DELETE /api/sessions`: list the caller's user's sessions, or end all of them.
//!
//! The caller's session comes from `Authorization: Bearer <id>` or the session cookie. Ids
//! are checked for shape before Redis is asked; Redis holds only SHA-256 of each id.

pub mod cookie;
pub mod id;
pub mod settings;
mod store;
mod time;

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::auth::token_matches;
use crate::platform::fast_path::FastPath;
use crate::platform::json::{RawObject, UniqueMap};
use crate::platform::redis::{Redis, RedisError};
use crate::platform::{serve, ApiError, Request, Response};
use id::SessionId;
use settings::Settings;
use store::{data_size, DataEntry, Outcome, Store};

/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest user agent kept for the session list, in bytes (longer ones are cut).
pub const MAX_USER_AGENT_LEN: usize = 256;
/// Longest top-level data key, in bytes.
pub const MAX_DATA_KEY_LEN: usize = 128;
/// Room in a request body beyond the data cap (user id, user agent, JSON punctuation).
const BODY_OVERHEAD: usize = 4096;

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
        "/current/rotate" => &[Method::POST],
        _ => return Err(ApiError::not_found("no such sessions route")),
    };
    req.allow(allowed)?;
    match (path.as_str(), req.method().clone()) {
        ("", Method::POST) => create(req, settings),
        ("", Method::GET) => with_session(req, settings, list),
        ("", Method::DELETE) => with_session(req, settings, revoke_all),
        ("/current", Method::GET) => with_session(req, settings, get),
        ("/current", Method::PATCH) => with_session(req, settings, patch),
        ("/current", Method::DELETE) => with_session(req, settings, logout),
        (_, _) => with_session(req, settings, rotate),
    }
}

/// 401 that also deletes the session cookie in the browser.
fn unauthorized(settings: &Settings, message: &str) -> ApiError {
    ApiError::unauthorized(message).with_header("set-cookie", settings.cookie.clear())
}

/// The caller's session id: `Authorization: Bearer` if present, else the session cookie.
/// Malformed ids are refused here, without a Redis round trip.
fn credential(req: &Request, settings: &Settings) -> Result<(SessionId, bool), ApiError> {
    if req.header_count("authorization") > 0 {
        return req
            .bearer_token()
            .and_then(SessionId::parse)
            .map(|id| (id, false))
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
        .map(|id| (id, true))
        .ok_or_else(|| unauthorized(settings, "the session cookie is not a valid session id"))
}

type Handler = fn(&mut Request, &Settings, &Store, &SessionId) -> Result<Response, ApiError>;

fn with_session(
    req: &mut Request,
    settings: &Settings,
    handler: Handler,
) -> Result<Response, ApiError> {
    let (id, from_cookie) = credential(req, settings)?;
    // SameSite=Lax already keeps the cookie off cross-site POSTs; browsers that send
    // Sec-Fetch-Site let us refuse the rest of cross-site writes outright.
    if from_cookie
        && *req.method() != Method::GET
        && req.header("sec-fetch-site") == Some("cross-site")
    {
        return Err(ApiError::new(
            403,
            "cross_site_request",
            "cross-site requests cannot change a session",
        ));
    }
    let redis = Redis::from_spin_variables()?;
    let store = Store::new(&redis, settings);
    handler(req, settings, &store, &id)
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
    session_id: &'a str,
    expires_in: i64,
}

/// `{"session_id": ..., "expires_in": ...}`.
fn issued(status: u16, id: &SessionId, expiry: i64, now: i64) -> Response {
    Response::json(
        status,
        &Issued { session_id: id.as_str(), expires_in: seconds_until(expiry, now) },
    )
}

/// The body's limit: the data cap plus room for the rest.
fn body_limit(settings: &Settings) -> usize {
    settings.max_data_bytes + BODY_OVERHEAD
}

/// Top-level data entries from a JSON object, each value kept as the JSON text the client
/// sent (numbers never re-parsed, so they round-trip exactly); `None` for null.
fn data_entries(raw: &RawValue) -> Result<Vec<DataEntry>, ApiError> {
    let object: UniqueMap<Box<RawValue>> = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::new(422, "invalid_data", "data must be a JSON object"))?;
    object
        .0
        .into_iter()
        .map(|(name, value)| {
            if name.is_empty()
                || name.len() > MAX_DATA_KEY_LEN
                || name.chars().any(char::is_control)
            {
                return Err(ApiError::new(
                    422,
                    "invalid_data_key",
                    format!(
                        "data keys must be 1-{MAX_DATA_KEY_LEN} bytes without control characters"
                    ),
                ));
            }
            let text = (value.get() != "null").then(|| value.get().to_owned());
            Ok((name, text))
        })
        .collect()
}

/// Cuts text to at most `max` bytes at a character boundary, dropping control characters.
fn bounded(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// `POST /api/sessions` body. Fields whose wrong type has its own error code are kept as
/// JSON text and checked after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    user_id: Option<Box<RawValue>>,
    data: Option<Box<RawValue>>,
    user_agent: Option<Box<RawValue>>,
}

/// `POST /api/sessions`: only the app's backend may create sessions (for any user), so it
/// must present `sessions_api_token`; an empty token disables creation.
fn create(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    if settings.api_token.is_empty() {
        return Err(ApiError::new(
            403,
            "creation_disabled",
            "session creation is disabled: set sessions_api_token for the app's backend",
        ));
    }
    if !req.bearer_token().is_some_and(|t| token_matches(t, settings.api_token.expose())) {
        return Err(ApiError::unauthorized(
            "creating a session needs the sessions API token as a bearer token",
        ));
    }

    let body: CreateRequest = req.json(body_limit(settings))?;
    let text = |raw: &Option<Box<RawValue>>| {
        raw.as_ref().and_then(|r| serde_json::from_str::<String>(r.get()).ok())
    };
    let user_id = match text(&body.user_id) {
        Some(u)
            if !u.is_empty() && u.len() <= MAX_USER_ID_LEN && !u.chars().any(char::is_control) =>
        {
            u
        }
        _ => {
            return Err(ApiError::new(
                422,
                "invalid_user_id",
                format!(
                    "user_id must be a string of 1-{MAX_USER_ID_LEN} bytes without control \
                     characters"
                ),
            ))
        }
    };
    let data = match &body.data {
        Some(raw) => data_entries(raw)?,
        None => Vec::new(),
    };
    let size = data_size(&data);
    if size > settings.max_data_bytes {
        return Err(data_too_large(settings, size as i64));
    }
    let user_agent = match (&body.user_agent, text(&body.user_agent)) {
        (_, Some(ua)) => ua,
        (None, _) => req.header("user-agent").unwrap_or("").to_owned(),
        (Some(_), None) => {
            return Err(ApiError::new(422, "invalid_user_agent", "user_agent must be a string"))
        }
    };

    let redis = Redis::from_spin_variables()?;
    let (id, expiry, now) = Store::new(&redis, settings).create(
        &user_id,
        &bounded(&user_agent, MAX_USER_AGENT_LEN),
        &data,
    )?;
    Ok(issued(201, &id, expiry, now).with_header("set-cookie", settings.cookie.set(id.as_str())))
}

#[derive(Serialize)]
struct SessionBody<'a> {
    user_id: &'a str,
    data: RawObject<'a>,
    created_at: String,
    last_seen_at: String,
    expires_in: i64,
    absolute_expires_in: i64,
}

/// A session as JSON. The stored data values are JSON text already: they are spliced in
/// as they are, never re-parsed into numbers.
fn session_body(view: &store::SessionView) -> Response {
    Response::json(
        200,
        &SessionBody {
            user_id: &view.user_id,
            data: RawObject(&view.data),
            created_at: time::rfc3339(view.created_ms),
            last_seen_at: time::rfc3339(view.seen_ms),
            expires_in: seconds_until(view.expiry_ms, view.now_ms),
            absolute_expires_in: seconds_until(view.absolute_ms, view.now_ms),
        },
    )
}

/// `GET /api/sessions/current`. With the fast path on, most reads are one `GET` on the pooled
/// store; the rest (idle deadline within the slide threshold, or anything unsure) read and
/// slide through outbound Redis. Either way the body comes from the same stored value, and
/// `expires_in` is the deadline Redis holds at that moment.
fn get(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    let fast = FastPath::open().map_err(RedisError::from)?;
    let outcome = match fast.and_then(|fast| store.fast_get(&fast, id)) {
        Some(outcome) => outcome,
        None => store.get(id)?,
    };
    match outcome {
        Outcome::Found(view) => Ok(session_body(&view)),
        _ => Err(no_session(settings)),
    }
}

/// `PATCH /api/sessions/current`: JSON merge patch (RFC 7396) at the top level of `data`:
/// each key replaces its value whole, `null` removes it. Atomic in Redis, so concurrent
/// patches of different keys all survive.
fn patch(
    req: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    let body: Box<RawValue> = req.json(body_limit(settings))?;
    let entries = data_entries(&body).map_err(|e| {
        // A body that is not an object is malformed JSON for this route, not bad data.
        if e.code == "invalid_data" {
            ApiError::bad_request("invalid_json", "the body must be a JSON object")
        } else {
            e
        }
    })?;
    match store.patch(id, &entries)? {
        Outcome::Found(view) => Ok(session_body(&view)),
        Outcome::NoSession => Err(no_session(settings)),
        Outcome::DataTooLarge(size) => Err(data_too_large(settings, size)),
    }
}

fn rotate(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    match store.rotate(id)? {
        Outcome::Found((new_id, expiry, now)) => {
            let cookie = settings.cookie.set(new_id.as_str());
            Ok(issued(200, &new_id, expiry, now).with_header("set-cookie", cookie))
        }
        _ => Err(no_session(settings)),
    }
}

/// Logging out is idempotent: an already ended session is 204 too.
fn logout(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    store.logout(id)?;
    Ok(Response::new(204)
        .with_header("cache-control", "no-store")
        .with_header("set-cookie", settings.cookie.clear()))
}

#[derive(Serialize)]
struct ListedBody<'a> {
    current: bool,
    created_at: String,
    last_seen_at: String,
    expires_in: i64,
    user_agent: &'a str,
}

#[derive(Serialize)]
struct ListBody<'a> {
    sessions: Vec<ListedBody<'a>>,
}

fn list(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    let Outcome::Found((mut sessions, now)) = store.list(id)? else {
        return Err(no_session(settings));
    };
    sessions.sort_unstable_by_key(|s| std::cmp::Reverse((s.seen_ms, s.created_ms)));
    let sessions = sessions
        .iter()
        .map(|s| ListedBody {
            current: s.current,
            created_at: time::rfc3339(s.created_ms),
            last_seen_at: time::rfc3339(s.seen_ms),
            expires_in: seconds_until(s.expiry_ms, now),
            user_agent: &s.user_agent,
        })
        .collect();
    Ok(Response::json(200, &ListBody { sessions }))
}

#[derive(Serialize)]
struct Revoked {
    revoked: i64,
}

fn revoke_all(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    match store.revoke_all(id)? {
        Outcome::Found(ended) => Ok(Response::json(200, &Revoked { revoked: ended })
            .with_header("set-cookie", settings.cookie.clear())),
        _ => Err(no_session(settings)),
    }
}
