//! Spin component `ratelimit`: `/api/ratelimit/...` (check, inspect, reset) and the
//! `/api/limited/...` gateway that forwards admitted requests to the configured upstream.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::ratelimit::handle(req, out)
}
