//! Rate limiting: atomic decisions in Redis, one Lua script and one round trip each, with
//! Redis server time as the clock so every instance agrees.
//!
//! Routes (component `ratelimit`):
//! - `POST /api/ratelimit/check` `{"policy", "key", "cost"?, "dry_run"?}`: decide and consume;
//! - `GET /api/ratelimit/{policy}/{key}`: the current state, nothing consumed;
//! - `DELETE /api/ratelimit/{policy}/{key}`: reset (admin bearer token);
//! - `/api/limited/{path...}`: the gateway, which identifies the caller, applies the gateway
//!   policy and forwards admitted requests to the upstream.
//!
//! Every response about a decision carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers-11) and, on 429, `Retry-After`.

pub mod client;
pub mod policy;

use std::net::IpAddr;

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::args;
use crate::lua_script;
use crate::platform::auth::{require_bearer, MIN_TOKEN_LEN};
use crate::platform::outbound::{self, OutboundError, OutboundRequest, Timeouts};
use crate::platform::redis::{Redis, RedisError};
use crate::platform::script::{self, Script};
use crate::platform::settings::{ConfigError, Variables};
use crate::platform::{serve, ApiError, Request, Response};
use policy::{Algorithm, FailureMode, Policies, Policy};

static FIXED_WINDOW: Script = lua_script!(script::CLOCK, include_str!("fixed_window.lua"));
static SLIDING_WINDOW: Script = lua_script!(script::CLOCK, include_str!("sliding_window.lua"));
static TOKEN_BUCKET: Script = lua_script!(script::CLOCK, include_str!("token_bucket.lua"));

/// The component's entry point: the route table.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |req| {
        if req.component_route().starts_with("/api/limited") {
            gateway(req)
        } else {
            api(req)
        }
    })
}

/// Longest rate-limit key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Largest `POST /api/ratelimit/check` body.
const MAX_CHECK_BODY: usize = 4096;
/// Largest request or upstream response body the gateway buffers.
pub const MAX_GATEWAY_BODY: usize = 8 * 1024 * 1024;
/// The gateway's upstream call: connect, first byte, between bytes, and the whole exchange.
const UPSTREAM_TIMEOUTS: Timeouts = Timeouts {
    connect_ms: 5_000,
    first_byte_ms: 30_000,
    between_bytes_ms: 30_000,
    deadline_ms: 60_000,
};
/// Set on responses admitted without a check because Redis failed (`fail_open`).
pub const UNCHECKED_HEADER: &str = "x-ratelimit-unchecked";

/// The Spin variables this component reads (besides the Redis ones).
pub mod vars {
    pub const POLICIES: &str = "ratelimit_policies";
    pub const ADMIN_TOKEN: &str = "ratelimit_admin_token";
    pub const GATEWAY_POLICY: &str = "ratelimit_gateway_policy";
    pub const UPSTREAM: &str = "ratelimit_upstream";
    pub const API_KEY_HEADER: &str = "ratelimit_api_key_header";
    pub const TRUSTED_PROXIES: &str = "ratelimit_trusted_proxies";
}

fn policies(variables: &Variables) -> Result<Policies, ApiError> {
    let text = variables.text(vars::POLICIES)?;
    Policies::parse(&text).map_err(|e| ApiError::from(ConfigError::new(vars::POLICIES, e)))
}

fn find<'a>(policies: &'a Policies, name: &str) -> Result<&'a Policy, ApiError> {
    policies.get(name).ok_or_else(|| {
        ApiError::new(
            404,
            "unknown_policy",
            format!("there is no rate-limit policy named {name:?}"),
        )
    })
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_key",
            format!("key must be 1-{MAX_KEY_LEN} bytes of text without control characters"),
        ));
    }
    Ok(())
}

