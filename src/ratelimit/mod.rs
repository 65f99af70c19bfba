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
mod outbound;
pub mod policy;

use std::net::{IpAddr, SocketAddr};

use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, Response};
use subtle::ConstantTimeEq;

use crate::args;
use crate::error::ApiError;
use crate::http::json;
use crate::json::Json;
use crate::redis::{Redis, RedisError, Script};
use policy::{Algorithm, FailureMode, Policies, Policy};

static FIXED_WINDOW: Script = Script::new(include_str!("fixed_window.lua"));
static SLIDING_WINDOW: Script = Script::new(include_str!("sliding_window.lua"));
static TOKEN_BUCKET: Script = Script::new(include_str!("token_bucket.lua"));

/// Longest rate-limit key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Largest `POST /api/ratelimit/check` body.
const MAX_CHECK_BODY: usize = 4096;
/// Deepest nesting accepted in the check body and the policies variable.
pub const MAX_JSON_DEPTH: usize = 16;
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

fn variable(name: &'static str) -> Result<String, ApiError> {
    spin_sdk::variables::get(name)
        .map_err(|e| misconfigured(format!("variable `{name}` cannot be read: {e}")))
}

fn misconfigured(message: impl Into<String>) -> ApiError {
    let message = message.into();
    eprintln!("ratelimit misconfigured: {message}");
    ApiError::new(500, "ratelimit_misconfigured", message)
}

fn policies() -> Result<Policies, ApiError> {
    Policies::parse(&variable(vars::POLICIES)?)
        .map_err(|e| misconfigured(format!("variable `{}`: {e}", vars::POLICIES)))
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
        Err(
            e @ (RedisError::Unavailable(_) | RedisError::AuthFailed(_) | RedisError::Reply(_)),
        ) if policy.failure_mode == FailureMode::Open => {
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
        response.set_header(*name, value.as_str());
    }
    response
}

fn decision_response(
    policy: &Policy,
    outcome: &Outcome,
    status_follows_decision: bool,
) -> Response {
    let (status, body) = match outcome {
        Outcome::Checked(d) => (
            if d.allowed || !status_follows_decision { 200 } else { 429 },
            json!({
                "allowed": d.allowed,
                "checked": true,
                "policy": policy.name,
                "limit": d.limit,
                "remaining": d.remaining,
                "reset_after_ms": d.reset_after_ms,
                "retry_after_ms": d.retry_after_ms,
            }),
        ),
        Outcome::Unchecked => (
            200,
            json!({
                "allowed": true,
                "checked": false,
                "policy": policy.name,
                "limit": policy.limit,
                "remaining": null,
                "reset_after_ms": null,
                "retry_after_ms": 0,
            }),
        ),
    };
    with_headers(json(status, &body), &rate_limit_headers(policy, outcome))
}

/// The component's entry point.
pub fn handle(req: IncomingRequest) -> Response {
    let method = req.method();
    // Every field line, in order: `Request` keeps one value per name.
    let headers = req.headers().entries();
    let body = match outbound::request_body(&req) {
        Ok(body) => body,
        Err(outbound::BodyError::TooLarge) => {
            return ApiError::new(
                413,
                "body_too_large",
                format!("the body is larger than {} bytes", outbound::MAX_BODY),
            )
            .to_response()
        }
        Err(outbound::BodyError::Failed(e)) => {
            eprintln!("ratelimit: reading the request body failed: {e}");
            return ApiError::bad_request("unreadable_body", "the request body could not be read")
                .to_response();
        }
    };
    let request = Incoming {
        method,
        path_with_query: req.path_with_query().unwrap_or_default(),
        headers,
        body,
    };
    let route = request.header("spin-component-route").unwrap_or("");
    let result = if route.starts_with("/api/limited") { gateway(&request) } else { api(&request) };
    result.unwrap_or_else(Response::from)
}

/// Every value of a header, in order (names compare case-insensitively).
fn header_values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .collect()
}

