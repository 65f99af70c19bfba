//! One-time codes and links as a library: [`Otp`] issues and verifies with the same
//! settings, scripts and keys as `/api/otp`, so a code issued here is verified there and back,
//! and the caps, cooldowns and lockouts are one.

use std::time::Duration;

use crate::platform::log;
use crate::platform::redis::Redis;
use crate::platform::secrets;
use crate::{Config, Error};

use super::input::{self, Format};
use super::keys::{self, Keys};
use super::policy::Policy;
use super::settings::Settings;
use super::store::{self, Issued as Stored, NewCode, Refused, Verdict};
use super::webhook;

/// One-time codes (digits a person types) and link tokens (magic links, password resets),
/// stored only as keyed hashes, limited per subject and per client, with lockouts.
///
/// ```no_run
/// use spin_redis_patterns::otp::{IssueRequest, Otp, Verification, VerifyRequest};
/// use spin_redis_patterns::{Config, Redis};
///
/// # fn main() -> Result<(), spin_redis_patterns::Error> {
/// let config = Config::spin(); // otp_pepper must be set (a Spin secret)
/// let redis = Redis::from_config(&config)?;
/// let otp = Otp::new(&config)?;
/// let issued = otp.issue(&redis, &IssueRequest::code("alice@example.com", "login"))?;
/// // Deliver issued.code() by mail or SMS; never log it.
/// let typed = issued.code().to_owned();
/// let check = VerifyRequest::code("alice@example.com", "login", &typed);
/// match otp.verify(&redis, &check)? {
///     Verification::Verified { subject } => println!("welcome {subject}"),
///     other => println!("refused: {} ({})", other.code(), other.status()),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Otp {
    settings: Settings,
}

/// What to issue: for whom, for what, and how.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    /// An email address, phone number or user id (normalised: case, spaces).
    pub subject: &'a str,
    /// One of `otp_purposes`.
    pub purpose: &'a str,
    /// The end user's address or device key, limited on its own; `None` when unknown.
    pub client: Option<&'a str>,
    /// The delivery channel (`email`, `sms`, ...); `None` for `email`.
    pub channel: Option<&'a str>,
    /// A code or a link token; `None` takes the purpose's default.
    pub format: Option<Format>,
}

impl<'a> IssueRequest<'a> {
    /// A digit code for `subject` and `purpose`, no client, the default channel.
    pub fn code(subject: &'a str, purpose: &'a str) -> Self {
        Self { subject, purpose, client: None, channel: None, format: Some(Format::Code) }
    }

    /// A link token for `subject` and `purpose`, no client, the default channel.
    pub fn link(subject: &'a str, purpose: &'a str) -> Self {
        Self { format: Some(Format::Link), ..Self::code(subject, purpose) }
    }

    /// The same request with the end user's client key (address or device).
    #[must_use]
    pub fn with_client(self, client: &'a str) -> Self {
        Self { client: Some(client), ..self }
    }
}

/// What to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest<'a> {
    /// Required for digit codes; a link token finds its subject itself.
    pub subject: Option<&'a str>,
    /// The purpose it was issued for.
    pub purpose: &'a str,
    /// The code or link token the user brought.
    pub code: &'a str,
    /// The end user's client key, as given when issuing (`None` when unknown).
    pub client: Option<&'a str>,
}

impl<'a> VerifyRequest<'a> {
    /// A digit code (or link token) the subject brought, no client.
    pub fn code(subject: &'a str, purpose: &'a str, code: &'a str) -> Self {
        Self { subject: Some(subject), purpose, code, client: None }
    }

    /// A link token alone: its subject is found from it.
    pub fn link(purpose: &'a str, token: &'a str) -> Self {
        Self { subject: None, purpose, code: token, client: None }
    }

    /// The same request with the end user's client key.
    #[must_use]
    pub fn with_client(self, client: &'a str) -> Self {
        Self { client: Some(client), ..self }
    }
}

/// A stored code, to deliver.
#[derive(Clone)]
pub struct Issued {
    code: String,
    format: Format,
    expires_in: Duration,
    resend_after: Duration,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("code", &"***")
            .field("format", &self.format)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl Issued {
    /// The secret to deliver (digits, or a URL-safe link token). Never log it.
    pub fn code(&self) -> &str {
        &self.code
    }
    /// Whether it is a code or a link token.
    pub fn format(&self) -> Format {
        self.format
    }
    /// How long it stays valid.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }
    /// How long before another may be issued for the subject and purpose.
    pub fn resend_after(&self) -> Duration {
        self.resend_after
    }
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Right code: it is used up. The subject it was issued for.
    Verified {
        /// The normalised subject.
        subject: String,
    },
    /// Wrong code; this many tries are left for it.
    Wrong {
        /// Tries left before the code burns.
        attempts_left: u64,
    },
    /// Too many wrong tries: this code no longer works.
    Burned {
        /// Until a new code may help.
        retry_after: Duration,
    },
    /// Too many failures in a row for the subject: locked out for a while.
    Locked {
        /// Until the lockout ends.
        retry_after: Duration,
    },
    /// This client entered too many wrong codes in the last hour.
    ClientLimited {
        /// Until the client's budget allows another try.
        retry_after: Duration,
    },
    /// No active code: it expired, was used or replaced, or was never issued.
    NoCode,
}

impl Verification {
    /// Whether the code was right.
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
    }

