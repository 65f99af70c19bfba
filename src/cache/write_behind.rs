//! Write-behind through the cache (docs/write-behind.md): `PUT /api/cache/behind/{path}`
//! makes the body the path's cached entry and queues it for the origin, in one script; the
//! client's 202 means both are in Redis. `POST /api/cache/drain` (component `cache-admin`,
//! called by a scheduler) delivers the queue to the origin, at least once, in queue order per
//! bucket (so per path), acknowledging an entry only after the origin answered 2xx;
//! `GET /api/cache/queue` says how much is waiting.
//!
//! The queue of a bucket is a stream in the bucket's hash slot with one consumer group, so a
//! write's entry and its queue entry are one single-slot script. A drain holds a bucket's
//! lease while it delivers from it: two drains never deliver from one bucket at once.

use http::Method;
use serde::Serialize;

use super::entry::header_block;
use super::fetch;
use super::keys::{self, EntryKeys};
use super::settings::CacheSettings;
use super::target::Target;
use crate::args;
use crate::lua_script;
use crate::platform::auth::{require_bearer, MIN_TOKEN_LEN};
use crate::platform::clock::monotonic_ms;
use crate::platform::redis::Redis;
use crate::platform::script::{Script, CLOCK};
use crate::platform::secrets::{random_bytes, random_token};
use crate::platform::settings::{ConfigError, Secret, Variables};
use crate::platform::{ApiError, Request, Response};

static WRITE: Script = lua_script!(CLOCK, include_str!("wb_write.lua"));
static NEXT: Script = lua_script!(include_str!("wb_next.lua"));
static DONE: Script = lua_script!(include_str!("wb_done.lua"));
static RELEASE: Script = lua_script!(include_str!("wb_release.lua"));
static STATUS: Script = lua_script!(include_str!("wb_status.lua"));

/// The queues' consumer group, and its one consumer (the bucket's lease holder reads as it).
const GROUP: &str = "drain";
const CONSUMER: &str = "drain";
/// A full queue's refusal asks the client to come back after this long (a drain a minute).
const FULL_RETRY_AFTER_SECONDS: &str = "30";
/// A drain's lease on a bucket outlives the drain's deadline by this much.
const LEASE_MARGIN_MS: u64 = 5000;
const MAX_KEY_LEN: usize = 128;
const MAX_CONTENT_TYPE_LEN: usize = 256;

/// The variable names, as spin.toml maps them to `cache` and `cache-admin`.
pub mod vars {
    pub const WRITE_TOKEN: &str = "cache_write_token";
    pub const DRAIN_TOKEN: &str = "cache_drain_token";
    pub const MAX_QUEUE: &str = "cache_write_behind_max_queue";
    pub const MAX_ATTEMPTS: &str = "cache_write_behind_max_attempts";
    pub const BACKOFF: &str = "cache_write_behind_backoff_ms";
    pub const BACKOFF_MAX: &str = "cache_write_behind_backoff_max_ms";
    pub const DRAIN_MAX: &str = "cache_drain_max_entries";
    pub const DRAIN_DEADLINE: &str = "cache_drain_deadline_ms";
}

#[derive(Debug, Clone)]
pub struct WriteBehindSettings {
    /// Bearer token of `PUT /api/cache/behind/...`; empty: the route is off.
    pub write_token: Secret,
    /// Bearer token of `POST /api/cache/drain` and `GET /api/cache/queue`; empty: off.
    pub drain_token: Secret,
    /// Most entries a bucket's queue holds; a write past it is refused.
    pub max_queue: u64,
    /// Deliveries of one entry before it goes to the dead-letter stream.
    pub max_attempts: u64,
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// Most deliveries one drain call attempts.
    pub drain_max_entries: u64,
    /// A drain call answers within this long: it starts a delivery only while one origin
    /// timeout still fits.
    pub drain_deadline_ms: u64,
}

