//! Cache-aside for any value: [`ValueCache`] keeps values in the cache component's entries,
//! with its single-flight lock, TTL jitter, tags and purges, so a value cached here under
//! `/profiles/42` is the entry the proxy serves for that path (when the request carries none
//! of the `cache_vary_headers`), and `/api/cache/purge` drops it.

use std::fmt::Display;
use std::time::Duration;

use crate::platform::clock::{monotonic_ms, sleep_ms};
use crate::platform::redis::Redis;
use crate::platform::secrets::random_token;
use crate::{Config, Error};

use super::entry::{self, Entry};
use super::keys::{bucket_prefix, counter_key, tag_set_key, tag_tombstone_key, EntryKeys};
use super::policy;
use super::purge::{purge_bucket, purge_target, BucketPurge};
use super::read_through::unit_random;
use super::scripts::{finish, lookup, Action, Lookup};
use super::settings::CacheSettings;
use super::target::{self, QueryRules, Target};

/// How often a caller waiting on another's fetch looks again.
const POLL_INTERVAL_MS: u64 = 50;
/// Most tags one value may carry.
pub const MAX_TAGS: usize = 16;

/// Cache-aside with single flight: the first caller for a missing key fetches and stores;
/// the others wait for its result instead of all hitting the source.
///
/// ```no_run
/// use spin_redis_patterns::cache::{Fill, ValueCache};
/// use spin_redis_patterns::{Config, Redis};
///
/// # fn load_profile(_: &str) -> Result<Vec<u8>, String> { Ok(b"{}".to_vec()) }
/// # fn main() -> Result<(), spin_redis_patterns::Error> {
/// let config = Config::spin();
/// let redis = Redis::from_config(&config)?;
/// let cache = ValueCache::new(&config)?;
/// let fill = Fill::ttl(300).tag("user:42");
/// let profile = cache.get_or_fetch(&redis, "/profiles/42", &fill, || load_profile("42"))?;
/// println!("{} ({} bytes)", profile.status.as_str(), profile.value.len());
/// cache.purge_tag(&redis, "user:42")?; // after the profile changes
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ValueCache {
    settings: CacheSettings,
}

/// How a fetched value is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fill {
    /// How long it is fresh; `None`: `cache_ttl_seconds`. Jittered by `cache_ttl_jitter`.
    pub ttl: Option<Duration>,
    /// Surrogate keys to purge it by ([`ValueCache::purge_tag`], `/api/cache/purge`).
    pub tags: Vec<String>,
}

impl Fill {
    /// Fresh for `seconds` (before jitter).
    pub fn ttl(seconds: u64) -> Self {
        Self { ttl: Some(Duration::from_secs(seconds)), tags: Vec::new() }
    }

    /// The same fill with one more tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh cached value.
    Hit,
    /// A cached value past its freshness, served because a refresh failed or is under way.
    Stale,
    /// Fetched now (and stored, unless a purge raced it).
    Miss,
}

impl CacheStatus {
    /// `hit`, `stale` or `miss`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Hit, stale or miss.
    pub status: CacheStatus,
    /// How long ago it was fetched (zero for a miss).
    pub age: Duration,
}

impl ValueCache {
    /// Settings from the `cache_*` variables: `cache_ttl_seconds` (the default TTL),
    /// `cache_ttl_jitter`, `cache_stale_seconds`, `cache_key_buckets`,
    /// `cache_origin_timeout_ms` (sizes the single-flight lock), `cache_max_entry_bytes`.
    pub fn new(config: &Config) -> Result<Self, Error> {
        Ok(Self { settings: CacheSettings::from_variables(&config.variables())? })
    }

    /// A key is a path: `/profiles/42`, normalised as the proxy normalises paths.
    fn target(&self, key: &str) -> Result<Target, Error> {
        if !key.starts_with('/') {
            return Err(Error::invalid(
                400,
                "invalid_key",
                "a cache key is a path starting with /",
            ));
        }
        let (path, query) = key.split_once('?').unwrap_or((key, ""));
        target::normalise(path, query, QueryRules::default()).map_err(Error::from_api)
    }

    fn keys(&self, redis: &Redis, target: &Target) -> EntryKeys {
        EntryKeys::new(redis, target, "", self.settings.buckets)
    }

