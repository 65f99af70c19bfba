//! The rate limiter as a library: [`Limiter`] decides on the caller's [`Redis`] with the same
//! policies, script and keys as `POST /api/ratelimit/check`, so both spend one budget.

use std::time::Duration;

use crate::platform::fast_path;
use crate::platform::redis::{Redis, ToArg};
use crate::{Config, Error};

use super::decide::{self, evaluate_on, Check, Mode};
use super::keys;
use super::policy::{FailureMode, Policies, Policy};
use super::settings;
use super::windows::{self, Window};
use super::MAX_KEY_LEN;

/// Rate limiting with named policies: one limit or several checked and consumed together
/// (fixed window, sliding window, token bucket), in one round trip.
///
/// ```no_run
/// use spin_redis_patterns::ratelimit::Limiter;
/// use spin_redis_patterns::{Config, Redis};
///
/// # fn main() -> Result<(), spin_redis_patterns::Error> {
/// let config = Config::spin().set(
///     "ratelimit_policies",
///     r#"{"login": {"limits": {"burst": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 0.1},
///                              "daily": {"algorithm": "fixed_window", "limit": 50, "window": "86400s"}}}}"#,
/// );
/// let redis = Redis::from_config(&config)?;
/// let decision = Limiter::new(&config)?.limit(&redis, "login", "user@example.com")?;
/// if !decision.allowed() {
///     // Answer 429 with these fields: RateLimit-Policy, RateLimit, Retry-After.
///     let _fields = decision.headers();
///     let _wait = decision.retry_after();
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Limiter {
    policies: Policies,
    pooled: bool,
    namespace: Namespace,
}

/// Where a [`Limiter`] keeps its state: the HTTP component's two namespaces, apart so that
/// no decision API call can name a gateway caller's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Namespace {
    /// `rl:a:{<policy>:<key>}:...`, the decision API's (`/api/ratelimit`): one hash slot per
    /// policy and key. The default.
    #[default]
    Api,
    /// `rl:g:{gw}:<policy>:<key>:...`, the `/api/limited` gateway's, where a key is
    /// `ip:<address>` (an IPv6 address cut to its prefix, `ip:2001:db8::/64`) or
    /// `key:<HMAC of an API key>`. Every key shares one hash slot, so one decision can check
    /// several keys ([`Limiter::limit_all`]).
    Gateway,
}

/// One policy and key of a [`Limiter::limit_all`] decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// The key it limits.
    pub key: &'a str,
    /// Appended to a limit's reported name (`<name>.<label>`) when an earlier subject of the
    /// decision already reports that name; without one, both report it as is.
    pub label: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// `key` under `policy`, unlabelled.
    pub fn new(policy: &'a str, key: &'a str) -> Self {
        Self { policy, key, label: None }
    }

    /// With a label, to tell its limits from an earlier subject's of the same name.
    #[must_use]
    pub fn labelled(self, label: &'a str) -> Self {
        Self { label: Some(label), ..self }
    }
}

impl Limiter {
    /// The policies of `ratelimit_policies`; the pooled fast path when `redis_fast_path` is
    /// on (the component then needs the `redis` key-value store, as the HTTP component does).
    pub fn new(config: &Config) -> Result<Self, Error> {
        let variables = config.variables();
        Ok(Self {
            policies: settings::policies(&variables)?,
            pooled: variables.flag(fast_path::VARIABLE)?,
            namespace: Namespace::Api,
        })
    }

    /// Policies given in code, in the JSON shape of `ratelimit_policies`; no fast path.
    pub fn from_json(policies_json: &str) -> Result<Self, Error> {
        let policies = Policies::parse(policies_json)
            .map_err(|e| Error::Config(crate::ConfigError::new(settings::vars::POLICIES, e)))?;
        Ok(Self { policies, pooled: false, namespace: Namespace::Api })
    }

    pub(crate) fn from_policies(policies: Policies, pooled: bool) -> Self {
        Self { policies, pooled, namespace: Namespace::Api }
    }

