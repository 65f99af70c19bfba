//! The component's Spin variables (besides the Redis ones), read through
//! `platform::settings::Variables` and checked before a request is served. The API and the
//! gateway read only what they use, so a gateway mistake never breaks the API and back.

use crate::platform::auth::MIN_TOKEN_LEN;
use crate::platform::outbound::Timeouts;
use crate::platform::settings::{ConfigError, Secret, Variables};

use super::client::{self, Cidr};
use super::policy::Policies;

pub(crate) mod vars {
    pub const POLICIES: &str = "ratelimit_policies";
    pub const ADMIN_TOKEN: &str = "ratelimit_admin_token";
    pub const API_TOKEN: &str = "ratelimit_api_token";
    pub const GATEWAY_POLICY: &str = "ratelimit_gateway_policy";
    pub const ADDRESS_POLICY: &str = "ratelimit_gateway_address_policy";
    pub const UPSTREAM: &str = "ratelimit_upstream";
    pub const API_KEY_HEADER: &str = "ratelimit_api_key_header";
    pub const API_KEY_DIGESTS: &str = "ratelimit_api_key_digests";
    pub const IDENTITY_SECRET: &str = "ratelimit_identity_secret";
    pub const TRUSTED_PROXIES: &str = "ratelimit_trusted_proxies";
    pub const IPV6_PREFIX: &str = "ratelimit_ipv6_prefix";
    pub const CONNECT_TIMEOUT: &str = "ratelimit_upstream_connect_timeout_ms";
    pub const FIRST_BYTE_TIMEOUT: &str = "ratelimit_upstream_first_byte_timeout_ms";
    pub const BETWEEN_BYTES_TIMEOUT: &str = "ratelimit_upstream_between_bytes_timeout_ms";
    pub const DEADLINE: &str = "ratelimit_upstream_deadline_ms";
}

pub(crate) fn policies(variables: &Variables) -> Result<Policies, ConfigError> {
    Policies::parse(&variables.text(vars::POLICIES)?)
        .map_err(|e| ConfigError::new(vars::POLICIES, e))
}

/// What the decision API needs.
pub(crate) struct ApiSettings {
    pub policies: Policies,
    /// Guards the public route; empty keeps the API private (service chaining only).
    pub api_token: Secret,
    pub admin_token: Secret,
}

impl ApiSettings {
    pub fn from_variables(v: &Variables) -> Result<Self, ConfigError> {
        Ok(Self {
            policies: policies(v)?,
            api_token: v.secret(vars::API_TOKEN, MIN_TOKEN_LEN)?,
            admin_token: v.secret(vars::ADMIN_TOKEN, MIN_TOKEN_LEN)?,
        })
    }
}

/// What the gateway needs.
pub(crate) struct GatewaySettings {
    /// Every configured policy (the gateway's limiter is built on them).
    pub policies: Policies,
    /// The policy applied to the caller's identity: a known API key, else the address.
    pub policy: String,
    /// The policy applied to the caller's address in addition (the gateway policy when not
    /// set).
    pub address_policy: String,
    pub upstream: String,
    pub api_key_header: String,
    /// Lowercase hex SHA-256 of every API key that counts as an identity.
    pub api_key_digests: Vec<String>,
    /// HMAC key under which a known API key is stored in Redis.
    pub identity_secret: Secret,
    pub trusted_proxies: Vec<Cidr>,
    pub ipv6_prefix: u8,
    pub timeouts: Timeouts,
}

