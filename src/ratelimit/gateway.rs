//! The gateway, `/api/limited/{path...}`: identifies the caller, decides for its key and its
//! address in one script, and forwards an admitted request to the upstream faithfully:
//! every end-to-end field line both ways, in order, the upstream's own `RateLimit` members
//! kept and ours appended.
//!
//! Order matters: the headers to forward are settled first (hop-by-hop ones, those named in
//! `Connection` and those wasi-http refuses are dropped), so no header costs a caller a unit
//! and a 502; then the decision; then the body (a declared excess is 413 before any upstream
//! call); then the upstream call with the configured timeouts (504 on expiry).

use crate::platform::fast_path;
use crate::platform::fields;
use crate::platform::log;
use crate::platform::outbound::{self, OutboundError, OutboundRequest};
use crate::platform::redis::Redis;
use crate::platform::settings::Variables;
use crate::platform::{ApiError, Request, Response};

use super::client::{self, Caller};
use super::decide::Decision;
use super::headers::{self, QuotaExceeded};
use super::library::{Limiter, Namespace, Subject};
use super::settings::GatewaySettings;

/// Largest request or upstream response body the gateway buffers.
pub const MAX_GATEWAY_BODY: usize = 8 * 1024 * 1024;

/// The field lines to forward: end-to-end ones only (the platform's one hop-by-hop list and
/// the fields `Connection` names; body framing and `spin-*` fields recomputed or dropped).
fn forwardable(lines: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    fields::end_to_end(lines)
}

/// The subjects of one caller's decision: the gateway policy on its identity (a known key,
/// else its address) and the address policy on its address, a limit reached by both checked
/// once, and an address limit named like the identity's reported as `<name>.address`.
fn subjects<'a>(s: &'a GatewaySettings, caller: &'a Caller) -> [Subject<'a>; 2] {
    let identity = caller.api_key.as_deref().unwrap_or(&caller.address);
    [
        Subject::new(&s.policy, identity),
        Subject::new(&s.address_policy, &caller.address).labelled("address"),
    ]
}

pub(crate) fn forward(mut req: Request) -> Result<Response, ApiError> {
    let s = GatewaySettings::from_variables(&Variables::spin())?;
    let peer =
        req.client_addr().ok_or_else(|| ApiError::internal("the client address is unavailable"))?;
    let caller = client::caller(&req, &s, peer)?;
    let mut out_headers: Vec<(String, Vec<u8>)> = forwardable(req.field_lines())
        .into_iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("x-forwarded-for"))
        .collect();

    // The library's limiter in the gateway's namespace: one script, one round trip, for
    // both subjects (a decision fails open only if both policies do).
    let redis = Redis::from_spin_variables()?;
    let pooled = Variables::spin().flag(fast_path::VARIABLE)?;
    let limiter =
        Limiter::from_policies(s.policies.clone(), pooled).in_namespace(Namespace::Gateway);
    let decision = limiter.limit_all(&redis, &subjects(&s, &caller), 1)?.inner;
    if !decision.allowed() {
        let problem = QuotaExceeded::of(&decision);
        return Ok(headers::with_fields(headers::problem_response(&problem), &decision));
    }
    let with_limits = |error: ApiError| with_decision(error, &decision);
    let body = req.body(MAX_GATEWAY_BODY).map_err(with_limits)?;

    // The path after /api/limited, the query, the end-to-end headers.
    let info = req.path_info();
    let path = if info.starts_with('/') { info.to_owned() } else { format!("/{info}") };
    let url = match req.query() {
        "" => format!("{}{path}", s.upstream),
        query => format!("{}{path}?{query}", s.upstream),
    };
    let mut forwarded_for = req.header_values("x-forwarded-for").join(", ");
    if !forwarded_for.is_empty() {
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&peer.to_string());
    out_headers.push(("x-forwarded-for".into(), forwarded_for.into_bytes()));
    if !body.is_empty() {
        out_headers.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let request =
        OutboundRequest { method: req.method(), url: &url, headers: &out_headers, body: &body };
    let answer = outbound::send(&request, s.timeouts, MAX_GATEWAY_BODY).map_err(|e| {
        log::error("upstream_failed", format_args!("upstream request failed: {e}"));
        with_limits(match e {
            OutboundError::Timeout => {
                ApiError::new(504, "upstream_timeout", "the upstream did not answer in time")
            }
            // The upstream has acted on the request by now: say so rather than 413, which
            // would tell the client its request was not processed.
            OutboundError::TooLarge => ApiError::new(
                502,
                "upstream_response_too_large",
                format!(
                    "the upstream answered with more than {MAX_GATEWAY_BODY} bytes, which the \
                     gateway does not relay; the upstream may have acted on the request"
                ),
            ),
            _ => ApiError::new(502, "upstream_unavailable", "the upstream did not answer"),
        })
    })?;
    let mut response = Response::new(answer.status).with_body(answer.body);
    response.headers = forwardable(&answer.headers);
    Ok(headers::with_fields(response, &decision))
}

fn with_decision(mut error: ApiError, decision: &Decision) -> ApiError {
    error.headers.extend(headers::fields(decision));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn only_end_to_end_fields_are_forwarded_in_order() {
        let kept = forwardable(&lines(&[
            ("accept", "*/*"),
            ("Connection", "keep-alive, X-Hop"),
            ("x-hop", "secret"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("set-cookie", "a=1"),
            ("spin-client-addr", "1.2.3.4:5"),
            ("content-length", "3"),
            ("set-cookie", "b=2"),
            ("te", "trailers"),
        ]));
        assert_eq!(kept, lines(&[("accept", "*/*"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]));
    }
}
