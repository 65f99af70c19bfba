//! Spin component `otp`: `POST /api/otp` issues a one-time code or link token,
//! `POST /api/otp/verify` checks and consumes it.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::otp::handle(req, out)
}
