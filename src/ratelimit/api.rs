//! The decision API: `POST /api/ratelimit/check`, `GET|HEAD|DELETE /api/ratelimit/{policy}/{key}`.
//! Private by default (service chaining only); the public route answers only when
//! `ratelimit_api_token` is set, and only to that bearer token. Its keys live in the `rl:a:`
//! namespace, apart from every gateway caller's.

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::platform::auth::require_bearer;
use crate::platform::redis::{Redis, ToArg};
use crate::platform::settings::Variables;
use crate::platform::{ApiError, Request, Response};

use super::decide::{evaluate, Check, Decision, Mode};
use super::headers::{self, QuotaExceeded};
use super::keys;
use super::policy::{Policies, Policy};
use super::settings::{vars, ApiSettings};
use super::windows::Window;

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

fn checks<'a>(policy: &'a Policy, key: &str) -> Vec<Check<'a>> {
    policy
        .limits
        .iter()
        .map(|limit| Check {
            limit,
            member: limit.member.clone(),
            key: keys::api(policy, limit, key),
        })
        .collect()
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

fn decision_response(policy: &Policy, d: &Decision, status_follows_decision: bool) -> Response {
    let limits: Vec<LimitBody> = d
        .states
        .iter()
        .flatten()
        .zip(&d.members)
        .map(|(s, m)| LimitBody {
            name: &m.name,
            allowed: s.allowed,
            limit: m.quota,
            remaining: s.remaining,
            reset_after_ms: s.reset_after_ms,
            retry_after_ms: s.retry_after_ms,
        })
        .collect();
    let binding = limits.iter().min_by_key(|l| (l.remaining, u64::MAX - l.retry_after_ms));
    let refused = !d.allowed() && status_follows_decision;
    let body = DecisionBody {
        allowed: d.allowed(),
        checked: d.states.is_some(),
        policy: &policy.name,
        limit: binding.map_or(policy.max_cost(), |l| l.limit),
        remaining: binding.map(|l| l.remaining),
        reset_after_ms: limits.iter().map(|l| l.reset_after_ms).max(),
        retry_after_ms: d.retry_after_ms(),
        problem: refused.then(|| QuotaExceeded::of(d)),
        limits,
    };
    let response =
        if refused { headers::problem_response(&body) } else { Response::json(200, &body) };
    headers::with_fields(response, d)
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
    let policy = find(policies, &body.policy)?;
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
    if cost > policy.max_cost() {
        return Err(ApiError::bad_request(
            "cost_exceeds_limit",
            format!(
                "cost {cost} is larger than policy {:?}'s quota of {}: it could never be admitted",
                policy.name,
                policy.max_cost()
            ),
        ));
    }
    let mode = if body.dry_run == Some(true) { Mode::DryRun } else { Mode::Consume };
    let decision = evaluate(&checks(policy, &body.key), cost, mode, policy.failure_mode)?;
    Ok(decision_response(policy, &decision, true))
}

fn state(policies: &Policies, policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let policy = find(policies, policy_name)?;
    validate_key(key)?;
    // Reading state never fails open: an unchecked answer would say nothing.
    let decision =
        evaluate(&checks(policy, key), 1, Mode::Peek, super::policy::FailureMode::Closed)?;
    Ok(decision_response(policy, &decision, false))
}

#[derive(Serialize)]
struct ResetBody<'a> {
    policy: &'a str,
    key: &'a str,
    reset: bool,
}

fn reset(policies: &Policies, policy_name: &str, key: &str) -> Result<Response, ApiError> {
    let policy = find(policies, policy_name)?;
    validate_key(key)?;
    let redis = Redis::from_spin_variables()?;
    let checks = checks(policy, key);
    let marker = super::decide::marker_key(&checks);
    // State keys (a token bucket's; for a window limit, its state before the per-window
    // counters, which may linger until it expires), the marker, and the window counters of
    // the current and previous window (windows.rs); absent keys cost nothing.
    let mut names: Vec<String> = checks.iter().map(|c| redis.key(&c.key)).collect();
    names.extend(marker.map(|m| redis.key(&m)));
    if checks.iter().any(|c| c.limit.is_window()) {
        let now = super::windows::now_ms()?;
        for check in &checks {
            if let Some(w) = Window::of(&redis.key(&check.key), check.limit, now) {
                names.extend([w.current(), w.previous()]);
            }
        }
    }
    let names = names.iter().map(|k| k.to_arg()).collect();
    let deleted = redis.execute("DEL", names)?.int(0)?;
    Ok(Response::json(200, &ResetBody { policy: &policy.name, key, reset: deleted > 0 }))
}
