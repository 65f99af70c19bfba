//! The three script calls of the OTP component and the decoding of their replies: each route
//! is one Lua script, one round trip, on the subject's hash slot.

use super::keys::{code_hmac, Keys};
use super::settings::{Settings, GUARD_MEMORY_MS, MAX_LOCKOUT_MS};
use crate::args;
use crate::lua_script;
use crate::platform::redis::{Redis, RedisError};
use crate::platform::script::{Script, CLOCK};
use crate::ratelimit::GCRA;

static ISSUE: Script =
    lua_script!(CLOCK, GCRA, include_str!("lanes.lua"), include_str!("issue.lua"));
static VERIFY: Script =
    lua_script!(CLOCK, GCRA, include_str!("lanes.lua"), include_str!("verify.lua"));
static ROLLBACK: Script = lua_script!(include_str!("rollback.lua"));
static VERIFY_LINK: Script = lua_script!(include_str!("verify_link.lua"));

/// One code to store: who and what it is for, and how it is delivered.
pub(crate) struct NewCode<'a> {
    pub subject: &'a str,
    pub purpose: &'a str,
    pub channel: &'a str,
    pub format: &'a str,
    pub code: &'a str,
    pub ttl_ms: u64,
    pub delivery_id: &'a str,
    /// The client id (keyed hash), or "" when the caller gave none.
    pub client: &'a str,
    /// Whether the outbox stream is the delivery channel (no webhook).
    pub outbox: bool,
}

/// Why a code was not issued, with the milliseconds until asking again can work.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Locked(i64),
    Client(i64),
    Cooldown(i64),
    Hourly(i64),
    OutboxFull(i64),
}

pub(crate) enum Issued {
    /// Stored: when it expires, and the lane it went to (its first key's index in KEYS).
    Stored {
        expires_at_ms: i64,
        lane: usize,
    },
    Refused(Refused),
}

pub(crate) fn issue(
    redis: &Redis,
    settings: &Settings,
    keys: &Keys,
    new: &NewCode,
) -> Result<Issued, RedisError> {
    let reply = redis.eval(
        &ISSUE,
        &keys.all(),
        args![
            new.client,
            code_hmac(settings, new.purpose, new.subject, new.code),
            new.ttl_ms,
            settings.cooldown_ms,
            settings.max_per_hour,
            settings.max_attempts,
            new.format,
            if new.outbox { settings.outbox_maxlen } else { 0 },
            settings.outbox_retention_ms(),
            new.subject,
            new.purpose,
            new.channel,
            if new.outbox { new.code } else { "" },
            new.delivery_id,
            settings.client_issues_per_hour,
        ],
    )?;
    if reply.int(0)? == 1 {
        let lane = usize::try_from(reply.int(2)?)
            .ok()
            .filter(|&l| l >= 1 && l < keys.all().len())
            .ok_or_else(|| RedisError::UnexpectedReply(format!("lane {:?}", reply.int(2))))?;
        return Ok(Issued::Stored { expires_at_ms: reply.int(1)?, lane });
    }
    let wait = reply.int(2)?;
    Ok(Issued::Refused(match reply.string(1)? {
        "locked" => Refused::Locked(wait),
        "client" => Refused::Client(wait),
        "cooldown" => Refused::Cooldown(wait),
        "outbox_full" => Refused::OutboxFull(wait),
        _ => Refused::Hourly(wait),
    }))
}

/// What a verification found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    NoCode,
    Verified,
    Wrong { attempts_left: i64 },
    Burned { retry_after_ms: i64 },
    Locked { retry_after_ms: i64 },
    ClientLimited { retry_after_ms: i64 },
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn verify(
    redis: &Redis,
    settings: &Settings,
    keys: &Keys,
    client: &str,
    subject: &str,
    purpose: &str,
    code: &str,
    format: &str,
) -> Result<Verdict, RedisError> {
    let reply = redis.eval(
        &VERIFY,
        &keys.all(),
        args![
            client,
            code_hmac(settings, purpose, subject, code),
            format,
            settings.max_per_hour,
            settings.max_failures,
            settings.lockout_ms,
            MAX_LOCKOUT_MS,
            GUARD_MEMORY_MS,
            settings.client_failures_per_hour,
            settings.known_client_ms,
        ],
    )?;
    let (left, wait) = (reply.int(1)?, reply.int(2)?);
    Ok(match reply.int(0)? {
        1 => Verdict::Verified,
        2 => Verdict::Wrong { attempts_left: left },
        3 => Verdict::Burned { retry_after_ms: wait },
        4 => Verdict::Locked { retry_after_ms: wait },
        5 => Verdict::ClientLimited { retry_after_ms: wait },
        _ => Verdict::NoCode,
    })
}

/// Withdraws the code `delivery_id` stored in the given lane (see rollback.lua): its code
/// state and cooldown, KEYS[lane] and KEYS[lane + 1] of the issue script.
pub(crate) fn rollback(
    redis: &Redis,
    keys: &Keys,
    lane: usize,
    delivery_id: &str,
) -> Result<(), RedisError> {
    let all = keys.all();
    redis.eval(&ROLLBACK, &[all[lane - 1], all[lane]], args![delivery_id]).map(|_| ())
}

/// Verifies a link token without its subject; the subject it was issued for, if valid.
pub(crate) fn verify_link(
    redis: &Redis,
    pointer: &str,
    purpose: &str,
) -> Result<Option<String>, RedisError> {
    let reply = redis.eval(&VERIFY_LINK, &[pointer], args![purpose])?;
    Ok(match reply.int(0)? {
        1 => Some(reply.string(1)?.to_owned()),
        _ => None,
    })
}
