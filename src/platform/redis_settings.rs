//! Redis settings, read from Spin variables.
//!
//! The variables mirror the Azure App Service settings people already have (`REDIS_HOST`,
//! `REDIS_PORT`, `REDIS_SSL`, `REDIS_ACCESS_KEY`). The connection URL is built here, never
//! taken whole from configuration, so the TLS rule and the percent-encoding of the access key
//! (Azure keys are base64: `+`, `/`, `=`) cannot be skipped.

use std::net::IpAddr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::settings::{ConfigError, Secret, Variables};

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(variable, message)
}

/// Longest key prefix accepted; keys must stay short to keep Redis memory and CPU low.
const MAX_KEY_PREFIX_LEN: usize = 64;

/// Characters left as they are in the userinfo part of the URL: RFC 3986 "unreserved".
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where and how to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Host name or address (`redis_host`).
    pub host: String,
    /// Port (`redis_port`): 6379, or 6380 / 10000 for Azure's TLS endpoints.
    pub port: u16,
    /// `rediss://` (`redis_tls`); required for any host but loopback.
    pub tls: bool,
    /// ACL user (`redis_username`); empty for the default user.
    pub username: String,
    /// Password or access key (`redis_access_key`); percent-encoded into the URL here.
    pub access_key: Secret,
    /// Prefix of every key (`redis_key_prefix`, `srp:` by default): the HTTP components and
    /// the library share state only under the same prefix.
    pub key_prefix: String,
    /// How long a call may be pending before Redis counts as stuck ([`super::breaker`]).
    pub stall_ms: i64,
}

/// The Spin variable names, as the components' `[component.X.variables]` map them.
pub mod vars {
    pub const HOST: &str = "redis_host";
    pub const PORT: &str = "redis_port";
    pub const TLS: &str = "redis_tls";
    pub const ACCESS_KEY: &str = "redis_access_key";
    pub const USERNAME: &str = "redis_username";
    pub const ALLOW_INSECURE: &str = "redis_allow_insecure";
    pub const KEY_PREFIX: &str = "redis_key_prefix";
    pub const STALL_MS: &str = super::super::breaker::STALL_VARIABLE;
}

impl RedisSettings {
    /// Reads the settings from the component's Spin variables.
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_variables(&Variables::spin())
    }

    /// Reads any source of variables (a [`crate::Config`], say).
    pub fn from_variables(variables: &Variables) -> Result<Self, ConfigError> {
        let host = parse_host(&variables.text(vars::HOST)?)?;
        let port = variables.whole_setting(vars::PORT)? as u16;
        let tls = variables.flag(vars::TLS)?;
        let allow_insecure = variables.flag(vars::ALLOW_INSECURE)?;
        let key_prefix = parse_key_prefix(variables.text(vars::KEY_PREFIX)?)?;
        let username = variables.text(vars::USERNAME)?;
        let access_key = Secret::new(variables.text(vars::ACCESS_KEY)?);
        let stall_ms = variables.whole_setting(vars::STALL_MS)? as i64;

        if !tls && !allow_insecure && !is_loopback(&host) {
            return Err(invalid(
                vars::TLS,
                format!(
                    "Redis host {host:?} is not loopback, so it must be reached over TLS: set \
                     redis_tls=true (Azure: port 6380 or 10000). Set redis_allow_insecure=true \
                     only for a trusted private network."
                ),
            ));
        }
        Ok(Self { host, port, tls, username, access_key, key_prefix, stall_ms })
    }

    /// The URL handed to Spin's `redis::Connection::open`: scheme, credentials
    /// (percent-encoded), host and an explicit port (Spin refuses `rediss` without one).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let mut userinfo = String::new();
        if !self.username.is_empty() {
            userinfo.extend(utf8_percent_encode(&self.username, USERINFO));
        }
        if !self.access_key.is_empty() {
            userinfo.push(':');
            userinfo.extend(utf8_percent_encode(self.access_key.expose(), USERINFO));
        }
        if !userinfo.is_empty() {
            userinfo.push('@');
        }
        format!("{scheme}://{userinfo}{}:{}", self.host, self.port)
    }

    /// Removes the access key, raw or percent-encoded, from text bound for a log line.
    pub fn redact(&self, text: &str) -> String {
        let key = self.access_key.expose();
        if key.is_empty() {
            return text.to_owned();
        }
        let encoded = utf8_percent_encode(key, USERINFO).to_string();
        text.replace(&encoded, "***").replace(key, "***")
    }
}

