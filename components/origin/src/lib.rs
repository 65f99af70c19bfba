//! Spin component `origin`: a deliberately slow demo "profiles" API for the cache.
//!
//! Private (no public route): the cache reaches it by service chaining at
//! `http://origin.spin.internal`. `GET /profiles/{id}` answers a deterministic profile for
//! ids 1 to 1000 after `origin_delay_ms` (default 1000, so `spin up` shows a cold miss of
//! about a second), with `Cache-Control: public, max-age={origin_max_age_seconds}` and
//! `Cache-Tag: profiles, profile-{id}`; unknown ids get 404.

use serde_json::json;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

const KNOWN_IDS: std::ops::RangeInclusive<u32> = 1..=1000;
const NAMES: [&str; 8] =
    ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances"];
const PLANS: [&str; 3] = ["free", "pro", "team"];

fn variable(name: &str, default: u64) -> u64 {
    spin_sdk::variables::get(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn json_response(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

/// The app's error shape (README "Errors"), written out here: this demo component does not
/// link the platform layer.
fn problem(status: u16, code: &str, detail: &str) -> serde_json::Value {
    let title = match code {
        "not_found" => "Not found",
        _ => "Method not allowed",
    };
    json!({
        "type": format!("https://spin-redis-patterns.dev/problems/{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    })
}

fn problem_response(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .body(body.to_string())
        .build()
}

#[http_component]
fn handle(req: Request) -> Response {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return Response::builder()
            .status(405)
            .header("allow", "GET, HEAD")
            .header("content-type", "application/problem+json")
            .body(problem(405, "method_not_allowed", "use GET").to_string())
            .build();
    }
    // The slow part the cache exists to hide.
    let delay_ms = variable("origin_delay_ms", 1000).min(60_000);
    wasi::clocks::monotonic_clock::subscribe_duration(delay_ms * 1_000_000).block();

    // Canonical decimal ids only ("007" is not 7), so each profile has one URL.
    let id = req
        .path()
        .strip_prefix("/profiles/")
        .and_then(|text| text.parse::<u32>().ok().filter(|id| id.to_string() == text));
    let Some(id) = id.filter(|id| KNOWN_IDS.contains(id)) else {
        return problem_response(404, problem(404, "not_found", "no such profile"));
    };
    let profile = json!({
        "id": id.to_string(),
        "name": format!("{} {}", NAMES[id as usize % NAMES.len()], id),
        "email": format!("user{id}@example.com"),
        "plan": PLANS[id as usize % PLANS.len()],
    });
    let mut response = json_response(200, profile);
    let max_age = variable("origin_max_age_seconds", 60);
    response.set_header("cache-control", format!("public, max-age={max_age}"));
    response.set_header("cache-tag", format!("profiles, profile-{id}"));
    response
}
