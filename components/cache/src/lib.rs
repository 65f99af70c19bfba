//! Spin component `cache`: cache-aside in front of the origin named by `origin_url`
//! (`/api/cache/...`). The logic lives in the shared library's `cache` module.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::cache::handle(req, out)
}
