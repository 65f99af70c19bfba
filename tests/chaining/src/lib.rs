//! The bench of issue 29, item 5: one profile read that is rate limited, session checked and
//! cached, done two ways in the same app (the project's components beside this one):
//!
//! - `GET /bench/library/{id}`: through the library, in this component, on one Redis
//!   connection: `Limiter::limit`, `Sessions::get`, `ValueCache::get_or_fetch`;
//! - `GET /bench/chained/{id}`: the same three steps as HTTP calls to the project's
//!   components by service chaining (`POST http://ratelimit.spin.internal/api/ratelimit/check`,
//!   `GET http://sessions.spin.internal/current`, `GET http://cache.spin.internal/proxy/profiles/{id}`),
//!   each of which opens its own Redis connection.
//!
//! The caller names its session with `Authorization: Bearer <session id>`. Both answer 200
//! with the profile and `x-cache`, 401 without a live session, 429 when limited.
//!
//! Chained paths: Spin matches a chained request against a synthetic `/...` route, so the
//! sessions and cache components, which route on the path after their own route, are called
//! at `/current` and `/proxy/...` (the rate limiter recognises chaining and takes the full path).

use std::time::Duration;

use spin_redis_patterns::cache::{Fill, ValueCache};
use spin_redis_patterns::platform::{serve, Response};
use spin_redis_patterns::ratelimit::Limiter;
use spin_redis_patterns::sessions::Sessions;
use spin_redis_patterns::{Config, Error, Redis};
use spin_sdk::http::{IncomingRequest, Method, Request, ResponseOutparam};
use spin_sdk::http_component;

/// The policy both ways apply (the app's `ratelimit_policies` has it: the bench sets it).
const POLICY: &str = "bench_profile";
const PROFILE_TTL: Duration = Duration::from_secs(300);

// Answers go out through the platform's `serve`, as every component's do (head and body in
// one write: with two, Nagle and delayed ACKs stall kept connections by ~40 ms).
#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |req| {
        let path = req.path_info().to_owned();
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        Ok(if let Some(id) = path.strip_prefix("/library/") {
            library(id, &bearer).unwrap_or_else(|e| text(e.status(), e.code()))
        } else if let Some(id) = path.strip_prefix("/chained/") {
            chained(id, &bearer).unwrap_or_else(|e| text(502, &e))
        } else {
            text(404, "not_found")
        })
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn library(id: &str, session_id: &str) -> Result<Response, Error> {
    if !valid_id(id) {
        return Ok(text(400, "invalid_id"));
    }
    let config = Config::spin();
    let redis = Redis::from_config(&config)?;
    let Some(session) = Sessions::new(&config)?.get(&redis, session_id)? else {
        return Ok(text(401, "no_session"));
    };
    let decision = Limiter::new(&config)?.limit(&redis, POLICY, &session.user_id)?;
    if !decision.allowed() {
        return Ok(text(429, "rate_limited"));
    }
    let fill = Fill { ttl: Some(PROFILE_TTL), tags: Vec::new() };
    let key = format!("/profiles/{id}");
    let cached = ValueCache::new(&config)?.get_or_fetch(&redis, &key, &fill, || {
        let res =
            send(Method::Get, &format!("http://origin.spin.internal/profiles/{id}"), &[], None)?;
        if *res.status() != 200 {
            return Err(format!("origin answered {}", res.status()));
        }
        Ok(res.into_body())
    })?;
    Ok(profile(cached.value, cached.status.as_str()))
}

fn chained(id: &str, session_id: &str) -> Result<Response, String> {
    if !valid_id(id) {
        return Ok(text(400, "invalid_id"));
    }
    let auth = format!("Bearer {session_id}");
    let session = send(
        Method::Get,
        "http://sessions.spin.internal/current",
        &[("authorization", &auth)],
        None,
    )?;
    if *session.status() != 200 {
        return Ok(text(401, "no_session"));
    }
    let session: serde_json::Value =
        serde_json::from_slice(session.body()).map_err(|e| e.to_string())?;
    let user = session["user_id"].as_str().unwrap_or_default();
    let check = serde_json::json!({ "policy": POLICY, "key": user }).to_string();
    let decision = send(
        Method::Post,
        "http://ratelimit.spin.internal/api/ratelimit/check",
        &[("content-type", "application/json")],
        Some(check.into_bytes()),
    )?;
    match *decision.status() {
        200 => {}
        429 => return Ok(text(429, "rate_limited")),
        other => return Err(format!("ratelimit answered {other}")),
    }
    let cached =
        send(Method::Get, &format!("http://cache.spin.internal/proxy/profiles/{id}"), &[], None)?;
    if *cached.status() != 200 {
        return Err(format!("cache answered {}", cached.status()));
    }
    let status =
        cached.header("x-cache").and_then(|v| v.as_str()).unwrap_or("").to_ascii_lowercase();
    Ok(profile(cached.into_body(), &status))
}

fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<spin_sdk::http::Response, String> {
    let mut builder = Request::builder();
    builder.method(method).uri(url);
    for (name, value) in headers {
        builder.header(*name, *value);
    }
    let request = builder.body(body.unwrap_or_default()).build();
    spin_sdk::http::run(spin_sdk::http::send(request)).map_err(|e| format!("{url}: {e}"))
}

fn profile(body: Vec<u8>, cache: &str) -> Response {
    Response::new(200)
        .with_header("content-type", "application/json")
        .with_header("x-cache", cache)
        .with_body(body)
}

fn text(status: u16, code: &str) -> Response {
    Response::new(status).with_header("content-type", "text/plain").with_body(code.to_owned())
}
