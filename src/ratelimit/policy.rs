//! Rate-limit policies, read from the `ratelimit_policies` Spin variable (a JSON object of
//! named policies) and validated before any request is served.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::platform::json::UniqueMap;

/// Longest policy name; names are `[A-Za-z0-9_.-]`.
pub const MAX_POLICY_NAME_LEN: usize = 64;
/// Largest quota (`limit` or `capacity`) a policy may have.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Longest window, and longest time a token bucket may take to refill completely.
pub const MAX_WINDOW_MS: u64 = 31 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// Windows aligned to multiples of `window_ms` of Redis time.
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

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub algorithm: Algorithm,
    /// The quota: `limit` of a window, or `capacity` of a bucket.
    pub limit: u64,
    pub failure_mode: FailureMode,
}

impl Policy {
    /// The short algorithm tag used in Redis keys (so a changed algorithm never reads
    /// another algorithm's state).
    pub fn key_tag(&self) -> &'static str {
        match self.algorithm {
            Algorithm::FixedWindow { .. } => "fw",
            Algorithm::SlidingWindow { .. } => "sw",
            Algorithm::TokenBucket { .. } => "tb",
        }
    }

    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::FixedWindow { .. } => "fixed_window",
            Algorithm::SlidingWindow { .. } => "sliding_window",
            Algorithm::TokenBucket { .. } => "token_bucket",
        }
    }

    /// The policy's time window in whole seconds (at least 1), for `RateLimit-Policy`'s `w`:
    /// the window, or the time a token bucket takes to refill from empty.
    pub fn window_secs(&self) -> u64 {
        let ms = match self.algorithm {
            Algorithm::FixedWindow { window_ms } | Algorithm::SlidingWindow { window_ms } => {
                window_ms
            }
            Algorithm::TokenBucket { interval_us } => (interval_us * self.limit).div_ceil(1000),
        };
        ms.div_ceil(1000).max(1)
    }
}

/// Every configured policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policies(Vec<Policy>);

impl Policies {
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.0.iter().find(|p| p.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|p| p.name.as_str())
    }

    /// Parses and validates the JSON. Errors name the policy and field at fault.
    pub fn parse(json: &str) -> Result<Self, String> {
        let specs: UniqueMap<PolicySpec> = serde_json::from_str(json)
            .map_err(|e| format!("not a JSON object of valid named policies: {e}"))?;
        let mut out = Vec::with_capacity(specs.0.len());
        for (name, spec) in specs.0 {
            out.push(parse_policy(&name, spec).map_err(|e| format!("policy {name:?}: {e}"))?);
        }
        Ok(Self(out))
    }
}

/// One policy as written in the variable; checked by [`parse_policy`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    algorithm: String,
    limit: Option<u64>,
    window: Option<Window>,
    capacity: Option<u64>,
    /// Kept as its JSON text: the rate is converted exactly, never through a float.
    refill_per_sec: Option<Box<RawValue>>,
    failure_mode: Option<String>,
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
    let quota = |field: &str, value: Option<u64>| match value {
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(format!("{field} must be a whole number between 1 and {MAX_LIMIT}")),
        None => Err(format!("{field} is required")),
    };
    let (algorithm, limit) = match spec.algorithm.as_str() {
        "fixed_window" | "sliding_window" => {
            if spec.capacity.is_some() || spec.refill_per_sec.is_some() {
                return Err(
                    "capacity and refill_per_sec belong to token_bucket; use limit and window"
                        .into(),
                );
            }
            let limit = quota("limit", spec.limit)?;
            let window_ms = parse_duration(spec.window.as_ref().ok_or("window is required")?)?;
            let algorithm = if spec.algorithm == "fixed_window" {
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
    Ok(Policy { name: name.to_owned(), algorithm, limit, failure_mode })
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
        assert_eq!(api.algorithm, Algorithm::SlidingWindow { window_ms: 60_000 });
        assert_eq!(
            (api.limit, api.failure_mode, api.window_secs()),
            (100, FailureMode::Closed, 60)
        );
        let login = p.get("login").unwrap();
        assert_eq!(login.algorithm, Algorithm::TokenBucket { interval_us: 10_000_000 });
        assert_eq!(
            (login.limit, login.failure_mode, login.window_secs()),
            (5, FailureMode::Open, 50)
        );
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
