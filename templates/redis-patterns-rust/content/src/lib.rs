//! {{project-name}}: a Spin HTTP handler on the spin-redis-patterns library. Every request is
//! rate limited per client address; the answer is read through a Redis cache. Both patterns
//! share one Redis connection, opened on first use.

use std::time::Duration;

use spin_redis_patterns::cache::{Fill, ValueCache};
use spin_redis_patterns::ratelimit::Limiter;
use spin_redis_patterns::{Config, Error, Redis};
use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// The limits, in code (the library also reads them from the `ratelimit_policies` variable).
const POLICIES: &str =
    r#"{"per_client": {"algorithm": "sliding_window", "limit": 60, "window": "60s"}}"#;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    // Head and body in one write: spin-sdk's own answer stalls keep-alive clients ~40 ms.
    spin_redis_patterns::http::serve(req, out, respond);
}

fn respond(req: Request) -> Response {
    match answer(&req) {
        Ok(response) => response,
        Err(e) => {
            // A small JSON error (no brace pairs here: this file is a Spin template).
            let detail = e.to_string().replace(['"', '\\'], "'");
            let body = ["{\"code\":\"", e.code(), "\",\"detail\":\"", &detail, "\"}"].concat();
            let mut builder = Response::builder();
            builder.status(e.status()).header("content-type", "application/json");
            if let Some(after) = e.retry_after() {
                builder.header("retry-after", after.as_secs().max(1).to_string());
            }
            builder.body(body).build()
        }
    }
}

fn answer(req: &Request) -> Result<Response, Error> {
    let config = Config::spin();
    let redis = Redis::from_config(&config)?;
    let client = req
        .header("spin-client-addr")
        .and_then(|v| v.as_str())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());

    let decision = Limiter::from_json(POLICIES)?.limit(&redis, "per_client", &client)?;
    if !decision.allowed() {
        let mut builder = Response::builder();
        builder.status(429).header("content-type", "application/json");
        for (name, value) in decision.headers() {
            builder.header(name, value);
        }
        return Ok(builder.body(r#"{"code":"rate_limited"}"#).build());
    }

    // Replace this with a call to your database or API: it runs once per TTL, not per request.
    let fetch = || Ok::<_, String>(b"Hello from {{project-name}}".to_vec());
    let fill = Fill { ttl: Some(Duration::from_secs(30)), tags: Vec::new() };
    let cached = ValueCache::new(&config)?.get_or_fetch(&redis, "/greeting", &fill, fetch)?;

    let mut builder = Response::builder();
    builder
        .status(200)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-cache", cached.status.as_str());
    for (name, value) in decision.headers() {
        builder.header(name, value);
    }
    Ok(builder.body(cached.value).build())
}
