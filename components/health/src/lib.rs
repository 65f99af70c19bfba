//! Spin component `health`: `GET /health/cache`, the readiness and liveness probe.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    spin_redis_patterns::health::handle(req)
}
