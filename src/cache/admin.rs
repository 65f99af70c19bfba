//! The cache's admin routes, served by the `cache-admin` component (its own small .wasm,
//! deployable apart from the hot path): `POST /api/cache/purge`, `GET /api/cache/stats`, and
//! the write-behind queue's `POST /api/cache/drain` and `GET /api/cache/queue`.
//!
//! Purges walk the `cache_key_buckets` hash slots, one single-slot purge script per bucket
//! over one connection; purge-all also `SCAN`s for entry keys. Stats read one `MGET` of the
//! bucket's counters per bucket. Purges and stats reads are rare; the layout keeps every hit
//! and miss a single-slot script.

use std::collections::BTreeMap;

use http::Method;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use super::keys::{
    bucket_prefix, counter_key, purge_all_key, tag_set_key, tag_tombstone_key, COUNTERS,
};
use super::purge::{authorize_purge, purge_bucket, BucketPurge};
use super::settings::CacheSettings;
use crate::args;
use crate::platform::redis::{Redis, ToArg};
use crate::platform::{serve, ApiError, Request, Response};

const MAX_PURGE_BODY: usize = 16 * 1024;
const MAX_PURGE_TAGS: usize = 32;
const MAX_TAG_LEN: usize = 256;
/// Keys asked for per `SCAN` call of a purge-all, and purged per script call.
const SCAN_COUNT: i64 = 500;

/// The component's entry point: two exact routes (Spin gives them an empty path-info), told
/// apart by the route that matched.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        let settings = CacheSettings::from_spin_variables()?;
        match req.component_route() {
            "/api/cache/purge" => {
                req.allow(&[Method::POST])?;
                authorize_purge(&req, &settings)?;
                purge(&mut req, &settings)
            }
            "/api/cache/stats" => {
                req.allow(&[Method::GET, Method::HEAD])?;
                stats(&settings)
            }
            "/api/cache/drain" => {
                req.allow(&[Method::POST])?;
                super::write_behind::drain(&req, &settings)
            }
            "/api/cache/queue" => {
                req.allow(&[Method::GET, Method::HEAD])?;
                super::write_behind::status(&req, &settings)
            }
            _ => Err(ApiError::not_found("no such cache admin route")),
        }
    })
}

/// `{"tags": [...]}` or `{"all": true}`, either with `"soft": true` to mark stale instead
/// of deleting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    soft: bool,
}

#[derive(Serialize)]
struct PurgeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    all: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    purged: i64,
}

#[derive(Serialize)]
struct Purged<'a> {
    purged: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    all: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
}

fn invalid_tags(message: String) -> ApiError {
    ApiError::new(422, "invalid_tags", message)
}

/// `POST /api/cache/purge`: one script per bucket (each single-slot), then one PUBLISH.
fn purge(req: &mut Request, settings: &CacheSettings) -> Result<Response, ApiError> {
    let body: PurgeRequest = req.json(MAX_PURGE_BODY)?;
    let mut tags: Vec<String> = Vec::new();
    for tag in body.tags {
        let tag = tag.trim().to_owned();
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(invalid_tags(format!("each tag must be 1 to {MAX_TAG_LEN} bytes")));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if body.all && !tags.is_empty() {
        return Err(invalid_tags("send either tags or \"all\": true, not both".into()));
    }
    if !body.all && (tags.is_empty() || tags.len() > MAX_PURGE_TAGS) {
        return Err(invalid_tags(format!("send 1 to {MAX_PURGE_TAGS} tags")));
    }
    let redis = Redis::from_spin_variables()?;
    let soft = body.soft;
    let purged = if body.all {
        purge_all(&redis, settings, soft)?
    } else {
        purge_tags(&redis, settings, &tags, soft)?
    };
    let mode = soft.then_some("soft");
    let tags = (!body.all).then_some(tags.as_slice());
    let event = PurgeEvent { kind: "purge", tags, all: body.all, mode, purged };
    let event = serde_json::to_vec(&event).unwrap_or_default();
    redis.publish(&settings.purge_channel, &event)?;
    Ok(Response::json(200, &Purged { purged, tags, all: body.all, mode }))
}

fn bucket_purge(redis: &Redis, bucket: u32, soft: bool) -> BucketPurge<'static> {
    BucketPurge {
        base: bucket_prefix(redis, bucket),
        counter: counter_key(redis, bucket, "purged"),
        tombstones: Vec::new(),
        sets: Vec::new(),
        entries: Vec::new(),
        soft,
        announce: None,
    }
}