/// The request, with every header field line in order (`spin_sdk::http::Request` keeps
/// one value per name, and building it parses the URI: code the `.wasm` does without).
struct Incoming {
    method: Method,
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Incoming {
    /// The LAST value of a header: for `spin-*` headers, the one Spin appended.
    fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).last().copied()
    }

    fn path_info(&self) -> &str {
        self.header("spin-path-info").unwrap_or("")
    }

    fn query(&self) -> &str {
        self.path_with_query.split_once('?').map_or("", |(_, q)| q)
    }

    fn allow(&self, allowed: &[(Method, &str)]) -> Result<(), ApiError> {
        if allowed.iter().any(|(m, _)| *m == self.method) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|(_, n)| *n).collect();
        Err(ApiError::method_not_allowed(&names))
    }

    /// The token of an `Authorization: Bearer <token>` header.
    fn bearer_token(&self) -> Option<&str> {
        let (scheme, token) = self.header("authorization")?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    }
}

fn api(req: &Incoming) -> Result<Response, ApiError> {
    let info = req.path_info().trim_start_matches('/');
    if info == "check" {
        req.allow(&[(Method::Post, "POST")])?;
        return check(req);
    }
    let Some((policy, key)) = info.split_once('/') else {
        return Err(ApiError::not_found(
            "use POST /api/ratelimit/check or /api/ratelimit/{policy}/{key}",
        ));
    };
    req.allow(&[(Method::Get, "GET"), (Method::Head, "HEAD"), (Method::Delete, "DELETE")])?;
    let key = percent_encoding::percent_decode_str(key).decode_utf8().map_err(|_| {
        ApiError::bad_request("invalid_key", "the key is not valid percent-encoded UTF-8")
    })?;
    if req.method == Method::Delete {
        reset(req, policy, &key)
    } else {
        state(policy, &key)
    }
}

struct CheckRequest<'a> {
    policy: String,
    key: String,
    cost: Option<Json<'a>>,
    dry_run: bool,
}

fn check(req: &Incoming) -> Result<Response, ApiError> {
    let body = crate::json::request_body(
        req.header("content-type"),
        &req.body,
        MAX_CHECK_BODY,
        MAX_JSON_DEPTH,
    )?;
    let invalid = |message: String| ApiError::bad_request("invalid_json", message);
    let Some(fields) = body.members() else {
        return Err(invalid("the body must be a JSON object".into()));
    };
    if let Some(unknown) = fields
        .iter()
        .map(|m| &m.name)
        .find(|k| !["policy", "key", "cost", "dry_run"].contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "unknown field {unknown:?}; use policy, key, cost and dry_run"
        )));
    }
    let field = |name: &str| crate::json::field(&fields, name);
    let text = |name: &str| {
        field(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid(format!("{name} is required and must be a string")))
    };
    let (policy_name, key) = (text("policy")?, text("key")?);
    let dry_run = match field("dry_run") {
        None => false,
        Some(v) if v.is_null() => false,
        Some(v) => v.as_bool().ok_or_else(|| invalid("dry_run must be true or false".into()))?,
    };
    let body = CheckRequest { policy: policy_name, key, cost: field("cost"), dry_run };
    let policies = policies()?;
    let policy = find(&policies, &body.policy)?;
    validate_key(&body.key)?;
    let cost = match body.cost {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(c) if c >= 1 => c,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_cost",
                    format!("cost must be a whole number of at least 1, not {}", v.describe()),
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
    let mode = if body.dry_run { Mode::DryRun } else { Mode::Consume };
    let outcome = evaluate(policy, &body.key, cost, mode)?;
    Ok(decision_response(policy, &outcome, true))
}

fn state(policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let policies = policies()?;
    let policy = find(&policies, policy_name)?;
    validate_key(key)?;
    let redis = Redis::from_spin_variables()?;
    let decision = decide(&redis, policy, key, 1, Mode::Peek)?;
    Ok(decision_response(policy, &Outcome::Checked(decision), false))
}

/// Compares the bearer token with the configured one in constant time: both are hashed
/// first, so neither their contents nor their lengths show in the timing.
fn token_matches(given: &str, expected: &str) -> bool {
    let a = sha1_smol::Sha1::from(given.as_bytes()).digest().bytes();
    let b = sha1_smol::Sha1::from(expected.as_bytes()).digest().bytes();
    bool::from(a.ct_eq(&b))
}

