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
    pub const ERROR_TTL: &str = "cache_error_ttl_seconds";
    pub const PASS_TTL: &str = "cache_pass_ttl_seconds";
    pub const MAX_ENTRY: &str = "cache_max_entry_bytes";
    pub const ORIGIN_TIMEOUT: &str = "cache_origin_timeout_ms";
    pub const EARLY_REFRESH: &str = "cache_early_refresh_beta";
    pub const BUCKETS: &str = "cache_key_buckets";
    pub const PURGE_TOKEN: &str = "cache_purge_token";
    pub const PURGE_CHANNEL: &str = "cache_purge_channel";
    pub const PATH_PREFIXES: &str = "cache_path_prefixes";
    pub const QUERY_ALLOW: &str = "cache_query_allow";
    pub const QUERY_IGNORE: &str = "cache_query_ignore";
    pub const VARY: &str = "cache_vary_headers";
    pub const HIT_SAMPLING: &str = "cache_hit_sampling";
    pub const MODE: &str = "cache_mode";
    pub const DEFAULT_TTL: &str = "cache_default_ttl_seconds";
    pub const TARGETED_FIELD: &str = "cache_targeted_field";
    pub const MAX_VARIANTS: &str = "cache_max_variants";
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `scheme://host[:port]`, no trailing slash.
    pub origin_url: String,
    pub ttl_ms: u64,
    /// Fraction of the TTL taken off at random (0 to 0.5).
    pub jitter: f64,
    /// The ceiling of the stale windows (stale-while-revalidate and stale-if-error), and how
    /// long after its soft expiry an entry is kept for revalidation.
    pub stale_ms: u64,
    pub negative_ttl_ms: u64,
    /// How long an origin failure (5xx, timeout, unreachable) is remembered per key; 0: not.
    pub error_ttl_ms: u64,
    /// How long an uncacheable answer makes its key skip the lock ("hit-for-pass"); 0: never.
    pub pass_ttl_ms: u64,
    pub max_entry_bytes: usize,
    pub origin_timeout_ms: u64,
    /// XFetch's beta; 0 turns early refresh off.
    pub early_refresh_beta: f64,
    pub buckets: u32,
    pub purge_channel: String,
    /// Bearer token for purges; empty disables them.
    pub purge_token: Secret,
    /// Normalised path prefixes the proxy serves (`/` for all).
    pub path_prefixes: Vec<String>,
    /// Query parameter names kept in the key (empty: all but the ignored ones).
    pub query_allow: Vec<String>,
    /// Query parameter names dropped from the key and from the origin request.
    pub query_ignore: Vec<String>,
    /// Request headers (lower case) the origin may `Vary` on; part of every key.
    pub vary: Vec<String>,
    /// A fast-path hit is counted once in this many, by this many (1: every hit, at the cost
    /// of a second round trip).
    pub hit_sampling: u64,
    /// `cache_mode = "standard"`: the proxy is an RFC 9111 shared cache (see
    /// [`super::standard`]); otherwise the seed's cache-aside rules.
    pub standard: bool,
    /// Lifetime of an answer without explicit freshness and without `Last-Modified` (a
    /// heuristic, RFC 9111 4.2.2). Cache-aside default: `ttl_ms`; standard default: 0.
    pub default_ttl_ms: u64,
    /// The targeted cache-control field this cache obeys before `Cache-Control` (RFC 9213),
    /// lower case; empty: none. Standard mode only.
    pub targeted_field: String,
    /// Most `Vary` variants kept per target (standard mode); past it a random one is evicted.
    pub max_variants: u64,
}

