//! The locks' Redis operations: one Lua script, one round trip, one hash slot each.

use crate::args;
use crate::lua_script;
use crate::platform::redis::{Redis, RedisError, Reply};
use crate::platform::script::{Script, CLOCK};
use crate::platform::secrets::{hex, sha256};

use super::keys::{lock_keys, FENCE_KEPT_MS};

static ACQUIRE: Script = lua_script!(CLOCK, include_str!("acquire.lua"));
static RENEW: Script = lua_script!(include_str!("holder.lua"), include_str!("renew.lua"));
static RELEASE: Script = lua_script!(include_str!("holder.lua"), include_str!("release.lua"));
static STATUS: Script = lua_script!(include_str!("status.lua"));

/// What a holder learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub fencing_token: u64,
    pub expires_in_ms: u64,
}

/// The answer to anyone who does not hold the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// Someone else holds it for this many more ms (`None`: a key without expiry, which this
    /// component never writes).
    HeldByOther(Option<u64>),
    /// Nobody holds it: the caller's lease expired, or it was never acquired.
    Free,
}

pub struct Status {
    pub held: bool,
    pub expires_in_ms: Option<u64>,
    pub fencing_token: Option<u64>,
    pub last_fencing_token: Option<u64>,
}

/// Redis holds only this digest of a holder's token.
fn token_hash(token: &str) -> String {
    hex(&sha256(token.as_bytes()))
}

fn number(reply: &Reply, i: usize) -> Result<u64, RedisError> {
    u64::try_from(reply.int(i)?)
        .map_err(|_| RedisError::UnexpectedReply(format!("value {i} is negative")))
}

/// Decimal text, or `None` when empty.
fn optional_number(reply: &Reply, i: usize) -> Result<Option<u64>, RedisError> {
    match reply.string(i)? {
        "" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|_| RedisError::UnexpectedReply(format!("value {i} is not a number"))),
    }
}

fn not_held(reply: &Reply) -> Result<NotHeld, RedisError> {
    Ok(match reply.int(1)? {
        -2 => NotHeld::Free,
        left => NotHeld::HeldByOther(u64::try_from(left).ok()),
    })
}

fn lease(reply: &Reply) -> Result<Result<Lease, NotHeld>, RedisError> {
    if reply.int(0)? != 1 {
        return Ok(Err(not_held(reply)?));
    }
    Ok(Ok(Lease { fencing_token: number(reply, 1)?, expires_in_ms: number(reply, 2)? }))
}

pub fn acquire(
    redis: &Redis,
    name: &str,
    token: &str,
    ttl_ms: u64,
) -> Result<Result<Lease, NotHeld>, RedisError> {
    let (lock, fence) = lock_keys(redis, name);
    let reply =
        redis.eval(&ACQUIRE, &[&lock, &fence], args![token_hash(token), ttl_ms, FENCE_KEPT_MS])?;
    lease(&reply)
}

pub fn renew(
    redis: &Redis,
    name: &str,
    token: &str,
    ttl_ms: u64,
) -> Result<Result<Lease, NotHeld>, RedisError> {
    let (lock, fence) = lock_keys(redis, name);
    let reply =
        redis.eval(&RENEW, &[&lock, &fence], args![token_hash(token), ttl_ms, FENCE_KEPT_MS])?;
    lease(&reply)
}

/// Releases the lock; returns the fencing token of the lease that ended.
pub fn release(redis: &Redis, name: &str, token: &str) -> Result<Result<u64, NotHeld>, RedisError> {
    let (lock, _) = lock_keys(redis, name);
    let reply = redis.eval(&RELEASE, &[&lock], args![token_hash(token)])?;
    if reply.int(0)? != 1 {
        return Ok(Err(not_held(&reply)?));
    }
    Ok(Ok(number(&reply, 1)?))
}

pub fn status(redis: &Redis, name: &str) -> Result<Status, RedisError> {
    let (lock, fence) = lock_keys(redis, name);
    let reply = redis.eval(&STATUS, &[&lock, &fence], args![])?;
    Ok(Status {
        held: reply.int(0)? != -2,
        expires_in_ms: u64::try_from(reply.int(0)?).ok(),
        fencing_token: optional_number(&reply, 1)?,
        last_fencing_token: optional_number(&reply, 2)?,
    })
}
