//! The session holder's routes: read, patch, rotate, log out, list, log out everywhere.

use serde::Serialize;
use serde_json::value::RawValue;

use super::data::{body_limit, data_entries};
use super::id::SessionId;
use super::settings::Settings;
use super::store::{self, Outcome, Store};
use super::{data_too_large, no_session, seconds_until, time, Issued, Via};
use crate::platform::fast_path::FastPath;
use crate::platform::json::RawObject;
use crate::platform::redis::RedisError;
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
            server_keys: &view.server_keys,
        },
    )
}

/// The answer when a script found no session the caller may act on: a rotated-away id
/// (during the grace it may only read) gets 409 and keeps its cookie, since a request in
/// flight at the rotation must not delete the new cookie the browser now holds; anything
/// else is 401 with the cookie cleared.
fn refused<T>(settings: &Settings, outcome: &Outcome<T>) -> ApiError {
    match outcome {
        Outcome::Rotated => ApiError::new(
            409,
            "session_rotated",
            "this session id was replaced by a rotation: it can only read the session, for a \
             few seconds; send the new id",
        ),
        _ => no_session(settings),
    }
}

/// `GET /api/sessions/current`. With the fast path on, most reads are one `GET` on the pooled
/// store; the rest (idle deadline within the slide threshold, or anything unsure) read and
/// slide through outbound Redis. Either way the body comes from the same stored value, and
/// `expires_in` is the deadline Redis holds at that moment.
pub(crate) fn get(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    let fast = FastPath::open().map_err(RedisError::from)?;
    let outcome = match fast.and_then(|fast| store.fast_get(&fast, id)) {
        Some(outcome) => outcome,
        None => store.get(id)?,
    };
    match outcome {
        Outcome::Found(view) => Ok(session_body(&view)),
        other => Err(refused(settings, &other)),
    }
}

/// `PATCH /api/sessions/current`: JSON merge patch (RFC 7396) at the top level of `data`:
/// each key replaces its value whole, `null` removes it. Atomic in Redis, so concurrent
/// patches of different keys all survive.
pub(crate) fn patch(
    req: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
    _: Via,
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
        other @ (Outcome::NoSession | Outcome::Rotated) => Err(refused(settings, &other)),
        Outcome::DataTooLarge(size) => Err(data_too_large(settings, size)),
        Outcome::ServerOwned(name) => Err(ApiError::new(
            403,
            "server_owned_key",
            format!("{name:?} was set by the app's backend and cannot be changed here"),
        )),
    }
}

pub(crate) fn rotate(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
    via: Via,
) -> Result<Response, ApiError> {
    match store.rotate(id)? {
        Outcome::Found((new_id, expiry, now)) => {
            // A cookie caller gets only the cookie: the id in a body would be readable by
            // page scripts, undoing HttpOnly.
            let body = Issued {
                session_id: (via == Via::Bearer).then(|| new_id.as_str()),
                handle: None,
                expires_in: seconds_until(expiry, now),
            };
            let res = Response::json(200, &body);
            Ok(match via {
                Via::Cookie => res.with_header("set-cookie", settings.cookie.set(new_id.as_str())),
                Via::Bearer => res,
            })
        }
        other => Err(refused(settings, &other)),
    }
}

/// Logging out is idempotent: an already ended session is 204 too. A rotated-away id ends
/// nothing (409): it must not log the new id out.
pub(crate) fn logout(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    if let outcome @ Outcome::Rotated = store.logout(id)? {
        return Err(refused(settings, &outcome));
    }
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
    handle: &'a str,
}

#[derive(Serialize)]
struct ListBody<'a> {
    sessions: Vec<ListedBody<'a>>,
}

pub(crate) fn list(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    let (mut sessions, now) = match store.list(id)? {
        Outcome::Found(found) => found,
        other => return Err(refused(settings, &other)),
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
            handle: &s.handle,
        })
        .collect();
    Ok(Response::json(200, &ListBody { sessions }))
}

#[derive(Serialize)]
struct Revoked {
    revoked: i64,
}

pub(crate) fn revoke_all(
    _: &mut Request,
    settings: &Settings,
    store: &Store,
    id: &SessionId,
    _: Via,
) -> Result<Response, ApiError> {
    match store.revoke_all(id)? {
        Outcome::Found(ended) => Ok(Response::json(200, &Revoked { revoked: ended })
            .with_header("set-cookie", settings.cookie.clear())),
        other => Err(refused(settings, &other)),
    }
}
