//! Spin component `leaderboard`: `/api/leaderboards/...`, scores, ranks and periodic boards.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    spin_redis_patterns::leaderboard::handle(req, out)
}
