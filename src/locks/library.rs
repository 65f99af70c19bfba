//! Leases as a library: [`Lease`] acquires, renews and releases a named lock with the same
//! scripts and keys as `/api/locks/{name}`, fencing tokens included, so a lease taken here
//! is held against the HTTP route's callers and back.

use std::time::Duration;

use crate::platform::redis::Redis;
use crate::platform::secrets::{from_base64url, random_token};
use crate::Error;

use super::keys;
use super::store::{self, NotHeld};
use super::TOKEN_BYTES;

/// Longest lease: a day (`locks_max_ttl_ms` bounds the HTTP route's further).
pub const MAX_TTL: Duration = Duration::from_millis(86_400_000);

/// A held lock. Pass [`Lease::fencing_token`] to the resource it protects, which refuses
/// any write carrying a smaller one than it has seen: that, not the lease's expiry, keeps a
/// paused former holder from acting after its lease ended.
///
/// ```no_run
/// use std::time::Duration;
/// use spin_redis_patterns::locks::Lease;
/// use spin_redis_patterns::{Config, Redis};
///
/// # fn main() -> Result<(), spin_redis_patterns::Error> {
/// let redis = Redis::from_config(&Config::spin())?;
/// let mut lease = Lease::acquire(&redis, "nightly-report", Duration::from_secs(30))?;
/// // ... work, writing with lease.fencing_token() ...
/// lease.renew(&redis, Duration::from_secs(30))?;
/// lease.release(&redis)?;
/// # Ok(())
/// # }
/// ```
pub struct Lease {
    name: String,
    token: String,
    fencing_token: u64,
    expires_in: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("fencing_token", &self.fencing_token)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if keys::valid_name(name) {
        return Ok(());
    }
    Err(Error::invalid(
        400,
        "invalid_name",
        format!(
            "a lock name is 1-{} characters of letters, digits, '_', '-', '.' and ':'",
            keys::MAX_NAME_LEN
        ),
    ))
}

fn ttl_ms(ttl: Duration) -> Result<u64, Error> {
    let ms = ttl.as_millis() as u64;
    if (1..=MAX_TTL.as_millis() as u64).contains(&ms) {
        Ok(ms)
    } else {
        Err(Error::invalid(400, "invalid_ttl", "a lease lasts from 1 ms to a day"))
    }
}

fn not_held(code: &'static str, message: &str, not_held: NotHeld) -> Error {
    Error::Conflict {
        code,
        message: message.to_owned(),
        retry_after_ms: match not_held {
            NotHeld::HeldByOther(left) => left,
            NotHeld::Free => None,
        },
    }
}

fn not_holder(n: NotHeld) -> Error {
    let message = match n {
        NotHeld::Free => "this token does not hold the lock: its lease has ended",
        NotHeld::HeldByOther(_) => "this token does not hold the lock: another holder has it",
    };
    not_held("not_holder", message, n)
}

impl Lease {
    /// Takes the lock `name` for `ttl` (1 ms to a day), or [`Error::Conflict`] `lock_held`
    /// (with how long the other lease still runs) when someone holds it.
    pub fn acquire(redis: &Redis, name: &str, ttl: Duration) -> Result<Lease, Error> {
        check_name(name)?;
        let ttl = ttl_ms(ttl)?;
        let token = random_token(TOKEN_BYTES);
        match store::acquire(redis, name, &token, ttl)? {
            Ok(lease) => Ok(Lease {
                name: name.to_owned(),
                token,
                fencing_token: lease.fencing_token,
                expires_in: Duration::from_millis(lease.expires_in_ms),
            }),
            Err(n) => Err(not_held("lock_held", "the lock is held by another holder", n)),
        }
    }

    /// A lease known by its holder's token (one the HTTP route issued, say), to renew or
    /// release it here. Its fencing token and expiry are learnt on [`Lease::renew`].
    pub fn from_token(name: &str, token: &str) -> Result<Lease, Error> {
        check_name(name)?;
        if from_base64url(token).is_none_or(|b| b.len() != TOKEN_BYTES) {
            return Err(Error::invalid(
                400,
                "invalid_lock_token",
                "not a token this library or the locks component issued",
            ));
        }
        Ok(Lease {
            name: name.to_owned(),
            token: token.to_owned(),
            fencing_token: 0,
            expires_in: Duration::ZERO,
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The holder's token: the `Lock-Token` of the HTTP route. A secret: never log it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Grows with every acquisition of this name, across holders.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// How long the lease had left when last acquired or renewed.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// Extends the lease to `ttl` from now; [`Error::Conflict`] `not_holder` once it is lost
    /// (expired, or taken by another since).
    pub fn renew(&mut self, redis: &Redis, ttl: Duration) -> Result<(), Error> {
        let ttl = ttl_ms(ttl)?;
        match store::renew(redis, &self.name, &self.token, ttl)? {
            Ok(lease) => {
                self.fencing_token = lease.fencing_token;
                self.expires_in = Duration::from_millis(lease.expires_in_ms);
                Ok(())
            }
            Err(n) => Err(not_holder(n)),
        }
    }

    /// Releases the lock; the fencing token of the lease that ended. [`Error::Conflict`]
    /// `not_holder` when the lease had already ended.
    pub fn release(self, redis: &Redis) -> Result<u64, Error> {
        match store::release(redis, &self.name, &self.token)? {
            Ok(fencing_token) => Ok(fencing_token),
            Err(n) => Err(not_holder(n)),
        }
    }
}
