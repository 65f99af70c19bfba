//! The decision API: `POST /api/ratelimit/check`, `GET|HEAD|DELETE /api/ratelimit/{policy}/{key}`.
//! Private by default (service chaining only); the public route answers only when
//! `ratelimit_api_token` is set, and only to that bearer token. Its keys live in the `rl:a:`
//! namespace, apart from every gateway caller's.

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::platform::auth::require_bearer;
use crate::platform::redis::Redis;
use crate::platform::settings::Variables;
use crate::platform::{ApiError, Request, Response};

use super::headers::{self, QuotaExceeded};
use super::library::{Decision, Limiter};
use super::policy::Policies;
use super::settings::{vars, ApiSettings};

/// Longest rate-limit key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Largest `POST /api/ratelimit/check` body.
const MAX_CHECK_BODY: usize = 4096;

/// Serves `path` (what follows `/api/ratelimit`); `public` when it came through the public
/// route rather than by service chaining.
pub(crate) fn serve(mut req: Request, path: &str, public: bool) -> Result<Response, ApiError> {
    let settings = ApiSettings::from_variables(&Variables::spin())?;
    let info = path.trim_start_matches('/').to_owned();
    if public {
        if settings.api_token.is_empty() {
            return Err(ApiError::not_found(format!(
                "the decision API is private (http://ratelimit.spin.internal); set `{}` to \
                 expose it",
                vars::API_TOKEN
            )));
        }
        // A reset is authorized by the admin token below; everything else by the API token.
        if *req.method() != Method::DELETE {
            // Never called: the token is not empty here.
            require_bearer(&req, &settings.api_token, || ApiError::not_found("private"))?;
        }
    }
    if info == "check" {
        req.allow(&[Method::POST])?;
        return check(&mut req, &settings.policies);
    }
    let Some((policy, key)) = info.split_once('/') else {
        return Err(ApiError::not_found(
            "use POST /api/ratelimit/check or /api/ratelimit/{policy}/{key}",
        ));
    };
    req.allow(&[Method::GET, Method::HEAD, Method::DELETE])?;
    // The platform's one strict decoder: a malformed escape (`%+f`, `%zz`) is refused, never
    // kept as text, so the key in a path means what the same key in a check body means.
    let key = crate::platform::percent::decode_utf8(key, false).map_err(|_| {
        ApiError::bad_request("invalid_key", "the key is not valid percent-encoded UTF-8")
    })?;
    if *req.method() == Method::DELETE {
        require_bearer(&req, &settings.admin_token, || {
            ApiError::new(
                403,
                "reset_disabled",
                format!(
                    "resets are disabled: set the `{}` variable to enable them",
                    vars::ADMIN_TOKEN
                ),
            )
        })?;
        reset(&settings.policies, policy, &key)
    } else {
        state(&settings.policies, policy, &key)
    }
}

/// The library's limiter over the component's policies and Spin variables: the routes are
/// thin users of [`Limiter`].
fn limiter(policies: &Policies) -> Result<(Limiter, Redis), ApiError> {
    let redis = Redis::from_spin_variables()?;
    let pooled = Variables::spin().flag(crate::platform::fast_path::VARIABLE)?;
    Ok((Limiter::from_policies(policies.clone(), pooled), redis))
}

/// One limit's answer in a body.
#[derive(Serialize)]
struct LimitBody<'a> {
    name: &'a str,
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_after_ms: u64,
    retry_after_ms: u64,
}

/// A decision as the API answers it (`null` where an unchecked decision knows nothing). The
/// top-level figures are the binding limit's (the one with the least left); `limits` has
/// each. A refusal adds the `quota-exceeded` problem members.
#[derive(Serialize)]
struct DecisionBody<'a> {
    allowed: bool,
    checked: bool,
    policy: &'a str,
    limit: u64,
    remaining: Option<u64>,
    reset_after_ms: Option<u64>,
    retry_after_ms: u64,
    limits: Vec<LimitBody<'a>>,
    #[serde(flatten)]
    problem: Option<QuotaExceeded<'a>>,
}

fn decision_response(policy: &str, d: &Decision, status_follows_decision: bool) -> Response {
    let states = d.limits();
    let ms = |t: std::time::Duration| t.as_millis() as u64;
    let limits: Vec<LimitBody> = states
        .iter()
        .map(|l| LimitBody {
            name: &l.name,
            allowed: l.allowed,
            limit: l.limit,
            remaining: l.remaining,
            reset_after_ms: ms(l.reset_after),
            retry_after_ms: ms(l.retry_after),
        })
        .collect();
    let refused = !d.allowed() && status_follows_decision;
    let body = DecisionBody {
        allowed: d.allowed(),
        checked: d.checked(),
        policy,
        limit: d.limit(),
        remaining: d.remaining(),
        reset_after_ms: d.reset_after().map(ms),
        retry_after_ms: ms(d.retry_after()),
        problem: refused.then(|| QuotaExceeded::of(&d.inner)),
        limits,
    };
    let response =
        if refused { headers::problem_response(&body) } else { Response::json(200, &body) };
    headers::with_fields(response, &d.inner)
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

fn check(req: &mut Request, policies: &Policies) -> Result<Response, ApiError> {
    let body: CheckRequest = req.json(MAX_CHECK_BODY)?;
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
    let (limiter, redis) = limiter(policies)?;
    let decision =
        limiter.check(&redis, &body.policy, &body.key, cost, body.dry_run == Some(true))?;
    Ok(decision_response(&body.policy, &decision, true))
}

fn state(policies: &Policies, policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let (limiter, redis) = limiter(policies)?;
    // Reading state never fails open: an unchecked answer would say nothing.
    let decision = limiter.peek(&redis, policy_name, key)?;
    Ok(decision_response(policy_name, &decision, false))
}

#[derive(Serialize)]
struct ResetBody<'a> {
    policy: &'a str,
    key: &'a str,
    reset: bool,
}

fn reset(policies: &Policies, policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let (limiter, redis) = limiter(policies)?;
    let reset = limiter.reset(&redis, policy_name, key)?;
    Ok(Response::json(200, &ResetBody { policy: policy_name, key, reset }))
}