    /// The value cached under `key`, or `fetch()`'s, stored for `fill.ttl` (minus up to
    /// `cache_ttl_jitter` of it at random) with `fill.tags`. Single flight: while one caller
    /// fetches a key, the others poll for its result (up to the lock's life, then they take
    /// over). A failed fetch stores nothing and is [`Error::Upstream`] `fetch_failed`, unless
    /// a stale value can be served instead. When Redis is unavailable the value is fetched
    /// and not stored.
    pub fn get_or_fetch<E: Display>(
        &self,
        redis: &Redis,
        key: &str,
        fill: &Fill,
        fetch: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Cached, Error> {
        let target = self.target(key)?;
        if fill.tags.len() > MAX_TAGS || fill.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::invalid(
                422,
                "invalid_tags",
                format!("up to {MAX_TAGS} tags, none of them empty"),
            ));
        }
        let keys = self.keys(redis, &target);
        let token = random_token(16);
        let give_up = monotonic_ms() + self.settings.lock_ttl_ms() + 1000;
        let mut first = true;
        let fetch = Some(fetch);
        loop {
            let found = lookup(redis, &keys, first, &token, &self.settings, 0, &[]);
            first = false;
            let (found, clock) = match found {
                Ok(found) => found,
                // Redis is not usable: the source answers, nothing is stored.
                Err(crate::RedisError::Unavailable(m)) => {
                    crate::platform::log::warn(
                        "redis_bypassed",
                        format_args!("Redis unavailable, fetching without the cache: {m}"),
                    );
                    return run(fetch).map(|value| Cached {
                        value,
                        status: CacheStatus::Miss,
                        age: Duration::ZERO,
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let age = |e: &Entry| {
                Duration::from_millis(u64::try_from(clock.now_ms - e.stored_ms).unwrap_or(0))
            };
            return match found {
                Lookup::Hit(e) => {
                    Ok(Cached { age: age(&e), value: e.body, status: CacheStatus::Hit })
                }
                Lookup::Stale(e) => {
                    Ok(Cached { age: age(&e), value: e.body, status: CacheStatus::Stale })
                }
                Lookup::Refresh { entry, .. } => {
                    let stale =
                        Cached { age: age(&entry), value: entry.body, status: CacheStatus::Stale };
                    match self.fetch_and_store(redis, &keys, &token, clock.now_us, fill, fetch) {
                        Ok(fresh) => Ok(fresh),
                        // The refresh failed: the stale copy rather than an error.
                        Err(Error::Upstream { .. }) => Ok(stale),
                        Err(e) => Err(e),
                    }
                }
                Lookup::Fetch => {
                    self.fetch_and_store(redis, &keys, &token, clock.now_us, fill, fetch)
                }
                // The proxy marked this key uncacheable, or its origin failed moments ago:
                // ask the source, store nothing.
                Lookup::Pass | Lookup::Error(_) => run(fetch).map(|value| Cached {
                    value,
                    status: CacheStatus::Miss,
                    age: Duration::ZERO,
                }),
                Lookup::Wait if monotonic_ms() < give_up => {
                    sleep_ms(POLL_INTERVAL_MS);
                    continue;
                }
                Lookup::Wait => Err(Error::Upstream {
                    status: 504,
                    code: "fetch_timeout",
                    message: "another request's fetch of this key did not finish in time".into(),
                    retry_after_ms: None,
                }),
            };
        }
    }

    /// The lock holder's fetch and store (or unlock on failure).
    fn fetch_and_store<E: Display>(
        &self,
        redis: &Redis,
        keys: &EntryKeys,
        token: &str,
        started_us: i64,
        fill: &Fill,
        fetch: Option<impl FnOnce() -> Result<Vec<u8>, E>>,
    ) -> Result<Cached, Error> {
        let started = monotonic_ms();
        let value = match run(fetch) {
            Ok(value) => value,
            Err(e) => {
                // Nothing remembered: the next caller tries again.
                finish(redis, keys, token, started_us, Action::Skip, "bypasses");
                return Err(e);
            }
        };
        let cost_ms = monotonic_ms().saturating_sub(started);
        if value.len() > self.settings.max_entry_bytes {
            finish(redis, keys, token, started_us, Action::Skip, "bypasses");
            return Ok(Cached { value, status: CacheStatus::Miss, age: Duration::ZERO });
        }
        let ttl = fill.ttl.map_or(self.settings.ttl_ms, |t| t.as_millis() as u64).max(1);
        let ttl_ms = policy::jittered(ttl, self.settings.jitter, unit_random());
        let tag_keys = fill
            .tags
            .iter()
            .filter_map(|t| {
                Some([
                    tag_set_key(redis, keys.bucket, t)?,
                    tag_tombstone_key(redis, keys.bucket, t)?,
                ])
            })
            .flatten()
            .collect();
        let action = Action::Store {
            status: 200,
            headers: entry::header_block(&Vec::new()),
            body: &value,
            age_ms: 0,
            ttl_ms,
            hard_ms: ttl_ms + self.settings.stale_ms,
            swr_ms: 0,
            sie_ms: 0,
            cost_ms,
            tag_keys,
            vary: None,
        };
        finish(redis, keys, token, started_us, action, "misses");
        Ok(Cached { value, status: CacheStatus::Miss, age: Duration::ZERO })
    }

    /// Drops `key`'s value (and the proxy's entries for that path, every variant); true
    /// when there was one. A fetch that started before the purge does not store.
    pub fn purge(&self, redis: &Redis, key: &str) -> Result<bool, Error> {
        let target = self.target(key)?;
        let keys = self.keys(redis, &target);
        Ok(purge_target(redis, &keys, &target, &self.settings, false, false)? > 0)
    }

    /// Drops every value and proxy entry carrying `tag`; how many. One round trip per
    /// bucket (`cache_key_buckets`).
    pub fn purge_tag(&self, redis: &Redis, tag: &str) -> Result<u64, Error> {
        let mut purged = 0;
        for bucket in 0..self.settings.buckets {
            let (Some(set), Some(tombstone)) =
                (tag_set_key(redis, bucket, tag), tag_tombstone_key(redis, bucket, tag))
            else {
                return Err(Error::invalid(422, "invalid_tags", "a tag must not be empty"));
            };
            let p = BucketPurge {
                base: bucket_prefix(redis, bucket),
                counter: counter_key(redis, bucket, "purged"),
                tombstones: vec![tombstone],
                sets: vec![set],
                entries: Vec::new(),
                soft: false,
                announce: None,
            };
            purged += purge_bucket(redis, &self.settings, p)?;
        }
        Ok(u64::try_from(purged).unwrap_or(0))
    }
}

/// Runs the caller's fetch (once: `fetch` is taken).
fn run<E: Display>(fetch: Option<impl FnOnce() -> Result<Vec<u8>, E>>) -> Result<Vec<u8>, Error> {
    let fetch = fetch.ok_or_else(|| Error::Upstream {
        status: 502,
        code: "fetch_failed",
        message: "the fetch already ran".into(),
        retry_after_ms: None,
    })?;
    fetch().map_err(|e| Error::Upstream {
        status: 502,
        code: "fetch_failed",
        message: e.to_string(),
        retry_after_ms: None,
    })
}
