//! Spin component `locks`: `/api/locks/{name}`, leases with fencing tokens.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::locks::handle(req, out)
}
