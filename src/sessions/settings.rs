//! The component's settings, from Spin variables.

use crate::platform::auth::MIN_TOKEN_LEN;
use crate::platform::settings::{ConfigError, Secret, Variables};
use crate::platform::url::HttpUrl;

use super::cookie::{CookieSettings, SameSite};

/// The Spin variables this component reads (besides the Redis ones).
pub mod vars {
    pub const IDLE_TIMEOUT: &str = "sessions_idle_timeout";
    pub const ABSOLUTE_TIMEOUT: &str = "sessions_absolute_timeout";
    pub const SLIDE_THRESHOLD_PERCENT: &str = "sessions_slide_threshold_percent";
    pub const MAX_DATA_BYTES: &str = "sessions_max_data_bytes";
    pub const MAX_PER_USER: &str = "sessions_max_per_user";
    pub const API_TOKEN: &str = "sessions_api_token";
    pub const COOKIE_NAME: &str = "sessions_cookie_name";
    pub const COOKIE_SECURE: &str = "sessions_cookie_secure";
    pub const COOKIE_SAME_SITE: &str = "sessions_cookie_same_site";
    pub const COOKIE_DOMAIN: &str = "sessions_cookie_domain";
    pub const COOKIE_PATH: &str = "sessions_cookie_path";
    pub const ROTATION_GRACE: &str = "sessions_rotation_grace_seconds";
    pub const ACCEPT_SAME_SITE: &str = "sessions_accept_same_site";
    pub const PUBLIC_ORIGIN: &str = "sessions_public_origin";
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub idle_ms: i64,
    pub absolute_ms: i64,
    /// With the fast path on, a read slides the idle deadline (through outbound Redis) only
    /// once less than this is left of it; until then it is answered from the pooled store,
    /// without connecting and without moving the deadline. The price is precision: a session
    /// may end up to `idle - threshold` earlier than "last use + idle" (with the default 50%,
    /// between half and all of the idle timeout after its last use: for 1800 s, the 15-30
    /// minutes OWASP suggests for low-risk apps). The gain: an active session costs at most
    /// one outbound connection per `idle - threshold` of use instead of one per read. 100%
    /// slides on every read, exactly as with the fast path off.
    pub slide_threshold_ms: i64,
    pub max_data_bytes: usize,
    pub max_per_user: u32,
    /// Bearer token the app's backend presents to create sessions; empty disables creation.
    pub api_token: Secret,
    pub cookie: CookieSettings,
    /// How long a rotated-away id still reaches its session (requests already in flight).
    pub rotation_grace_ms: i64,
    /// Whether cookie-carried writes that a browser marks `Sec-Fetch-Site: same-site` (from a
    /// sibling subdomain) are accepted. Off: only same-origin writes are.
    pub accept_same_site: bool,
    /// The origin browsers reach the app at, when it differs from what Spin reports (a proxy
    /// that terminates TLS makes Spin's URL `http://`); `None`: Spin's `spin-full-url`.
    pub public_origin: Option<HttpUrl>,
}

impl Settings {
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_variables(&Variables::spin())
    }

    pub fn from_variables(variables: &Variables) -> Result<Self, ConfigError> {
        let idle = variables.whole_setting(vars::IDLE_TIMEOUT)?;
        let absolute = variables.whole_setting(vars::ABSOLUTE_TIMEOUT)?;
        // 0 would mean reads never slide: an active reader would be logged out.
        let slide_percent = variables.whole_setting(vars::SLIDE_THRESHOLD_PERCENT)? as i64;
        let max_data_bytes = variables.whole_setting(vars::MAX_DATA_BYTES)? as usize;
        let max_per_user = variables.whole_setting(vars::MAX_PER_USER)? as u32;

        let same_site_text = variables.text(vars::COOKIE_SAME_SITE)?;
        let same_site = SameSite::parse(&same_site_text).ok_or_else(|| {
            ConfigError::new(
                vars::COOKIE_SAME_SITE,
                format!("{same_site_text:?} is not Strict, Lax or None"),
            )
        })?;
        let domain = variables.text(vars::COOKIE_DOMAIN)?;
        let cookie = CookieSettings {
            name: variables.text(vars::COOKIE_NAME)?,
            secure: variables.flag(vars::COOKIE_SECURE)?,
            same_site,
            domain: (!domain.is_empty()).then_some(domain),
            path: variables.text(vars::COOKIE_PATH)?,
        };
        cookie.validate().map_err(|e| ConfigError::new(vars::COOKIE_NAME, e))?;
        let public_origin = match variables.text(vars::PUBLIC_ORIGIN)?.as_str() {
            "" => None,
            _ => Some(
                HttpUrl::parse(&variables.http_origin(vars::PUBLIC_ORIGIN)?)
                    .map_err(|e| ConfigError::new(vars::PUBLIC_ORIGIN, e.0))?,
            ),
        };

        Ok(Self {
            idle_ms: idle as i64 * 1000,
            absolute_ms: absolute as i64 * 1000,
            // idle s x 1000 ms x percent / 100.
            slide_threshold_ms: idle as i64 * 10 * slide_percent,
            max_data_bytes,
            max_per_user,
            api_token: variables.secret(vars::API_TOKEN, MIN_TOKEN_LEN)?,
            cookie,
            rotation_grace_ms: variables.whole_setting(vars::ROTATION_GRACE)? as i64 * 1000,
            accept_same_site: variables.flag(vars::ACCEPT_SAME_SITE)?,
            public_origin,
        })
    }
}
