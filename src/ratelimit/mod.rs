//! Rate limiting: atomic decisions in Redis, one Lua script and one round trip for every
//! limit of a decision; with the fast path on, a window limit decided alone is an `INCRBY`
//! on the pooled store. Windows follow the deciding instance's wall clock and live in the same
//! per-window counters on both paths (`windows.rs`); token buckets use Redis server time.
//!
//! Routes (component `ratelimit`):
//!
//! | Route | Reached | What |
//! |---|---|---|
//! | `POST /api/ratelimit/check` `{"policy", "key", "cost"?, "dry_run"?}` | private¹ | decide and consume |
//! | `GET /api/ratelimit/{policy}/{key}` | private¹ | the current state, nothing consumed |
//! | `DELETE /api/ratelimit/{policy}/{key}` | private¹, admin token | reset |
//! | `/api/limited/{path...}` | public | the gateway: limit the caller, forward to the upstream |
//!
//! ¹ Other components call `http://ratelimit.spin.internal/api/ratelimit/...` (service
//! chaining; Spin reports those with an empty component route). The public route
//! `/api/ratelimit/...` answers 404 unless `ratelimit_api_token` is set, then only to that
//! bearer token. API keys and gateway callers live in separate Redis namespaces.
//!
//! Every response about a decision carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers-11, one list member per limit) and, on 429,
//! `Retry-After` and a `quota-exceeded` problem body.

mod api;
mod client;
mod decide;
mod gateway;
mod headers;
mod keys;
mod library;
mod policy;
mod pooled;
mod settings;
mod windows;

use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::{serve, ApiError, Request, Response};

pub use api::MAX_KEY_LEN;
pub use library::{Decision, LimitState, Limiter, Namespace, Subject};
/// The rate limiter's token bucket (GCRA) as a Lua prelude, for services that limit inside
/// their own script (OTP): one implementation of the algorithm. After `script::CLOCK`.
pub const GCRA: &str = include_str!("gcra.lua");
pub use gateway::MAX_GATEWAY_BODY;
pub use headers::UNCHECKED_HEADER;

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, route)
}

/// The route table, by the route Spin matched (never by anything the client chose).
fn route(req: Request) -> Result<Response, ApiError> {
    match req.component_route() {
        "/api/limited" => gateway::forward(req),
        "/api/ratelimit" => {
            let path = req.path_info().to_owned();
            api::serve(req, &path, true)
        }
        // Service chaining: Spin matches the whole path against a synthetic `/...` route.
        "" => {
            let path = req.path_info().to_owned();
            match path.strip_prefix("/api/ratelimit") {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    let rest = rest.to_owned();
                    api::serve(req, &rest, false)
                }
                _ => Err(ApiError::not_found(
                    "service chaining reaches /api/ratelimit/... of this component",
                )),
            }
        }
        other => Err(ApiError::not_found(format!("no route {other:?} in this component"))),
    }
}
