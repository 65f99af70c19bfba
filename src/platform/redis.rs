//! The one way components talk to Redis.
//!
//! Under Spin every `Connection::open` is a new TCP (and, for `rediss://`, TLS) connection
//! with AUTH: nothing is pooled across requests. So a [`Redis`] opens its connection lazily,
//! on the first command, and at most once per request. Multi-step logic runs as a Lua
//! [`Script`]: one round trip, atomic, and tried as `EVALSHA` before falling back to `EVAL`.
//!
//! Spin flattens every reply into a list of `nil | status | int64 | binary` (nested arrays
//! included): [`Reply`] gives typed, bounds-checked access to that list.

use std::cell::{OnceCell, RefCell};
use std::fmt;

use spin_sdk::redis::{Connection, Error as SpinError, RedisParameter, RedisResult};

use super::breaker::{self, Breaker};
use super::entra::{self, Credentials};
use super::redis_settings::{redact_secret, RedisSettings};
use super::script::Script;
use super::settings::ConfigError;

/// Why a Redis operation failed. Messages are safe to log: the access key is redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// The settings are wrong; nothing was attempted.
    Config(ConfigError),
    /// Spin refused the address: not in `allowed_outbound_hosts`, or unparsable.
    NotAllowed,
    /// Redis answered AUTH with an error: wrong password or user.
    AuthFailed(String),
    /// Redis could not be reached or the connection broke.
    Unavailable(String),
    /// Redis answered a command with an error reply (script error, OOM, READONLY, ...).
    Reply(String),
    /// Redis answered, but not in the shape the code expects: a bug on our side.
    UnexpectedReply(String),
}

impl RedisError {
    /// A short machine-readable reason, used in health reports and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Config(_) => "misconfigured",
            Self::NotAllowed => "not_allowed",
            Self::AuthFailed(_) => "auth_failed",
            Self::Unavailable(_) => "unreachable",
            Self::Reply(_) => "error_reply",
            Self::UnexpectedReply(_) => "unexpected_reply",
        }
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "Redis is misconfigured: {e}"),
            Self::NotAllowed => f.write_str(
                "the Redis address is not permitted by the component's allowed_outbound_hosts",
            ),
            Self::AuthFailed(m) => write!(f, "Redis rejected the credentials: {m}"),
            Self::Unavailable(m) => write!(f, "Redis is unavailable: {m}"),
            Self::Reply(m) => write!(f, "Redis returned an error: {m}"),
            Self::UnexpectedReply(m) => write!(f, "unexpected Redis reply: {m}"),
        }
    }
}

impl std::error::Error for RedisError {}

impl From<ConfigError> for RedisError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Spin passes Redis error replies on as `other(message)`, as it does connection failures.
/// Its client (redis-rs) renders every error reply as
/// `An error was signalled by the server - <Kind>: <text>`; raw codes are checked too.
fn is_error_reply(message: &str) -> bool {
    const CODES: [&str; 10] = [
        "ERR",
        "WRONGTYPE",
        "NOSCRIPT",
        "BUSY",
        "READONLY",
        "LOADING",
        "OOM",
        "NOPERM",
        "CROSSSLOT",
        "EXECABORT",
    ];
    message.contains("signalled by the server")
        // redis-rs 0.32 renders a reply as `WRONGTYPE: Operation against ...`: the code ends
        // in a colon.
        || CODES.iter().any(|c| {
            message.split_whitespace().next().map(|w| w.trim_end_matches(':')) == Some(c)
        })
}

/// Error replies of a Redis that is failing over, starting or overloaded: the server is not
/// usable right now (503), which is not our bug or the operator's (500).
fn is_transient_reply(message: &str) -> bool {
    // Raw codes, and redis-rs's names for them (`An error was signalled by the server -
    // ReadOnly: ...`).
    const TRANSIENT: [&str; 12] = [
        "READONLY",
        "ReadOnly",
        "LOADING",
        "BusyLoadingError",
        "BUSY",
        "MASTERDOWN",
        "MasterDown",
        "TRYAGAIN",
        "TryAgain",
        "CLUSTERDOWN",
        "ClusterDown",
        "OOM",
    ];
    message.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| TRANSIENT.contains(&word))
}

/// What a failure Spin passed on as text means, for outbound Redis and the key-value store
/// alike: credentials refused (500), an error reply that is not transient (a script error, a
/// key of another type: 500), or Redis being unavailable (503, or the caller's fallback).
pub(crate) fn classify_failure(message: String) -> RedisError {
    if is_auth_failure(&message) {
        RedisError::AuthFailed(message)
    } else if is_error_reply(&message) && !is_transient_reply(&message) {
        RedisError::Reply(message)
    } else {
        RedisError::Unavailable(message)
    }
}

