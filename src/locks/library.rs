//! Leases as a library: [`Lease`] acquires (at once or waiting), renews and releases a named
//! lock, and [`Lease::status`] reads one, with the same scripts and keys as
//! `/api/locks/{name}`, fencing tokens included. The route is a thin user of this API, so a
//! lease taken here is held against the route's callers and back.

use std::time::Duration;

use crate::platform::clock::{monotonic_ms, sleep_ms};
use crate::platform::redis::Redis;
use crate::platform::secrets::{from_base64url, random_bytes, random_token};
use crate::Error;

use super::keys;
use super::store::{self, NotHeld};

/// Longest lease: a day (`locks_max_ttl_ms` bounds the HTTP route's further).
pub const MAX_TTL: Duration = Duration::from_millis(86_400_000);
/// Random bytes in a holder's token: 256 bits.
const TOKEN_BYTES: usize = 32;
/// Waiting for a lock: first pause and largest pause between tries.
const FIRST_POLL_MS: u64 = 10;
const MAX_POLL_MS: u64 = 200;

/// Someone else holds the lock: what [`Lease::try_acquire`] answers instead of a lease.
/// Redis keeps only a digest of each holder's token, so who holds it is not told; how long
/// it is held for is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// How long the other holder's lease still runs (`None`: a key without expiry, which
    /// neither this library nor the locks component writes).
    pub expires_in: Option<Duration>,
}

impl From<Held> for Error {
    /// [`Error::Conflict`] `lock_held`, with how long the other lease still runs.
    fn from(held: Held) -> Self {
        Error::Conflict {
            code: "lock_held",
            message: "the lock is held by another holder".to_owned(),
            retry_after_ms: held.expires_in.map(|d| d.as_millis() as u64),
        }
    }
}

/// A lock's state, as [`Lease::status`] reads it (anyone may; no token needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockStatus {
    /// Whether a lease holds it now.
    pub held: bool,
    /// How long the current lease still runs, when held.
    pub expires_in: Option<Duration>,
    /// The current holder's fencing token, when held.
    pub fencing_token: Option<u64>,
    /// The last fencing token issued for this name: the current holder's, or its last
    /// holder's; `None` once the counter expired, a day after the last lease.
    pub last_fencing_token: Option<u64>,
}

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

/// [`Error::Conflict`] `not_holder`, with how long another holder's lease still runs.
fn not_holder(n: NotHeld) -> Error {
    let (message, retry_after_ms) = match n {
        NotHeld::Free => ("this token does not hold the lock: its lease has ended", None),
        NotHeld::HeldByOther(left) => {
            ("this token does not hold the lock: another holder has it", left)
        }
    };
    Error::Conflict { code: "not_holder", message: message.to_owned(), retry_after_ms }
}

impl Lease {
    /// Takes the lock `name` for `ttl` (1 ms to a day), or [`Error::Conflict`] `lock_held`
    /// (with how long the other lease still runs) when someone holds it.
    pub fn acquire(redis: &Redis, name: &str, ttl: Duration) -> Result<Lease, Error> {
        Self::try_acquire(redis, name, ttl, Duration::ZERO)?.map_err(Error::from)
    }

    /// Takes the lock `name` for `ttl` (1 ms to a day), waiting up to `wait` while someone
    /// else holds it: `Ok(Err(Held))` when it is still held at the end (at once for a zero
    /// `wait`). Each try is one round trip on `redis`; between tries it sleeps until the
    /// other lease ends or a jittered pause (10 ms, doubling to 200 ms) passes, whichever
    /// is first, never past `wait`. The instance stays busy while it waits: keep `wait`
    /// short (the HTTP route allows `locks_max_wait_ms`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use spin_redis_patterns::locks::Lease;
    /// use spin_redis_patterns::{Config, Redis};
    ///
    /// # fn main() -> Result<(), spin_redis_patterns::Error> {
    /// let redis = Redis::from_config(&Config::spin())?;
    /// let ttl = Duration::from_secs(30);
    /// match Lease::try_acquire(&redis, "nightly-report", ttl, Duration::from_millis(500))? {
    ///     Ok(lease) => println!("fencing token {}", lease.fencing_token()),
    ///     Err(held) => println!("busy for {:?} more", held.expires_in),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_acquire(
        redis: &Redis,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Result<Lease, Held>, Error> {
        check_name(name)?;
        let ttl = ttl_ms(ttl)?;
        let token = random_token(TOKEN_BYTES);
        let deadline = monotonic_ms().saturating_add(wait.as_millis() as u64);
        let mut pause = FIRST_POLL_MS;
        loop {
            let not_held = match store::acquire(redis, name, &token, ttl)? {
                Ok(lease) => {
                    return Ok(Ok(Lease {
                        name: name.to_owned(),
                        token,
                        fencing_token: lease.fencing_token,
                        expires_in: Duration::from_millis(lease.expires_in_ms),
                    }))
                }
                Err(n) => n,
            };
            let left = deadline.saturating_sub(monotonic_ms());
            let until_free = match not_held {
                NotHeld::HeldByOther(Some(ms)) => ms + 1,
                _ => 1,
            };
            if left == 0 {
                let expires_in = match not_held {
                    NotHeld::HeldByOther(left) => left.map(Duration::from_millis),
                    NotHeld::Free => None, // acquire.lua never answers it
                };
                return Ok(Err(Held { expires_in }));
            }
            // The jitter keeps waiters from trying in lockstep; a holder may release early,
            // so the pause is tried even when the lease has long to run.
            let jittered = pause / 2 + u64::from(random_bytes(1)[0]) * (pause / 2) / 255;
            sleep_ms(jittered.min(until_free).min(left).max(1));
            pause = (pause * 2).min(MAX_POLL_MS);
        }
    }

    /// Whether the lock `name` is held, for how long, and its fencing tokens: one round
    /// trip, nothing changed.
    pub fn status(redis: &Redis, name: &str) -> Result<LockStatus, Error> {
        check_name(name)?;
        let s = store::status(redis, name)?;
        Ok(LockStatus {
            held: s.held,
            expires_in: s.expires_in_ms.map(Duration::from_millis),
            fencing_token: s.fencing_token,
            last_fencing_token: s.last_fencing_token,
        })
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
