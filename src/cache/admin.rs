//! The cache's admin routes, served by the `cache-admin` component (its own small .wasm,
//! deployable apart from the hot path): `POST /api/cache/purge` and `GET /api/cache/stats`.
//!
//! Both walk the `cache_key_buckets` hash slots: one single-slot script (purge) or one
//! `MGET` of the bucket's counters (stats) per bucket, over one connection. Purges and stats reads are rare; the
//! layout keeps every hit and miss a single-slot script.

use serde_json::json;
use spin_sdk::http::{Method, Request, Response};

use super::settings::CacheSettings;
use super::{
    authorize_purge, cache_settings, counter_key, tag_set_key, COUNTERS, STATS_TTL_SECONDS,
};
use crate::args;
use crate::error::ApiError;
use crate::http::{allow_methods, json, respond};
use crate::redis::{Redis, Script, ToArg};

static PURGE_TAGS: Script = Script::new(lua!("purge_tags.lua"));

const MAX_PURGE_BODY: usize = 16 * 1024;
const MAX_PURGE_TAGS: usize = 32;
const MAX_TAG_LEN: usize = 256;

pub fn handle(req: Request) -> Response {
    respond(|| {
        // Two exact routes (Spin gives them an empty path-info): tell them apart by path.
        let path = req.path();
        if path.ends_with("/purge") {
            allow_methods(&req, &[Method::Post])?;
            authorize_purge(&req)?;
            purge_tags(&req, &cache_settings()?)
        } else if path.ends_with("/stats") {
            allow_methods(&req, &[Method::Get, Method::Head])?;
            stats(&cache_settings()?)
        } else {
            Err(ApiError::not_found("no such cache admin route"))
        }
    })
}

/// `POST /api/cache/purge {"tags": [...]}`: one script per bucket (each single-slot), then
/// one PUBLISH. Purges are rare; the hot path never pays for this layout.
fn purge_tags(req: &Request, settings: &CacheSettings) -> Result<Response, ApiError> {
    let body = crate::json::sdk_request_body(req, MAX_PURGE_BODY, 2)?;
    let shape =
        || ApiError::bad_request("invalid_json", r#"send {"tags": ["tag", ...]} and nothing else"#);
    let items = match body.members().as_deref() {
        Some([only]) if only.name == "tags" => only.value.items().ok_or_else(shape)?,
        _ => return Err(shape()),
    };
    let mut tags: Vec<String> = Vec::new();
    for item in items {
        let tag = item.as_str().ok_or_else(shape)?.trim().to_owned();
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
    let event = json!({ "type": "purge", "tags": tags, "purged": purged });
    redis.publish(&settings.purge_channel, event.to_string().as_bytes())?;
    Ok(json(200, &json!({ "purged": purged, "tags": tags })))
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
    Ok(json(
        200,
        &json!({
            "hits": hits, "misses": misses, "stale": stale, "bypasses": bypasses,
            "origin_fetches": origin_fetches, "purged": purged,
            "requests": requests, "hit_ratio": hit_ratio,
        }),
    ))
}