    /// The same limiter keeping its state in `namespace`: [`Namespace::Gateway`] decides
    /// with the `/api/limited` gateway's counters.
    #[must_use]
    pub fn in_namespace(self, namespace: Namespace) -> Self {
        Self { namespace, ..self }
    }

    /// The configured policy names.
    pub fn policies(&self) -> Vec<&str> {
        self.policies.names()
    }

    fn find(&self, name: &str) -> Result<&Policy, Error> {
        self.policies.get(name).ok_or_else(|| {
            Error::invalid(
                404,
                "unknown_policy",
                format!("there is no rate-limit policy named {name:?}"),
            )
        })
    }

    /// Decides and consumes one unit for `key` under `policy`: every limit of the policy
    /// must admit it, and all are consumed together or none.
    pub fn limit(&self, redis: &Redis, policy: &str, key: &str) -> Result<Decision, Error> {
        self.check(redis, policy, key, 1, false)
    }

    /// Decides for a `cost` of units (at least 1, at most the policy's smallest quota); a
    /// `dry_run` consumes nothing.
    pub fn check(
        &self,
        redis: &Redis,
        policy: &str,
        key: &str,
        cost: u64,
        dry_run: bool,
    ) -> Result<Decision, Error> {
        let policy = self.find(policy)?;
        validate_key(key)?;
        if cost == 0 {
            return Err(Error::invalid(400, "invalid_cost", "cost must be at least 1"));
        }
        if cost > policy.max_cost() {
            return Err(Error::invalid(
                400,
                "cost_exceeds_limit",
                format!(
                    "cost {cost} is larger than policy {:?}'s quota of {}: it could never be \
                     admitted",
                    policy.name,
                    policy.max_cost()
                ),
            ));
        }
        let mode = if dry_run { Mode::DryRun } else { Mode::Consume };
        let inner = evaluate_on(
            redis,
            self.pooled,
            &self.checks(policy, key),
            cost,
            mode,
            policy.failure_mode,
        )?;
        Ok(Decision { inner, max_cost: policy.max_cost() })
    }

    /// The current state for `key`, nothing consumed (never fails open).
    pub fn peek(&self, redis: &Redis, policy: &str, key: &str) -> Result<Decision, Error> {
        let policy = self.find(policy)?;
        validate_key(key)?;
        let inner = evaluate_on(
            redis,
            self.pooled,
            &self.checks(policy, key),
            1,
            Mode::Peek,
            FailureMode::Closed,
        )?;
        Ok(Decision { inner, max_cost: policy.max_cost() })
    }

    /// Forgets `key`'s state under `policy`: its next request starts a full quota. True when
    /// there was state to forget.
    pub fn reset(&self, redis: &Redis, policy: &str, key: &str) -> Result<bool, Error> {
        let policy = self.find(policy)?;
        validate_key(key)?;
        let checks = self.checks(policy, key);
        let marker = decide::marker_key(&checks);
        // State keys (a token bucket's; for a window limit, its state before the per-window
        // counters, which may linger until it expires), the marker, and the window counters
        // of the current and previous window (windows.rs); absent keys cost nothing.
        let mut names: Vec<String> = checks.iter().map(|c| redis.key(&c.key)).collect();
        names.extend(marker.map(|m| redis.key(&m)));
        if checks.iter().any(|c| c.limit.is_window()) {
            let now = windows::now_ms().map_err(Error::from_api)?;
            for check in &checks {
                if let Some(w) = Window::of(&redis.key(&check.key), check.limit, now) {
                    names.extend([w.current(), w.previous()]);
                }
            }
        }
        let names = names.iter().map(|k| k.to_arg()).collect();
        Ok(redis.execute("DEL", names)?.int(0)? > 0)
    }