/// The Redis key of one (policy, key) pair. The braces make the pair the hash tag, so the
/// key lives in one cluster slot (the prefix never contains braces; a `}` inside `key`
/// ends the tag early, identically for every key of the pair).
fn redis_key(redis: &Redis, policy: &Policy, key: &str) -> String {
    redis.key(&format!("rl:{{{}:{key}}}:{}", policy.name, policy.key_tag()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Consume,
    DryRun,
    /// The current state: nothing consumed, `allowed` and `retry_after_ms` for one unit.
    Peek,
}

/// A decision as the script returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_ms: u64,
    pub retry_after_ms: u64,
}

/// A decision, or "not checked": Redis failed under a `fail_open` policy.
enum Outcome {
    Checked(Decision),
    Unchecked,
}

fn decide(
    redis: &Redis,
    policy: &Policy,
    key: &str,
    cost: u64,
    mode: Mode,
) -> Result<Decision, RedisError> {
    let (script, param) = match policy.algorithm {
        Algorithm::FixedWindow { window_ms } => (&FIXED_WINDOW, window_ms),
        Algorithm::SlidingWindow { window_ms } => (&SLIDING_WINDOW, window_ms),
        Algorithm::TokenBucket { interval_us } => (&TOKEN_BUCKET, interval_us),
    };
    let mode = match mode {
        Mode::Consume => "consume",
        Mode::DryRun => "dry",
        Mode::Peek => "peek",
    };
    let rkey = redis_key(redis, policy, key);
    let reply = redis.eval(script, &[&rkey], args![param, policy.limit, cost, mode])?;
    let n = |i: usize| -> Result<u64, RedisError> {
        u64::try_from(reply.int(i)?)
            .map_err(|_| RedisError::UnexpectedReply(format!("value {i} is negative")))
    };
    Ok(Decision {
        allowed: n(0)? == 1,
        limit: policy.limit,
        remaining: n(1)?,
        reset_after_ms: n(2)?,
        retry_after_ms: n(3)?,
    })
}

/// Decides, applying the policy's failure mode when Redis fails at run time. Settings
/// mistakes (bad variables, a host outside `allowed_outbound_hosts`) always fail loudly.
fn evaluate(policy: &Policy, key: &str, cost: u64, mode: Mode) -> Result<Outcome, ApiError> {
    let redis = Redis::from_spin_variables()?;
    match decide(&redis, policy, key, cost, mode) {
        Ok(d) => Ok(Outcome::Checked(d)),
        // Only Redis being unreachable opens the gate: a wrong password or a broken script is
        // a mistake to fix, and opening on it would hide it (and hand an attacker who can
        // provoke it an unlimited quota). Those answer 500 below.
        Err(e @ RedisError::Unavailable(_)) if policy.failure_mode == FailureMode::Open => {
            eprintln!(
                "ratelimit: policy {} not checked, failing open ({}): {e}",
                policy.name,
                e.reason()
            );
            Ok(Outcome::Unchecked)
        }
        Err(e) => Err(e.into()),
    }
}

fn secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// `RateLimit-Policy`, `RateLimit`, `Retry-After` (and the unchecked flag) for an outcome.
fn rate_limit_headers(policy: &Policy, outcome: &Outcome) -> Vec<(&'static str, String)> {
    let mut headers = vec![(
        "ratelimit-policy",
        format!("\"{}\";q={};w={}", policy.name, policy.limit, policy.window_secs()),
    )];
    match outcome {
        Outcome::Checked(d) => {
            // `t`: the seconds within which no more than `r` units can be used.
            let t =
                if d.allowed { secs_ceil(d.reset_after_ms) } else { secs_ceil(d.retry_after_ms) };
            headers.push(("ratelimit", format!("\"{}\";r={};t={t}", policy.name, d.remaining)));
            if !d.allowed {
                headers.push(("retry-after", secs_ceil(d.retry_after_ms).max(1).to_string()));
            }
        }
        Outcome::Unchecked => headers.push((UNCHECKED_HEADER, "redis_unavailable".into())),
    }
    headers
}

fn with_headers(mut response: Response, headers: &[(&'static str, String)]) -> Response {
    for (name, value) in headers {
        response = response.with_header(name, value.as_str());
    }
    response
}

/// A decision as the API answers it (`null` where an unchecked decision knows nothing).
#[derive(Serialize)]
struct DecisionBody<'a> {
    allowed: bool,
    checked: bool,
    policy: &'a str,
    limit: u64,
    remaining: Option<u64>,
    reset_after_ms: Option<u64>,
    retry_after_ms: u64,
}

fn decision_response(
    policy: &Policy,
    outcome: &Outcome,
    status_follows_decision: bool,
) -> Response {
    let (status, body) = match outcome {
        Outcome::Checked(d) => (
            if d.allowed || !status_follows_decision { 200 } else { 429 },
            DecisionBody {
                allowed: d.allowed,
                checked: true,
                policy: &policy.name,
                limit: d.limit,
                remaining: Some(d.remaining),
                reset_after_ms: Some(d.reset_after_ms),
                retry_after_ms: d.retry_after_ms,
            },
        ),
        Outcome::Unchecked => (
            200,
            DecisionBody {
                allowed: true,
                checked: false,
                policy: &policy.name,
                limit: policy.limit,
                remaining: None,
                reset_after_ms: None,
                retry_after_ms: 0,
            },
        ),
    };
    with_headers(Response::json(status, &body), &rate_limit_headers(policy, outcome))
}

fn api(mut req: Request) -> Result<Response, ApiError> {
    let info = req.path_info().trim_start_matches('/').to_owned();
    if info == "check" {
        req.allow(&[Method::POST])?;
        return check(&mut req);
    }
    let Some((policy, key)) = info.split_once('/') else {
        return Err(ApiError::not_found(
            "use POST /api/ratelimit/check or /api/ratelimit/{policy}/{key}",
        ));
    };
    req.allow(&[Method::GET, Method::HEAD, Method::DELETE])?;
    let key = percent_encoding::percent_decode_str(key).decode_utf8().map_err(|_| {
        ApiError::bad_request("invalid_key", "the key is not valid percent-encoded UTF-8")
    })?;
    if *req.method() == Method::DELETE {
        reset(&req, policy, &key)
    } else {
        state(policy, &key)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    policy: String,
    key: String,
    /// Kept as its JSON text, so any number that is not a whole `u64` of at least 1 gets
    /// `invalid_cost`, not a generic JSON error.
    cost: Option<Box<RawValue>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

fn check(req: &mut Request) -> Result<Response, ApiError> {
    let body: CheckRequest = req.json(MAX_CHECK_BODY)?;
    let variables = Variables::spin();
    let policies = policies(&variables)?;
    let policy = find(&policies, &body.policy)?;
    validate_key(&body.key)?;
    let cost = match &body.cost {
        None => 1,
        Some(raw) => match raw.get().parse::<u64>() {
            Ok(c) if c >= 1 => c,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_cost",
                    format!("cost must be a whole number of at least 1, not {}", raw.get()),
                ))
            }
        },
    };
    if cost > policy.limit {
        return Err(ApiError::bad_request(
            "cost_exceeds_limit",
            format!(
                "cost {cost} is larger than policy {:?}'s quota of {}: it could never be admitted",
                policy.name, policy.limit
            ),
        ));
    }
    let mode = if body.dry_run == Some(true) { Mode::DryRun } else { Mode::Consume };
    let outcome = evaluate(policy, &body.key, cost, mode)?;
    Ok(decision_response(policy, &outcome, true))
}

fn state(policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let policies = policies(&Variables::spin())?;
    let policy = find(&policies, policy_name)?;
    validate_key(key)?;
    let redis = Redis::from_spin_variables()?;
    let decision = decide(&redis, policy, key, 1, Mode::Peek)?;
    Ok(decision_response(policy, &Outcome::Checked(decision), false))
}

#[derive(Serialize)]
struct ResetBody<'a> {
    policy: &'a str,
    key: &'a str,
    reset: bool,
}