/// A comma-separated list, trimmed, empty items dropped.
fn list(text: &str, lower: bool) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| if lower { s.to_ascii_lowercase() } else { s.to_owned() })
        .collect()
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
        let path_prefixes = list(&variables.text(vars::PATH_PREFIXES)?, false);
        if path_prefixes.is_empty() || path_prefixes.iter().any(|p| !p.starts_with('/')) {
            return Err(ConfigError::new(
                vars::PATH_PREFIXES,
                "must list one or more path prefixes, each starting with '/'",
            ));
        }
        let vary = list(&variables.text(vars::VARY)?, true);
        let token = |h: &String| {
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        };
        if vary.len() > 8 || !vary.iter().all(token) || vary.iter().any(|h| h.starts_with("spin-"))
        {
            return Err(ConfigError::new(vars::VARY, "must list at most 8 header names"));
        }
        let standard = match variables.text(vars::MODE)?.trim() {
            "" | "cache-aside" => false,
            "standard" => true,
            _ => return Err(ConfigError::new(vars::MODE, "must be cache-aside or standard")),
        };
        let ttl_ms = variables.whole_setting(vars::TTL)? * 1000;
        let default_ttl_ms = match variables.text(vars::DEFAULT_TTL)?.trim() {
            "" if standard => 0,
            "" => ttl_ms,
            _ => variables.whole_setting(vars::DEFAULT_TTL)? * 1000,
        };
        let targeted_field = variables.text(vars::TARGETED_FIELD)?.trim().to_ascii_lowercase();
        if !targeted_field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ConfigError::new(vars::TARGETED_FIELD, "must be a header name or empty"));
        }
        Ok(Self {
            standard,
            default_ttl_ms,
            targeted_field,
            max_variants: variables.whole_setting(vars::MAX_VARIANTS)?,
            origin_url: variables.http_origin(vars::ORIGIN_URL)?,
            ttl_ms,
            jitter: variables.decimal_setting(vars::JITTER)?,
            stale_ms: variables.whole_setting(vars::STALE)? * 1000,
            negative_ttl_ms: variables.whole_setting(vars::NEGATIVE_TTL)? * 1000,
            error_ttl_ms: variables.whole_setting(vars::ERROR_TTL)? * 1000,
            pass_ttl_ms: variables.whole_setting(vars::PASS_TTL)? * 1000,
            max_entry_bytes: variables.whole_setting(vars::MAX_ENTRY)? as usize,
            origin_timeout_ms: variables.whole_setting(vars::ORIGIN_TIMEOUT)?,
            early_refresh_beta: variables.decimal_setting(vars::EARLY_REFRESH)?,
            buckets: variables.whole_setting(vars::BUCKETS)? as u32,
            purge_channel,
            purge_token: variables.secret(vars::PURGE_TOKEN, MIN_TOKEN_LEN)?,
            path_prefixes,
            query_allow: list(&variables.text(vars::QUERY_ALLOW)?, false),
            query_ignore: list(&variables.text(vars::QUERY_IGNORE)?, false),
            vary,
            hit_sampling: variables.whole_setting(vars::HIT_SAMPLING)?,
        })
    }

    /// The single-flight lock outlives the whole origin fetch (whose overall deadline is
    /// `origin_timeout_ms`) plus the store that follows it; a fetcher that dies frees the
    /// key this long after it started. Purge tombstones live as long, so they outlast every
    /// fill that could have started before them.
    pub fn lock_ttl_ms(&self) -> u64 {
        self.origin_timeout_ms + 2000
    }

    /// Whether the proxy serves this normalised path: a prefix matches whole segments
    /// (`/api` matches `/api` and `/api/x`, not `/apix`; `/api/` matches `/api/x`).
    pub fn serves_path(&self, path: &str) -> bool {
        self.path_prefixes.iter().any(|p| {
            p == "/"
                || path == p
                || (path.starts_with(p.as_str())
                    && (p.ends_with('/') || path.as_bytes().get(p.len()) == Some(&b'/')))
        })
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
            (vars::ERROR_TTL, "5"),
            (vars::PASS_TTL, "30"),
            (vars::MAX_ENTRY, "1048576"),
            (vars::ORIGIN_TIMEOUT, "5000"),
            (vars::EARLY_REFRESH, "0"),
            (vars::BUCKETS, "16"),
            (vars::PURGE_CHANNEL, "srp:cache:purge"),
            (vars::PURGE_TOKEN, ""),
            (vars::PATH_PREFIXES, "/profiles/"),
            (vars::QUERY_ALLOW, ""),
            (vars::QUERY_IGNORE, "utm_source, fbclid"),
            (vars::VARY, "Accept-Encoding"),
            (vars::HIT_SAMPLING, "10"),
            (vars::MODE, ""),
            (vars::DEFAULT_TTL, ""),
            (vars::TARGETED_FIELD, "cdn-cache-control"),
            (vars::MAX_VARIANTS, "32"),
        ]);
        map.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|n| Ok(map[n].to_owned()));
        CacheSettings::from_variables(&variables)
    }

    #[test]
    fn defaults_parse() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.ttl_ms, s.buckets, s.lock_ttl_ms()), (300_000, 16, 7000));
        assert!((s.jitter - 0.1).abs() < 1e-12);
        assert_eq!((s.error_ttl_ms, s.pass_ttl_ms, s.hit_sampling), (5000, 30_000, 10));
        assert_eq!(s.vary, ["accept-encoding"]);
        assert_eq!(s.query_ignore, ["utm_source", "fbclid"]);
        assert_eq!(settings(&[(vars::EARLY_REFRESH, "2")]).unwrap().early_refresh_beta, 2.0);
        assert_eq!(settings(&[(vars::EARLY_REFRESH, "1.25")]).unwrap().early_refresh_beta, 1.25);
        assert_eq!(
            settings(&[(vars::ORIGIN_URL, "https://api.example.com:8443/")]).unwrap().origin_url,
            "https://api.example.com:8443"
        );
    }

    #[test]
    fn the_default_ttl_follows_the_mode_unless_set() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.standard, s.default_ttl_ms), (false, 300_000));
        let s = settings(&[(vars::MODE, "standard")]).unwrap();
        assert_eq!((s.standard, s.default_ttl_ms, s.ttl_ms), (true, 0, 300_000));
        let s = settings(&[(vars::MODE, "standard"), (vars::DEFAULT_TTL, "60")]).unwrap();
        assert_eq!((s.default_ttl_ms, s.targeted_field.as_str()), (60_000, "cdn-cache-control"));
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let s = settings(&[(vars::PATH_PREFIXES, "/profiles/, /api, /x/y")]).unwrap();
        for ok in ["/profiles/1", "/api", "/api/x", "/x/y", "/x/y/z"] {
            assert!(s.serves_path(ok), "{ok}");
        }
        for no in ["/profiles", "/apix", "/admin", "/x/yz", "/"] {
            assert!(!s.serves_path(no), "{no}");
        }
        assert!(settings(&[(vars::PATH_PREFIXES, "/")]).unwrap().serves_path("/anything"));
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
            (vars::PATH_PREFIXES, ""),
            (vars::PATH_PREFIXES, "profiles"),
            (vars::VARY, "accept language"),
            (vars::VARY, "spin-path-info"),
            (vars::HIT_SAMPLING, "0"),
            (vars::ERROR_TTL, "7200"),
            (vars::MODE, "rfc"),
            (vars::DEFAULT_TTL, "x"),
            (vars::TARGETED_FIELD, "cdn cache control"),
            (vars::MAX_VARIANTS, "0"),
        ] {
            assert_eq!(settings(&[(name, value)]).unwrap_err().variable, name, "{name}={value}");
        }
    }
}
