//! Spin component `ratelimit`: the private decision API `/api/ratelimit/...` (check, inspect,
//! reset; http://ratelimit.spin.internal, or the public route with a token) and the
//! `/api/limited/...` gateway that forwards admitted requests to the configured upstream.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::ratelimit::handle(req, out)
}
