//! Settings for the library API, in layers: values set in code, then the component's Spin
//! variables (when enabled), then the defaults that `spin.toml` gives every variable.
//!
//! Every pattern reads the same names as the HTTP components (`ratelimit_policies`,
//! `otp_pepper`, `sessions_idle_timeout`, ...; docs/configuration.md lists them), so a
//! component that uses the library is configured like the components, and an app that
//! prefers code can set any of them with [`Config::set`].
//!
//! ```
//! use spin_redis_patterns::Config;
//!
//! // Everything from code: the defaults, with two values changed.
//! let config = Config::defaults()
//!     .set("redis_port", "6380")
//!     .set("ratelimit_policies", r#"{"login": {"algorithm": "fixed_window", "limit": 5, "window": "60s"}}"#);
//! assert_eq!(config.get("redis_port").unwrap(), "6380");
//! assert_eq!(config.get("redis_host").unwrap(), "127.0.0.1");
//! ```

use std::collections::BTreeMap;

use crate::platform::settings::{spin_error, ConfigError, Variables};

/// The default of every variable, as `spin.toml`'s `[variables]` declares it (a test in
/// `tests/integration/library.rs` keeps the two equal).
pub const DEFAULTS: &[(&str, &str)] = &[
    ("redis_host", "127.0.0.1"),
    ("redis_port", "6379"),
    ("redis_tls", "false"),
    ("redis_access_key", ""),
    ("redis_username", ""),
    ("redis_allow_insecure", "false"),
    ("redis_key_prefix", "srp:"),
    ("redis_fast_path", "false"),
    ("redis_stall_ms", "250"),
    ("redis_auth", "key"),
    ("redis_entra_token_url", "http://169.254.169.254/metadata/identity/oauth2/token"),
    ("redis_entra_token_origin", "http://entra-token.invalid"),
    ("redis_entra_client_id", ""),
    ("redis_entra_object_id", ""),
    ("sessions_idle_timeout", "1800"),
    ("sessions_absolute_timeout", "43200"),
    ("sessions_slide_threshold_percent", "50"),
    ("sessions_max_data_bytes", "8192"),
    ("sessions_max_per_user", "50"),
    ("sessions_api_token", ""),
    ("sessions_cookie_name", "__Host-session"),
    ("sessions_cookie_secure", "true"),
    ("sessions_cookie_same_site", "Lax"),
    ("sessions_cookie_domain", ""),
    ("sessions_cookie_path", "/"),
    ("sessions_rotation_grace_seconds", "10"),
    ("sessions_accept_same_site", "false"),
    ("sessions_public_origin", ""),
    (
        "ratelimit_policies",
        r#"{"api": {"algorithm": "sliding_window", "limit": 100, "window": "60s"}, "login": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 0.1}}"#,
    ),
    ("ratelimit_admin_token", ""),
    ("ratelimit_api_token", ""),
    ("ratelimit_gateway_policy", "api"),
    ("ratelimit_gateway_address_policy", ""),
    ("ratelimit_upstream", "http://origin.spin.internal"),
    ("ratelimit_api_key_header", "x-api-key"),
    ("ratelimit_api_key_digests", ""),
    ("ratelimit_identity_secret", ""),
    ("ratelimit_trusted_proxies", ""),
    ("ratelimit_ipv6_prefix", "64"),
    ("ratelimit_upstream_connect_timeout_ms", "5000"),
    ("ratelimit_upstream_first_byte_timeout_ms", "30000"),
    ("ratelimit_upstream_between_bytes_timeout_ms", "30000"),
    ("ratelimit_upstream_deadline_ms", "60000"),
    ("otp_pepper", ""),
    ("otp_purposes", "login,verify_email,reset_password"),
    ("otp_code_length", "6"),
    ("otp_code_ttl_seconds", "300"),
    ("otp_link_ttl_seconds", "900"),
    ("otp_max_attempts", "5"),
    ("otp_resend_cooldown_seconds", "60"),
    ("otp_max_per_hour", "5"),
    ("otp_outbox_maxlen", "10000"),
    ("otp_outbox_shards", "16"),
    ("otp_webhook_url", ""),
    ("otp_webhook_origin", "https://otp-webhook.invalid"),
    ("otp_webhook_token", ""),
    ("otp_dev_echo", "false"),
    ("otp_api_token", ""),
    (
        "otp_purpose_policies",
        r#"{"login": {"format": "any"}, "reset_password": {"format": "link", "channels": ["email"]}}"#,
    ),
    ("otp_max_failures", "10"),
    ("otp_lockout_seconds", "900"),
    ("otp_client_issues_per_hour", "10"),
    ("otp_client_failures_per_hour", "30"),
    ("otp_known_client_days", "30"),
    ("origin_url", "http://origin.spin.internal"),
    ("cache_ttl_seconds", "300"),
    ("cache_ttl_jitter", "0.1"),
    ("cache_stale_seconds", "300"),
    ("cache_negative_ttl_seconds", "30"),
    ("cache_max_entry_bytes", "1048576"),
    ("cache_error_ttl_seconds", "5"),
    ("cache_pass_ttl_seconds", "30"),
    ("cache_origin_timeout_ms", "5000"),
    ("cache_early_refresh_beta", "0"),
    ("cache_key_buckets", "16"),
    ("cache_purge_token", ""),
    ("cache_purge_channel", "srp:cache:purge"),
    ("cache_path_prefixes", "/profiles/"),
    ("cache_query_allow", ""),
    ("cache_query_ignore", "utm_source,utm_medium,utm_campaign,utm_term,utm_content,gclid,fbclid"),
    ("cache_vary_headers", "accept-encoding"),
    ("cache_hit_sampling", "10"),
    ("cache_mode", "cache-aside"),
    ("cache_default_ttl_seconds", ""),
    ("cache_targeted_field", "cdn-cache-control"),
    ("cache_max_variants", "32"),
    ("cache_write_token", ""),
    ("cache_drain_token", ""),
    ("cache_write_behind_max_queue", "10000"),
    ("cache_write_behind_max_attempts", "10"),
    ("cache_write_behind_backoff_ms", "1000"),
    ("cache_write_behind_backoff_max_ms", "300000"),
    ("cache_drain_max_entries", "100"),
    ("cache_drain_deadline_ms", "12000"),
    ("origin_delay_ms", "1000"),
    ("origin_max_age_seconds", "60"),
    (
        "leaderboard_boards",
        r#"{"global": {"mode": "best"}, "daily": {"mode": "best", "period": "daily", "retention_hours": 168}, "weekly_xp": {"mode": "increment", "period": "weekly", "retention_hours": 336}}"#,
    ),
    ("leaderboard_api_token", ""),
    ("leaderboard_read_token", ""),
    ("leaderboard_max_page_size", "100"),
    ("locks_api_token", ""),
    ("locks_max_ttl_ms", "300000"),
    ("locks_max_wait_ms", "5000"),
];