    /// The HTTP status `/api/otp/verify` answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Verified { .. } => 200,
            Self::Wrong { .. } => 401,
            Self::Burned { .. } | Self::Locked { .. } | Self::ClientLimited { .. } => 429,
            Self::NoCode => 410,
        }
    }

    /// The code `/api/otp/verify` answers with (`verified` on success).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Verified { .. } => "verified",
            Self::Wrong { .. } => "wrong_code",
            Self::Burned { .. } => "too_many_attempts",
            Self::Locked { .. } => "too_many_failures",
            Self::ClientLimited { .. } => "client_limit",
            Self::NoCode => "code_expired",
        }
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> Error {
    Error::invalid(400, code, message)
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn too_many(code: &'static str, message: &str, retry_ms: i64) -> Error {
    Error::Refused {
        status: 429,
        code,
        message: message.to_owned(),
        retry_after_ms: u64::try_from(retry_ms).unwrap_or(0),
    }
}

/// `link_instead`: a digit code was refused for a purpose that also sends links, which no
/// lockout stops (they cannot be guessed): the message says so.
fn refusal(refused: Refused, link_instead: bool) -> Error {
    match refused {
        Refused::Locked(ms) if link_instead => too_many(
            "too_many_failures",
            "too many wrong codes in a row for this subject: no new code until the lockout ends; \
             a link (format \"link\") can still be sent",
            ms,
        ),
        Refused::Locked(ms) => too_many(
            "too_many_failures",
            "too many wrong codes in a row for this subject: no new code until the lockout ends",
            ms,
        ),
        Refused::Client(ms) => {
            too_many("client_limit", "this client asked for too many codes in the last hour", ms)
        }
        Refused::Cooldown(ms) => too_many(
            "resend_cooldown",
            "a code was sent moments ago; wait before asking for another",
            ms,
        ),
        Refused::Hourly(ms) => too_many(
            "hourly_limit",
            "too many codes were requested for this subject in the last hour",
            ms,
        ),
        Refused::OutboxFull(ms) => Error::Refused {
            status: 503,
            code: "outbox_full",
            message: "the delivery queue is full; try again shortly".into(),
            retry_after_ms: u64::try_from(ms).unwrap_or(0),
        },
    }
}

impl Otp {
    /// Settings from the `otp_*` variables; `otp_pepper` (a secret of at least 32
    /// characters) is required.
    pub fn new(config: &Config) -> Result<Self, Error> {
        Ok(Self { settings: Settings::from_variables(&config.variables())? })
    }

    pub(crate) fn from_settings(settings: Settings) -> Self {
        Self { settings }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    fn purpose(&self, raw: &str) -> Result<&Policy, Error> {
        self.settings.policy(raw).ok_or_else(|| {
            bad(
                "invalid_purpose",
                format!("purpose must be one of: {}", self.settings.purposes.join(", ")),
            )
        })
    }

    /// The caller's client key, normalised once and as its keyed hash ("" when none).
    fn client_id(&self, raw: Option<&str>) -> Result<String, Error> {
        match raw {
            None => Ok(String::new()),
            Some(c) => input::normalize_client(c)
                .map(|c| keys::client_id(&self.settings, &c))
                .map_err(|m| bad("invalid_client", m)),
        }
    }

    /// Issues a code or link token and stores its keyed hash. With `otp_webhook_url` set it
    /// is delivered there, as the HTTP component does (a failed delivery withdraws it:
    /// [`Error::Upstream`]); without, it goes to the outbox stream, and the caller may
    /// deliver [`Issued::code`] itself. Refusals (cooldown, hourly cap, lockout, client
    /// budget, full outbox) are [`Error::Refused`]; a failed delivery is [`Error::Upstream`].
    pub fn issue(&self, redis: &Redis, req: &IssueRequest) -> Result<Issued, Error> {
        let settings = &self.settings;
        let subject =
            input::normalize_subject(req.subject).map_err(|m| bad("invalid_subject", m))?;
        let policy = self.purpose(req.purpose)?;
        let purpose = policy.name.as_str();
        let channel = input::parse_channel(req.channel).map_err(|m| bad("invalid_channel", m))?;
        if !policy.allows_channel(&channel) {
            return Err(bad(
                "invalid_channel",
                format!("purpose {purpose:?} is not sent by {channel:?}"),
            ));
        }
        let format = policy.format_for(req.format).map_err(|m| bad("invalid_format", m))?;
        let client = self.client_id(req.client)?;

        let keys = Keys::new(redis, settings, &subject, purpose, &client);
        let (code, keys) = match format {
            Format::Code => (secrets::random_digits(policy.length), keys),
            Format::Link => {
                // Drawn until the token's own shard is the subject's (about
                // `otp_outbox_shards` draws), so the token alone leads to the subject's slot.
                let token = loop {
                    let t = secrets::random_token(input::LINK_TOKEN_BYTES);
                    if keys::link_key(redis, settings, &t).0 == keys.shard() {
                        break t;
                    }
                };
                let keys = keys.with_link(redis, settings, &token);
                (token, keys)
            }
        };
        let ttl_ms = policy.ttl_ms(format);
        let delivery_id = secrets::random_token(12);
        let new = NewCode {
            subject: &subject,
            purpose,
            channel: &channel,
            format: format.as_str(),
            code: &code,
            ttl_ms,
            delivery_id: &delivery_id,
            client: &client,
            outbox: settings.webhook.is_none(),
        };
        let (expires_at_ms, lane) = match store::issue(redis, settings, &keys, &new)? {
            Stored::Stored { expires_at_ms, lane } => (expires_at_ms, lane),
            Stored::Refused(refused) => {
                let link_instead =
                    format == Format::Code && policy.format_for(Some(Format::Link)).is_ok();
                return Err(refusal(refused, link_instead));
            }
        };
        if let Some(hook) = &settings.webhook {
            webhook::deliver(hook, &new, expires_at_ms).map_err(|failure| {
                if failure.definite {
                    // The message was not sent: withdraw the code (it stays counted in the
                    // caps, so failing deliveries cannot be used to send more). If this fails
                    // too, the code simply expires.
                    if let Err(e) = store::rollback(redis, &keys, lane, &delivery_id) {
                        log::error(
                            "rollback_failed",
                            format_args!(
                                "delivery {delivery_id}: withdrawing the code failed: {e}"
                            ),
                        );
                    }
                    Error::Upstream {
                        status: 502,
                        code: "delivery_failed",
                        message: "the code could not be sent; try again".into(),
                        retry_after_ms: Some(1000),
                    }
                } else {
                    // It may have been sent: the code stays valid and counted.
                    Error::Upstream {
                        status: 504,
                        code: "delivery_uncertain",
                        message: "the delivery service did not answer in time; the code may \
                                  arrive"
                            .into(),
                        retry_after_ms: Some(settings.cooldown_ms),
                    }
                }
            })?;
        }
        Ok(Issued {
            code,
            format,
            expires_in: Duration::from_millis(ttl_ms),
            resend_after: Duration::from_millis(settings.cooldown_ms),
        })
    }

    /// Verifies a code (with its subject) or a link token (with or without its subject).
    /// A right code is used up; wrong ones count towards the code's, the subject's and the
    /// client's limits.
    pub fn verify(&self, redis: &Redis, req: &VerifyRequest) -> Result<Verification, Error> {
        let settings = &self.settings;
        let policy = self.purpose(req.purpose)?;
        let purpose = policy.name.as_str();
        let (code, format) =
            input::parse_code(req.code, policy.length).map_err(|m| bad("invalid_code", m))?;
        let client = self.client_id(req.client)?;
        let Some(subject) = req.subject else {
            if format != Format::Link {
                return Err(bad("invalid_subject", "subject is required to verify a digit code"));
            }
            let (_, pointer) = keys::link_key(redis, settings, code);
            return Ok(match store::verify_link(redis, &pointer, purpose)? {
                Some(subject) => Verification::Verified { subject },
                None => Verification::NoCode,
            });
        };
        let subject = input::normalize_subject(subject).map_err(|m| bad("invalid_subject", m))?;
        let keys = Keys::new(redis, settings, &subject, purpose, &client);
        let verdict = store::verify(
            redis,
            settings,
            &keys,
            &client,
            &subject,
            purpose,
            code,
            format.as_str(),
        )?;
        Ok(match verdict {
            Verdict::Verified => Verification::Verified { subject },
            Verdict::Wrong { attempts_left } => {
                Verification::Wrong { attempts_left: u64::try_from(attempts_left).unwrap_or(0) }
            }
            Verdict::Burned { retry_after_ms } => {
                Verification::Burned { retry_after: ms(retry_after_ms) }
            }
            Verdict::Locked { retry_after_ms } => {
                Verification::Locked { retry_after: ms(retry_after_ms) }
            }
            Verdict::ClientLimited { retry_after_ms } => {
                Verification::ClientLimited { retry_after: ms(retry_after_ms) }
            }
            Verdict::NoCode => Verification::NoCode,
        })
    }
}