    /// Decides and consumes `cost` for several subjects at once, as the gateway does for a
    /// caller's API key and its address: every limit of every subject must admit it, and all
    /// are consumed together or none, in one round trip. A limit reached twice (the same
    /// policy and key) is checked once. The decision fails open only if every subject's
    /// policy does. In [`Namespace::Api`], whose keys each have a hash slot of their own,
    /// the subjects must all be one policy and key (400 `cross_slot` otherwise).
    ///
    /// ```no_run
    /// use spin_redis_patterns::ratelimit::{Limiter, Namespace, Subject};
    /// use spin_redis_patterns::{Config, Redis};
    ///
    /// # fn main() -> Result<(), spin_redis_patterns::Error> {
    /// let config = Config::spin();
    /// let redis = Redis::from_config(&config)?;
    /// let limiter = Limiter::new(&config)?.in_namespace(Namespace::Gateway);
    /// // The gateway's keys: counted with the gateway's callers (`/api/limited/...`).
    /// let decision = limiter.limit_all(
    ///     &redis,
    ///     &[Subject::new("api", "key:account-42"),
    ///       Subject::new("api", "ip:203.0.113.7").labelled("address")],
    ///     1,
    /// )?;
    /// assert!(decision.limits().len() <= 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn limit_all(
        &self,
        redis: &Redis,
        subjects: &[Subject<'_>],
        cost: u64,
    ) -> Result<Decision, Error> {
        let mut checks: Vec<Check> = Vec::new();
        let (mut max_cost, mut fail_open) = (u64::MAX, true);
        for subject in subjects {
            let policy = self.find(subject.policy)?;
            validate_key(subject.key)?;
            let first = subjects[0];
            if self.namespace == Namespace::Api
                && (subject.policy, subject.key) != (first.policy, first.key)
            {
                return Err(Error::invalid(
                    400,
                    "cross_slot",
                    "the decision API's keys each have a hash slot of their own: check several \
                     keys together in the gateway namespace",
                ));
            }
            max_cost = max_cost.min(policy.max_cost());
            fail_open &= policy.failure_mode == FailureMode::Open;
            for mut check in self.checks(policy, subject.key) {
                if checks.iter().any(|c| c.key == check.key) {
                    continue;
                }
                if let Some(label) = subject.label {
                    if checks.iter().any(|c| c.member == check.member) {
                        check.member = format!("{}.{label}", check.member);
                    }
                }
                checks.push(check);
            }
        }
        if checks.is_empty() {
            return Err(Error::invalid(400, "no_subjects", "a decision needs a subject"));
        }
        if cost == 0 {
            return Err(Error::invalid(400, "invalid_cost", "cost must be at least 1"));
        }
        if cost > max_cost {
            return Err(Error::invalid(
                400,
                "cost_exceeds_limit",
                format!(
                    "cost {cost} is larger than the smallest quota of these policies, \
                     {max_cost}: it could never be admitted"
                ),
            ));
        }
        let failure_mode = if fail_open { FailureMode::Open } else { FailureMode::Closed };
        let inner = evaluate_on(redis, self.pooled, &checks, cost, Mode::Consume, failure_mode)?;
        Ok(Decision { inner, max_cost })
    }

    /// The state keys of `key` under `policy` in this limiter's namespace.
    fn checks<'a>(&self, policy: &'a Policy, key: &str) -> Vec<Check<'a>> {
        policy
            .limits
            .iter()
            .map(|limit| Check {
                limit,
                member: limit.member.clone(),
                key: match self.namespace {
                    Namespace::Api => keys::api(policy, limit, key),
                    Namespace::Gateway => keys::gateway(policy, limit, key),
                },
            })
            .collect()
    }
}

/// A key is 1-256 bytes of text without control characters.
fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(Error::invalid(
            400,
            "invalid_key",
            format!("key must be 1-{MAX_KEY_LEN} bytes of text without control characters"),
        ));
    }
    Ok(())
}