fn reset(req: &Incoming, policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let expected = variable(vars::ADMIN_TOKEN)?;
    let expected = expected.trim();
    if expected.is_empty() {
        return Err(ApiError::new(
            403,
            "reset_disabled",
            format!("resets are disabled: set the `{}` variable to enable them", vars::ADMIN_TOKEN),
        ));
    }
    match req.bearer_token() {
        Some(token) if token_matches(token, expected) => {}
        _ => return Err(ApiError::unauthorized("a valid admin bearer token is required")),
    }
    let policies = policies()?;
    let policy = find(&policies, policy_name)?;
    validate_key(key)?;
    let redis = Redis::from_spin_variables()?;
    let deleted = redis.execute("DEL", args![redis_key(&redis, policy, key)])?.int(0)?;
    Ok(json(200, &json!({ "policy": policy.name, "key": key, "reset": deleted > 0 })))
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
fn caller_identity(headers: &[(String, Vec<u8>)], peer: IpAddr) -> Result<String, ApiError> {
    let header = variable(vars::API_KEY_HEADER)?;
    let header = header.trim();
    if !header.is_empty() {
        if let Some(api_key) =
            header_values(headers, header).last().map(|v| v.trim()).filter(|v| !v.is_empty())
        {
            // The key itself never reaches Redis or the logs.
            return Ok(format!("key:{}", sha1_smol::Sha1::from(api_key.as_bytes()).digest()));
        }
    }
    let trusted = client::parse_trusted(&variable(vars::TRUSTED_PROXIES)?)
        .map_err(|e| misconfigured(format!("variable `{}`: {e}", vars::TRUSTED_PROXIES)))?;
    let forwarded = header_values(headers, "x-forwarded-for");
    Ok(format!("ip:{}", client::client_ip(peer, &forwarded, &trusted)))
}

/// The peer address as Spin reports it: the LAST `spin-client-addr` value, because Spin
/// appends its own after any the client sent.
fn peer_addr(headers: &[(String, Vec<u8>)]) -> Result<IpAddr, ApiError> {
    let value = header_values(headers, "spin-client-addr").last().copied().unwrap_or("");
    value
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| value.parse::<IpAddr>())
        .map_err(|_| ApiError::internal("the client address is unavailable"))
}

fn gateway(req: &Incoming) -> Result<Response, ApiError> {
    let headers = &req.headers;
    let policies = policies()?;
    let name = variable(vars::GATEWAY_POLICY)?;
    let policy = policies.get(name.trim()).ok_or_else(|| {
        misconfigured(format!(
            "`{}` names {:?}, which is not a configured policy",
            vars::GATEWAY_POLICY,
            name.trim()
        ))
    })?;
    let upstream = variable(vars::UPSTREAM)?;
    let upstream = upstream.trim().trim_end_matches('/');
    if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
        return Err(misconfigured(format!(
            "`{}` must be an http:// or https:// origin",
            vars::UPSTREAM
        )));
    }
    let peer = peer_addr(headers)?;
    let identity = caller_identity(headers, peer)?;

    let outcome = evaluate(policy, &identity, 1, Mode::Consume)?;
    let limit_headers = rate_limit_headers(policy, &outcome);
    if let Outcome::Checked(d) = &outcome {
        if !d.allowed {
            let mut error = ApiError::new(
                429,
                "rate_limited",
                format!("too many requests; retry in {} ms", d.retry_after_ms),
            );
            error.headers.extend(limit_headers);
            return Err(error);
        }
    }

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
        headers.iter().filter(|(n, _)| forwardable(n)).cloned().collect();
    let mut forwarded_for = header_values(headers, "x-forwarded-for").join(", ");
    if !forwarded_for.is_empty() {
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&peer.to_string());
    out_headers.push(("x-forwarded-for".into(), forwarded_for.into_bytes()));
    if !req.body.is_empty() {
        out_headers.push(("content-length".into(), req.body.len().to_string().into_bytes()));
    }
    let upstream_response = match outbound::send(&req.method, &url, &out_headers, &req.body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ratelimit gateway: upstream request failed: {e}");
            let mut error =
                ApiError::new(502, "upstream_unavailable", "the upstream did not answer");
            error.headers.extend(limit_headers);
            return Err(error);
        }
    };
    let response_headers: Vec<(String, Vec<u8>)> = upstream_response
        .headers
        .into_iter()
        .filter(|(n, _)| forwardable(n) || n.eq_ignore_ascii_case("x-forwarded-for"))
        .collect();
    let response = Response::builder()
        .status(upstream_response.status)
        .headers(response_headers)
        .body(upstream_response.body)
        .build();
    Ok(with_headers(response, &limit_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cret2"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        assert!(forwardable("accept"));
        assert!(forwardable("x-api-key"));
        assert!(!forwardable("Connection"));
        assert!(!forwardable("spin-client-addr"));
        assert!(!forwardable("host"));
    }
}