impl GatewaySettings {
    pub fn from_variables(v: &Variables) -> Result<Self, ConfigError> {
        let policies = policies(v)?;
        let named = |var: &'static str, name: String| match policies.get(&name) {
            Some(_) => Ok(name),
            None => Err(ConfigError::new(
                var,
                format!("names {name:?}, which is not a configured policy"),
            )),
        };
        let policy = named(vars::GATEWAY_POLICY, v.text(vars::GATEWAY_POLICY)?)?;
        let address_name = v.text(vars::ADDRESS_POLICY)?;
        let address_policy = if address_name.is_empty() {
            policy.clone()
        } else {
            named(vars::ADDRESS_POLICY, address_name)?
        };
        let api_key_digests = parse_digests(&v.text(vars::API_KEY_DIGESTS)?)
            .map_err(|e| ConfigError::new(vars::API_KEY_DIGESTS, e))?;
        let identity_secret = v.secret(vars::IDENTITY_SECRET, MIN_TOKEN_LEN)?;
        if !api_key_digests.is_empty() && identity_secret.is_empty() {
            return Err(ConfigError::new(
                vars::IDENTITY_SECRET,
                format!(
                    "is required (32+ random characters) when {} is set",
                    vars::API_KEY_DIGESTS
                ),
            ));
        }
        let trusted_proxies = client::parse_trusted(&v.text(vars::TRUSTED_PROXIES)?)
            .map_err(|e| ConfigError::new(vars::TRUSTED_PROXIES, e))?;
        let ms = |name| v.whole_setting(name);
        Ok(Self {
            policies,
            policy,
            address_policy,
            upstream: v.http_origin(vars::UPSTREAM)?,
            api_key_header: v.text(vars::API_KEY_HEADER)?.trim().to_ascii_lowercase(),
            api_key_digests,
            identity_secret,
            trusted_proxies,
            ipv6_prefix: v.whole_setting(vars::IPV6_PREFIX)? as u8,
            timeouts: Timeouts {
                connect_ms: ms(vars::CONNECT_TIMEOUT)?,
                first_byte_ms: ms(vars::FIRST_BYTE_TIMEOUT)?,
                between_bytes_ms: ms(vars::BETWEEN_BYTES_TIMEOUT)?,
                deadline_ms: ms(vars::DEADLINE)?,
            },
        })
    }
}

/// `ratelimit_api_key_digests`: SHA-256 digests in hex (`printf %s "$KEY" | sha256sum`),
/// comma or space separated.
fn parse_digests(list: &str) -> Result<Vec<String>, String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| s.to_ascii_lowercase())
                .ok_or_else(|| "every entry must be a SHA-256 digest in hex (64 characters)".into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(extra: &[(&'static str, &'static str)]) -> Result<GatewaySettings, ConfigError> {
        let extra = extra.to_vec();
        let v = Variables::from_fn(move |name| {
            if let Some((_, value)) = extra.iter().find(|(n, _)| *n == name) {
                return Ok((*value).to_owned());
            }
            Ok(match name {
                vars::POLICIES => {
                    r#"{"api": {"algorithm": "fixed_window", "limit": 5, "window": "1s"}}"#
                }
                vars::GATEWAY_POLICY => "api",
                vars::UPSTREAM => "http://origin.spin.internal",
                vars::API_KEY_HEADER => "X-Api-Key",
                vars::IPV6_PREFIX => "64",
                _ if name.ends_with("_ms") => "1000",
                _ => "",
            }
            .to_owned())
        });
        GatewaySettings::from_variables(&v)
    }

    #[test]
    fn gateway_defaults_and_mistakes() {
        let s = gateway(&[]).unwrap();
        assert_eq!((s.api_key_header.as_str(), s.address_policy.as_str()), ("x-api-key", "api"));
        let digest = "ab".repeat(32);
        let leaked: &'static str = Box::leak(digest.into_boxed_str());
        let e = gateway(&[(vars::API_KEY_DIGESTS, leaked)]).err().unwrap();
        assert_eq!(e.variable, vars::IDENTITY_SECRET);
        assert_eq!(
            gateway(&[(vars::API_KEY_DIGESTS, "abc")]).err().unwrap().variable,
            vars::API_KEY_DIGESTS
        );
        assert_eq!(
            gateway(&[(vars::ADDRESS_POLICY, "nope")]).err().unwrap().variable,
            vars::ADDRESS_POLICY
        );
        assert_eq!(
            gateway(&[(vars::IPV6_PREFIX, "129")]).err().unwrap().variable,
            vars::IPV6_PREFIX
        );
    }
}
