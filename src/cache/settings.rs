//! The cache's Spin variables, parsed and checked once per request.

use crate::config::ConfigError;

/// The variable names, as `[component.cache.variables]` maps them.
pub mod vars {
    pub const ORIGIN_URL: &str = "origin_url";
    pub const TTL: &str = "cache_ttl_seconds";
    pub const JITTER: &str = "cache_ttl_jitter";
    pub const STALE: &str = "cache_stale_seconds";
    pub const NEGATIVE_TTL: &str = "cache_negative_ttl_seconds";
    pub const MAX_ENTRY: &str = "cache_max_entry_bytes";
    pub const ORIGIN_TIMEOUT: &str = "cache_origin_timeout_ms";
    pub const LOCK_WAIT: &str = "cache_lock_wait_ms";
    pub const EARLY_REFRESH: &str = "cache_early_refresh_beta";
    pub const BUCKETS: &str = "cache_key_buckets";
    pub const PURGE_TOKEN: &str = "cache_purge_token";
    pub const PURGE_CHANNEL: &str = "cache_purge_channel";
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `scheme://host[:port]`, no trailing slash.
    pub origin_url: String,
    pub ttl_ms: u64,
    /// Fraction of the TTL taken off at random (0 to 0.5).
    pub jitter: f64,
    /// How long after its soft expiry an entry may still be served stale.
    pub stale_ms: u64,
    pub negative_ttl_ms: u64,
    pub max_entry_bytes: usize,
    pub origin_timeout_ms: u64,
    pub lock_wait_ms: u64,
    /// XFetch's beta; 0 turns early refresh off.
    pub early_refresh_beta: f64,
    pub buckets: u32,
    pub purge_channel: String,
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { variable, message: message.into() }
}

