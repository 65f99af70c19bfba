//! Purges: by target (`DELETE /api/cache/proxy/{path}`, and write-through after a 2xx), by
//! tag and everything (`POST /api/cache/purge`, in [`super::admin`]). Hard purges delete;
//! soft purges mark entries stale, so one request revalidates while the others are served
//! the stale copy (within the origin's stale-while-revalidate window). Both leave a
//! tombstone that makes the store script refuse any fill that started before the purge, so
//! a purge is never undone by a fill that was in flight.

use serde::Serialize;

use super::keys::EntryKeys;
use super::scripts::{PURGE, STATS_TTL_SECONDS};
use super::settings::CacheSettings;
use super::target::Target;
use crate::args;
use crate::platform::auth::require_bearer;
use crate::platform::redis::{Redis, RedisError, ToArg};
use crate::platform::{ApiError, Request, Response};

/// Purges need `Authorization: Bearer <cache_purge_token>`; an empty token disables them.
pub(crate) fn authorize_purge(req: &Request, settings: &CacheSettings) -> Result<(), ApiError> {
    require_bearer(req, &settings.purge_token, || {
        ApiError::new(403, "purge_disabled", "purging is disabled: set cache_purge_token")
    })
}

/// What one purge script call touches in one bucket.
pub(crate) struct BucketPurge<'a> {
    pub base: String,
    pub counter: String,
    pub tombstones: Vec<String>,
    pub sets: Vec<String>,
    pub entries: Vec<String>,
    pub soft: bool,
    /// Channel and event (ending `"purged":0}`; the script fills the count in).
    pub announce: Option<(&'a str, Vec<u8>)>,
}

/// Runs purge.lua for one bucket; returns the entries purged.
pub(crate) fn purge_bucket(
    redis: &Redis,
    settings: &CacheSettings,
    p: BucketPurge<'_>,
) -> Result<i64, RedisError> {
    let mut keys = vec![p.counter.as_str()];
    keys.extend(p.tombstones.iter().map(String::as_str));
    keys.extend(p.sets.iter().map(String::as_str));
    keys.extend(p.entries.iter().map(String::as_str));
    let (channel, event) = p.announce.unwrap_or(("", Vec::new()));
    let mut argv = args![
        if p.soft { "soft" } else { "hard" },
        STATS_TTL_SECONDS,
        settings.lock_ttl_ms(),
        p.tombstones.len() as u64,
        p.sets.len() as u64,
        p.base.as_str(),
        channel
    ];
    argv.push(event.to_arg());
    redis.eval(&PURGE, &keys, argv)?.int(0)
}

#[derive(Serialize)]
struct PurgeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    /// Last, and 0: the script writes the count in.
    purged: i64,
}

#[derive(Serialize)]
struct Purged<'a> {
    purged: i64,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
}

/// Purges every variant of a target (and the requested variant's key even if the variants
/// set lost it) in one round trip; announced on `cache_purge_channel` when `announce`.
pub(crate) fn purge_target(
    redis: &Redis,
    keys: &EntryKeys,
    target: &Target,
    settings: &CacheSettings,
    soft: bool,
    announce: bool,
) -> Result<i64, RedisError> {
    let mode = soft.then_some("soft");
    let event = PurgeEvent { kind: "purge", path: target.as_str(), mode, purged: 0 };
    let event = serde_json::to_vec(&event).unwrap_or_default();
    purge_bucket(
        redis,
        settings,
        BucketPurge {
            base: keys.base.clone(),
            counter: keys.counter("purged"),
            tombstones: vec![keys.tombstone.clone()],
            sets: vec![keys.variants.clone()],
            entries: vec![keys.entry.clone()],
            soft,
            announce: announce.then_some((settings.purge_channel.as_str(), event)),
        },
    )
}

/// `DELETE /api/cache/proxy/{path}` (`Soft-Purge: 1` for a soft purge): one round trip.
pub(crate) fn purge_route(
    req: &Request,
    keys: &EntryKeys,
    redis: &Redis,
    target: &Target,
    settings: &CacheSettings,
) -> Result<Response, ApiError> {
    let soft = req.header("soft-purge").is_some_and(|v| v.trim() == "1");
    let purged = purge_target(redis, keys, target, settings, soft, true)?;
    let mode = soft.then_some("soft");
    Ok(Response::json(200, &Purged { purged, path: target.as_str(), mode }))
}
