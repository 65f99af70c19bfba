//! The seed recipe's routes: `GET /api/cache/profile/{user_id}` on the read-through
//! machinery, and the `GET /api/cache/demo` counter.

use serde::Serialize;

use super::respond::{Outcome, Served};
use crate::args;
use crate::lua_script;
use crate::platform::redis::Redis;
use crate::platform::script::Script;
use crate::platform::{ApiError, Response};

static DEMO_COUNTER: Script = lua_script!(include_str!("demo_counter.lua"));

const DEMO_TTL_SECONDS: i64 = 300;
pub(crate) const MAX_USER_ID_LEN: usize = 64;

/// Checks a user id: 1 to 64 letters, digits, `-` or `_`.
pub(crate) fn check_user_id(user_id: &str) -> Result<(), ApiError> {
    let valid = !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID_LEN
        && user_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_user_id",
            format!("user_id must be 1 to {MAX_USER_ID_LEN} letters, digits, '-' or '_'"),
        ))
    }
}

/// The profile answer built from what the proxy served (the same entries as
/// `/api/cache/proxy/profiles/{user_id}`).
pub(crate) fn profile(user_id: &str, served: Served, head: bool) -> Result<Response, ApiError> {
    let cache = served.outcome.as_str();
    let age = served.age_seconds();
    let error = |e: ApiError| e.with_header("x-cache", cache).with_header("age", age.clone());
    match served.status {
        200 => {}
        404 => {
            return Err(error(ApiError::new(
                404,
                "profile_not_found",
                format!("no profile for user {user_id}"),
            )))
        }
        status => {
            return Err(error(ApiError::new(
                502,
                "origin_error",
                format!("the origin answered {status}"),
            )))
        }
    }
    // The origin's JSON is passed through as it is, not parsed and re-serialised; only its
    // outer shape is checked.
    let profile = served.body.trim_ascii();
    if !(profile.starts_with(b"{") && profile.ends_with(b"}")) {
        return Err(error(ApiError::new(
            502,
            "origin_invalid_response",
            "the origin's profile is not a JSON object",
        )));
    }
    let source = match served.outcome {
        Outcome::Hit | Outcome::Stale => "cache",
        Outcome::Miss | Outcome::Bypass | Outcome::Error => "origin",
    };
    let mut body = format!("{{\"source\":\"{source}\",\"profile\":").into_bytes();
    body.extend_from_slice(profile);
    body.push(b'}');
    Ok(Response::new(200)
        .with_header("content-type", "application/json")
        .with_header("x-cache", cache)
        .with_header("age", age)
        .with_body(if head { Vec::new() } else { body }))
}

#[derive(Serialize)]
struct DemoCounter {
    key: &'static str,
    value: i64,
    ttl_seconds: i64,
}

/// `GET /api/cache/demo`: the seed recipe's counter, INCR and EXPIRE in one round trip.
pub(crate) fn demo_counter() -> Result<Response, ApiError> {
    let redis = Redis::from_spin_variables()?;
    let reply =
        redis.eval(&DEMO_COUNTER, &[&redis.key("demo:counter")], args![DEMO_TTL_SECONDS])?;
    let value = reply.int(0)?;
    Ok(Response::json(
        200,
        &DemoCounter { key: "demo:counter", value, ttl_seconds: DEMO_TTL_SECONDS },
    ))
}