/// A non-negative decimal (`300`, `0.1`) in millionths, read without `str::parse::<f64>`
/// (whose tables cost about 20 KB of .wasm) or any formatting. At most 12 digits before the
/// point and six after it, so the value fits a `u64`.
fn millionths(text: &str) -> Option<u64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || whole.len() > 12 || frac.len() > 6 {
        return None;
    }
    let padding = &b"000000"[frac.len()..];
    whole
        .bytes()
        .chain(frac.bytes())
        .chain(padding.iter().copied())
        .try_fold(0u64, |n, b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

/// A variable holding a decimal from `min` to `max` (in millionths); `range` describes them
/// for the error, `None` for whole numbers (then written from `min` and `max`).
fn decimal(
    get: &impl Fn(&'static str) -> Result<String, String>,
    name: &'static str,
    min: u64,
    max: u64,
    range: Option<&str>,
) -> Result<u64, ConfigError> {
    let text = get(name).map_err(|m| invalid(name, m))?;
    match millionths(text.trim()) {
        Some(v) if v >= min && v <= max && (range.is_some() || v % 1_000_000 == 0) => Ok(v),
        _ => Err(invalid(
            name,
            match range {
                Some(range) => format!("\"{text}\" is not a number from {range}"),
                None => format!(
                    "\"{text}\" is not a whole number from {} to {}",
                    min / 1_000_000,
                    max / 1_000_000
                ),
            },
        )),
    }
}

fn number(
    get: &impl Fn(&'static str) -> Result<String, String>,
    name: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    decimal(get, name, min * 1_000_000, max * 1_000_000, None).map(|v| v / 1_000_000)
}

fn fraction(
    get: &impl Fn(&'static str) -> Result<String, String>,
    name: &'static str,
    max_millionths: u64,
    range: &str,
) -> Result<f64, ConfigError> {
    decimal(get, name, 0, max_millionths, Some(range)).map(|v| v as f64 / 1_000_000.0)
}

impl CacheSettings {
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| spin_sdk::variables::get(name).map_err(|e| e.to_string()))
    }

    pub fn from_lookup(
        get: impl Fn(&'static str) -> Result<String, String>,
    ) -> Result<Self, ConfigError> {
        let origin = get(vars::ORIGIN_URL).map_err(|m| invalid(vars::ORIGIN_URL, m))?;
        let origin_url = parse_origin(origin.trim())?;
        let channel = get(vars::PURGE_CHANNEL).map_err(|m| invalid(vars::PURGE_CHANNEL, m))?;
        let purge_channel = channel.trim().to_owned();
        if purge_channel.is_empty() || purge_channel.len() > 128 {
            return Err(invalid(vars::PURGE_CHANNEL, "must be 1 to 128 bytes"));
        }
        Ok(Self {
            origin_url,
            ttl_ms: number(&get, vars::TTL, 1, 31_536_000)? * 1000,
            jitter: fraction(&get, vars::JITTER, 500_000, "0 to 0.5")?,
            stale_ms: number(&get, vars::STALE, 0, 31_536_000)? * 1000,
            negative_ttl_ms: number(&get, vars::NEGATIVE_TTL, 0, 86_400)? * 1000,
            max_entry_bytes: number(&get, vars::MAX_ENTRY, 0, 64 * 1024 * 1024)? as usize,
            origin_timeout_ms: number(&get, vars::ORIGIN_TIMEOUT, 1, 120_000)?,
            lock_wait_ms: number(&get, vars::LOCK_WAIT, 0, 30_000)?,
            early_refresh_beta: fraction(&get, vars::EARLY_REFRESH, 100_000_000, "0 to 100")?,
            buckets: number(&get, vars::BUCKETS, 1, 1024)? as u32,
            purge_channel,
        })
    }

    /// The stampede lock outlives one origin fetch, and no more: a fetcher that dies frees
    /// the key this long after it started.
    pub fn lock_ttl_ms(&self) -> u64 {
        self.origin_timeout_ms + 1000
    }
}

/// `http(s)://host[:port]` without path, query or credentials: it doubles as the
/// `allowed_outbound_hosts` entry, which Spin refuses with a path.
fn parse_origin(url: &str) -> Result<String, ConfigError> {
    let url = url.trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    let ok = rest.is_some_and(|authority| {
        !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    });
    if !ok {
        return Err(invalid(
            vars::ORIGIN_URL,
            format!("\"{url}\" is not http(s)://host[:port] (no path, query or credentials)"),
        ));
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(overrides: &[(&str, &str)]) -> Result<CacheSettings, ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::from([
            (vars::ORIGIN_URL, "http://origin.spin.internal"),
            (vars::TTL, "300"),
            (vars::JITTER, "0.1"),
            (vars::STALE, "300"),
            (vars::NEGATIVE_TTL, "30"),
            (vars::MAX_ENTRY, "1048576"),
            (vars::ORIGIN_TIMEOUT, "5000"),
            (vars::LOCK_WAIT, "2000"),
            (vars::EARLY_REFRESH, "0"),
            (vars::BUCKETS, "16"),
            (vars::PURGE_CHANNEL, "srp:cache:purge"),
        ]);
        map.extend(overrides.iter().copied());
        CacheSettings::from_lookup(|n| Ok(map[n].to_owned()))
    }

    #[test]
    fn defaults_parse() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.ttl_ms, s.buckets, s.lock_ttl_ms()), (300_000, 16, 6000));
        assert!((s.jitter - 0.1).abs() < 1e-12);
        assert_eq!(settings(&[(vars::EARLY_REFRESH, "2")]).unwrap().early_refresh_beta, 2.0);
        assert_eq!(settings(&[(vars::EARLY_REFRESH, "1.25")]).unwrap().early_refresh_beta, 1.25);
        assert_eq!(
            settings(&[(vars::ORIGIN_URL, "https://api.example.com:8443/")]).unwrap().origin_url,
            "https://api.example.com:8443"
        );
    }

    #[test]
    fn decimals_are_read_exactly() {
        assert_eq!(millionths("300"), Some(300_000_000));
        assert_eq!(millionths("0.1"), Some(100_000));
        assert_eq!(millionths("1.000001"), Some(1_000_001));
        assert_eq!(millionths("999999999999.999999"), Some(999_999_999_999_999_999));
        assert_eq!(millionths("1."), Some(1_000_000));
        for bad in ["", ".5", "1.2.3", "-1", "+1", "1 ", "1e3", "1234567890123", "0.1234567"] {
            assert_eq!(millionths(bad), None, "{bad:?}");
        }
        let err = settings(&[(vars::BUCKETS, "2000")]).unwrap_err();
        assert_eq!(err.message, "\"2000\" is not a whole number from 1 to 1024");
        let err = settings(&[(vars::JITTER, "x")]).unwrap_err();
        assert_eq!(err.message, "\"x\" is not a number from 0 to 0.5");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            (vars::ORIGIN_URL, "ftp://x"),
            (vars::ORIGIN_URL, "http://x/path"),
            (vars::ORIGIN_URL, "http://u:p@x"),
            (vars::JITTER, "0.9"),
            (vars::JITTER, "-0.1"),
            (vars::JITTER, "1e-3"),
            (vars::TTL, "0"),
            (vars::BUCKETS, "0"),
            (vars::BUCKETS, "1.5"),
            (vars::TTL, "1e3"),
            (vars::TTL, ""),
            (vars::EARLY_REFRESH, "1.0000001"),
        ] {
            assert_eq!(settings(&[(name, value)]).unwrap_err().variable, name, "{name}={value}");
        }
    }
}
