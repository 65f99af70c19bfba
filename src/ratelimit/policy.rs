//! Rate-limit policies, read from the `ratelimit_policies` Spin variable (a JSON object of
//! named policies) and validated before any request is served. A policy is one limit
//! (`{"algorithm", ...}`) or several (`{"limits": {"burst": {...}, "daily": {...}}}`), all
//! checked and consumed together.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::platform::json::{Object, UniqueMap};

/// Longest policy name; names are `[A-Za-z0-9_.-]`.
pub const MAX_POLICY_NAME_LEN: usize = 64;
/// Largest quota (`limit` or `capacity`) a policy may have.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Longest window, and longest time a token bucket may take to refill completely.
pub const MAX_WINDOW_MS: u64 = 31 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// Windows of `window_ms`, shifted by a per-key offset, on the deciding instance's clock.
    FixedWindow { window_ms: u64 },
    /// Two fixed windows, the previous one weighted by its share still inside the window.
    SlidingWindow { window_ms: u64 },
    /// GCRA: `capacity` tokens, one refilled every `interval_us` microseconds.
    TokenBucket { interval_us: u64 },
}

/// What a request gets when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Admit the request, flagged as unchecked.
    Open,
    /// Refuse it with 503.
    Closed,
}

/// One limit of a policy: a quota under one algorithm.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The list member name in `RateLimit` and `RateLimit-Policy`: the policy's name, or
    /// `policy.limit` for a policy with several limits.
    pub member: String,
    /// The limit's own name within its policy (`None` for a one-limit policy); part of its
    /// Redis key.
    pub part: Option<String>,
    pub algorithm: Algorithm,
    /// The quota: `limit` of a window, or `capacity` of a bucket.
    pub quota: u64,
}

impl Limit {
    /// The short algorithm tag used in Redis keys (so a changed algorithm never reads
    /// another algorithm's state).
    pub fn key_tag(&self) -> &'static str {
        match self.algorithm {
            Algorithm::FixedWindow { .. } => "fw",
            Algorithm::SlidingWindow { .. } => "sw",
            Algorithm::TokenBucket { .. } => "tb",
        }
    }

    /// The time window in whole seconds (at least 1), for `RateLimit-Policy`'s `w`: the
    /// window, or the time a token bucket takes to refill from empty.
    pub fn window_secs(&self) -> u64 {
        self.window_ms().div_ceil(1000).max(1)
    }

    /// A fixed or sliding window (state in per-window counters, `windows.rs`).
    pub fn is_window(&self) -> bool {
        !matches!(self.algorithm, Algorithm::TokenBucket { .. })
    }

    pub fn window_ms(&self) -> u64 {
        match self.algorithm {
            Algorithm::FixedWindow { window_ms } | Algorithm::SlidingWindow { window_ms } => {
                window_ms
            }
            Algorithm::TokenBucket { interval_us } => (interval_us * self.quota).div_ceil(1000),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    /// At least one; every one must admit a request for it to pass.
    pub limits: Vec<Limit>,
    pub failure_mode: FailureMode,
}

impl Policy {
    /// The largest cost any request could be admitted at: the smallest quota.
    pub fn max_cost(&self) -> u64 {
        self.limits.iter().map(|l| l.quota).min().unwrap_or(0)
    }
}

/// Every configured policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policies(Vec<Policy>);

impl Policies {
    /// Every policy's name, in the order configured.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.name.as_str()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.0.iter().find(|p| p.name == name)
    }

    /// Parses and validates the JSON. Errors name the policy and field at fault.
    pub fn parse(json: &str) -> Result<Self, String> {
        let specs: UniqueMap<Object<PolicySpec>> = serde_json::from_str(json)
            .map_err(|e| format!("not a JSON object of valid named policies: {e}"))?;
        let mut out = Vec::with_capacity(specs.0.len());
        for (name, Object(spec)) in specs.0 {
            out.push(parse_policy(&name, spec).map_err(|e| format!("policy {name:?}: {e}"))?);
        }
        Ok(Self(out))
    }
}

/// Most limits one policy may combine (each is one key in the decision script).
pub const MAX_LIMITS: usize = 8;

/// One policy as written in the variable; checked by [`parse_policy`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    algorithm: Option<String>,
    limit: Option<u64>,
    window: Option<Window>,
    capacity: Option<u64>,
    refill_per_sec: Option<Box<RawValue>>,
    limits: Option<UniqueMap<Object<LimitSpec>>>,
    failure_mode: Option<String>,
}

/// One limit as written: alone in a policy, or one of its `limits`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpec {
    algorithm: Option<String>,
    limit: Option<u64>,
    window: Option<Window>,
    capacity: Option<u64>,
    /// Kept as its JSON text: the rate is converted exactly, never through a float.
    refill_per_sec: Option<Box<RawValue>>,
}

/// `"60s"` or a number of seconds.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Window {
    Seconds(u64),
    Text(String),
}

