//! The component's settings, from Spin variables.

use crate::platform::auth::MIN_TOKEN_LEN;
use crate::platform::settings::{ConfigError, Secret, Variables};

/// The Spin variables this component reads (besides the Redis ones).
pub mod vars {
    /// The bearer token of every route (empty: off).
    pub const API_TOKEN: &str = "locks_api_token";
    /// The longest lease a request may ask for.
    pub const MAX_TTL_MS: &str = "locks_max_ttl_ms";
    /// The longest wait an acquire may ask for.
    pub const MAX_WAIT_MS: &str = "locks_max_wait_ms";
}

/// The component's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bearer token for every route; empty switches the component off.
    pub api_token: Secret,
    /// Longest lease a request may ask for (acquire or renew).
    pub max_ttl_ms: u64,
    /// Longest `wait_ms` an acquire may ask for: an instance stays busy while it waits.
    pub max_wait_ms: u64,
}

impl Settings {
    /// Reads the component's Spin variables.
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_variables(&Variables::spin())
    }

    /// Reads any source of variables.
    pub fn from_variables(variables: &Variables) -> Result<Self, ConfigError> {
        Ok(Self {
            api_token: variables.secret(vars::API_TOKEN, MIN_TOKEN_LEN)?,
            max_ttl_ms: variables.whole_setting(vars::MAX_TTL_MS)?,
            max_wait_ms: variables.whole_setting(vars::MAX_WAIT_MS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_checks_every_variable() {
        let vars = |ttl: &'static str, token: &'static str| {
            Variables::from_fn(move |name| {
                Ok(match name {
                    vars::MAX_TTL_MS => ttl,
                    vars::MAX_WAIT_MS => "5000",
                    _ => token,
                }
                .to_owned())
            })
        };
        let s = Settings::from_variables(&vars("60000", "")).unwrap();
        assert_eq!((s.max_ttl_ms, s.max_wait_ms, s.api_token.is_empty()), (60_000, 5_000, true));
        assert_eq!(
            Settings::from_variables(&vars("0", "")).unwrap_err().variable,
            vars::MAX_TTL_MS
        );
        let err = Settings::from_variables(&vars("60000", "short")).unwrap_err();
        assert_eq!(err.variable, vars::API_TOKEN);
    }
}
