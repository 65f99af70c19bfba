//! The OTP component's settings, read from Spin variables and checked before any code is
//! issued or verified. A mistake answers `500 otp_misconfigured` naming the variable (never
//! its value when it is secret), so a half-configured deployment never hands out codes.

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
}

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
pub struct OtpConfig {
    pub pepper: Secret,
    pub purposes: Vec<String>,
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
}

impl OtpConfig {
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
        let code_length = variables.whole(vars::CODE_LENGTH, 4..=10)? as usize;
        let code_ttl_ms = variables.whole(vars::CODE_TTL, 1..=86_400)? * 1000;
        let link_ttl_ms = variables.whole(vars::LINK_TTL, 1..=86_400)? * 1000;
        let max_attempts = variables.whole(vars::MAX_ATTEMPTS, 1..=20)? as u32;
        let cooldown_ms = variables.whole(vars::COOLDOWN, 0..=3600)? * 1000;
        let max_per_hour = variables.whole(vars::MAX_PER_HOUR, 1..=1000)? as u32;
        let outbox_maxlen = variables.whole(vars::OUTBOX_MAXLEN, 100..=10_000_000)?;
        let outbox_shards = variables.whole(vars::OUTBOX_SHARDS, 1..=1024)? as u32;

        let webhook = parse_webhook(
            &variables.text(vars::WEBHOOK_URL)?,
            &variables.text(vars::WEBHOOK_ORIGIN)?,
        )?
        .map(|url| -> Result<Webhook, ConfigError> {
            Ok(Webhook { url, token: Secret::new(variables.text(vars::WEBHOOK_TOKEN)?) })
        })
        .transpose()?;
        let dev_echo = variables.flag(vars::DEV_ECHO)?;

        Ok(Self {
            pepper,
            purposes,
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
        })
    }

    /// How long outbox entries are worth keeping: the longest any code lives.
    pub fn outbox_retention_ms(&self) -> u64 {
        self.code_ttl_ms.max(self.link_ttl_ms)
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

/// The webhook URL, when one is set. Spin only lets the component reach the origin named in
/// `otp_webhook_origin` (its `allowed_outbound_hosts` entry), so the URL must be under it.
fn parse_webhook(url: &str, origin: &str) -> Result<Option<String>, ConfigError> {
    if url.is_empty() {
        return Ok(None);
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(vars::WEBHOOK_URL, "must start with https:// or http://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || url.bytes().any(|b| !b.is_ascii_graphic())
    {
        return Err(invalid(
            vars::WEBHOOK_URL,
            "is not an http(s) URL with a host (and no credentials)",
        ));
    }
    let url_origin = &url[..url.len() - rest.len() + authority.len()];
    if !url_origin.eq_ignore_ascii_case(origin.trim_end_matches('/')) {
        return Err(invalid(
            vars::WEBHOOK_ORIGIN,
            format!(
                "must be the webhook URL's origin ({url_origin}), written the same way: it is the \
                 component's allowed_outbound_hosts entry"
            ),
        ));
    }
    Ok(Some(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(overrides: &[(&str, &str)]) -> Result<OtpConfig, ConfigError> {
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
        ]);
        v.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|name| Ok(v[name].to_owned()));
        OtpConfig::from_variables(&variables)
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
        for (url, origin, var) in [
            (
                "https://mail.example.com.evil.net/x",
                "https://mail.example.com",
                vars::WEBHOOK_ORIGIN,
            ),
            ("ftp://x/y", "ftp://x", vars::WEBHOOK_URL),
            ("https://user:pw@x/y", "https://x", vars::WEBHOOK_URL),
            ("https://x/y", "https://otp-webhook.invalid", vars::WEBHOOK_ORIGIN),
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
            (vars::CODE_TTL, "0"),
            (vars::MAX_ATTEMPTS, "x"),
            (vars::OUTBOX_SHARDS, "0"),
            (vars::DEV_ECHO, "maybe"),
        ] {
            assert_eq!(config(&[(name, value)]).unwrap_err().variable, name, "{name}={value}");
        }
    }
}