fn reset(req: &Request, policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let variables = Variables::spin();
    let admin_token = variables.secret(vars::ADMIN_TOKEN, MIN_TOKEN_LEN)?;
    require_bearer(req, &admin_token, || {
        ApiError::new(
            403,
            "reset_disabled",
            format!("resets are disabled: set the `{}` variable to enable them", vars::ADMIN_TOKEN),
        )
    })?;
    let policies = policies(&variables)?;
    let policy = find(&policies, policy_name)?;
    validate_key(key)?;
    let redis = Redis::from_spin_variables()?;
    let deleted = redis.execute("DEL", args![redis_key(&redis, policy, key)])?.int(0)?;
    Ok(Response::json(200, &ResetBody { policy: &policy.name, key, reset: deleted > 0 }))
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

fn forwardable(name: &str) -> bool {
    let is = |other: &str| name.eq_ignore_ascii_case(other);
    !(HOP_BY_HOP.iter().any(|h| is(h))
        || is("host")
        || is("content-length")
        || is("x-forwarded-for")
        || name.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("spin-")))
}

/// Who the gateway limits: `key:<sha1 of the API key>` or `ip:<address>`.
fn caller_identity(req: &Request, variables: &Variables, peer: IpAddr) -> Result<String, ApiError> {
    let header = variables.text(vars::API_KEY_HEADER)?;
    if !header.is_empty() {
        if let Some(api_key) =
            req.header_values(&header).last().map(|v| v.trim()).filter(|v| !v.is_empty())
        {
            // The key itself never reaches Redis or the logs.
            return Ok(format!("key:{}", sha1_smol::Sha1::from(api_key.as_bytes()).digest()));
        }
    }
    let trusted = client::parse_trusted(&variables.text(vars::TRUSTED_PROXIES)?)
        .map_err(|e| ApiError::from(ConfigError::new(vars::TRUSTED_PROXIES, e)))?;
    let forwarded = req.header_values("x-forwarded-for");
    Ok(format!("ip:{}", client::client_ip(peer, &forwarded, &trusted)))
}

