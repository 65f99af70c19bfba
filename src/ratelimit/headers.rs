//! What a decision looks like on the wire: the `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-11 (one list member per limit), `Retry-After`, and
//! the draft's `quota-exceeded` problem type for 429 bodies.

use serde::Serialize;

use crate::platform::response::problem_json;
use crate::platform::Response;

use super::decide::Decision;

/// Set on responses admitted without a check because Redis was unreachable (`fail_open`).
pub const UNCHECKED_HEADER: &str = "x-ratelimit-unchecked";
/// The problem type the draft registers for a refused request.
pub(crate) const QUOTA_EXCEEDED: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";

fn secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// `RateLimit-Policy`, `RateLimit` and `Retry-After` (or the unchecked flag), each one field
/// line holding every limit as a list member, to be appended after any the upstream sent.
pub(crate) fn fields(decision: &Decision) -> Vec<(&'static str, String)> {
    let policy: Vec<String> = decision
        .members
        .iter()
        .map(|m| format!("\"{}\";q={};w={}", m.name, m.quota, m.window_secs))
        .collect();
    let mut fields = vec![("ratelimit-policy", policy.join(", "))];
    match &decision.states {
        Some(states) => {
            // `t`: the seconds within which no more than `r` units can be used. An admitting
            // limit's reset is at most its window `w`: a sliding window's full restoration
            // (`reset_after_ms`) lies up to two windows away, because its units come back
            // gradually over the next window, and `t=118` beside `w=60` reads as a bug (issue
            // 33). A refusing limit's `t` is its wait, however long.
            let members: Vec<String> = states
                .iter()
                .zip(&decision.members)
                .map(|(s, m)| {
                    let t = if s.allowed {
                        secs_ceil(s.reset_after_ms).min(m.window_secs)
                    } else {
                        secs_ceil(s.retry_after_ms)
                    };
                    format!("\"{}\";r={};t={t}", m.name, s.remaining)
                })
                .collect();
            fields.push(("ratelimit", members.join(", ")));
            if !decision.allowed() {
                fields
                    .push(("retry-after", secs_ceil(decision.retry_after_ms()).max(1).to_string()));
            }
        }
        None => fields.push((UNCHECKED_HEADER, "redis_unavailable".into())),
    }
    fields
}

pub(crate) fn with_fields(mut response: Response, decision: &Decision) -> Response {
    for (name, value) in fields(decision) {
        response = response.with_header(name, value);
    }
    response
}

/// The members of a `quota-exceeded` problem (RFC 9457 with the draft's extension), and the
/// `code` every error of the app carries.
#[derive(Serialize)]
pub(crate) struct QuotaExceeded<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    #[serde(rename = "violated-policies")]
    pub violated_policies: Vec<&'a str>,
}

impl<'a> QuotaExceeded<'a> {
    pub fn of(decision: &'a Decision) -> Self {
        Self {
            kind: QUOTA_EXCEEDED,
            title: "Request cannot be satisfied as assigned quota has been exceeded",
            status: 429,
            detail: format!("too many requests; retry in {} ms", decision.retry_after_ms()),
            code: "rate_limited",
            violated_policies: decision.violated(),
        }
    }
}

/// A JSON 429 answered as `application/problem+json`.
pub(crate) fn problem_response(body: &impl Serialize) -> Response {
    problem_json(429, body)
}