fn parse_host(host: &str) -> Result<String, ConfigError> {
    if host.is_empty() {
        return Err(invalid(vars::HOST, "is empty"));
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(host.to_owned()),
            Err(_) => Err(invalid(vars::HOST, format!("{host:?} is not an IPv6 address"))),
        };
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(invalid(vars::HOST, format!("write IPv6 addresses in brackets: [{host}]")));
    }
    let valid = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(invalid(
            vars::HOST,
            format!("{host:?} is not a host name or IP address (give the name alone, without scheme, port or path)"),
        ));
    }
    Ok(host.to_ascii_lowercase())
}

fn parse_key_prefix(prefix: String) -> Result<String, ConfigError> {
    if prefix.len() > MAX_KEY_PREFIX_LEN {
        return Err(invalid(
            vars::KEY_PREFIX,
            format!("is longer than {MAX_KEY_PREFIX_LEN} bytes"),
        ));
    }
    // Braces would turn the prefix into the hash tag and put every key in one cluster slot.
    if prefix.bytes().any(|b| !b.is_ascii_graphic() || b == b'{' || b == b'}') {
        return Err(invalid(
            vars::KEY_PREFIX,
            "may contain only printable ASCII without spaces or braces",
        ));
    }
    Ok(prefix)
}

/// True for `localhost` and loopback IP addresses: the only hosts that may go without TLS.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(overrides: &[(&str, &str)]) -> Result<RedisSettings, ConfigError> {
        let mut vars: HashMap<&str, &str> = HashMap::from([
            (vars::HOST, "127.0.0.1"),
            (vars::PORT, "6379"),
            (vars::TLS, "false"),
            (vars::ACCESS_KEY, ""),
            (vars::USERNAME, ""),
            (vars::ALLOW_INSECURE, "false"),
            (vars::KEY_PREFIX, "srp:"),
            (vars::STALL_MS, "250"),
        ]);
        vars.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|name| Ok(vars[name].to_owned()));
        RedisSettings::from_variables(&variables)
    }

    #[test]
    fn local_plain_url() {
        assert_eq!(settings(&[]).unwrap().url(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn azure_key_is_percent_encoded() {
        let s = settings(&[
            (vars::HOST, "Contoso.redis.cache.windows.net"),
            (vars::PORT, "6380"),
            (vars::TLS, "true"),
            (vars::ACCESS_KEY, "ab+c/d=="),
        ])
        .unwrap();
        assert_eq!(s.url(), "rediss://:ab%2Bc%2Fd%3D%3D@contoso.redis.cache.windows.net:6380");
        assert_eq!(s.redact("x ab+c/d== y ab%2Bc%2Fd%3D%3D"), "x *** y ***");
        assert!(!format!("{s:?}").contains("ab+c"));
    }

    #[test]
    fn username_and_key() {
        let s = settings(&[(vars::USERNAME, "app user"), (vars::ACCESS_KEY, "p@ss:word")]).unwrap();
        assert_eq!(s.url(), "redis://app%20user:p%40ss%3Aword@127.0.0.1:6379");
    }

    #[test]
    fn remote_host_requires_tls_unless_allowed() {
        let err = settings(&[(vars::HOST, "cache.example.com")]).unwrap_err();
        assert_eq!(err.variable, vars::TLS);
        assert!(err.message.contains("must be reached over TLS"));
        assert!(
            settings(&[(vars::HOST, "cache.example.com"), (vars::ALLOW_INSECURE, "true")]).is_ok()
        );
        assert!(settings(&[(vars::HOST, "cache.example.com"), (vars::TLS, "true")]).is_ok());
        assert!(settings(&[(vars::HOST, "localhost")]).is_ok());
        assert!(settings(&[(vars::HOST, "127.0.0.2")]).is_ok());
        assert!(settings(&[(vars::HOST, "[::1]")]).is_ok());
    }

    #[test]
    fn rejects_bad_values() {
        for (name, value) in [
            (vars::HOST, ""),
            (vars::HOST, "redis://x"),
            (vars::HOST, "x:6379"),
            (vars::HOST, "::1"),
            (vars::PORT, "0"),
            (vars::PORT, "http"),
            (vars::TLS, "maybe"),
            (vars::KEY_PREFIX, "{tag}"),
            (vars::KEY_PREFIX, "a b"),
        ] {
            let err = settings(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value:?}");
        }
    }

    #[test]
    fn secret_value_never_in_errors() {
        let err =
            settings(&[(vars::HOST, "remote.example"), (vars::ACCESS_KEY, "hunter2")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
