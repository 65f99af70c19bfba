//! The backend's routes, behind `sessions_api_token`: create a session, set server-owned
//! data, revoke a user's sessions (all, or one by handle).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::current::Revoked;
use super::data::{body_limit, data_entries};
use super::library::{check_handle, check_user_id, Sessions};
use super::Issued;
use crate::platform::auth::require_bearer;
use crate::platform::redis::Redis;
use crate::platform::{ApiError, Request, Response};

/// Only the app's backend may create sessions (for any user) or act on a user's sessions,
/// so it must present `sessions_api_token`; an empty token disables these routes.
fn authorize(req: &Request, sessions: &Sessions) -> Result<(), ApiError> {
    require_bearer(req, &sessions.settings().api_token, || {
        ApiError::new(
            403,
            "creation_disabled",
            "the backend routes are disabled: set sessions_api_token for the app's backend",
        )
    })
}

/// A user id given as JSON text: a string the library accepts as a user id.
fn user_id(raw: Option<&RawValue>) -> Result<String, ApiError> {
    let text = raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    check_user_id(text.as_deref())?;
    Ok(text.unwrap_or_default())
}

/// `POST /api/sessions` body. Fields whose wrong type has its own error code are kept as
/// JSON text and checked after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    user_id: Option<Box<RawValue>>,
    /// Data the holder may change (`PATCH /api/sessions/current`).
    data: Option<Box<RawValue>>,
    /// Data only the backend may change (roles, "MFA done"): read-only to the holder.
    server_data: Option<Box<RawValue>>,
    user_agent: Option<Box<RawValue>>,
}

/// `POST /api/sessions`: a session for a user, its id (the backend hands it to the browser as
/// the cookie this answer also sets) and its handle.
pub(crate) fn create(req: &mut Request, sessions: &Sessions) -> Result<Response, ApiError> {
    authorize(req, sessions)?;
    let body: CreateRequest = req.json(body_limit(sessions.settings()))?;
    let user_id = user_id(body.user_id.as_deref())?;
    let entries = |raw: &Option<Box<RawValue>>| match raw {
        Some(raw) => data_entries(raw),
        None => Ok(Vec::new()),
    };
    let (data, server) = (entries(&body.data)?, entries(&body.server_data)?);
    let user_agent = match &body.user_agent {
        None => req.header("user-agent").unwrap_or("").to_owned(),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map_err(|_| ApiError::new(422, "invalid_user_agent", "user_agent must be a string"))?,
    };

    // The library does the rest (the data checks and the script), for this route and for
    // apps that create sessions in-process alike.
    let redis = Redis::from_spin_variables()?;
    let created = sessions.create_entries(&redis, &user_id, &user_agent, &server, &data)?;
    let body = Issued {
        session_id: Some(&created.id),
        handle: Some(&created.handle),
        expires_in: super::seconds(created.expires_in),
    };
    Ok(Response::json(201, &body).with_header("set-cookie", sessions.set_cookie(&created.id)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    user_id: Option<Box<RawValue>>,
    handle: Option<String>,
}

/// `POST /api/sessions/admin/revoke`: ends every session of a user, or the one with `handle`.
pub(crate) fn revoke(req: &mut Request, sessions: &Sessions) -> Result<Response, ApiError> {
    authorize(req, sessions)?;
    let body: RevokeRequest = req.json(body_limit(sessions.settings()))?;
    let user_id = user_id(body.user_id.as_deref())?;
    // Checked here too (the library checks again), so a bad handle is refused before the
    // Redis settings are read, as ever.
    let handle = body.handle.as_deref().map(check_handle).transpose()?;
    let redis = Redis::from_spin_variables()?;
    let revoked = sessions.revoke(&redis, &user_id, handle)?;
    Ok(Response::json(200, &Revoked { revoked }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerDataRequest {
    user_id: Option<Box<RawValue>>,
    handle: String,
    data: Box<RawValue>,
}

#[derive(serde::Serialize)]
struct Updated {
    updated: bool,
}

/// `PATCH /api/sessions/admin/data`: merges server-owned data into one session (a `null`
/// value deletes the name), without sliding its idle timeout.
pub(crate) fn server_data(req: &mut Request, sessions: &Sessions) -> Result<Response, ApiError> {
    authorize(req, sessions)?;
    let body: ServerDataRequest = req.json(body_limit(sessions.settings()))?;
    let user_id = user_id(body.user_id.as_deref())?;
    let handle = check_handle(&body.handle)?;
    let entries = data_entries(&body.data)?;
    let redis = Redis::from_spin_variables()?;
    if sessions.set_server_entries(&redis, &user_id, handle, &entries)? {
        Ok(Response::json(200, &Updated { updated: true }))
    } else {
        Err(ApiError::new(404, "no_session", "the user has no live session with that handle"))
    }
}