/// `EVALSHA` of a script Redis does not hold; redis-rs says `NoScriptError`.
fn is_noscript(message: &str) -> bool {
    message.contains("NoScriptError") || message.contains("NOSCRIPT")
}

/// redis-rs says `AuthenticationFailed`; the raw replies are `WRONGPASS` and `NOAUTH`.
fn is_auth_failure(message: &str) -> bool {
    ["AuthenticationFailed", "WRONGPASS", "NOAUTH"].iter().any(|m| message.contains(m))
}

/// Something that can be a Redis command argument.
pub trait ToArg {
    /// The argument as Spin's Redis interface takes it.
    fn to_arg(&self) -> RedisParameter;
}

impl ToArg for str {
    fn to_arg(&self) -> RedisParameter {
        RedisParameter::Binary(self.as_bytes().to_vec())
    }
}
impl ToArg for String {
    fn to_arg(&self) -> RedisParameter {
        self.as_str().to_arg()
    }
}
impl ToArg for [u8] {
    fn to_arg(&self) -> RedisParameter {
        RedisParameter::Binary(self.to_vec())
    }
}
impl ToArg for Vec<u8> {
    fn to_arg(&self) -> RedisParameter {
        self.as_slice().to_arg()
    }
}
impl ToArg for i64 {
    fn to_arg(&self) -> RedisParameter {
        RedisParameter::Int64(*self)
    }
}
impl ToArg for u64 {
    fn to_arg(&self) -> RedisParameter {
        // Redis integers are signed 64-bit; larger values travel as decimal text.
        match i64::try_from(*self) {
            Ok(v) => RedisParameter::Int64(v),
            Err(_) => RedisParameter::Binary(self.to_string().into_bytes()),
        }
    }
}
impl ToArg for u32 {
    fn to_arg(&self) -> RedisParameter {
        RedisParameter::Int64(i64::from(*self))
    }
}
impl ToArg for f64 {
    fn to_arg(&self) -> RedisParameter {
        RedisParameter::Binary(self.to_string().into_bytes())
    }
}
impl<T: ToArg + ?Sized> ToArg for &T {
    fn to_arg(&self) -> RedisParameter {
        (**self).to_arg()
    }
}

/// Builds a `Vec<RedisParameter>` from mixed values: `args!["key", 30_i64, payload]`.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::platform::redis::ToArg::to_arg(&$value)),*]
    };
}

/// A flattened Redis reply with typed, bounds-checked accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub Vec<RedisResult>);

impl Reply {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn at(&self, i: usize) -> Result<&RedisResult, RedisError> {
        self.0.get(i).ok_or_else(|| {
            RedisError::UnexpectedReply(format!(
                "reply has {} values, wanted index {i}",
                self.0.len()
            ))
        })
    }

    /// An integer, also accepted as decimal text (a Lua string or a `GET` of a counter).
    pub fn int(&self, i: usize) -> Result<i64, RedisError> {
        match self.at(i)? {
            RedisResult::Int64(v) => Ok(*v),
            RedisResult::Binary(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| RedisError::UnexpectedReply(format!("value {i} is not an integer"))),
            RedisResult::Status(s) => s
                .parse()
                .map_err(|_| RedisError::UnexpectedReply(format!("value {i} is not an integer"))),
            RedisResult::Nil => Err(RedisError::UnexpectedReply(format!("value {i} is nil"))),
        }
    }

    /// Bytes, or `None` for nil (a missing key, or a Lua `false`).
    pub fn opt_bytes(&self, i: usize) -> Result<Option<&[u8]>, RedisError> {
        match self.at(i)? {
            RedisResult::Nil => Ok(None),
            RedisResult::Binary(b) => Ok(Some(b)),
            RedisResult::Status(s) => Ok(Some(s.as_bytes())),
            RedisResult::Int64(_) => {
                Err(RedisError::UnexpectedReply(format!("value {i} is an integer, not bytes")))
            }
        }
    }

    pub fn bytes(&self, i: usize) -> Result<&[u8], RedisError> {
        self.opt_bytes(i)?.ok_or_else(|| RedisError::UnexpectedReply(format!("value {i} is nil")))
    }

    pub fn string(&self, i: usize) -> Result<&str, RedisError> {
        std::str::from_utf8(self.bytes(i)?)
            .map_err(|_| RedisError::UnexpectedReply(format!("value {i} is not UTF-8")))
    }

    pub fn is_nil(&self, i: usize) -> Result<bool, RedisError> {
        Ok(matches!(self.at(i)?, RedisResult::Nil))
    }
}

