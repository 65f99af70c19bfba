//! The component's settings, from Spin variables.

use crate::config::Secret;
use crate::error::ApiError;

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
}

/// Longest idle or absolute timeout accepted: 30 days.
const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

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
}

fn misconfigured(variable: &str, message: impl std::fmt::Display) -> ApiError {
    let message = format!("variable `{variable}`: {message}");
    eprintln!("sessions misconfigured: {message}");
    ApiError::new(500, "sessions_misconfigured", message)
}

impl Settings {
    pub fn from_spin_variables() -> Result<Self, ApiError> {
        Self::from_lookup(|name| spin_sdk::variables::get(name).map_err(|e| e.to_string()))
    }

    /// Builds settings from any variable lookup (Spin's, or a map in unit tests).
    pub fn from_lookup(
        get: impl Fn(&'static str) -> Result<String, String>,
    ) -> Result<Self, ApiError> {
        let read = |name: &'static str| {
            get(name).map_err(|e| misconfigured(name, format!("cannot be read: {e}")))
        };
        let number = |name: &'static str, min: u64, max: u64| -> Result<u64, ApiError> {
            let text = read(name)?;
            match text.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(misconfigured(
                    name,
                    format!("{text:?} is not a whole number from {min} to {max}"),
                )),
            }
        };
        let idle = number(vars::IDLE_TIMEOUT, 1, MAX_TIMEOUT_SECS)?;
        let absolute = number(vars::ABSOLUTE_TIMEOUT, 1, MAX_TIMEOUT_SECS)?;
        // 0 would mean reads never slide: an active reader would be logged out.
        let slide_percent = number(vars::SLIDE_THRESHOLD_PERCENT, 1, 100)? as i64;
        let max_data_bytes = number(vars::MAX_DATA_BYTES, 0, 1024 * 1024)? as usize;
        let max_per_user = number(vars::MAX_PER_USER, 1, 1000)? as u32;

        let secure = match read(vars::COOKIE_SECURE)?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => {
                return Err(misconfigured(
                    vars::COOKIE_SECURE,
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        let same_site_text = read(vars::COOKIE_SAME_SITE)?;
        let same_site = SameSite::parse(&same_site_text).ok_or_else(|| {
            misconfigured(
                vars::COOKIE_SAME_SITE,
                format!("{same_site_text:?} is not Strict, Lax or None"),
            )
        })?;
        let domain = read(vars::COOKIE_DOMAIN)?.trim().to_owned();
        let cookie = CookieSettings {
            name: read(vars::COOKIE_NAME)?.trim().to_owned(),
            secure,
            same_site,
            domain: (!domain.is_empty()).then_some(domain),
            path: read(vars::COOKIE_PATH)?.trim().to_owned(),
        };
        cookie.validate().map_err(|e| misconfigured("sessions_cookie_*", e))?;

        Ok(Self {
            idle_ms: idle as i64 * 1000,
            absolute_ms: absolute as i64 * 1000,
            // idle s x 1000 ms x percent / 100.
            slide_threshold_ms: idle as i64 * 10 * slide_percent,
            max_data_bytes,
            max_per_user,
            api_token: Secret::new(read(vars::API_TOKEN)?.trim()),
            cookie,
        })
    }
}
