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

use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::wit::wasi::http0_2_0::types::IncomingBody;
use wasi::io::streams::StreamError;

use crate::error::ApiError;
use crate::fast_path::FastPath;
use crate::json::{is_json_media_type, quote, text_response, Json, Member};
use crate::redis::{Redis, RedisError};
use crate::secrets;
use id::SessionId;
use settings::Settings;
use store::{data_size, DataEntry, Outcome, Store};

/// Deepest nesting accepted in a request body (session data may hold nested JSON).
const MAX_JSON_DEPTH: usize = 64;
/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest user agent kept for the session list, in bytes (longer ones are cut).
pub const MAX_USER_AGENT_LEN: usize = 256;
/// Longest top-level data key, in bytes.
pub const MAX_DATA_KEY_LEN: usize = 128;
/// Room in a request body beyond the data cap (user id, user agent, JSON punctuation).
const BODY_OVERHEAD: usize = 4096;

/// The request as this component needs it: the body is read once, with a size limit.
struct Incoming {
    method: Method,
    path_info: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Result<Vec<u8>, ApiError>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every `Cookie` header: HTTP/2 clients send one per cookie.
    fn cookie_headers(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, v)| String::from_utf8(v.clone()).ok())
            .collect()
    }

    /// The body as a JSON object: 415 unless the content type is JSON (which also makes a
    /// cross-site form post impossible without a CORS preflight), 400 unless it is an object.
    /// Values stay JSON text: numbers are never parsed, so they round-trip exactly.
    fn json_object(&self) -> Result<Vec<Member<'_>>, ApiError> {
        if !is_json_media_type(self.header("content-type").unwrap_or("")) {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let body = self.body.as_ref().map_err(Clone::clone)?;
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body is empty; send a JSON object",
            ));
        }
        let not_an_object = |e: &str| {
            ApiError::bad_request("invalid_json", format!("the body must be a JSON object: {e}"))
        };
        let value = Json::parse(body, MAX_JSON_DEPTH).map_err(|e| not_an_object(&e))?;
        value.members().ok_or_else(|| not_an_object(&format!("it is {}", value.describe())))
    }
}

/// Reads at most `limit` bytes of body; more is 413.
fn read_body(req: &IncomingRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    let unreadable =
        || ApiError::bad_request("unreadable_body", "the request body could not be read");
    let too_large =
        || ApiError::new(413, "body_too_large", format!("the body is larger than {limit} bytes"));
    let body = req.consume().map_err(|()| unreadable())?;
    let stream = body.stream().map_err(|()| unreadable())?;
    let mut data = Vec::new();
    let result = loop {
        match stream.blocking_read(16 * 1024) {
            Ok(chunk) if data.len() + chunk.len() > limit => break Err(too_large()),
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(data),
            Err(StreamError::LastOperationFailed(_)) => break Err(unreadable()),
        }
    };
    drop(stream);
    drop(IncomingBody::finish(body));
    result
}

pub fn handle(req: IncomingRequest) -> Response {
    let settings = match Settings::from_spin_variables() {
        Ok(s) => s,
        Err(e) => return e.to_response(),
    };
    let headers = req.headers().entries();
    let declared_length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
    let limit = settings.max_data_bytes + BODY_OVERHEAD;
    let body = match declared_length {
        Some(n) if n > limit => Err(ApiError::new(
            413,
            "body_too_large",
            format!("the body is larger than {limit} bytes"),
        )),
        _ => read_body(&req, limit),
    };
    let incoming = Incoming {
        method: req.method(),
        path_info: headers
            .iter()
            .find(|(n, _)| n == "spin-path-info")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
        headers,
        body,
    };
    route(&incoming, &settings).unwrap_or_else(Response::from)
}

fn route(req: &Incoming, settings: &Settings) -> Result<Response, ApiError> {
    let path = req.path_info.trim_end_matches('/');
    let allowed: &[&str] = match path {
        "" => &["GET", "POST", "DELETE"],
        "/current" => &["GET", "PATCH", "DELETE"],
        "/current/rotate" => &["POST"],
        _ => return Err(ApiError::not_found("no such sessions route")),
    };
    match (path, &req.method) {
        ("", Method::Post) => create(req, settings),
        ("", Method::Get) => with_session(req, settings, list),
        ("", Method::Delete) => with_session(req, settings, revoke_all),
        ("/current", Method::Get) => with_session(req, settings, get),
        ("/current", Method::Patch) => with_session(req, settings, patch),
        ("/current", Method::Delete) => with_session(req, settings, logout),
        ("/current/rotate", Method::Post) => with_session(req, settings, rotate),
        _ => Err(ApiError::method_not_allowed(allowed)),
    }
}