pub fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_POLICY_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn parse_policy(name: &str, spec: PolicySpec) -> Result<Policy, String> {
    if !valid_policy_name(name) {
        return Err(format!(
            "the name must be 1-{MAX_POLICY_NAME_LEN} characters of letters, digits, '_', '-', '.'"
        ));
    }
    let failure_mode = match spec.failure_mode.as_deref() {
        None | Some("fail_closed") => FailureMode::Closed,
        Some("fail_open") => FailureMode::Open,
        Some(other) => {
            return Err(format!("failure_mode {other:?} is not fail_open or fail_closed"))
        }
    };
    let alone = LimitSpec {
        algorithm: spec.algorithm,
        limit: spec.limit,
        window: spec.window,
        capacity: spec.capacity,
        refill_per_sec: spec.refill_per_sec,
    };
    let limits = match spec.limits {
        None => vec![parse_limit(name.to_owned(), None, alone)?],
        Some(specs) => {
            if alone.algorithm.is_some() || alone.limit.is_some() || alone.capacity.is_some() {
                return Err("a policy has either \"limits\" or one algorithm, not both".into());
            }
            if specs.0.is_empty() || specs.0.len() > MAX_LIMITS {
                return Err(format!("\"limits\" must hold 1 to {MAX_LIMITS} named limits"));
            }
            let mut out = Vec::new();
            for (part, Object(limit)) in specs.0 {
                if !valid_policy_name(&part) || part.contains('.') {
                    return Err(format!(
                        "limit name {part:?} must be letters, digits, '_' or '-' (at most {MAX_POLICY_NAME_LEN})"
                    ));
                }
                let member = format!("{name}.{part}");
                out.push(
                    parse_limit(member, Some(part.clone()), limit)
                        .map_err(|e| format!("limit {part:?}: {e}"))?,
                );
            }
            out
        }
    };
    Ok(Policy { name: name.to_owned(), limits, failure_mode })
}

fn parse_limit(member: String, part: Option<String>, spec: LimitSpec) -> Result<Limit, String> {
    let quota = |field: &str, value: Option<u64>| match value {
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(format!("{field} must be a whole number between 1 and {MAX_LIMIT}")),
        None => Err(format!("{field} is required")),
    };
    let algorithm_name = spec.algorithm.as_deref().ok_or("algorithm is required")?;
    let (algorithm, limit) = match algorithm_name {
        "fixed_window" | "sliding_window" => {
            if spec.capacity.is_some() || spec.refill_per_sec.is_some() {
                return Err(
                    "capacity and refill_per_sec belong to token_bucket; use limit and window"
                        .into(),
                );
            }
            let limit = quota("limit", spec.limit)?;
            let window_ms = parse_duration(spec.window.as_ref().ok_or("window is required")?)?;
            let algorithm = if algorithm_name == "fixed_window" {
                Algorithm::FixedWindow { window_ms }
            } else {
                Algorithm::SlidingWindow { window_ms }
            };
            (algorithm, limit)
        }
        "token_bucket" | "gcra" => {
            if spec.limit.is_some() || spec.window.is_some() {
                return Err("limit and window belong to the window algorithms; use capacity and refill_per_sec".into());
            }
            let capacity = quota("capacity", spec.capacity)?;
            // interval = 1e6 us / rate, computed exactly from the decimal text.
            let bad_rate = "refill_per_sec must be a number above 0 and at most 1000000";
            let rate = spec.refill_per_sec.ok_or("refill_per_sec is required")?;
            let (mantissa, scale) = decimal(rate.get()).ok_or(bad_rate)?;
            let numerator = 1_000_000u64 * 10u64.pow(scale);
            if mantissa == 0 || mantissa > numerator {
                return Err(bad_rate.into());
            }
            let interval_us = (numerator + mantissa / 2) / mantissa;
            if interval_us.saturating_mul(capacity) > MAX_WINDOW_MS * 1000 {
                return Err("the bucket would take longer than 31 days to refill".into());
            }
            (Algorithm::TokenBucket { interval_us }, capacity)
        }
        other => {
            return Err(format!(
                "algorithm {other:?} is not fixed_window, sliding_window or token_bucket"
            ))
        }
    };
    Ok(Limit { member, part, algorithm, quota: limit })
}

/// `"60s"`, `"500ms"`, `"5m"`, `"1h"`, `"1d"`, or a number of seconds.
pub fn parse_duration(value: &Window) -> Result<u64, String> {
    let ms = match value {
        Window::Seconds(s) => s.checked_mul(1000),
        Window::Text(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: Option<u64> = digits.parse().ok();
            let factor = match unit.trim() {
                "ms" => Some(1),
                "s" | "" => Some(1000),
                "m" => Some(60_000),
                "h" => Some(3_600_000),
                "d" => Some(86_400_000),
                _ => None,
            };
            n.zip(factor).and_then(|(n, f)| n.checked_mul(f))
        }
    };
    match ms {
        Some(ms) if (1..=MAX_WINDOW_MS).contains(&ms) => Ok(ms),
        _ => Err(format!(
            "window {value:?} must be a duration such as \"500ms\", \"60s\", \"5m\", \"1h\" or \"1d\", between 1ms and 31d"
        )),
    }
}