impl WriteBehindSettings {
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_variables(&Variables::spin())
    }

    pub fn from_variables(v: &Variables) -> Result<Self, ConfigError> {
        let backoff_ms = v.whole_setting(vars::BACKOFF)?;
        let backoff_max_ms = v.whole_setting(vars::BACKOFF_MAX)?;
        if backoff_max_ms < backoff_ms {
            return Err(ConfigError::new(vars::BACKOFF_MAX, "must not be below the first delay"));
        }
        Ok(Self {
            write_token: v.secret(vars::WRITE_TOKEN, MIN_TOKEN_LEN)?,
            drain_token: v.secret(vars::DRAIN_TOKEN, MIN_TOKEN_LEN)?,
            max_queue: v.whole_setting(vars::MAX_QUEUE)?,
            max_attempts: v.whole_setting(vars::MAX_ATTEMPTS)?,
            backoff_ms,
            backoff_max_ms,
            drain_max_entries: v.whole_setting(vars::DRAIN_MAX)?,
            drain_deadline_ms: v.whole_setting(vars::DRAIN_DEADLINE)?,
        })
    }
}

/// The keys of one bucket's queue, all in the bucket's slot.
struct QueueKeys {
    queue: String,
    dead: String,
    lease: String,
    failed: String,
}

impl QueueKeys {
    fn new(redis: &Redis, bucket: u32) -> Self {
        let base = keys::bucket_prefix(redis, bucket);
        Self {
            queue: format!("{base}:wb:queue"),
            dead: format!("{base}:wb:dead"),
            lease: format!("{base}:wb:lease"),
            failed: format!("{base}:wb:failed"),
        }
    }
}

#[derive(Serialize)]
struct Queued<'a> {
    queued: bool,
    id: &'a str,
    path: &'a str,
    idempotency_key: &'a str,
}

/// `PUT /api/cache/behind/{path}`: the body becomes the path's entry and a queue entry, both
/// or neither; 202 once both are in Redis, 503 `write_queue_full` (nothing written) when the
/// bucket's queue holds `cache_write_behind_max_queue` entries.
pub(crate) fn write(
    req: &mut Request,
    target: &Target,
    keys: &EntryKeys,
    redis: &Redis,
    settings: &CacheSettings,
    body: &[u8],
) -> Result<Response, ApiError> {
    let wb = WriteBehindSettings::from_spin_variables()?;
    let content_type = req.header("content-type").unwrap_or("").trim().to_owned();
    if content_type.len() > MAX_CONTENT_TYPE_LEN
        || content_type.bytes().any(|b| b.is_ascii_control())
    {
        return Err(ApiError::bad_request(
            "invalid_content_type",
            "the Content-Type is not usable",
        ));
    }
    let key = match req.header("idempotency-key") {
        None => random_token(16),
        Some(k) => {
            let k = k.trim();
            if k.is_empty() || k.len() > MAX_KEY_LEN || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
                ));
            }
            k.to_owned()
        }
    };
    let headers = if content_type.is_empty() {
        Vec::new()
    } else {
        vec![("content-type".to_owned(), content_type.clone().into_bytes())]
    };
    let queue = QueueKeys::new(redis, keys.bucket);
    let reply = redis.eval(
        &WRITE,
        &[&queue.queue, &keys.entry, &keys.variants, &keys.tombstone, &keys.marker],
        args![
            wb.max_queue,
            GROUP,
            "PUT",
            target.as_str(),
            content_type.as_str(),
            key.as_str(),
            body,
            header_block(&headers).as_slice(),
            settings.ttl_ms,
            settings.ttl_ms + settings.stale_ms,
            settings.lock_ttl_ms(),
            format!("{}:e:", keys.base).as_str()
        ],
    )?;
    if reply.string(0)? == "full" {
        return Err(ApiError::new(
            503,
            "write_queue_full",
            "the write-behind queue is full: nothing was written; try again after a drain",
        )
        .with_header("retry-after", FULL_RETRY_AFTER_SECONDS));
    }
    let id = reply.string(1)?;
    let body = Queued { queued: true, id, path: target.as_str(), idempotency_key: &key };
    Ok(Response::json(202, &body).with_header("idempotency-key", key.as_str()))
}

fn authorize_drain(req: &Request, wb: &WriteBehindSettings) -> Result<(), ApiError> {
    require_bearer(req, &wb.drain_token, || {
        ApiError::new(403, "drain_disabled", "the drain is disabled: set cache_drain_token")
    })
}

