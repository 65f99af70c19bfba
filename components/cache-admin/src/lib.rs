//! Spin component `cache-admin`: `POST /api/cache/purge` (purge by tag) and
//! `GET /api/cache/stats`. Kept apart from `cache` so the hot path stays small and the admin
//! routes can be deployed (or left out) on their own.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::cache::admin::handle(req, out)
}
