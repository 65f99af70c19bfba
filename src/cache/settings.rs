//! The cache's Spin variables, parsed and checked once per request.

use crate::platform::auth::MIN_TOKEN_LEN;
use crate::platform::settings::{ConfigError, Secret, Variables};

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
    /// Bearer token for purges; empty disables them.
    pub purge_token: Secret,
}

impl CacheSettings {
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_variables(&Variables::spin())
    }

    pub fn from_variables(variables: &Variables) -> Result<Self, ConfigError> {
        let purge_channel = variables.text(vars::PURGE_CHANNEL)?;
        if purge_channel.is_empty() || purge_channel.len() > 128 {
            return Err(ConfigError::new(vars::PURGE_CHANNEL, "must be 1 to 128 bytes"));
        }
        Ok(Self {
            origin_url: variables.http_origin(vars::ORIGIN_URL)?,
            ttl_ms: variables.whole(vars::TTL, 1..=31_536_000)? * 1000,
            jitter: variables.decimal(vars::JITTER, 0.0..=0.5)?,
            stale_ms: variables.whole(vars::STALE, 0..=31_536_000)? * 1000,
            negative_ttl_ms: variables.whole(vars::NEGATIVE_TTL, 0..=86_400)? * 1000,
            max_entry_bytes: variables.whole(vars::MAX_ENTRY, 0..=64 * 1024 * 1024)? as usize,
            origin_timeout_ms: variables.whole(vars::ORIGIN_TIMEOUT, 1..=120_000)?,
            lock_wait_ms: variables.whole(vars::LOCK_WAIT, 0..=30_000)?,
            early_refresh_beta: variables.decimal(vars::EARLY_REFRESH, 0.0..=100.0)?,
            buckets: variables.whole(vars::BUCKETS, 1..=1024)? as u32,
            purge_channel,
            purge_token: variables.secret(vars::PURGE_TOKEN, MIN_TOKEN_LEN)?,
        })
    }

    /// The stampede lock outlives one origin fetch, and no more: a fetcher that dies frees
    /// the key this long after it started.
    pub fn lock_ttl_ms(&self) -> u64 {
        self.origin_timeout_ms + 1000
    }
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
            (vars::PURGE_TOKEN, ""),
        ]);
        map.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|n| Ok(map[n].to_owned()));
        CacheSettings::from_variables(&variables)
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
    fn errors_say_the_range() {
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
            (vars::EARLY_REFRESH, "101"),
            (vars::PURGE_TOKEN, "short"),
        ] {
            assert_eq!(settings(&[(name, value)]).unwrap_err().variable, name, "{name}={value}");
        }
    }
}