/// Write routes are off until `cache_write_token` is set.
pub(crate) fn authorize_write(req: &Request) -> Result<(), ApiError> {
    let wb = WriteBehindSettings::from_spin_variables()?;
    require_bearer(req, &wb.write_token, || {
        ApiError::new(
            403,
            "write_behind_disabled",
            "write-behind is disabled: set cache_write_token",
        )
    })
}

#[derive(Serialize, Default)]
struct Drained {
    /// Entries the origin acknowledged (2xx), now removed from the queue.
    delivered: u64,
    /// Deliveries that failed and will be retried after their backoff.
    failed: u64,
    /// Entries moved to the dead-letter stream (attempts used up, or refused for good).
    dead_lettered: u64,
    /// Buckets another drain was delivering from.
    busy_buckets: u64,
    /// Buckets whose oldest entry waits out its backoff.
    waiting_buckets: u64,
    /// The call stopped at `cache_drain_max_entries` or `cache_drain_deadline_ms`: call again.
    more: bool,
}

/// 4xx answers that retrying cannot change; 408, 425 and 429 are worth retrying.
fn permanent(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

/// `POST /api/cache/drain`: delivers queued writes to the origin, bucket by bucket from a
/// random one, until every bucket is empty, waiting or busy, or the call's limits are met.
/// Safe to call at any time and from several schedulers at once.
pub(crate) fn drain(req: &Request, settings: &CacheSettings) -> Result<Response, ApiError> {
    let wb = WriteBehindSettings::from_spin_variables()?;
    authorize_drain(req, &wb)?;
    // The last delivery starts at the latest one origin timeout before the deadline.
    let Some(budget_ms) =
        wb.drain_deadline_ms.checked_sub(settings.origin_timeout_ms).filter(|ms| *ms > 0)
    else {
        return Err(ConfigError::new(
            vars::DRAIN_DEADLINE,
            "must exceed cache_origin_timeout_ms, or no delivery fits in a drain",
        )
        .into());
    };
    let redis = Redis::from_spin_variables()?;
    let token = random_token(16);
    let started = monotonic_ms();
    let lease_ms = wb.drain_deadline_ms + LEASE_MARGIN_MS;
    let buckets = settings.buckets.max(1);
    let r = random_bytes(4);
    let first = u32::from_be_bytes([r[0], r[1], r[2], r[3]]) % buckets;
    let mut out = Drained::default();
    let mut attempted = 0;
    'buckets: for i in 0..buckets {
        let q = QueueKeys::new(&redis, (first + i) % buckets);
        let release = || redis.eval(&RELEASE, &[&q.lease], args![token.as_str()]).map(|_| ());
        loop {
            if attempted >= wb.drain_max_entries
                || monotonic_ms().saturating_sub(started) >= budget_ms
            {
                out.more = true;
                release()?;
                break 'buckets;
            }
            let next = redis.eval(
                &NEXT,
                &[&q.queue, &q.lease, &q.failed],
                args![GROUP, CONSUMER, token.as_str(), lease_ms, wb.backoff_ms, wb.backoff_max_ms],
            )?;
            match next.string(0)? {
                "busy" => {
                    out.busy_buckets += 1;
                    break;
                }
                "again" => continue,
                "entry" => {}
                state => {
                    out.waiting_buckets += u64::from(state == "wait");
                    release()?;
                    break;
                }
            }
            attempted += 1;
            let id = next.string(1)?.to_owned();
            let attempt = next.int(2)?.max(1) as u64;
            let method = Method::from_bytes(next.bytes(3)?).unwrap_or(Method::PUT);
            let (target, content_type) = (next.string(4)?, next.string(5)?);
            let (key, body) = (next.string(6)?, next.bytes(7)?);
            let mut headers = vec![
                ("idempotency-key".to_owned(), key.as_bytes().to_vec()),
                ("content-length".to_owned(), body.len().to_string().into_bytes()),
            ];
            if !content_type.is_empty() {
                headers.push(("content-type".to_owned(), content_type.as_bytes().to_vec()));
            }
            let sent = fetch::send(
                &method,
                &settings.origin_url,
                target,
                &headers,
                body,
                settings.origin_timeout_ms,
            );
            let (outcome, error) = match sent {
                Ok(r) if (200..300).contains(&r.status) => ("ack", String::new()),
                Ok(r) if permanent(r.status) => ("dead", format!("status {}", r.status)),
                Ok(r) => ("retry", format!("status {}", r.status)),
                Err(e) => ("retry", e.to_string()),
            };
            let outcome =
                if outcome == "retry" && attempt >= wb.max_attempts { "dead" } else { outcome };
            if outcome != "ack" {
                crate::platform::log::warn(
                    "write_behind_failed",
                    format_args!("{target} entry {id} attempt {attempt}: {error} ({outcome})"),
                );
            }
            redis.eval(
                &DONE,
                &[&q.queue, &q.failed, &q.dead],
                args![GROUP, id.as_str(), outcome, attempt, error.as_str()],
            )?;
            match outcome {
                "ack" => out.delivered += 1,
                "dead" => out.dead_lettered += 1,
                _ => {
                    // The bucket's order holds: its later entries wait behind this one.
                    out.failed += 1;
                    release()?;
                    break;
                }
            }
        }
    }
    Ok(Response::json(200, &out))
}

