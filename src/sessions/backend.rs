//! The backend's routes, behind `sessions_api_token`: create a session, set server-owned
//! data, revoke a user's sessions (all, or one by handle).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::data::{body_limit, data_entries};
use super::library::Sessions;
use super::settings::Settings;
use super::store::{Outcome, Store};
use super::{data_too_large, Issued};
use crate::platform::auth::require_bearer;
use crate::platform::redis::Redis;
use crate::platform::{ApiError, Request, Response};

/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest user agent kept for the session list, in bytes (longer ones are cut).
pub const MAX_USER_AGENT_LEN: usize = 256;
/// A per-session handle: the first 16 characters of the session's digest.
const HANDLE_LEN: usize = 16;

/// Only the app's backend may create sessions (for any user) or act on a user's sessions,
/// so it must present `sessions_api_token`; an empty token disables these routes.
fn authorize(req: &Request, settings: &Settings) -> Result<(), ApiError> {
    require_bearer(req, &settings.api_token, || {
        ApiError::new(
            403,
            "creation_disabled",
            "the backend routes are disabled: set sessions_api_token for the app's backend",
        )
    })
}

fn invalid_user_id() -> ApiError {
    ApiError::new(
        422,
        "invalid_user_id",
        format!("user_id must be a string of 1-{MAX_USER_ID_LEN} bytes without control characters"),
    )
}

/// A user id given as JSON text: a string of 1-256 bytes without control characters.
fn user_id(raw: Option<&RawValue>) -> Result<String, ApiError> {
    match raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok()) {
        Some(u)
            if !u.is_empty() && u.len() <= MAX_USER_ID_LEN && !u.chars().any(char::is_control) =>
        {
            Ok(u)
        }
        _ => Err(invalid_user_id()),
    }
}

fn handle(raw: &str) -> Result<&str, ApiError> {
    if raw.len() == HANDLE_LEN
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(raw)
    } else {
        Err(ApiError::new(422, "invalid_handle", "handle must be a session handle from the list"))
    }
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
pub(crate) fn create(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    authorize(req, settings)?;
    let body: CreateRequest = req.json(body_limit(settings))?;
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
    let created = Sessions::from_settings(settings.clone()).create_entries(
        &redis,
        &user_id,
        &user_agent,
        &server,
        &data,
    )?;
    let body = Issued {
        session_id: Some(&created.id),
        handle: Some(&created.handle),
        expires_in: created.expires_in.as_millis().div_ceil(1000) as i64,
    };
    Ok(Response::json(201, &body).with_header("set-cookie", settings.cookie.set(&created.id)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    user_id: Option<Box<RawValue>>,
    handle: Option<String>,
}

#[derive(Serialize)]
struct Revoked {
    revoked: i64,
}

/// `POST /api/sessions/admin/revoke`: ends every session of a user, or the one with `handle`.
pub(crate) fn revoke(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    authorize(req, settings)?;
    let body: RevokeRequest = req.json(body_limit(settings))?;
    let user_id = user_id(body.user_id.as_deref())?;
    let handle = body.handle.as_deref().map(handle).transpose()?;
    let redis = Redis::from_spin_variables()?;
    let revoked = Store::new(&redis, settings).revoke_user(&user_id, handle)?;
    Ok(Response::json(200, &Revoked { revoked }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerDataRequest {
    user_id: Option<Box<RawValue>>,
    handle: String,
    data: Box<RawValue>,
}

#[derive(Serialize)]
struct Updated {
    updated: bool,
}

/// `PATCH /api/sessions/admin/data`: merges server-owned data into one session (a `null`
/// value deletes the name), without sliding its idle timeout.
pub(crate) fn server_data(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    authorize(req, settings)?;
    let body: ServerDataRequest = req.json(body_limit(settings))?;
    let user_id = user_id(body.user_id.as_deref())?;
    let handle = handle(&body.handle)?;
    let entries = data_entries(&body.data)?;
    let redis = Redis::from_spin_variables()?;
    match Store::new(&redis, settings).server_patch(&user_id, handle, &entries)? {
        Outcome::Found(()) => Ok(Response::json(200, &Updated { updated: true })),
        Outcome::DataTooLarge(size) => Err(data_too_large(settings, size)),
        _ => Err(ApiError::new(404, "no_session", "the user has no live session with that handle")),
    }
}