/// A positive decimal number's JSON text (`"0.1"`, `"10"`, `"2.5e-1"`) as
/// `mantissa / 10^scale`, exactly: rates are never rounded through a float.
fn decimal(text: &str) -> Option<(u64, u32)> {
    let (num, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.starts_with('-') || int.len() + frac.len() > 18 {
        return None;
    }
    let mantissa: u64 = format!("{int}{frac}").parse().ok()?;
    let scale = i32::try_from(frac.len()).ok()? - exp;
    if scale < 0 {
        let m = mantissa.checked_mul(10u64.checked_pow(u32::try_from(-scale).ok()?)?)?;
        return Some((m, 0));
    }
    (scale <= 12).then_some((mantissa, scale as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(decimal("0.1"), Some((1, 1)));
        assert_eq!(decimal("10"), Some((10, 0)));
        assert_eq!(decimal("2.5e-1"), Some((25, 2)));
        assert_eq!(decimal("1e3"), Some((1000, 0)));
        assert_eq!(decimal("-1"), None);
    }

    #[test]
    fn parses_the_issue_example() {
        let p = Policies::parse(
            r#"{"api": {"algorithm": "sliding_window", "limit": 100, "window": "60s"},
                "login": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 0.1,
                          "failure_mode": "fail_open"}}"#,
        )
        .unwrap();
        let api = p.get("api").unwrap();
        assert_eq!(api.limits[0].algorithm, Algorithm::SlidingWindow { window_ms: 60_000 });
        assert_eq!(
            (api.limits[0].quota, api.failure_mode, api.limits[0].window_secs()),
            (100, FailureMode::Closed, 60)
        );
        let login = p.get("login").unwrap();
        assert_eq!(login.limits[0].algorithm, Algorithm::TokenBucket { interval_us: 10_000_000 });
        assert_eq!(
            (login.limits[0].quota, login.failure_mode, login.limits[0].window_secs()),
            (5, FailureMode::Open, 50)
        );
        assert_eq!(
            (login.limits[0].member.as_str(), login.limits[0].part.as_ref()),
            ("login", None)
        );
    }

    #[test]
    fn several_limits_in_one_policy() {
        let p = Policies::parse(
            r#"{"login": {"limits": {"burst": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 1},
                                     "daily": {"algorithm": "fixed_window", "limit": 100, "window": "1d"}}}}"#,
        )
        .unwrap();
        let login = p.get("login").unwrap();
        let members: Vec<&str> = login.limits.iter().map(|l| l.member.as_str()).collect();
        assert_eq!(members, ["login.burst", "login.daily"]);
        assert_eq!(login.max_cost(), 5);
        for bad in [
            r#"{"a": {"limits": {}}}"#,
            r#"{"a": {"limits": {"x.y": {"algorithm": "fixed_window", "limit": 1, "window": "1s"}}}}"#,
            r#"{"a": {"algorithm": "fixed_window", "limit": 1, "window": "1s", "limits": {"b": {"algorithm": "fixed_window", "limit": 1, "window": "1s"}}}}"#,
            r#"{"a": {"limits": {"b": {"algorithm": "fixed_window", "limit": 1, "window": "1s", "failure_mode": "fail_open"}}}}"#,
        ] {
            assert!(Policies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_policies() {
        for bad in [
            r#"[]"#,
            r#"{"a": {"algorithm": "leaky", "limit": 1, "window": "1s"}}"#,
            r#"{"a": {"algorithm": "fixed_window", "limit": 0, "window": "1s"}}"#,
            r#"{"a": {"algorithm": "fixed_window", "limit": 5}}"#,
            r#"{"a": {"algorithm": "fixed_window", "limit": 5, "window": "1w"}}"#,
            r#"{"a": {"algorithm": "fixed_window", "limit": 5, "window": "0s"}}"#,
            r#"{"a": {"algorithm": "fixed_window", "limit": 5, "window": "1s", "extra": 1}}"#,
            r#"{"a b": {"algorithm": "fixed_window", "limit": 5, "window": "1s"}}"#,
            r#"{"a": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 0}}"#,
            r#"{"a": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 1, "failure_mode": "maybe"}}"#,
            // Arrays of the field values in order, which serde's derived structs accept.
            r#"{"a": ["fixed_window", 5, "1s"]}"#,
            r#"{"a": {"limits": {"b": ["fixed_window", 5, "1s"]}}}"#,
        ] {
            assert!(Policies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(&Window::Text(s.to_owned()));
        assert_eq!(d("250ms"), Ok(250));
        assert_eq!(d("2s"), Ok(2000));
        assert_eq!(d("5m"), Ok(300_000));
        assert_eq!(d("1h"), Ok(3_600_000));
        assert_eq!(parse_duration(&Window::Seconds(3)), Ok(3000));
        assert!(d("-1s").is_err());
        assert!(d("32d").is_err());
    }
}
