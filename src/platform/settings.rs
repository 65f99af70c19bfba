//! Typed Spin variables: one reader with ranges, one error type, one `misconfigured` answer.
//!
//! Every service reads its settings through [`Variables`], so a bad value is reported the same
//! way everywhere: the log line names the variable and why it is wrong (never a secret's
//! value), and the client gets 500 `misconfigured` naming only the variable.

use std::fmt;
use std::ops::RangeInclusive;

use super::url::HttpUrl;

/// A configuration problem. Messages name the variable at fault and never contain its value
/// when that value is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong with it (never a secret's value).
    pub message: String,
}

impl ConfigError {
    /// A problem with `variable`.
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self { variable, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "variable `{}`: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no secret was set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(empty)" } else { "Secret(***)" })
    }
}

type Lookup<'a> = dyn Fn(&'static str) -> Result<String, String> + 'a;

/// The variables of one component: Spin's in production, a map in unit tests.
pub struct Variables<'a> {
    lookup: Box<Lookup<'a>>,
}

impl Variables<'static> {
    /// The component's Spin variables; the non-secret ones through the process-wide
    /// [`super::settings_snapshot`].
    pub fn spin() -> Self {
        Self::from_fn(|name| {
            super::settings_snapshot::lookup(name, |name| {
                spin_sdk::variables::get(name).map_err(|e| spin_error(&e))
            })
        })
    }
}

