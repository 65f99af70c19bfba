//! The OTP component's settings, read from Spin variables and checked before any code is
//! issued or verified. A mistake answers `500 misconfigured` naming only the variable, so a
//! half-configured deployment never hands out codes. Combinations are checked too: a code
//! shorter than 6 digits, or limits whose worst-case guessing odds over 30 days exceed
//! [`MAX_MONTHLY_ODDS`], are refused.

use super::input::Format;
use super::policy::{self, FormatRule, Policy};
use crate::platform::auth::MIN_TOKEN_LEN;
use crate::platform::settings::{ConfigError, Secret, Variables};

/// The Spin variable names, as `[component.otp.variables]` maps them.
pub mod vars {
    pub const PEPPER: &str = "otp_pepper";
    pub const PURPOSES: &str = "otp_purposes";
    pub const CODE_LENGTH: &str = "otp_code_length";
    pub const CODE_TTL: &str = "otp_code_ttl_seconds";
    pub const LINK_TTL: &str = "otp_link_ttl_seconds";
    pub const MAX_ATTEMPTS: &str = "otp_max_attempts";
    pub const COOLDOWN: &str = "otp_resend_cooldown_seconds";
    pub const MAX_PER_HOUR: &str = "otp_max_per_hour";
    pub const OUTBOX_MAXLEN: &str = "otp_outbox_maxlen";
    pub const OUTBOX_SHARDS: &str = "otp_outbox_shards";
    pub const WEBHOOK_URL: &str = "otp_webhook_url";
    pub const WEBHOOK_ORIGIN: &str = "otp_webhook_origin";
    pub const WEBHOOK_TOKEN: &str = "otp_webhook_token";
    pub const DEV_ECHO: &str = "otp_dev_echo";
    pub const API_TOKEN: &str = "otp_api_token";
    pub const MAX_FAILURES: &str = "otp_max_failures";
    pub const LOCKOUT: &str = "otp_lockout_seconds";
    pub const CLIENT_ISSUES: &str = "otp_client_issues_per_hour";
    pub const CLIENT_FAILURES: &str = "otp_client_failures_per_hour";
    pub const KNOWN_CLIENT_DAYS: &str = "otp_known_client_days";
    pub const POLICIES: &str = "otp_purpose_policies";
}

/// The worst-case chance, over 30 days, that an attacker guesses one subject's code for one
/// purpose, above which the settings are refused: 1 in 100.
pub const MAX_MONTHLY_ODDS: f64 = 0.01;
/// The lockout after too many failures doubles each time, up to this.
pub const MAX_LOCKOUT_MS: u64 = 86_400_000;
/// How long the failure count and lockout level of a subject are remembered after the last
/// failure (a success forgets them at once).
pub const GUARD_MEMORY_MS: u64 = 30 * 86_400_000;

/// Shortest pepper accepted: `openssl rand -base64 32` gives 44 characters.
pub const MIN_PEPPER_LEN: usize = 32;
/// Longest purpose name; purposes appear in Redis keys.
pub const MAX_PURPOSE_LEN: usize = 32;

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(variable, message)
}

/// Where issued codes are POSTed besides the outbox stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    /// Sent as `Authorization: Bearer …` when not empty, so the receiver can authenticate us.
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub pepper: Secret,
    pub purposes: Vec<String>,
    /// One per purpose, in the order of `purposes`.
    pub policies: Vec<Policy>,
    pub code_length: usize,
    pub code_ttl_ms: u64,
    pub link_ttl_ms: u64,
    pub max_attempts: u32,
    pub cooldown_ms: u64,
    pub max_per_hour: u32,
    pub outbox_maxlen: u64,
    pub outbox_shards: u32,
    pub webhook: Option<Webhook>,
    pub dev_echo: bool,
    /// Bearer token of the public routes; empty: they are off (service chaining only).
    pub api_token: Secret,
    /// Consecutive failed verifications (per subject, purpose and lane, across codes) that
    /// lock the subject out of new codes and verifications.
    pub max_failures: u32,
    /// The first lockout; each further one doubles, up to [`MAX_LOCKOUT_MS`].
    pub lockout_ms: u64,
    /// Per client key (per outbox shard): codes issued, and failed verifications, per hour.
    pub client_issues_per_hour: u32,
    pub client_failures_per_hour: u32,
    /// How long a client that verified a subject's code is that subject's known client.
    pub known_client_ms: u64,
}