#[derive(Serialize)]
struct QueueStatus {
    /// Entries not yet acknowledged by the origin (bounded per bucket).
    queued: i64,
    /// Of those, entries delivered at least once without an acknowledgement.
    pending: i64,
    /// Entries in the dead-letter streams.
    dead_letters: i64,
    /// The fullest bucket's queue, and the bound.
    fullest_bucket: i64,
    max_queue_per_bucket: u64,
}

/// `GET /api/cache/queue`: the queues' totals, one round trip per bucket.
pub(crate) fn status(req: &Request, settings: &CacheSettings) -> Result<Response, ApiError> {
    let wb = WriteBehindSettings::from_spin_variables()?;
    authorize_drain(req, &wb)?;
    let redis = Redis::from_spin_variables()?;
    let mut s = QueueStatus {
        queued: 0,
        pending: 0,
        dead_letters: 0,
        fullest_bucket: 0,
        max_queue_per_bucket: wb.max_queue,
    };
    for bucket in 0..settings.buckets.max(1) {
        let q = QueueKeys::new(&redis, bucket);
        let reply = redis.eval(&STATUS, &[&q.queue, &q.dead], args![GROUP])?;
        let queued = reply.int(0)?;
        s.queued += queued;
        s.pending += reply.int(1)?;
        s.dead_letters += reply.int(2)?;
        s.fullest_bucket = s.fullest_bucket.max(queued);
    }
    Ok(Response::json(200, &s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(overrides: &[(&str, &str)]) -> Result<WriteBehindSettings, ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::from([
            (vars::WRITE_TOKEN, ""),
            (vars::DRAIN_TOKEN, ""),
            (vars::MAX_QUEUE, "10000"),
            (vars::MAX_ATTEMPTS, "10"),
            (vars::BACKOFF, "1000"),
            (vars::BACKOFF_MAX, "300000"),
            (vars::DRAIN_MAX, "100"),
            (vars::DRAIN_DEADLINE, "12000"),
        ]);
        map.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|n| Ok(map[n].to_owned()));
        WriteBehindSettings::from_variables(&variables)
    }

    #[test]
    fn defaults_parse_and_bad_values_name_their_variable() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.max_queue, s.max_attempts, s.drain_deadline_ms), (10_000, 10, 12_000));
        for (name, value) in [
            (vars::WRITE_TOKEN, "short"),
            (vars::MAX_QUEUE, "0"),
            (vars::MAX_ATTEMPTS, "0"),
            (vars::BACKOFF_MAX, "10"),
            (vars::DRAIN_MAX, "0"),
            (vars::DRAIN_DEADLINE, "0"),
        ] {
            assert_eq!(settings(&[(name, value)]).unwrap_err().variable, name, "{name}={value}");
        }
    }

    #[test]
    fn only_hopeless_4xx_answers_skip_the_retries() {
        assert!(permanent(400) && permanent(404) && permanent(422));
        assert!(!permanent(408) && !permanent(429) && !permanent(500) && !permanent(503));
    }
}