impl<'a> Variables<'a> {
    /// Any lookup: unit tests pass a map.
    pub fn from_fn(lookup: impl Fn(&'static str) -> Result<String, String> + 'a) -> Self {
        Self { lookup: Box::new(lookup) }
    }

    /// The raw value, surrounding white space removed.
    pub fn text(&self, name: &'static str) -> Result<String, ConfigError> {
        (self.lookup)(name).map(|v| v.trim().to_owned()).map_err(|m| ConfigError::new(name, m))
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`; empty is false).
    pub fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.text(name)?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            other => Err(ConfigError::new(name, format!("{other:?} is not true or false"))),
        }
    }

    /// A whole number within `range`.
    pub fn whole(
        &self,
        name: &'static str,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let text = self.text(name)?;
        match text.parse::<u64>() {
            Ok(v) if range.contains(&v) => Ok(v),
            _ => Err(ConfigError::new(
                name,
                format!("{text:?} is not a whole number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    /// A decimal number (`0.1`, `300`) within `range`; no exponents, infinities or NaN.
    pub fn decimal(
        &self,
        name: &'static str,
        range: RangeInclusive<f64>,
    ) -> Result<f64, ConfigError> {
        let text = self.text(name)?;
        let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        match text.parse::<f64>() {
            Ok(v) if plain && range.contains(&v) => Ok(v),
            _ => Err(ConfigError::new(
                name,
                format!("{text:?} is not a number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    /// A whole-number setting, within its range in [`RANGES`].
    pub fn whole_setting(&self, name: &'static str) -> Result<u64, ConfigError> {
        match range_of(name) {
            Some(Range::Whole(low, high)) => self.whole(name, low..=high),
            _ => Err(ConfigError::new(name, "has no whole-number range in settings::RANGES")),
        }
    }

    /// A decimal setting, within its range in [`RANGES`].
    pub fn decimal_setting(&self, name: &'static str) -> Result<f64, ConfigError> {
        match range_of(name) {
            Some(Range::Decimal(low, high)) => self.decimal(name, low..=high),
            _ => Err(ConfigError::new(name, "has no decimal range in settings::RANGES")),
        }
    }

    /// A secret that is either empty (the feature it guards is off) or at least `min_len`
    /// characters, so a placeholder such as `<random>` or `changeme` is refused.
    pub fn secret(&self, name: &'static str, min_len: usize) -> Result<Secret, ConfigError> {
        let value = self.text(name)?;
        if !value.is_empty() && value.chars().count() < min_len {
            return Err(ConfigError::new(
                name,
                format!(
                    "is shorter than {min_len} characters: use a random value, for example \
                     `openssl rand -base64 32`"
                ),
            ));
        }
        Ok(Secret::new(value))
    }

    /// An HTTP origin, `http(s)://host[:port]` with no path, query or credentials (read by
    /// the one URL parser, [`super::url`]); returned as `scheme://host[:port]`, without a
    /// trailing slash.
    pub fn http_origin(&self, name: &'static str) -> Result<String, ConfigError> {
        let text = self.text(name)?;
        let not_origin = |why: &str| {
            ConfigError::new(
                name,
                format!(
                    "{text:?} is not an origin ({why}): write scheme://host[:port], with no path"
                ),
            )
        };
        let url = HttpUrl::parse(&text).map_err(|e| not_origin(e.0))?;
        if url.path_and_query != "/" {
            return Err(not_origin("it has a path or query"));
        }
        Ok(url.origin())
    }
}

/// Spin's variable errors in words an operator can act on.
pub(crate) fn spin_error(e: &spin_sdk::variables::Error) -> String {
    use spin_sdk::variables::Error;
    match e {
        Error::InvalidName(m) => format!("invalid variable name: {m}"),
        Error::Undefined(m) => format!("not defined for this component in spin.toml: {m}"),
        Error::Provider(m) => format!("variables provider failed: {m}"),
        Error::Other(m) => m.clone(),
    }
}

/// The values a numeric setting accepts, bounds included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    Whole(u64, u64),
    Decimal(f64, f64),
}

/// Every numeric setting's range, in one place: the settings readers take their bounds from
/// here ([`Variables::whole_setting`], [`Variables::decimal_setting`]), and
/// `tests/integration/docs.rs` checks that docs/configuration.md states each one, so the code
/// and the docs cannot disagree on a range (issue 33).
pub const RANGES: &[(&str, Range)] = &[
    ("cache_ttl_seconds", Range::Whole(1, 31_536_000)),
    ("cache_default_ttl_seconds", Range::Whole(0, 31_536_000)),
    ("cache_max_variants", Range::Whole(1, 1024)),
    ("cache_ttl_jitter", Range::Decimal(0.0, 0.5)),
    ("cache_stale_seconds", Range::Whole(0, 31_536_000)),
    ("cache_negative_ttl_seconds", Range::Whole(0, 86_400)),
    ("cache_error_ttl_seconds", Range::Whole(0, 3_600)),
    ("cache_pass_ttl_seconds", Range::Whole(0, 3_600)),
    ("cache_max_entry_bytes", Range::Whole(0, 64 * 1024 * 1024)),
    ("cache_origin_timeout_ms", Range::Whole(1, 120_000)),
    ("cache_early_refresh_beta", Range::Decimal(0.0, 100.0)),
    ("cache_key_buckets", Range::Whole(1, 1024)),
    ("cache_hit_sampling", Range::Whole(1, 1000)),
    ("leaderboard_max_page_size", Range::Whole(1, 1000)),
    ("locks_max_ttl_ms", Range::Whole(1, 86_400_000)),
    ("locks_max_wait_ms", Range::Whole(0, 60_000)),
    ("otp_code_length", Range::Whole(6, 10)),
    ("otp_code_ttl_seconds", Range::Whole(1, 86_400)),
    ("otp_link_ttl_seconds", Range::Whole(1, 86_400)),
    ("otp_max_attempts", Range::Whole(1, 20)),
    ("otp_resend_cooldown_seconds", Range::Whole(0, 3600)),
    ("otp_max_per_hour", Range::Whole(1, 1000)),
    ("otp_outbox_maxlen", Range::Whole(100, 10_000_000)),
    ("otp_outbox_shards", Range::Whole(1, 1024)),
    ("otp_max_failures", Range::Whole(1, 100)),
    ("otp_lockout_seconds", Range::Whole(1, 86_400)),
    ("otp_client_issues_per_hour", Range::Whole(1, 10_000)),
    ("otp_client_failures_per_hour", Range::Whole(1, 10_000)),
    ("otp_known_client_days", Range::Whole(0, 365)),
    ("redis_stall_ms", Range::Whole(10, 60_000)),
    ("redis_port", Range::Whole(1, 65535)),
    ("ratelimit_upstream_connect_timeout_ms", Range::Whole(1, 600_000)),
    ("ratelimit_upstream_first_byte_timeout_ms", Range::Whole(1, 600_000)),
    ("ratelimit_upstream_between_bytes_timeout_ms", Range::Whole(1, 600_000)),
    ("ratelimit_upstream_deadline_ms", Range::Whole(1, 600_000)),
    ("ratelimit_ipv6_prefix", Range::Whole(1, 128)),
    ("sessions_idle_timeout", Range::Whole(1, 30 * 24 * 3600)),
    ("sessions_absolute_timeout", Range::Whole(1, 30 * 24 * 3600)),
    ("sessions_slide_threshold_percent", Range::Whole(1, 100)),
    ("sessions_max_data_bytes", Range::Whole(0, 1024 * 1024)),
    ("sessions_max_per_user", Range::Whole(1, 1000)),
    ("sessions_rotation_grace_seconds", Range::Whole(0, 60)),
];

/// A setting's range from [`RANGES`].
pub fn range_of(name: &str) -> Option<Range> {
    RANGES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(value: &'static str) -> Variables<'static> {
        Variables::from_fn(move |_| Ok(value.to_owned()))
    }

    #[test]
    fn flags() {
        assert!(vars(" TRUE ").flag("x").unwrap());
        assert!(!vars("").flag("x").unwrap());
        assert_eq!(vars("maybe").flag("x").unwrap_err().variable, "x");
    }

    #[test]
    fn settings_take_their_range_from_the_table() {
        assert_eq!(vars("6").whole_setting("otp_code_length").unwrap(), 6);
        assert!(vars("5").whole_setting("otp_code_length").is_err());
        assert_eq!(vars("0.5").decimal_setting("cache_ttl_jitter").unwrap(), 0.5);
        assert!(vars("0.6").decimal_setting("cache_ttl_jitter").is_err());
        // A name without a range, or with the other kind, is refused rather than unbounded.
        assert!(vars("1").whole_setting("no_such_setting").is_err());
        assert!(vars("1").whole_setting("cache_ttl_jitter").is_err());
        let mut names: Vec<&str> = RANGES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RANGES.len(), "a setting listed twice");
    }

    #[test]
    fn whole_numbers_and_decimals_respect_ranges() {
        assert_eq!(vars("30").whole("x", 1..=60).unwrap(), 30);
        assert!(vars("61").whole("x", 1..=60).is_err());
        assert!(vars("-1").whole("x", 0..=60).is_err());
        assert_eq!(vars("0.25").decimal("x", 0.0..=0.5).unwrap(), 0.25);
        for bad in ["0.6", "1e-1", "NaN", "inf", "", "-0.1"] {
            assert!(vars(bad).decimal("x", 0.0..=0.5).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_empty_or_long_enough_and_never_shown() {
        assert!(vars("").secret("t", 32).unwrap().is_empty());
        let err = vars("<random>").secret("t", 32).unwrap_err();
        assert!(!err.to_string().contains("<random>"));
        let s = vars("0123456789abcdef0123456789abcdef").secret("t", 32).unwrap();
        assert!(!format!("{s:?}").contains("0123"));
    }

    #[test]
    fn origins() {
        assert_eq!(
            vars("https://a.example:8443/").http_origin("o").unwrap(),
            "https://a.example:8443"
        );
        assert_eq!(vars("http://[::1]:8080").http_origin("o").unwrap(), "http://[::1]:8080");
        for bad in [
            "ftp://a",
            "https://",
            "https://a/b",
            "https://a?q",
            "https://a#f",
            "https://u@a",
            "a.example",
            "https://a.example:99999",
            "https://a.example:",
        ] {
            assert!(vars(bad).http_origin("o").is_err(), "{bad}");
        }
    }
}