/// Layered settings: see the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Values set in code (secrets included: `Debug` of this type shows names only).
    values: BTreeMap<String, Redacted>,
    /// Whether Spin variables are read for names not set in code.
    spin: bool,
}

/// A value whose `Debug` does not show it (any setting may be a secret).
#[derive(Clone)]
struct Redacted(String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Config {
    /// The component's Spin variables, then the built-in defaults: a variable the component
    /// does not map in its `[component.NAME.variables]` takes its default, so a component
    /// maps only what it changes (and what must stay secret).
    pub fn spin() -> Self {
        Self { values: BTreeMap::new(), spin: true }
    }

    /// The built-in defaults only; everything else is set in code with [`Config::set`].
    pub fn defaults() -> Self {
        Self::default()
    }

    /// Sets one setting by its variable name; it wins over Spin variables and defaults.
    #[must_use]
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.values.insert(name.to_owned(), Redacted(value.into()));
        self
    }

    /// The value a pattern reads for `name`, after every layer. An unknown name with no
    /// value anywhere is an error naming it.
    pub fn get(&self, name: &str) -> Result<String, ConfigError> {
        self.lookup(name).map_err(|message| ConfigError::new(static_name(name), message))
    }

    fn lookup(&self, name: &str) -> Result<String, String> {
        if let Some(Redacted(value)) = self.values.get(name) {
            return Ok(value.clone());
        }
        let default = DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
        if self.spin {
            match spin_sdk::variables::get(name) {
                Ok(value) => return Ok(value),
                // Not mapped for this component: the default, if there is one.
                Err(spin_sdk::variables::Error::Undefined(_)) if default.is_some() => {}
                Err(e) => return Err(spin_error(&e)),
            }
        }
        default.ok_or_else(|| "has no value: set it in code or as a Spin variable".to_owned())
    }

    /// The settings as the patterns' readers take them.
    pub(crate) fn variables(&self) -> Variables<'_> {
        Variables::from_fn(move |name| self.lookup(name))
    }
}

/// `ConfigError` names its variable with a `&'static str`: a known name keeps its own, an
/// unknown one (only ever from [`Config::get`]) is named generically.
fn static_name(name: &str) -> &'static str {
    DEFAULTS.iter().find(|(n, _)| *n == name).map_or("(unknown setting)", |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_wins_over_defaults() {
        let c = Config::defaults().set("redis_host", "10.0.0.1");
        assert_eq!(c.get("redis_host").unwrap(), "10.0.0.1");
        assert_eq!(c.get("redis_port").unwrap(), "6379");
        assert!(c.get("no_such_setting").is_err());
        let c = Config::defaults().set("otp_pepper", "very secret value");
        assert!(!format!("{c:?}").contains("very secret"));
    }
}
