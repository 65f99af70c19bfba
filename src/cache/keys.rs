//! The Redis key layout. Every key of one target shares the hash tag of its bucket, `{bN}`
//! with `N = sha256(target) mod cache_key_buckets`: its entries (one per variant), locks,
//! markers, purge tombstone, the bucket's counters, tag sets and tag tombstones. So a hit,
//! a fill's store and a purge of one target each stay one single-slot script.
//!
//! ```text
//! {prefix}cache:{bN}:e:{key}         string: the entry (see entry.rs); PX = fresh + stale
//! {prefix}cache:{bN}:lock:{key}      single-flight lock: "{token}" PX lock TTL
//! {prefix}cache:{bN}:m:{key}         marker: "pass" (hit-for-pass) or a remembered origin
//!                                    failure; PX cache_pass_ttl / cache_error_ttl
//! {prefix}cache:{bN}:v:{target}      set: the entry keys of the target's variants
//! {prefix}cache:{bN}:pt:{target}     purge tombstone: Redis ms of the last purge of the
//!                                    target; fills that started before it do not store
//! {prefix}cache:{bN}:tag:{tag}       set: entry keys of this bucket carrying the tag
//! {prefix}cache:{bN}:tp:{tag}        tag purge tombstone (as pt)
//! {prefix}cache:{bN}:purged_at       purge-all tombstone (as pt)
//! {prefix}cache:{bN}:stats:{counter} string counter: hits, misses, stale, bypasses,
//!                                    origin_fetches, purged
//! {prefix}cache:{bN}:wb:queue        stream: the bucket's write-behind queue (group `drain`)
//! {prefix}cache:{bN}:wb:dead         stream: its dead letters
//! {prefix}cache:{bN}:wb:lease        the draining call's token, PX (one drain per bucket)
//! {prefix}cache:{bN}:wb:failed       hash: entry id -> the attempt that failed last
//! {prefix}demo:counter               GET /api/cache/demo
//! ```
//!
//! `{key}` is the target, plus `#` and the configured `Vary` request headers' values when
//! `cache_vary_headers` is set, hashed (`sha256:…`) when longer than 128 bytes. User input is
//! percent-encoded with braces encoded, so it never supplies a hash tag.

use super::target::{bounded, encode, tag_key_part, Target};
use crate::platform::redis::Redis;

pub(crate) fn bucket_prefix(redis: &Redis, bucket: u32) -> String {
    redis.key(&format!("cache:{{b{bucket}}}"))
}

/// The counters kept per bucket, each a string key `{prefix}cache:{bN}:stats:{name}`.
pub(crate) const COUNTERS: [&str; 6] =
    ["hits", "misses", "stale", "bypasses", "origin_fetches", "purged"];

pub(crate) fn counter_key(redis: &Redis, bucket: u32, name: &str) -> String {
    format!("{}:stats:{name}", bucket_prefix(redis, bucket))
}

pub(crate) fn tag_set_key(redis: &Redis, bucket: u32, tag: &str) -> Option<String> {
    tag_key_part(tag).map(|part| format!("{}:tag:{part}", bucket_prefix(redis, bucket)))
}

pub(crate) fn tag_tombstone_key(redis: &Redis, bucket: u32, tag: &str) -> Option<String> {
    tag_key_part(tag).map(|part| format!("{}:tp:{part}", bucket_prefix(redis, bucket)))
}

pub(crate) fn purge_all_key(redis: &Redis, bucket: u32) -> String {
    format!("{}:purged_at", bucket_prefix(redis, bucket))
}

/// The variant part of a key: `name=value` of each configured Vary header the request
/// carries, encoded (absent and empty are the same; none at all: no variant part).
pub(crate) fn variant(values: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in values.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(if out.is_empty() { "#" } else { "&" });
        out.push_str(name);
        out.push('=');
        out.push_str(&encode(value.as_bytes()));
    }
    out
}

/// The keys of one cache entry, all in the bucket's hash slot.
pub(crate) struct EntryKeys {
    pub bucket: u32,
    /// `{prefix}cache:{bN}`.
    pub base: String,
    pub entry: String,
    pub lock: String,
    pub marker: String,
    pub variants: String,
    pub tombstone: String,
    pub purged_at: String,
}

impl EntryKeys {
    pub fn new(redis: &Redis, target: &Target, variant: &str, buckets: u32) -> Self {
        let bucket = target.bucket(buckets);
        let base = bucket_prefix(redis, bucket);
        let part = bounded(&format!("{}{variant}", target.as_str()));
        let target_part = target.key_part();
        Self {
            bucket,
            entry: format!("{base}:e:{part}"),
            lock: format!("{base}:lock:{part}"),
            marker: format!("{base}:m:{part}"),
            variants: format!("{base}:v:{target_part}"),
            tombstone: format!("{base}:pt:{target_part}"),
            purged_at: format!("{base}:purged_at"),
            base,
        }
    }

    pub fn counter(&self, name: &str) -> String {
        format!("{}:stats:{name}", self.base)
    }
}