/// Redis for one request: settings plus a connection opened on first use, every call
/// behind the [`breaker`] so that a Redis that stopped answering is not called again.
pub struct Redis {
    settings: RedisSettings,
    connection: OnceCell<Connection>,
    breaker: OnceCell<Option<Breaker>>,
    /// With Entra ID: the credentials this request connects with.
    entra: RefCell<Option<Credentials>>,
}

impl Redis {
    /// Redis at these settings (given in code); connects later, if ever.
    pub fn new(settings: RedisSettings) -> Self {
        Self {
            settings,
            connection: OnceCell::new(),
            breaker: OnceCell::new(),
            entra: RefCell::new(None),
        }
    }

    /// Reads the settings from the component's Spin variables; connects later, if ever.
    pub fn from_spin_variables() -> Result<Self, RedisError> {
        Ok(Self::new(RedisSettings::from_spin_variables()?))
    }

    /// Reads the settings from a [`crate::Config`] (code, Spin variables, defaults); connects
    /// later, if ever.
    pub fn from_config(config: &crate::Config) -> Result<Self, crate::Error> {
        Ok(Self::new(RedisSettings::from_variables(&config.variables())?))
    }

    /// The settings it connects with.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Builds a key under the configured prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.settings.key_prefix)
    }

    /// True once a command has opened the connection.
    pub fn is_connected(&self) -> bool {
        self.connection.get().is_some()
    }

    /// The breaker's state, read once per request on the first call.
    fn breaker(&self) -> Option<&Breaker> {
        self.breaker.get_or_init(|| Breaker::open_with(self.settings.stall_ms)).as_ref()
    }

    /// Runs one call on the connection (opened on first use) behind the breaker: refused at
    /// once while Redis is stuck, registered as pending while it runs.
    fn call<T>(
        &self,
        call: impl FnOnce(&Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let Some(breaker) = self.breaker() else {
            return call(self.connection_unguarded()?);
        };
        let url = self.address()?;
        if let Some(refused) = breaker.refuse_outbound(&url) {
            return Err(refused);
        }
        breaker.guard(breaker::OUTBOUND, || call(self.connection_unguarded()?))
    }

    fn connection_unguarded(&self) -> Result<&Connection, RedisError> {
        if let Some(conn) = self.connection.get() {
            return Ok(conn);
        }
        let conn = match Connection::open(&self.address()?) {
            Ok(conn) => conn,
            Err(e) => match (self.open_error(e), &self.settings.entra) {
                // A cached token Redis no longer takes (expired or revoked early): once more
                // with a fresh one.
                (RedisError::AuthFailed(_), Some(settings)) if self.cached_token() => {
                    *self.entra.borrow_mut() = Some(entra::refresh(settings)?);
                    Connection::open(&self.address()?).map_err(|e| self.open_error(e))?
                }
                (e, _) => return Err(e),
            },
        };
        Ok(self.connection.get_or_init(|| conn))
    }

    /// The URL to open: with the access key, or with Entra ID credentials (the cached token,
    /// or a fresh one).
    fn address(&self) -> Result<String, RedisError> {
        let Some(settings) = &self.settings.entra else { return Ok(self.settings.url()) };
        let mut current = self.entra.borrow_mut();
        if current.is_none() {
            *current = Some(entra::credentials(settings)?);
        }
        let credentials = current.as_ref().expect("set above");
        Ok(self.settings.url_with(&credentials.user, credentials.token.expose()))
    }

    fn cached_token(&self) -> bool {
        self.entra.borrow().as_ref().is_some_and(|c| c.cached)
    }

    /// Removes the access key and any Entra token from text bound for a log line.
    fn redact(&self, text: &str) -> String {
        let text = self.settings.redact(text);
        match self.entra.borrow().as_ref() {
            Some(credentials) => redact_secret(&text, credentials.token.expose()),
            None => text,
        }
    }

    fn open_error(&self, e: SpinError) -> RedisError {
        match e {
            SpinError::InvalidAddress => RedisError::NotAllowed,
            SpinError::TooManyConnections => {
                RedisError::Unavailable("too many connections in this instance".into())
            }
            SpinError::TypeError => RedisError::Unavailable("type error on connect".into()),
            SpinError::Other(m) => {
                let m = self.redact(&m);
                if is_auth_failure(&m) {
                    RedisError::AuthFailed(m)
                } else {
                    RedisError::Unavailable(m)
                }
            }
        }
    }

    fn command_error(&self, e: SpinError) -> RedisError {
        match e {
            SpinError::Other(m) => classify_failure(self.redact(&m)),
            SpinError::TypeError => RedisError::Reply("WRONGTYPE".into()),
            other => self.open_error(other),
        }
    }

    /// Runs one command: `execute("SET", args![key, value, "EX", 60_i64])`.
    pub fn execute(&self, command: &str, args: Vec<RedisParameter>) -> Result<Reply, RedisError> {
        self.call(|conn| conn.execute(command, &args).map(Reply).map_err(|e| self.command_error(e)))
    }

    /// Runs a script atomically in one round trip (two the first time Redis sees it).
    /// All `keys` must share one hash slot (`{tag}`) for clustered Redis.
    pub fn eval(
        &self,
        script: &Script,
        keys: &[&str],
        args: Vec<RedisParameter>,
    ) -> Result<Reply, RedisError> {
        let mut params = Vec::with_capacity(2 + keys.len() + args.len());
        params.push(RedisParameter::Binary(script.sha1().as_bytes().to_vec()));
        params.push(RedisParameter::Int64(keys.len() as i64));
        params.extend(keys.iter().map(|k| k.to_arg()));
        params.extend(args);

        self.call(|conn| match conn.execute("EVALSHA", &params) {
            Ok(values) => Ok(Reply(values)),
            Err(SpinError::Other(m)) if is_noscript(&m) => {
                params[0] = RedisParameter::Binary(script.source_bytes());
                conn.execute("EVAL", &params).map(Reply).map_err(|e| self.command_error(e))
            }
            Err(e) => Err(self.command_error(e)),
        })
    }

    /// Publishes a message on a channel.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), RedisError> {
        self.call(|conn| conn.publish(channel, payload).map_err(|e| self.command_error(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_accessors() {
        let r = Reply(vec![
            RedisResult::Int64(7),
            RedisResult::Binary(b"42".to_vec()),
            RedisResult::Nil,
            RedisResult::Status("OK".into()),
        ]);
        assert_eq!(r.int(0).unwrap(), 7);
        assert_eq!(r.int(1).unwrap(), 42);
        assert_eq!(r.opt_bytes(2).unwrap(), None);
        assert_eq!(r.string(3).unwrap(), "OK");
        assert!(matches!(r.int(2), Err(RedisError::UnexpectedReply(_))));
        assert!(matches!(r.int(9), Err(RedisError::UnexpectedReply(_))));
    }

    #[test]
    fn classifies_key_value_store_failures() {
        // redis-rs's Debug text, as Spin's key-value store passes it on.
        let not_integer = "An error was signalled by the server - ResponseError: value is not \
                           an integer or out of range"
            .to_string();
        assert!(matches!(classify_failure(not_integer), RedisError::Reply(_)));
        let wrong_type = "WRONGTYPE: Operation against a key holding the wrong kind of value";
        assert!(matches!(classify_failure(wrong_type.into()), RedisError::Reply(_)));
        let loading = "An error was signalled by the server - BusyLoadingError: Redis is loading";
        assert!(matches!(classify_failure(loading.into()), RedisError::Unavailable(_)));
        let refused = "Connection refused (os error 111)";
        assert!(matches!(classify_failure(refused.into()), RedisError::Unavailable(_)));
        // A store URL with a wrong access key must not read as an outage (fail_open).
        let wrong_key = "AuthenticationFailed: Password authentication failed";
        assert!(matches!(classify_failure(wrong_key.into()), RedisError::AuthFailed(_)));
    }

    #[test]
    fn classifies_errors_as_spin_reports_them() {
        // Messages as Spin 3.6's redis-rs 0.32 renders them (seen through the test host).
        let noscript = "An error was signalled by the server - NoScriptError: No matching script. Please use EVAL.";
        assert!(is_noscript(noscript) && is_error_reply(noscript));
        assert!(is_error_reply(
            "An error was signalled by the server - ResponseError: Error running script"
        ));
        assert!(is_auth_failure("Password authentication failed- AuthenticationFailed"));
        assert!(!is_error_reply("Connection refused (os error 111)"));
        // A script error as redis-rs 0.32 renders it through Spin: a mistake, never "unavailable".
        assert!(is_error_reply(
            "WRONGTYPE: Operation against a key holding the wrong kind of value script: 1a2b, on @user_script:11."
        ));
        assert!(!is_auth_failure("Connection refused (os error 111)"));
        let failover = "An error was signalled by the server - ReadOnly: You can't write against a read only replica.";
        assert!(is_error_reply(failover));
        assert!(is_transient_reply(failover));
        assert!(is_transient_reply("READONLY You can't write against a read only replica."));
        assert!(is_transient_reply(
            "An error was signalled by the server - BusyLoadingError: LOADING Redis is loading"
        ));
        assert!(!is_transient_reply(
            "An error was signalled by the server - ResponseError: Error running script"
        ));
    }
}