fn gateway(mut req: Request) -> Result<Response, ApiError> {
    let variables = Variables::spin();
    let policies = policies(&variables)?;
    let name = variables.text(vars::GATEWAY_POLICY)?;
    let policy = policies.get(&name).ok_or_else(|| {
        ApiError::from(ConfigError::new(
            vars::GATEWAY_POLICY,
            format!("names {name:?}, which is not a configured policy"),
        ))
    })?;
    let upstream = variables.http_origin(vars::UPSTREAM)?;
    let peer =
        req.client_addr().ok_or_else(|| ApiError::internal("the client address is unavailable"))?;
    let identity = caller_identity(&req, &variables, peer)?;

    // Decide before reading the body: a refused client uploads nothing.
    let outcome = evaluate(policy, &identity, 1, Mode::Consume)?;
    let limit_headers = rate_limit_headers(policy, &outcome);
    let with_limits = |mut error: ApiError| {
        error.headers.extend(limit_headers.iter().cloned());
        error
    };
    if let Outcome::Checked(d) = &outcome {
        if !d.allowed {
            return Err(with_limits(ApiError::new(
                429,
                "rate_limited",
                format!("too many requests; retry in {} ms", d.retry_after_ms),
            )));
        }
    }
    let body = req.body(MAX_GATEWAY_BODY).map_err(with_limits)?;

    // Forward: the path after /api/limited, the query, the end-to-end headers.
    let info = req.path_info();
    let path = if info.starts_with('/') { info.to_owned() } else { format!("/{info}") };
    let query = req.query();
    let url = if query.is_empty() {
        format!("{upstream}{path}")
    } else {
        format!("{upstream}{path}?{query}")
    };
    let mut out_headers: Vec<(String, Vec<u8>)> =
        req.field_lines().iter().filter(|(n, _)| forwardable(n)).cloned().collect();
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
    let upstream_response = match outbound::send(&request, UPSTREAM_TIMEOUTS, MAX_GATEWAY_BODY) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ratelimit gateway: upstream request failed: {e}");
            return Err(with_limits(match e {
                OutboundError::Timeout => {
                    ApiError::new(504, "upstream_timeout", "the upstream did not answer in time")
                }
                _ => ApiError::new(502, "upstream_unavailable", "the upstream did not answer"),
            }));
        }
    };
    let mut response = Response::new(upstream_response.status).with_body(upstream_response.body);
    response.headers = upstream_response
        .headers
        .into_iter()
        .filter(|(n, _)| forwardable(n) || n.eq_ignore_ascii_case("x-forwarded-for"))
        .collect();
    Ok(with_headers(response, &limit_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        assert!(forwardable("accept"));
        assert!(forwardable("x-api-key"));
        assert!(!forwardable("Connection"));
        assert!(!forwardable("spin-client-addr"));
        assert!(!forwardable("host"));
    }
}
