//! Leases for a backend's workers, with fencing tokens: one Lua script, one round trip and
//! one hash slot per operation.
//!
//! Routes (component `locks`; every route needs the `locks_api_token` bearer token):
//! - `POST /api/locks/{name}` `{"ttl_ms", "wait_ms"?}`: acquire. `201 {"token",
//!   "fencing_token", "expires_in_ms"}`; `409 lock_held` with `expires_in_ms` and
//!   `Retry-After` when someone else holds it. With `wait_ms` (at most `locks_max_wait_ms`)
//!   the request polls until it gets the lock or the time is up, one round trip per try;
//! - `PUT /api/locks/{name}` `{"ttl_ms"}` with `Lock-Token: <token>`: renew (the lease now
//!   ends `ttl_ms` from now; the fencing token stays);
//! - `DELETE /api/locks/{name}` with `Lock-Token: <token>`: release;
//! - `GET /api/locks/{name}`: whether it is held, for how long, and the fencing tokens.
//!
//! Renew and release compare the caller's token with the holder's inside the script that
//! changes the lock, so a worker whose lease expired cannot extend or delete its successor's.
//! Anyone but the holder gets `409 not_holder`. Redis keeps only SHA-256 of each token.
//!
//! The fencing token grows with every acquisition of a name, across holders: pass it to the
//! resource the lock protects, which refuses any write carrying a smaller token than one it
//! has seen. That, not the lease, is what keeps a paused or partitioned former holder from
//! acting after its lease ended (see acquire.lua for what survives a failover).
//!
//! The routes are thin users of the library's [`Lease`]: they add the bearer check, the JSON
//! and the `locks_max_ttl_ms` / `locks_max_wait_ms` bounds.

mod keys;
mod library;
pub mod settings;
mod store;

use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::auth::require_bearer;
use crate::platform::redis::Redis;
use crate::platform::response::problem;
use crate::platform::{serve, ApiError, Request, Response};
use crate::Error;
use settings::{vars, Settings};

pub use library::{Held, Lease, LockStatus, MAX_TTL};

/// Largest request body.
const MAX_BODY: usize = 1024;
/// The header carrying the holder's token on renew and release (as WebDAV's `UNLOCK` does;
/// some proxies drop `DELETE` bodies).
const TOKEN_HEADER: &str = "lock-token";

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        let settings = Settings::from_spin_variables()?;
        route(&mut req, &settings)
    })
}

/// The route table: one route, `/{name}`, four methods.
fn route(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    let path = req.path_info().to_owned();
    let Some(name) = path.strip_prefix('/').filter(|n| !n.contains('/') && !n.is_empty()) else {
        return Err(ApiError::not_found("no such locks route: use /api/locks/{name}"));
    };
    req.allow(&[Method::POST, Method::PUT, Method::DELETE, Method::GET])?;
    require_bearer(req, &settings.api_token, || {
        ApiError::new(
            403,
            "locks_disabled",
            format!("the locks API is disabled: set the `{}` variable", vars::API_TOKEN),
        )
    })?;
    if !keys::valid_name(name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "a lock name is 1-{} characters of letters, digits, '_', '-', '.' and ':'",
                keys::MAX_NAME_LEN
            ),
        ));
    }
    match *req.method() {
        Method::POST => acquire(req, settings, name),
        Method::PUT => renew(req, settings, name),
        Method::DELETE => release(req, name),
        _ => status(name),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireRequest {
    ttl_ms: u64,
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    ttl_ms: u64,
}

#[derive(Serialize)]
struct Acquired<'a> {
    token: &'a str,
    fencing_token: u64,
    expires_in_ms: u64,
}

#[derive(Serialize)]
struct Renewed {
    fencing_token: u64,
    expires_in_ms: u64,
}

#[derive(Serialize)]
struct Released {
    released: bool,
    fencing_token: u64,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    name: &'a str,
    held: bool,
    expires_in_ms: Option<u64>,
    /// The current holder's.
    fencing_token: Option<u64>,
    /// The last one issued for this name (the current holder's, or its last holder's; none
    /// once the counter expired, a day after the last lease).
    last_fencing_token: Option<u64>,
}

