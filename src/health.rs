//! `GET /health/cache`: can this component reach Redis with its configuration? And
//! `GET /openapi.yaml`: the app's OpenAPI description (docs/openapi.yaml), so a running app
//! describes itself.
//!
//! Used as the readiness and liveness probe. It opens the connection exactly as a real
//! request would (same URL, TLS and AUTH) and sends one PING, so the latency it reports
//! includes the per-request connection cost that dominates under Spin.

use http::Method;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::clock::monotonic_ns;
use crate::platform::log;
use crate::platform::redis::{Redis, RedisError};
use crate::platform::response::problem;
use crate::platform::{serve, ApiError, Request, Response};

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, route)
}

fn route(req: Request) -> Result<Response, ApiError> {
    req.allow(&[Method::GET, Method::HEAD])?;
    match req.component_route() {
        "/openapi.yaml" => Ok(openapi(req.is_head())),
        _ => Ok(check()),
    }
}

/// The OpenAPI document, built into the component: it describes this build's routes.
const OPENAPI: &str = include_str!("../docs/openapi.yaml");

fn openapi(head: bool) -> Response {
    let response = Response::new(200)
        .with_header("content-type", "application/yaml")
        // Shared caches may keep it, but must ask again: a deployment changes it.
        .with_header("cache-control", "no-cache");
    // HEAD: no body, and no length (wasi-http checks a length against the body written).
    if head {
        response
    } else {
        response.with_body(OPENAPI)
    }
}

/// The answer, or (with `reason`) the extension members of the 503 problem.
#[derive(Serialize)]
struct Report<'a> {
    redis: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// Milliseconds, to the microsecond.
    latency_ms: f64,
}

fn check() -> Response {
    let started = monotonic_ns();
    let result = Redis::from_spin_variables().and_then(|redis| {
        let reply = redis.execute("PING", vec![])?;
        match reply.string(0) {
            Ok("PONG") => Ok(()),
            _ => Err(RedisError::UnexpectedReply("PING did not answer PONG".into())),
        }
    });
    let latency_ms = ((monotonic_ns() - started) / 1000) as f64 / 1000.0;
    match result {
        Ok(()) => Response::json(200, &Report { redis: "ok", reason: None, latency_ms }),
        Err(e) => {
            log::error("health_check_failed", format_args!("{}: {e}", e.reason()));
            let report = Report { redis: "down", reason: Some(e.reason()), latency_ms };
            // Like every other `redis_unavailable` 503: clients may retry in a second.
            problem(503, "redis_unavailable", &public_message(&e), report)
                .with_header("retry-after", "1")
        }
    }
}

/// What a probe caller may see: the kind of failure, never hosts, keys, values or replies.
fn public_message(e: &RedisError) -> String {
    match e {
        RedisError::Config(c) => {
            format!("the Redis settings are invalid: variable `{}`", c.variable)
        }
        RedisError::NotAllowed => e.to_string(),
        RedisError::AuthFailed(_) => "Redis rejected the credentials".into(),
        RedisError::Unavailable(_) => "Redis could not be reached".into(),
        RedisError::Reply(_) | RedisError::UnexpectedReply(_) => {
            "Redis answered PING with an error".into()
        }
    }
}