/// 401 that also deletes the session cookie in the browser.
fn unauthorized(settings: &Settings, message: &str) -> ApiError {
    ApiError::unauthorized(message).with_header("set-cookie", settings.cookie.clear())
}

/// The caller's session id: `Authorization: Bearer` if present, else the session cookie.
/// Malformed ids are refused here, without a Redis round trip.
fn credential(req: &Incoming, settings: &Settings) -> Result<(SessionId, bool), ApiError> {
    if let Some(value) = req.header("authorization") {
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        return token
            .and_then(SessionId::parse)
            .map(|id| (id, false))
            .ok_or_else(|| unauthorized(settings, "the bearer token is not a valid session id"));
    }
    let cookies = req.cookie_headers();
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

type Handler = fn(&Incoming, &Settings, &Store, &SessionId) -> Result<Response, ApiError>;

fn with_session(
    req: &Incoming,
    settings: &Settings,
    handler: Handler,
) -> Result<Response, ApiError> {
    let (id, from_cookie) = credential(req, settings)?;
    // SameSite=Lax already keeps the cookie off cross-site POSTs; browsers that send
    // Sec-Fetch-Site let us refuse the rest of cross-site writes outright.
    if from_cookie
        && req.method != Method::Get
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

fn with_header(mut response: Response, name: &str, value: String) -> Response {
    response.set_header(name, value);
    response
}

/// `{"session_id": ..., "expires_in": ...}`. Bodies here are written by hand: `json!` costs
/// several KB of `.wasm`. An id is hex and base64url: nothing to escape.
fn issued(status: u16, id: &SessionId, expiry: i64, now: i64) -> Response {
    let body = format!(
        r#"{{"session_id":"{}","expires_in":{}}}"#,
        id.as_str(),
        seconds_until(expiry, now)
    );
    text_response(status, body)
}

/// Top-level data entries from a JSON object, each value as JSON text (`None` for null).
fn data_entries(entries: &[Member]) -> Result<Vec<DataEntry>, ApiError> {
    entries
        .iter()
        .map(|Member { name, value }| {
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
            let text = (!value.is_null()).then(|| value.raw().to_owned());
            Ok((name.clone(), text))
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

/// `POST /api/sessions`: only the app's backend may create sessions (for any user), so it
/// must present `sessions_api_token`; an empty token disables creation.
fn create(req: &Incoming, settings: &Settings) -> Result<Response, ApiError> {
    if settings.api_token.is_empty() {
        return Err(ApiError::new(
            403,
            "creation_disabled",
            "session creation is disabled: set sessions_api_token for the app's backend",
        ));
    }
    let presented = req
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    // Compare digests so neither the content nor the length of the token leaks in timing.
    let expected = secrets::sha256(settings.api_token.expose().as_bytes());
    if presented.is_empty()
        || !secrets::constant_time_eq(&secrets::sha256(presented.as_bytes()), &expected)
    {
        return Err(ApiError::unauthorized(
            "creating a session needs the sessions API token as a bearer token",
        ));
    }

    let body = req.json_object()?;
    let field = |name: &str| crate::json::field(&body, name);
    let text = |name: &str| field(name).and_then(|v| v.as_str());
    let is_null = |name: &str| field(name).is_none_or(|v| v.is_null());
    let user_id = match text("user_id") {
        Some(u)
            if !u.is_empty() && u.len() <= MAX_USER_ID_LEN && !u.chars().any(char::is_control) =>
        {
            u
        }
        _ => return Err(ApiError::new(
            422,
            "invalid_user_id",
            format!(
                "user_id must be a string of 1-{MAX_USER_ID_LEN} bytes without control characters"
            ),
        )),
    };
    let data = match field("data") {
        Some(value) if !value.is_null() => match value.members() {
            Some(entries) => data_entries(&entries)?,
            None => return Err(ApiError::new(422, "invalid_data", "data must be a JSON object")),
        },
        _ => Vec::new(),
    };
    let size = data_size(&data);
    if size > settings.max_data_bytes {
        return Err(data_too_large(settings, size as i64));
    }
    let user_agent = match text("user_agent") {
        Some(ua) => ua,
        None if is_null("user_agent") => req.header("user-agent").unwrap_or("").to_owned(),
        None => {
            return Err(ApiError::new(422, "invalid_user_agent", "user_agent must be a string"))
        }
    };

    let redis = Redis::from_spin_variables()?;
    let (id, expiry, now) = Store::new(&redis, settings).create(
        &user_id,
        &bounded(&user_agent, MAX_USER_AGENT_LEN),
        &data,
    )?;
    let response = issued(201, &id, expiry, now);
    Ok(with_header(response, "set-cookie", settings.cookie.set(id.as_str())))
}

/// A session as JSON. The stored data values are JSON text already: they are spliced in
/// as they are, never re-parsed.
fn session_body(view: &store::SessionView) -> Response {
    let mut data = String::from("{");
    for (i, (name, value)) in view.data.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str(&quote(name));
        data.push(':');
        data.push_str(value);
    }
    data.push('}');
    let body = format!(
        r#"{{"user_id":{},"data":{data},"created_at":"{}","last_seen_at":"{}","expires_in":{},"absolute_expires_in":{}}}"#,
        quote(&view.user_id),
        time::rfc3339(view.created_ms),
        time::rfc3339(view.seen_ms),
        seconds_until(view.expiry_ms, view.now_ms),
        seconds_until(view.absolute_ms, view.now_ms),
    );
    text_response(200, body)
}

/// `GET /api/sessions/current`. With the fast path on, most reads are one `GET` on the pooled
/// store; the rest (idle deadline within the slide threshold, or anything unsure) read and
/// slide through outbound Redis. Either way the body comes from the same stored value, and
/// `expires_in` is the deadline Redis holds at that moment.
fn get(
    _: &Incoming,
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
    req: &Incoming,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    let entries = data_entries(&req.json_object()?)?;
    match store.patch(id, &entries)? {
        Outcome::Found(view) => Ok(session_body(&view)),
        Outcome::NoSession => Err(no_session(settings)),
        Outcome::DataTooLarge(size) => Err(data_too_large(settings, size)),
    }
}

fn rotate(
    _: &Incoming,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    match store.rotate(id)? {
        Outcome::Found((new_id, expiry, now)) => {
            let cookie = settings.cookie.set(new_id.as_str());
            Ok(with_header(issued(200, &new_id, expiry, now), "set-cookie", cookie))
        }
        _ => Err(no_session(settings)),
    }
}

/// Logging out is idempotent: an already ended session is 204 too.
fn logout(
    _: &Incoming,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    store.logout(id)?;
    let response = Response::builder().status(204).header("cache-control", "no-store").build();
    Ok(with_header(response, "set-cookie", settings.cookie.clear()))
}

fn list(
    _: &Incoming,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    let Outcome::Found((mut sessions, now)) = store.list(id)? else {
        return Err(no_session(settings));
    };
    sessions.sort_unstable_by_key(|s| std::cmp::Reverse((s.seen_ms, s.created_ms)));
    // Written by hand, like every body here (see `issued`).
    let mut body = String::from(r#"{"sessions":["#);
    for (i, s) in sessions.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"current":{},"created_at":"{}","last_seen_at":"{}","expires_in":{},"user_agent":{}}}"#,
            s.current,
            time::rfc3339(s.created_ms),
            time::rfc3339(s.seen_ms),
            seconds_until(s.expiry_ms, now),
            quote(&s.user_agent),
        ));
    }
    body.push_str("]}");
    Ok(text_response(200, body))
}

fn revoke_all(
    _: &Incoming,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
) -> Result<Response, ApiError> {
    match store.revoke_all(id)? {
        Outcome::Found(ended) => {
            let body = text_response(200, format!(r#"{{"revoked":{ended}}}"#));
            Ok(with_header(body, "set-cookie", settings.cookie.clear()))
        }
        _ => Err(no_session(settings)),
    }
}
