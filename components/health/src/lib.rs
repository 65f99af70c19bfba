//! Spin component `health`: `GET /health/cache`, the readiness and liveness probe, and
//! `GET /openapi.yaml`, the app's OpenAPI description.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::health::handle(req, out)
}