/// The problem's extension: how long the current lease has left.
#[derive(Serialize)]
struct Conflict {
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_ms: Option<u64>,
}

fn ttl(ttl_ms: u64, settings: &Settings) -> Result<u64, ApiError> {
    if (1..=settings.max_ttl_ms).contains(&ttl_ms) {
        Ok(ttl_ms)
    } else {
        Err(ApiError::bad_request(
            "invalid_ttl",
            format!("ttl_ms must be from 1 to {} (locks_max_ttl_ms)", settings.max_ttl_ms),
        ))
    }
}

/// 409 for anyone who does not hold the lock, with how long another holder's lease still
/// runs (`expires_in_ms`, `Retry-After`) when someone else holds it. Any other error is
/// answered as the library's errors always are.
fn conflict(e: Error) -> Result<Response, ApiError> {
    let Error::Conflict { code, message, retry_after_ms } = e else { return Err(e.into()) };
    let response = problem(409, code, &message, Conflict { expires_in_ms: retry_after_ms });
    Ok(match retry_after_ms {
        Some(ms) => response.with_header("retry-after", ms.div_ceil(1000).max(1).to_string()),
        None => response,
    })
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn acquire(req: &mut Request, settings: &Settings, name: &str) -> Result<Response, ApiError> {
    let body: AcquireRequest = req.json(MAX_BODY)?;
    let ttl_ms = ttl(body.ttl_ms, settings)?;
    if body.wait_ms > settings.max_wait_ms {
        return Err(ApiError::bad_request(
            "invalid_wait",
            format!("wait_ms must be from 0 to {} (locks_max_wait_ms)", settings.max_wait_ms),
        ));
    }
    let redis = Redis::from_spin_variables()?;
    let (ttl, wait) = (Duration::from_millis(ttl_ms), Duration::from_millis(body.wait_ms));
    match Lease::try_acquire(&redis, name, ttl, wait)? {
        Ok(lease) => Ok(Response::json(
            201,
            &Acquired {
                token: lease.token(),
                fencing_token: lease.fencing_token(),
                expires_in_ms: millis(lease.expires_in()),
            },
        )),
        Err(held) => conflict(held.into()),
    }
}

/// The holder's lease from `Lock-Token`, checked for shape before Redis is asked.
fn holder(req: &Request, name: &str) -> Result<Lease, ApiError> {
    let token = req.header(TOKEN_HEADER).map(str::trim).ok_or_else(|| {
        ApiError::bad_request(
            "missing_lock_token",
            "send the holder's token in a Lock-Token header",
        )
    })?;
    Ok(Lease::from_token(name, token)?)
}

fn renew(req: &mut Request, settings: &Settings, name: &str) -> Result<Response, ApiError> {
    let mut lease = holder(req, name)?;
    let body: RenewRequest = req.json(MAX_BODY)?;
    let ttl_ms = ttl(body.ttl_ms, settings)?;
    let redis = Redis::from_spin_variables()?;
    match lease.renew(&redis, Duration::from_millis(ttl_ms)) {
        Ok(()) => Ok(Response::json(
            200,
            &Renewed {
                fencing_token: lease.fencing_token(),
                expires_in_ms: millis(lease.expires_in()),
            },
        )),
        Err(e) => conflict(e),
    }
}

fn release(req: &Request, name: &str) -> Result<Response, ApiError> {
    let lease = holder(req, name)?;
    let redis = Redis::from_spin_variables()?;
    match lease.release(&redis) {
        Ok(fencing_token) => Ok(Response::json(200, &Released { released: true, fencing_token })),
        Err(e) => conflict(e),
    }
}

fn status(name: &str) -> Result<Response, ApiError> {
    let redis = Redis::from_spin_variables()?;
    let s = Lease::status(&redis, name)?;
    Ok(Response::json(
        200,
        &StatusBody {
            name,
            held: s.held,
            expires_in_ms: s.expires_in.map(millis),
            fencing_token: s.fencing_token,
            last_fencing_token: s.last_fencing_token,
        },
    ))
}