impl Settings {
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_variables(&Variables::spin())
    }

    pub fn from_variables(variables: &Variables) -> Result<Self, ConfigError> {
        let pepper = variables.secret(vars::PEPPER, MIN_PEPPER_LEN)?;
        if pepper.is_empty() {
            return Err(invalid(
                vars::PEPPER,
                "is not set, so no codes can be issued or verified: set it to a random secret of at \
                 least 32 characters, e.g. SPIN_VARIABLE_OTP_PEPPER=$(openssl rand -base64 32)",
            ));
        }

        let purposes = parse_purposes(&variables.text(vars::PURPOSES)?)?;
        // Under 6 digits, a code is too easy to guess within any sane lockout schedule.
        let code_length = variables.whole_setting(vars::CODE_LENGTH)? as usize;
        let code_ttl_ms = variables.whole_setting(vars::CODE_TTL)? * 1000;
        let link_ttl_ms = variables.whole_setting(vars::LINK_TTL)? * 1000;
        let defaults = Policy {
            name: String::new(),
            format: FormatRule::Fixed(Format::Code),
            length: code_length,
            code_ttl_ms,
            link_ttl_ms,
            channels: Vec::new(),
        };
        let policies =
            policy::parse(vars::POLICIES, &variables.text(vars::POLICIES)?, &purposes, &defaults)?;
        let max_attempts = variables.whole_setting(vars::MAX_ATTEMPTS)? as u32;
        let cooldown_ms = variables.whole_setting(vars::COOLDOWN)? * 1000;
        let max_per_hour = variables.whole_setting(vars::MAX_PER_HOUR)? as u32;
        let outbox_maxlen = variables.whole_setting(vars::OUTBOX_MAXLEN)?;
        let outbox_shards = variables.whole_setting(vars::OUTBOX_SHARDS)? as u32;

        let webhook = super::webhook::parse_url(
            &variables.text(vars::WEBHOOK_URL)?,
            &variables.text(vars::WEBHOOK_ORIGIN)?,
        )?
        .map(|url| -> Result<Webhook, ConfigError> {
            Ok(Webhook { url, token: Secret::new(variables.text(vars::WEBHOOK_TOKEN)?) })
        })
        .transpose()?;
        let dev_echo = variables.flag(vars::DEV_ECHO)?;
        let api_token = variables.secret(vars::API_TOKEN, MIN_TOKEN_LEN)?;
        // NIST SP 800-63B: at most 100 consecutive failures per account.
        let max_failures = variables.whole_setting(vars::MAX_FAILURES)? as u32;
        let lockout_ms = variables.whole_setting(vars::LOCKOUT)? * 1000;
        let client_issues_per_hour = variables.whole_setting(vars::CLIENT_ISSUES)? as u32;
        let client_failures_per_hour = variables.whole_setting(vars::CLIENT_FAILURES)? as u32;
        let known_client_ms = variables.whole_setting(vars::KNOWN_CLIENT_DAYS)? * 86_400_000;

        let settings = Self {
            pepper,
            purposes,
            policies,
            code_length,
            code_ttl_ms,
            link_ttl_ms,
            max_attempts,
            cooldown_ms,
            max_per_hour,
            outbox_maxlen,
            outbox_shards,
            webhook,
            dev_echo,
            api_token,
            max_failures,
            lockout_ms,
            client_issues_per_hour,
            client_failures_per_hour,
            known_client_ms,
        };
        let odds = settings.monthly_odds();
        if odds > MAX_MONTHLY_ODDS {
            return Err(invalid(
                vars::MAX_FAILURES,
                format!(
                    "with {} and {}, an attacker's worst-case odds of guessing a code in 30 days \
                     are {odds:.4}, over the {MAX_MONTHLY_ODDS} allowed: lower it, raise the \
                     lockout or lengthen the code",
                    vars::LOCKOUT,
                    vars::CODE_LENGTH
                ),
            ));
        }
        Ok(settings)
    }

    /// Most wrong guesses one lane of one subject and purpose can take in `days` days: each
    /// run of `max_failures` ends in a lockout that doubles, up to a day. (Per-code attempts
    /// and the hourly cap only ever lower this.)
    pub fn worst_case_guesses(&self, days: u64) -> u64 {
        let horizon = days * 86_400_000;
        let (mut t, mut lock, mut guesses) = (0u64, self.lockout_ms, 0u64);
        while t < horizon {
            guesses += u64::from(self.max_failures);
            t += lock;
            lock = (lock * 2).min(MAX_LOCKOUT_MS);
        }
        guesses
    }

    /// The worst-case chance of guessing a digit code within 30 days (link tokens have 256 bits).
    pub fn monthly_odds(&self) -> f64 {
        let shortest = self
            .policies
            .iter()
            .filter(|p| p.issues_codes())
            .map(|p| p.length)
            .min()
            .unwrap_or(self.code_length);
        self.worst_case_guesses(30) as f64 / 10f64.powi(shortest as i32)
    }

    /// How long outbox entries are worth keeping: the longest any code lives.
    pub fn outbox_retention_ms(&self) -> u64 {
        self.policies
            .iter()
            .map(|p| p.code_ttl_ms.max(p.link_ttl_ms))
            .max()
            .unwrap_or(0)
            .max(self.code_ttl_ms.max(self.link_ttl_ms))
    }

    /// The policy of a purpose named in `otp_purposes`.
    pub fn policy(&self, purpose: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == purpose)
    }
}