fn purge_tags(
    redis: &Redis,
    settings: &CacheSettings,
    tags: &[String],
    soft: bool,
) -> Result<i64, ApiError> {
    let mut purged = 0;
    for bucket in 0..settings.buckets {
        let mut p = bucket_purge(redis, bucket, soft);
        p.tombstones = tags.iter().filter_map(|t| tag_tombstone_key(redis, bucket, t)).collect();
        p.sets = tags.iter().filter_map(|t| tag_set_key(redis, bucket, t)).collect();
        purged += purge_bucket(redis, settings, p)?;
    }
    Ok(purged)
}

/// Glob-escapes a key prefix for `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every bucket's purge-all tombstone first (fills in flight will not store), then every
/// entry key found by `SCAN`, purged in single-bucket batches.
fn purge_all(redis: &Redis, settings: &CacheSettings, soft: bool) -> Result<i64, ApiError> {
    for bucket in 0..settings.buckets {
        let mut p = bucket_purge(redis, bucket, soft);
        p.tombstones = vec![purge_all_key(redis, bucket)];
        purge_bucket(redis, settings, p)?;
    }
    let prefix = redis.key("cache:{b");
    let pattern = format!("{}*}}:e:*", glob_escape(&prefix));
    let (mut cursor, mut purged) = (b"0".to_vec(), 0);
    loop {
        let reply = redis.execute(
            "SCAN",
            args![cursor.as_slice(), "MATCH", pattern.as_str(), "COUNT", SCAN_COUNT],
        )?;
        cursor = reply.bytes(0)?.to_vec();
        let mut by_bucket: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for i in 1..reply.len() {
            let key = String::from_utf8_lossy(reply.bytes(i)?).into_owned();
            let bucket = key
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.split_once("}:e:"))
                .and_then(|(n, _)| n.parse::<u32>().ok());
            if let Some(bucket) = bucket {
                by_bucket.entry(bucket).or_default().push(key);
            }
        }
        for (bucket, entries) in by_bucket {
            let mut p = bucket_purge(redis, bucket, soft);
            p.entries = entries;
            purged += purge_bucket(redis, settings, p)?;
        }
        if cursor == b"0" {
            return Ok(purged);
        }
    }
}

#[derive(Serialize)]
struct Stats {
    hits: i64,
    misses: i64,
    stale: i64,
    bypasses: i64,
    origin_fetches: i64,
    purged: i64,
    requests: i64,
    hit_ratio: Option<f64>,
}

/// `GET /api/cache/stats`: the bucket counters summed (one MGET per bucket). Fast-path hits
/// are sampled (`cache_hit_sampling`): `hits` is then an estimate.
fn stats(settings: &CacheSettings) -> Result<Response, ApiError> {
    let redis = Redis::from_spin_variables()?;
    let mut totals = [0i64; COUNTERS.len()];
    for bucket in 0..settings.buckets {
        let keys = COUNTERS.iter().map(|name| counter_key(&redis, bucket, name).to_arg()).collect();
        let reply = redis.execute("MGET", keys)?;
        for (i, total) in totals.iter_mut().enumerate() {
            if !reply.is_nil(i)? {
                *total += reply.int(i)?;
            }
        }
    }
    let [hits, misses, stale, bypasses, origin_fetches, purged] = totals;
    let requests = hits + misses + stale + bypasses;
    let hit_ratio = (requests > 0)
        .then(|| ((hits + stale) as f64 / requests as f64 * 10_000.0).round() / 10_000.0);
    Ok(Response::json(
        200,
        &Stats { hits, misses, stale, bypasses, origin_fetches, purged, requests, hit_ratio },
    ))
}
