//! The cache's admin routes, served by the `cache-admin` component (its own small .wasm,
//! deployable apart from the hot path): `POST /api/cache/purge` and `GET /api/cache/stats`.
//!
//! Both walk the `cache_key_buckets` hash slots: one single-slot script (purge) or one
//! `MGET` of the bucket's counters (stats) per bucket, over one connection. Purges and stats reads are rare; the
//! layout keeps every hit and miss a single-slot script.

use http::Method;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use super::settings::CacheSettings;
use super::{authorize_purge, counter_key, tag_set_key, COUNTERS, STATS_TTL_SECONDS};
use crate::args;
use crate::lua_script;
use crate::platform::redis::{Redis, ToArg};
use crate::platform::script::Script;
use crate::platform::{serve, ApiError, Request, Response};

static PURGE_TAGS: Script = lua_script!(include_str!("purge_tags.lua"));

const MAX_PURGE_BODY: usize = 16 * 1024;
const MAX_PURGE_TAGS: usize = 32;
const MAX_TAG_LEN: usize = 256;

/// The component's entry point: two exact routes (Spin gives them an empty path-info), told
/// apart by the route that matched.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        let settings = CacheSettings::from_spin_variables()?;
        match req.component_route() {
            "/api/cache/purge" => {
                req.allow(&[Method::POST])?;
                authorize_purge(&req, &settings)?;
                purge_tags(&mut req, &settings)
            }
            "/api/cache/stats" => {
                req.allow(&[Method::GET, Method::HEAD])?;
                stats(&settings)
            }
            _ => Err(ApiError::not_found("no such cache admin route")),
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    tags: Vec<String>,
}

#[derive(Serialize)]
struct PurgeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tags: &'a [String],
    purged: i64,
}

#[derive(Serialize)]
struct Purged<'a> {
    purged: i64,
    tags: &'a [String],
}

/// `POST /api/cache/purge {"tags": [...]}`: one script per bucket (each single-slot), then
/// one PUBLISH. Purges are rare; the hot path never pays for this layout.
fn purge_tags(req: &mut Request, settings: &CacheSettings) -> Result<Response, ApiError> {
    let body: PurgeRequest = req.json(MAX_PURGE_BODY)?;
    let mut tags: Vec<String> = Vec::new();
    for tag in body.tags {
        let tag = tag.trim().to_owned();
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(ApiError::new(
                422,
                "invalid_tags",
                format!("each tag must be 1 to {MAX_TAG_LEN} bytes"),
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.is_empty() || tags.len() > MAX_PURGE_TAGS {
        return Err(ApiError::new(422, "invalid_tags", format!("send 1 to {MAX_PURGE_TAGS} tags")));
    }
    let redis = Redis::from_spin_variables()?;
    let mut purged = 0;
    for bucket in 0..settings.buckets {
        let mut keys = vec![counter_key(&redis, bucket, "purged")];
        keys.extend(tags.iter().filter_map(|t| tag_set_key(&redis, bucket, t)));
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        purged += redis.eval(&PURGE_TAGS, &key_refs, args![STATS_TTL_SECONDS])?.int(0)?;
    }
    let event = PurgeEvent { kind: "purge", tags: &tags, purged };
    let event = serde_json::to_vec(&event).unwrap_or_default();
    redis.publish(&settings.purge_channel, &event)?;
    Ok(Response::json(200, &Purged { purged, tags: &tags }))
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

/// `GET /api/cache/stats`: the bucket counters summed (one MGET per bucket).
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
