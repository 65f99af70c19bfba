//! The session holder's routes: read, patch, rotate, log out, list, log out everywhere. Each
//! one is a call of the library's [`Sessions`] between parsing the request and rendering
//! the answer.

use serde::Serialize;
use serde_json::value::RawValue;

use super::data::{body_limit, data_entries};
use super::id::SessionId;
use super::library::{Session, Sessions};
use super::{seconds, time, unauthorized, Issued, Via};
use crate::platform::json::RawObject;
use crate::platform::redis::Redis;
use crate::platform::{ApiError, Request, Response};

#[derive(Serialize)]
struct SessionBody<'a> {
    user_id: &'a str,
    data: RawObject<'a>,
    created_at: String,
    last_seen_at: String,
    expires_in: i64,
    absolute_expires_in: i64,
    /// Data names the backend set, read-only to the holder (absent when none).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    server_keys: &'a [String],
}

/// A session as JSON. The stored data values are JSON text already: they are spliced in
/// as they are, never re-parsed into numbers.
fn session_body(session: &Session) -> Response {
    Response::json(
        200,
        &SessionBody {
            user_id: &session.user_id,
            data: RawObject(&session.data),
            created_at: time::rfc3339(session.created_ms),
            last_seen_at: time::rfc3339(session.seen_ms),
            expires_in: seconds(session.expires_in),
            absolute_expires_in: seconds(session.absolute_expires_in),
            server_keys: &session.server_keys,
        },
    )
}

/// The answer when there is no session the caller may act on: 401 with the cookie cleared.
/// (A rotated-away id is the library's 409 `session_rotated`, which keeps the cookie: a
/// request in flight at the rotation must not delete the new cookie the browser now holds.)
fn no_session(sessions: &Sessions) -> ApiError {
    unauthorized(sessions, "the session does not exist or has expired")
}

/// `GET /api/sessions/current`. With the fast path on, most reads are one `GET` on the pooled
/// store; the rest (idle deadline within the slide threshold, or anything unsure) read and
/// slide through outbound Redis. Either way the body comes from the same stored value, and
/// `expires_in` is the deadline Redis holds at that moment.
pub(crate) fn get(
    _: &mut Request,
    sessions: &Sessions,
    redis: &Redis,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    match sessions.get(redis, id.as_str())? {
        Some(session) => Ok(session_body(&session)),
        None => Err(no_session(sessions)),
    }
}

/// `PATCH /api/sessions/current`: JSON merge patch (RFC 7396) at the top level of `data`
/// ([`Sessions::update`]).
pub(crate) fn patch(
    req: &mut Request,
    sessions: &Sessions,
    redis: &Redis,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    let body: Box<RawValue> = req.json(body_limit(sessions.settings()))?;
    let entries = data_entries(&body).map_err(|e| {
        // A body that is not an object is malformed JSON for this route, not bad data.
        if e.code == "invalid_data" {
            ApiError::bad_request("invalid_json", "the body must be a JSON object")
        } else {
            e
        }
    })?;
    match sessions.update_entries(redis, id.as_str(), &entries)? {
        Some(session) => Ok(session_body(&session)),
        None => Err(no_session(sessions)),
    }
}

pub(crate) fn rotate(
    _: &mut Request,
    sessions: &Sessions,
    redis: &Redis,
    id: &SessionId,
    via: Via,
) -> Result<Response, ApiError> {
    let Some(created) = sessions.rotate(redis, id.as_str())? else {
        return Err(no_session(sessions));
    };
    // A cookie caller gets only the cookie: the id in a body would be readable by page
    // scripts, undoing HttpOnly.
    let body = Issued {
        session_id: (via == Via::Bearer).then_some(created.id.as_str()),
        handle: None,
        expires_in: seconds(created.expires_in),
    };
    let res = Response::json(200, &body);
    Ok(match via {
        Via::Cookie => res.with_header("set-cookie", sessions.set_cookie(&created.id)),
        Via::Bearer => res,
    })
}

/// Logging out is idempotent: an already ended session is 204 too. A rotated-away id ends
/// nothing (409): it must not log the new id out.
pub(crate) fn logout(
    _: &mut Request,
    sessions: &Sessions,
    redis: &Redis,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    sessions.end(redis, id.as_str())?;
    Ok(Response::new(204)
        .with_header("cache-control", "no-store")
        .with_header("set-cookie", sessions.clear_cookie()))
}

#[derive(Serialize)]
struct ListedBody<'a> {
    current: bool,
    created_at: String,
    last_seen_at: String,
    expires_in: i64,
    user_agent: &'a str,
    handle: &'a str,
}

#[derive(Serialize)]
struct ListBody<'a> {
    sessions: Vec<ListedBody<'a>>,
}

pub(crate) fn list(
    _: &mut Request,
    sessions: &Sessions,
    redis: &Redis,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    let Some(listed) = sessions.list(redis, id.as_str())? else {
        return Err(no_session(sessions));
    };
    let body = ListBody {
        sessions: listed
            .iter()
            .map(|s| ListedBody {
                current: s.current,
                created_at: time::rfc3339(s.created_ms),
                last_seen_at: time::rfc3339(s.seen_ms),
                expires_in: seconds(s.expires_in),
                user_agent: &s.user_agent,
                handle: &s.handle,
            })
            .collect(),
    };
    Ok(Response::json(200, &body))
}

#[derive(Serialize)]
pub(crate) struct Revoked {
    pub(crate) revoked: u64,
}

pub(crate) fn revoke_all(
    _: &mut Request,
    sessions: &Sessions,
    redis: &Redis,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    match sessions.end_all(redis, id.as_str())? {
        Some(ended) => Ok(Response::json(200, &Revoked { revoked: ended })
            .with_header("set-cookie", sessions.clear_cookie())),
        None => Err(no_session(sessions)),
    }
}
