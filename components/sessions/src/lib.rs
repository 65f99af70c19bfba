//! Spin component `sessions`: server-side web sessions in Redis under `/api/sessions...`.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::sessions::handle(req, out)
}
