//! The script calls of the read-through path and the decoding of their replies.

use super::entry::Entry;
use super::keys::EntryKeys;
use super::settings::CacheSettings;
use crate::args;
use crate::lua_script;
use crate::platform::redis::{Redis, RedisError, Reply};
use crate::platform::script::{Script, CLOCK};
use spin_sdk::redis::RedisParameter;

pub(crate) static LOOKUP: Script =
    lua_script!(CLOCK, include_str!("variant.lua"), include_str!("lookup.lua"));
pub(crate) static STORE: Script =
    lua_script!(CLOCK, include_str!("variant.lua"), include_str!("store.lua"));
pub(crate) static PURGE: Script = lua_script!(CLOCK, include_str!("purge.lua"));

/// Counters expire this long after a script last updated them.
pub(crate) const STATS_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// What the lookup script decided.
pub(crate) enum Lookup {
    Hit(Entry),
    Stale(Entry),
    /// This request holds the lock and refreshes the entry (stale, or early when fresh).
    Refresh {
        entry: Entry,
        fresh: bool,
    },
    /// No entry; this request holds the lock.
    Fetch,
    Wait,
    /// The key is marked uncacheable: to the origin, no lock.
    Pass,
    /// The origin failed for this key moments ago: the remembered failure.
    Error(Vec<u8>),
}

fn entry(reply: &Reply) -> Result<Entry, RedisError> {
    Entry::parse(reply.bytes(1)?.to_vec())
        .ok_or_else(|| RedisError::UnexpectedReply("unreadable cache entry".into()))
}

/// `first`: this request's first look (it may refresh early); else a waiter's poll.
pub(crate) fn lookup(
    redis: &Redis,
    keys: &EntryKeys,
    first: bool,
    token: &str,
    settings: &CacheSettings,
    factor_micros: i64,
    vary_pairs: &[(String, String)],
) -> Result<(Lookup, Clock), RedisError> {
    let mut argv = args![
        if first { "first" } else { "poll" },
        token,
        settings.lock_ttl_ms(),
        factor_micros,
        STATS_TTL_SECONDS
    ];
    push_pairs(&mut argv, vary_pairs);
    let reply = redis.eval(
        &LOOKUP,
        &[&keys.entry, &keys.lock, &keys.marker, &keys.counter("hits"), &keys.counter("stale")],
        argv,
    )?;
    let found = match reply.string(0)? {
        "hit" => Lookup::Hit(entry(&reply)?),
        "stale" => Lookup::Stale(entry(&reply)?),
        state @ ("refresh" | "early") => {
            Lookup::Refresh { entry: entry(&reply)?, fresh: state == "early" }
        }
        "fetch" => Lookup::Fetch,
        "wait" => Lookup::Wait,
        "pass" => Lookup::Pass,
        "error" => Lookup::Error(reply.bytes(1)?.to_vec()),
        other => return Err(RedisError::UnexpectedReply(format!("lookup state '{other}'"))),
    };
    Ok((found, Clock { now_ms: reply.int(2)?, now_us: reply.int(3)? }))
}

/// The request's fields as name/value arguments (variant.lua).
fn push_pairs(argv: &mut Vec<RedisParameter>, pairs: &[(String, String)]) {
    for (name, value) in pairs {
        argv.extend(args![name.as_str(), value.as_str()]);
    }
}

/// Redis's clock at a lookup: ms for entry times, µs for the fill's start (purge order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub now_ms: i64,
    pub now_us: i64,
}

/// Standards mode, an answer with `Vary`: the field names (sorted, joined by `,`), the most
/// variants per target, and the request's fields.
pub(crate) type VaryStore<'a> = (String, u64, &'a [(String, String)]);

/// What a fill leaves behind.
pub(crate) enum Action<'a> {
    Store {
        status: u16,
        headers: Vec<u8>,
        body: &'a [u8],
        age_ms: u64,
        ttl_ms: u64,
        hard_ms: u64,
        swr_ms: u64,
        sie_ms: u64,
        cost_ms: u64,
        /// The tag sets and tag tombstones of the entry's bucket, in pairs.
        tag_keys: Vec<String>,
        /// Standards mode, an answer with `Vary`: the field names (sorted, joined by `,`),
        /// the most variants per target, and the request's fields.
        vary: Option<VaryStore<'a>>,
    },
    /// A pass or failure marker for `ttl_ms`.
    Mark {
        value: Vec<u8>,
        ttl_ms: u64,
    },
    Evict,
    Skip,
}

/// The store script: entry, marker, eviction or nothing; unlock; counters. Returns whether
/// an entry was stored; a Redis failure here only loses the cache (logged).
pub(crate) fn finish(
    redis: &Redis,
    keys: &EntryKeys,
    token: &str,
    started_us: i64,
    action: Action<'_>,
    counter: &str,
) -> bool {
    let mut key_list = vec![
        keys.entry.clone(),
        keys.lock.clone(),
        keys.marker.clone(),
        keys.variants.clone(),
        keys.tombstone.clone(),
        keys.purged_at.clone(),
        keys.counter(counter),
        keys.counter("origin_fetches"),
    ];
    let name = match action {
        Action::Store { .. } => "store",
        Action::Mark { .. } => "mark",
        Action::Evict => "evict",
        Action::Skip => "skip",
    };
    let mut argv: Vec<RedisParameter> = args![token, name, STATS_TTL_SECONDS, started_us];
    match action {
        Action::Store {
            status,
            headers,
            body,
            age_ms,
            ttl_ms,
            hard_ms,
            swr_ms,
            sie_ms,
            cost_ms,
            tag_keys,
            vary,
        } => {
            key_list.extend(tag_keys);
            argv.extend(args![
                u32::from(status),
                headers.as_slice(),
                body,
                age_ms,
                ttl_ms,
                hard_ms,
                swr_ms,
                sie_ms,
                cost_ms
            ]);
            if let Some((names, max, pairs)) = vary {
                argv.extend(args![names.as_str(), max]);
                push_pairs(&mut argv, pairs);
            }
        }
        Action::Mark { value, ttl_ms } => argv.extend(args![value.as_slice(), ttl_ms]),
        Action::Evict | Action::Skip => {}
    }
    let key_refs: Vec<&str> = key_list.iter().map(String::as_str).collect();
    match redis.eval(&STORE, &key_refs, argv) {
        Ok(reply) => reply.int(0).unwrap_or(0) == 1,
        Err(e) => {
            crate::platform::log::warn(
                "not_stored",
                format_args!("could not store ({}): {e}", e.reason()),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_is_shipped_without_comments_or_indentation() {
        assert!(LOOKUP.source().starts_with("local t = redis.call('TIME')\n"));
        assert!(LOOKUP.source().contains("local function variant_key"));
        for script in [&LOOKUP, &STORE, &PURGE] {
            assert!(!script.source().contains("--") && !script.source().contains("\n "));
        }
    }
}
