//! The library's one error type. Every pattern returns [`Error`]; its [`Error::status`] and
//! [`Error::code`] are what the HTTP components answer for the same failure, so a handler
//! can turn one into a response without a table of its own.

use std::fmt;
use std::time::Duration;

use crate::platform::redis::RedisError;
use crate::platform::settings::ConfigError;
use crate::platform::ApiError;

/// Why a pattern could not do what was asked.
///
/// ```
/// use spin_redis_patterns::Error;
///
/// let e = Error::Refused {
///     status: 429,
///     code: "resend_cooldown",
///     message: "a code was sent moments ago".into(),
///     retry_after_ms: 1500,
/// };
/// assert_eq!((e.status(), e.code()), (429, "resend_cooldown"));
/// assert_eq!(e.retry_after().unwrap().as_secs(), 2); // rounded up to whole seconds
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or invalid: names the variable, never a secret's value. 500.
    Config(ConfigError),
    /// Redis failed: unavailable (503, worth a retry) or a mistake such as a wrong password
    /// or a script error (500).
    Redis(RedisError),
    /// The caller's input is not acceptable: a malformed key, an unknown policy, purpose or
    /// board, data the caller may not change. A 4xx as `status` says (400, 403, 404, 409 or
    /// 422).
    Invalid {
        /// The HTTP status the components answer with.
        status: u16,
        /// A stable snake_case code (`invalid_key`, `unknown_policy`, ...).
        code: &'static str,
        /// A message for people.
        message: String,
    },
    /// Refused for now: an OTP cooldown, an hourly cap, a lockout (429), a full outbox (503).
    Refused {
        /// The HTTP status the components answer with.
        status: u16,
        /// A stable snake_case code (`resend_cooldown`, `hourly_limit`, ...).
        code: &'static str,
        /// A message for people.
        message: String,
        /// How long until asking again can work.
        retry_after_ms: u64,
    },
    /// A lease is held by someone else, or the caller is no longer its holder. 409.
    Conflict {
        /// `lock_held` or `not_holder`.
        code: &'static str,
        /// A message for people.
        message: String,
        /// How long the other holder's lease still runs, when known.
        retry_after_ms: Option<u64>,
    },
    /// Something outside Redis failed: a cache fill's fetch, an OTP delivery. 502, or 504
    /// when it may have worked.
    Upstream {
        /// The HTTP status the components answer with.
        status: u16,
        /// A stable snake_case code (`fetch_failed`, `delivery_failed`, ...).
        code: &'static str,
        /// A message for people.
        message: String,
        /// When trying again makes sense, if the failure says.
        retry_after_ms: Option<u64>,
    },
}

impl Error {
    /// The HTTP status the components answer with for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Config(_) => 500,
            Self::Redis(RedisError::Unavailable(_)) => 503,
            Self::Redis(_) => 500,
            Self::Invalid { status, .. }
            | Self::Refused { status, .. }
            | Self::Upstream { status, .. } => *status,
            Self::Conflict { .. } => 409,
        }
    }

    /// A stable snake_case code for programs, as in the components' problem bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "misconfigured",
            Self::Redis(RedisError::Unavailable(_)) => "redis_unavailable",
            Self::Redis(RedisError::AuthFailed(_) | RedisError::NotAllowed) => {
                "redis_misconfigured"
            }
            Self::Redis(RedisError::Config(_)) => "misconfigured",
            Self::Redis(_) => "redis_error",
            Self::Invalid { code, .. }
            | Self::Refused { code, .. }
            | Self::Conflict { code, .. }
            | Self::Upstream { code, .. } => code,
        }
    }

    /// How long to wait before trying again, in whole seconds rounded up (a `Retry-After`),
    /// when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        let ms = match self {
            Self::Redis(RedisError::Unavailable(_)) => Some(1000),
            Self::Refused { retry_after_ms, .. } => Some(*retry_after_ms),
            Self::Conflict { retry_after_ms, .. } | Self::Upstream { retry_after_ms, .. } => {
                *retry_after_ms
            }
            _ => None,
        }?;
        Some(Duration::from_secs(ms.div_ceil(1000).max(1)))
    }

    pub(crate) fn invalid(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { status, code, message: message.into() }
    }

    /// A component's validation answer as a library error (the validators are shared).
    pub(crate) fn from_api(e: ApiError) -> Self {
        let retry = e
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| v.parse::<u64>().ok());
        match (e.status, retry) {
            (429 | 503, Some(secs)) => Self::Refused {
                status: e.status,
                code: e.code,
                message: e.message,
                retry_after_ms: secs * 1000,
            },
            (500.., _) => Self::Upstream {
                status: e.status,
                code: e.code,
                message: e.message,
                retry_after_ms: retry.map(|s| s * 1000),
            },
            _ => Self::Invalid { status: e.status, code: e.code, message: e.message },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "misconfigured: {e}"),
            Self::Redis(e) => e.fmt(f),
            Self::Invalid { code, message, .. }
            | Self::Refused { code, message, .. }
            | Self::Conflict { code, message, .. }
            | Self::Upstream { code, message, .. } => write!(f, "{code}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<RedisError> for Error {
    fn from(e: RedisError) -> Self {
        match e {
            RedisError::Config(c) => Self::Config(c),
            e => Self::Redis(e),
        }
    }
}

/// The components answer library errors as they answer their own: same status, code and
/// `Retry-After`; configuration and Redis failures are logged on the way.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let retry = e.retry_after();
        let api = match e {
            Error::Config(c) => return c.into(),
            Error::Redis(r) => return r.into(),
            Error::Invalid { status, code, message }
            | Error::Refused { status, code, message, .. }
            | Error::Upstream { status, code, message, .. } => ApiError::new(status, code, message),
            Error::Conflict { code, message, .. } => ApiError::new(409, code, message),
        };
        match retry {
            Some(d) => api.with_header("retry-after", d.as_secs().to_string()),
            None => api,
        }
    }
}