fn parse_purposes(text: &str) -> Result<Vec<String>, ConfigError> {
    let purposes: Vec<String> =
        text.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
    if purposes.is_empty() || purposes.len() > 32 {
        return Err(invalid(vars::PURPOSES, "list 1 to 32 purposes, comma separated"));
    }
    for p in &purposes {
        if !is_purpose_name(p) {
            return Err(invalid(
                vars::PURPOSES,
                format!(
                    "{p:?} is not a purpose name: use 1-{MAX_PURPOSE_LEN} of a-z, 0-9, _ and -"
                ),
            ));
        }
    }
    Ok(purposes)
}

/// Purpose names go into Redis keys as they are, so only a small alphabet is allowed.
pub fn is_purpose_name(p: &str) -> bool {
    (1..=MAX_PURPOSE_LEN).contains(&p.len())
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(overrides: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut v: HashMap<&str, &str> = HashMap::from([
            (vars::PEPPER, "0123456789abcdef0123456789abcdef"),
            (vars::PURPOSES, "login, reset_password"),
            (vars::CODE_LENGTH, "6"),
            (vars::CODE_TTL, "300"),
            (vars::LINK_TTL, "900"),
            (vars::MAX_ATTEMPTS, "5"),
            (vars::COOLDOWN, "60"),
            (vars::MAX_PER_HOUR, "5"),
            (vars::OUTBOX_MAXLEN, "10000"),
            (vars::OUTBOX_SHARDS, "16"),
            (vars::WEBHOOK_URL, ""),
            (vars::WEBHOOK_ORIGIN, "https://otp-webhook.invalid"),
            (vars::WEBHOOK_TOKEN, ""),
            (vars::DEV_ECHO, "false"),
            (vars::API_TOKEN, ""),
            (vars::MAX_FAILURES, "10"),
            (vars::LOCKOUT, "900"),
            (vars::CLIENT_ISSUES, "10"),
            (vars::CLIENT_FAILURES, "30"),
            (vars::KNOWN_CLIENT_DAYS, "30"),
            (vars::POLICIES, r#"{"reset_password": {"format": "link"}}"#),
        ]);
        v.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|name| Ok(v[name].to_owned()));
        Settings::from_variables(&variables)
    }

    #[test]
    fn defaults_parse() {
        let c = config(&[]).unwrap();
        assert_eq!(c.purposes, ["login", "reset_password"]);
        assert_eq!((c.code_ttl_ms, c.link_ttl_ms, c.cooldown_ms), (300_000, 900_000, 60_000));
        assert_eq!(c.outbox_retention_ms(), 900_000);
        assert!(c.webhook.is_none() && !c.dev_echo);
    }

    #[test]
    fn empty_or_short_pepper_is_refused_without_echoing_it() {
        let e = config(&[(vars::PEPPER, "")]).unwrap_err();
        assert_eq!(e.variable, vars::PEPPER);
        assert!(e.message.contains("SPIN_VARIABLE_OTP_PEPPER"));
        let e = config(&[(vars::PEPPER, "short-secret")]).unwrap_err();
        assert!(!e.to_string().contains("short-secret"));
    }

    #[test]
    fn webhook_must_sit_under_its_origin() {
        let ok = config(&[
            (vars::WEBHOOK_URL, "https://mail.example.com:8443/hooks/otp"),
            (vars::WEBHOOK_ORIGIN, "https://mail.example.com:8443"),
        ])
        .unwrap();
        assert_eq!(ok.webhook.unwrap().url, "https://mail.example.com:8443/hooks/otp");
        // A loopback sidecar, IPv6 included (the hand splitter refused it), over plain http.
        for (url, origin) in [
            ("http://[::1]/hook", "http://[::1]"),
            ("http://[::1]:8025/hook?x=1", "http://[::1]:8025/"),
            ("http://127.0.0.1:8025/hook", "http://127.0.0.1:8025"),
            ("https://Mail.example.com/hook", "https://mail.example.com:443"),
        ] {
            let ok = config(&[(vars::WEBHOOK_URL, url), (vars::WEBHOOK_ORIGIN, origin)]);
            assert_eq!(ok.unwrap().webhook.unwrap().url, url);
        }
        for (url, origin, var) in [
            (
                "https://mail.example.com.evil.net/x",
                "https://mail.example.com",
                vars::WEBHOOK_ORIGIN,
            ),
            ("ftp://x/y", "ftp://x", vars::WEBHOOK_URL),
            ("https://user:pw@x/y", "https://x", vars::WEBHOOK_URL),
            ("https://x/y", "https://otp-webhook.invalid", vars::WEBHOOK_ORIGIN),
            ("http://x.example/y", "http://x.example", vars::WEBHOOK_URL),
            // Issue 27: what the hand splitter let through.
            ("https://x.example:99999/y", "https://x.example:99999", vars::WEBHOOK_URL),
            ("https://x.example:/y", "https://x.example:", vars::WEBHOOK_URL),
            ("https://x.example/y#frag", "https://x.example", vars::WEBHOOK_URL),
            ("https://x.example:8443/y", "https://x.example", vars::WEBHOOK_ORIGIN),
            ("https://x.example/y", "https://x.example/y", vars::WEBHOOK_ORIGIN),
        ] {
            let e =
                config(&[(vars::WEBHOOK_URL, url), (vars::WEBHOOK_ORIGIN, origin)]).unwrap_err();
            assert_eq!(e.variable, var, "{url}");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            (vars::PURPOSES, ""),
            (vars::PURPOSES, "Login"),
            (vars::PURPOSES, "a{b}"),
            (vars::CODE_LENGTH, "3"),
            (vars::CODE_LENGTH, "5"),
            (vars::API_TOKEN, "<random>"),
            (vars::MAX_FAILURES, "101"),
            (vars::LOCKOUT, "0"),
            (vars::CODE_TTL, "0"),
            (vars::MAX_ATTEMPTS, "x"),
            (vars::OUTBOX_SHARDS, "0"),
            (vars::DEV_ECHO, "maybe"),
        ] {
            assert_eq!(config(&[(name, value)]).unwrap_err().variable, name, "{name}={value}");
        }
    }

    #[test]
    fn defaults_bound_the_guessing_odds() {
        let c = config(&[]).unwrap();
        // 15 min, 30 min, 1 h, ... 16 h, then one lockout a day: 7 runs of 10 on day one.
        assert_eq!(c.worst_case_guesses(1), 70);
        assert_eq!(c.worst_case_guesses(30), 70 + 29 * 10);
        assert!(c.monthly_odds() < 4e-4, "{}", c.monthly_odds());
        // A schedule allowing more than 1 % in 30 days is refused, naming the variable.
        let e = config(&[(vars::MAX_FAILURES, "100"), (vars::LOCKOUT, "1")]).unwrap();
        assert!(e.monthly_odds() < MAX_MONTHLY_ODDS);
        let e =
            config(&[(vars::MAX_FAILURES, "100"), (vars::CODE_LENGTH, "6"), (vars::LOCKOUT, "1")]);
        assert!(e.is_ok());
    }

    #[test]
    fn plain_http_webhooks_are_refused_except_inside_the_app() {
        let e = config(&[
            (vars::WEBHOOK_URL, "http://mail.example.com/hook"),
            (vars::WEBHOOK_ORIGIN, "http://mail.example.com"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, vars::WEBHOOK_URL);
        assert!(config(&[
            (vars::WEBHOOK_URL, "http://mailer.spin.internal/hook"),
            (vars::WEBHOOK_ORIGIN, "http://mailer.spin.internal"),
        ])
        .is_ok());
    }
}
