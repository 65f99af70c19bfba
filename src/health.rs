//! `GET /health/cache`: can this component reach Redis with its configuration?
//!
//! Used as the readiness and liveness probe. It opens the connection exactly as a real
//! request would (same URL, TLS and AUTH) and sends one PING, so the latency it reports
//! includes the per-request connection cost that dominates under Spin.

use std::time::Instant;

use serde_json::json;
use spin_sdk::http::{Method, Request, Response};

use crate::http::{allow_methods, json, respond};
use crate::redis::{Redis, RedisError};

pub fn handle(req: Request) -> Response {
    respond(|| {
        allow_methods(&req, &[Method::Get, Method::Head])?;
        Ok(check())
    })
}

fn check() -> Response {
    let started = Instant::now();
    let result = Redis::from_spin_variables().and_then(|redis| {
        let reply = redis.execute("PING", vec![])?;
        match reply.string(0) {
            Ok("PONG") => Ok(()),
            _ => Err(RedisError::UnexpectedReply("PING did not answer PONG".into())),
        }
    });
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    match result {
        Ok(()) => json(200, &json!({ "redis": "ok", "latency_ms": latency_ms })),
        Err(e) => {
            eprintln!("health check failed ({}): {e}", e.reason());
            json(
                503,
                &json!({
                    "redis": "down",
                    "reason": e.reason(),
                    "error": { "code": "redis_unavailable", "message": public_message(&e) },
                    "latency_ms": latency_ms,
                }),
            )
        }
    }
}

/// What a probe caller may see: the kind of failure, never hosts, keys or raw replies.
fn public_message(e: &RedisError) -> String {
    match e {
        RedisError::Config(c) => format!("the Redis settings are invalid: {c}"),
        RedisError::NotAllowed => e.to_string(),
        RedisError::AuthFailed(_) => "Redis rejected the credentials".into(),
        RedisError::Unavailable(_) => "Redis could not be reached".into(),
        RedisError::Reply(_) | RedisError::UnexpectedReply(_) => {
            "Redis answered PING with an error".into()
        }
    }
}