/// One limit's answer within a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    /// The limit's name: the policy's, or `policy.limit` in a policy of several.
    pub name: String,
    /// Whether this limit admits the request.
    pub allowed: bool,
    /// The quota (`limit` of a window, `capacity` of a bucket).
    pub limit: u64,
    /// Units left after this decision.
    pub remaining: u64,
    /// Until the quota is whole again.
    pub reset_after: Duration,
    /// Until this limit would admit the request (zero when it does).
    pub retry_after: Duration,
}

/// The answer of [`Limiter::limit`], [`Limiter::check`] and [`Limiter::peek`].
#[derive(Debug)]
pub struct Decision {
    pub(crate) inner: decide::Decision,
    max_cost: u64,
}

impl Decision {
    /// Whether the request may proceed (also true when unchecked under `fail_open`).
    pub fn allowed(&self) -> bool {
        self.inner.allowed()
    }

    /// False when Redis was unreachable and a `fail_open` policy admitted the request
    /// without a check.
    pub fn checked(&self) -> bool {
        self.inner.states.is_some()
    }

    /// Each limit's own answer (empty when unchecked).
    pub fn limits(&self) -> Vec<LimitState> {
        self.inner
            .states
            .iter()
            .flatten()
            .zip(&self.inner.members)
            .map(|(s, m)| LimitState {
                name: m.name.clone(),
                allowed: s.allowed,
                limit: m.quota,
                remaining: s.remaining,
                reset_after: Duration::from_millis(s.reset_after_ms),
                retry_after: Duration::from_millis(s.retry_after_ms),
            })
            .collect()
    }

    /// The binding limit: the one with the least left (on a tie, the longest wait).
    fn binding(&self) -> Option<LimitState> {
        self.limits().into_iter().min_by_key(|l| (l.remaining, Duration::MAX - l.retry_after))
    }

    /// The binding limit's quota (the policy's smallest when unchecked).
    pub fn limit(&self) -> u64 {
        self.binding().map_or(self.max_cost, |l| l.limit)
    }

    /// Units left under the binding limit; `None` when unchecked.
    pub fn remaining(&self) -> Option<u64> {
        self.binding().map(|l| l.remaining)
    }

    /// Until every limit is whole again; `None` when unchecked.
    pub fn reset_after(&self) -> Option<Duration> {
        self.limits().iter().map(|l| l.reset_after).max()
    }

    /// Until every refusing limit would admit the request (zero when allowed).
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.inner.retry_after_ms())
    }

    /// The names of the limits that refused.
    pub fn violated(&self) -> Vec<&str> {
        self.inner.violated()
    }

    /// The response fields the HTTP component sends: `RateLimit-Policy` and `RateLimit`
    /// (draft-ietf-httpapi-ratelimit-headers, one list member per limit), `Retry-After` on a
    /// refusal, or `x-ratelimit-unchecked` when unchecked.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        super::headers::fields(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `limit_all` refuses before Redis is asked (the connection is lazy: none is made).
    #[test]
    fn several_subjects_need_the_gateway_namespace() {
        let redis = Redis::from_config(&Config::defaults()).unwrap();
        let limiter = Limiter::from_json(
            r#"{"p": {"algorithm": "fixed_window", "limit": 5, "window": "1s"}}"#,
        )
        .unwrap();
        let code = |r: Result<Decision, Error>| r.unwrap_err().code();
        let two = [Subject::new("p", "a"), Subject::new("p", "b")];
        assert_eq!(code(limiter.limit_all(&redis, &two, 1)), "cross_slot");
        let gateway = limiter.clone().in_namespace(Namespace::Gateway);
        assert_eq!(code(gateway.limit_all(&redis, &[], 1)), "no_subjects");
        assert_eq!(code(gateway.limit_all(&redis, &two, 6)), "cost_exceeds_limit");
        assert_eq!(code(gateway.limit_all(&redis, &two, 0)), "invalid_cost");
        assert_eq!(code(gateway.limit_all(&redis, &[Subject::new("q", "a")], 1)), "unknown_policy");
        assert!(!redis.is_connected());
    }
}
