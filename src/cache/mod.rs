//! Cache-aside in front of an HTTP origin: `/api/cache/...`.
//!
//! - [`key`]: request targets normalised into bounded, injection-free key parts.
//! - [`settings`]: the `origin_url` and `cache_*` variables.
//! - [`policy`]: what the origin's answer allows (store or not, TTL, tags).
//! - [`fetch`]: the origin GET over WASI HTTP, with timeouts.
//! - [`admin`]: `POST /api/cache/purge` and `GET /api/cache/stats`, served by the separate
//!   `cache-admin` component so the hot-path component stays small.
//! - the Lua scripts beside this file: lookup (+ lock + hit counting), store (+ unlock +
//!   counting), purges, the demo counter.
//!
//! **Keys.** Every key of one entry shares the hash tag of its bucket, `{bN}` with
//! `N = sha256(target) mod cache_key_buckets`: the entry, its lock, its bucket's counters
//! and its bucket's tag sets. So a hit (lookup + count) and a miss's store (entry + tag
//! index + unlock + count) each stay one single-slot script on clustered Redis.
//!
//! ```text
//! {prefix}cache:{bN}:e:{target}        string: the entry value (below); PX = fresh + stale
//! {prefix}cache:{bN}:lock:{target}     stampede lock (random token, PX)
//! {prefix}cache:{bN}:tag:{tag}         set of entry keys of this bucket carrying the tag
//! {prefix}cache:{bN}:stats:{counter}   string counter: hits, misses, stale, bypasses,
//!                                      origin_fetches, purged
//! {prefix}demo:counter                 GET /api/cache/demo
//! ```
//!
//! **Entry values** are plain strings, so Spin's key-value store (`GET` only) can read them
//! on the pooled fast path ([`crate::platform::fast_path`]) as well as the Lua scripts:
//!
//! ```text
//! c1\n{status}\n{stored_ms}\n{soft_ms}\n{cost_ms}\n{content_type}\n{body...}
//! ```
//!
//! `c1` is the format version: a reader that does not recognise it treats the value as no
//! entry (the Lua lookup then refetches and overwrites it). Times are Unix milliseconds from
//! Redis `TIME`: when the entry was stored and when it stops being fresh (its soft expiry;
//! the key's own PX is the hard one); `cost_ms` is how long the origin took (for XFetch).
//! The content type holds no line break (HTTP forbids them; the store script strips any);
//! the body is the raw bytes after the sixth `\n`.
//!
//! **Counters** are one string per counter per bucket, so the fast path can count a hit
//! with `INCRBY`. The scripts `EXPIRE` a counter 30 days after each update they make; a
//! counter first created by a fast-path hit has no expiry until a script next touches it
//! (there are at most `cache_key_buckets` x 6 of them).

pub mod admin;
pub mod fetch;
pub mod key;
pub mod policy;
pub mod settings;

use http::Method;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::args;
use crate::lua_script;
use crate::platform::auth::require_bearer;
use crate::platform::clock::{monotonic_ms, sleep_ms, unix_now_ms};
use crate::platform::fast_path::FastPath;
use crate::platform::outbound::{OutboundError, OutboundResponse};
use crate::platform::redis::{Redis, RedisError, Reply};
use crate::platform::script::{Script, CLOCK};
use crate::platform::secrets::{random_bytes, random_token};
use crate::platform::{serve as serve_http, ApiError, Request, Response};

use fetch::MAX_ORIGIN_BODY;
use key::Target;
use policy::Decision;
use settings::CacheSettings;

static LOOKUP: Script = lua_script!(CLOCK, include_str!("lookup.lua"));
static STORE: Script = lua_script!(CLOCK, include_str!("store.lua"));
static PURGE_ENTRY: Script = lua_script!(include_str!("purge_entry.lua"));
static DEMO_COUNTER: Script = lua_script!(include_str!("demo_counter.lua"));

/// Counters expire this long after a script last updated them.
pub(crate) const STATS_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// How often a request waiting on another's origin fetch looks again.
const POLL_INTERVAL_MS: u64 = 50;
const DEMO_TTL_SECONDS: i64 = 300;
const MAX_USER_ID_LEN: usize = 64;

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve_http(req, out, |req| route(&req))
}

/// The route table.
fn route(req: &Request) -> Result<Response, ApiError> {
    let path = req.path_info();
    let head = req.is_head();
    if let Some(rest) = path.strip_prefix("/proxy/") {
        req.allow(&[Method::GET, Method::HEAD, Method::DELETE])?;
        let target = key::normalise(rest, req.query())?;
        let settings = CacheSettings::from_spin_variables()?;
        return if *req.method() == Method::DELETE {
            authorize_purge(req, &settings)?;
            purge_entry(&target, &settings)
        } else {
            Ok(proxy_response(serve(&target, &settings)?, head))
        };
    }
    if let Some(user_id) = path.strip_prefix("/profile/") {
        req.allow(&[Method::GET, Method::HEAD])?;
        return profile(user_id, head);
    }
    match path {
        // Routed to the `cache-admin` component; reached here only if it is not deployed.
        "/purge" | "/stats" => Err(ApiError::not_found(
            "this route is served by the cache-admin component, which is not deployed",
        )),
        "/demo" => {
            req.allow(&[Method::GET])?;
            demo_counter()
        }
        _ => Err(ApiError::not_found(
            "no such cache route: use /api/cache/proxy/{path}, /profile/{id}, /purge, /stats or /demo",
        )),
    }
}

/// How a response was produced; sent as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheStatus {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl CacheStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
        }
    }
}

/// An answer ready to send: the origin's status, content type and body.
struct Served {
    cache: CacheStatus,
    status: u16,
    content_type: String,
    body: Vec<u8>,
    age_ms: i64,
}

impl Served {
    fn from_origin(cache: CacheStatus, response: OutboundResponse) -> Self {
        Self {
            cache,
            status: response.status,
            content_type: response.header("content-type").unwrap_or_default(),
            body: response.body,
            age_ms: 0,
        }
    }

    fn age_seconds(&self) -> String {
        (self.age_ms.max(0) / 1000).to_string()
    }
}

/// A cached entry, parsed from its value (see "Entry values" above).
struct Entry {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    stored_ms: i64,
    soft_ms: i64,
    cost_ms: i64,
}

/// A decimal as the store script writes it: ASCII digits only, at most 18 of them.
fn decimal(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 18 {
        return None;
    }
    text.iter().try_fold(0i64, |n, &b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
}

impl Entry {
    /// `None` for anything but a well-formed format-1 value.
    fn parse(mut value: Vec<u8>) -> Option<Self> {
        if !value.starts_with(b"c1\n") {
            return None;
        }
        let mut pos = 3;
        let mut line = |value: &[u8]| {
            let len = value.get(pos..)?.iter().position(|&b| b == b'\n')?;
            let range = pos..pos + len;
            pos += len + 1;
            Some(range)
        };
        let mut numbers = [0i64; 4];
        for n in &mut numbers {
            *n = decimal(&value[line(&value)?])?;
        }
        let content_type = String::from_utf8(value[line(&value)?].to_vec()).ok()?;
        let [status, stored_ms, soft_ms, cost_ms] = numbers;
        Some(Self {
            status: u16::try_from(status).ok()?,
            content_type,
            body: value.split_off(pos),
            stored_ms,
            soft_ms,
            cost_ms,
        })
    }

    /// The entry in a lookup reply, `{state, value, now_ms}`.
    fn from_reply(reply: &Reply) -> Result<(Self, i64), RedisError> {
        let entry = Self::parse(reply.bytes(1)?.to_vec())
            .ok_or_else(|| RedisError::UnexpectedReply("unreadable cache entry".into()))?;
        Ok((entry, reply.int(2)?))
    }

    /// XFetch: refresh early when now + cost * beta * -ln(u) reaches the soft expiry
    /// (`factor_micros` = 1e6 * beta * -ln(u), as lookup.lua computes it).
    fn refresh_early(&self, now_ms: i64, factor_micros: i64) -> bool {
        now_ms as f64 + factor_micros as f64 / 1_000_000.0 * self.cost_ms as f64
            >= self.soft_ms as f64
    }

    fn serve(self, cache: CacheStatus, now_ms: i64) -> Served {
        Served {
            cache,
            status: self.status,
            content_type: self.content_type,
            body: self.body,
            age_ms: now_ms - self.stored_ms,
        }
    }
}

/// What the lookup script decided; entries come with Redis's `now` (ms) for their age.
enum Lookup {
    Hit(Entry, i64),
    Stale(Entry, i64),
    /// This request holds the lock and refreshes `entry` (stale, or early when fresh).
    Refresh {
        entry: (Entry, i64),
        fresh: bool,
    },
    Fetch,
    Wait,
    Gone,
}

/// The keys of one cache entry, all in the bucket's hash slot.
struct EntryKeys {
    bucket: u32,
    entry: String,
    lock: String,
    /// `{prefix}cache:{bN}:stats`, to which `:{counter}` is added.
    stats: String,
}

pub(crate) fn bucket_prefix(redis: &Redis, bucket: u32) -> String {
    redis.key(&format!("cache:{{b{bucket}}}"))
}

/// The counters kept per bucket, each a string key `{prefix}cache:{bN}:stats:{name}`.
pub(crate) const COUNTERS: [&str; 6] =
    ["hits", "misses", "stale", "bypasses", "origin_fetches", "purged"];

pub(crate) fn counter_key(redis: &Redis, bucket: u32, name: &str) -> String {
    format!("{}:stats:{name}", bucket_prefix(redis, bucket))
}

impl EntryKeys {
    fn new(redis: &Redis, target: &Target, buckets: u32) -> Self {
        let bucket = target.bucket(buckets);
        let base = bucket_prefix(redis, bucket);
        let part = target.key_part();
        Self {
            bucket,
            entry: format!("{base}:e:{part}"),
            lock: format!("{base}:lock:{part}"),
            stats: format!("{base}:stats"),
        }
    }

    fn counter(&self, name: &str) -> String {
        format!("{}:{name}", self.stats)
    }
}

pub(crate) fn tag_set_key(redis: &Redis, bucket: u32, tag: &str) -> Option<String> {
    key::tag_key_part(tag).map(|part| format!("{}:tag:{part}", bucket_prefix(redis, bucket)))
}

/// A uniform random number in [0, 1) from the CSPRNG.
fn unit_random() -> f64 {
    let bytes: [u8; 8] = random_bytes(8).try_into().unwrap_or([0; 8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// XFetch's random factor for this request, 1e6 * beta * -ln(u), u uniform in (0, 1]: drawn
/// once, so the fast path and the lookup script make the same early-refresh decision.
/// Micro-units as an integer: Rust's float formatting is large in .wasm.
fn early_refresh_factor(settings: &CacheSettings) -> i64 {
    if settings.early_refresh_beta > 0.0 {
        (settings.early_refresh_beta * -(1.0 - unit_random()).ln() * 1_000_000.0) as i64
    } else {
        0
    }
}

fn lookup(
    redis: &Redis,
    keys: &EntryKeys,
    first: bool,
    token: &str,
    settings: &CacheSettings,
    factor_micros: i64,
) -> Result<Lookup, RedisError> {
    let reply = redis.eval(
        &LOOKUP,
        &[&keys.entry, &keys.lock, &keys.counter("hits"), &keys.counter("stale")],
        args![
            if first { "first" } else { "poll" },
            token,
            settings.lock_ttl_ms(),
            factor_micros,
            STATS_TTL_SECONDS
        ],
    )?;
    Ok(match reply.string(0)? {
        "hit" => {
            let (entry, now) = Entry::from_reply(&reply)?;
            Lookup::Hit(entry, now)
        }
        "stale" => {
            let (entry, now) = Entry::from_reply(&reply)?;
            Lookup::Stale(entry, now)
        }
        state @ ("refresh" | "early") => {
            Lookup::Refresh { entry: Entry::from_reply(&reply)?, fresh: state == "early" }
        }
        "fetch" => Lookup::Fetch,
        "wait" => Lookup::Wait,
        "gone" => Lookup::Gone,
        other => return Err(RedisError::UnexpectedReply(format!("lookup state '{other}'"))),
    })
}

/// The pooled fast path: a fresh entry that XFetch does not pick for refresh is served with
/// one `GET` (and one `INCRBY` to count it) on the store's shared connection. Anything else
/// (no entry, stale, early refresh, an unreadable value, a store error) is `None`: the
/// lookup script decides, as it always has.
fn fast_hit(store: &FastPath, keys: &EntryKeys, factor_micros: i64) -> Option<Served> {
    let value = match store.get(&keys.entry) {
        Ok(value) => value?,
        Err(e) => {
            eprintln!("cache: fast path failed, using outbound Redis: {e}");
            return None;
        }
    };
    let entry = Entry::parse(value)?;
    // Compared with Redis `TIME` values: a clock skew moves the soft expiry by that much;
    // the hard expiry stays Redis's own `PX`.
    let now = unix_now_ms();
    if now >= entry.soft_ms || entry.refresh_early(now, factor_micros) {
        return None;
    }
    // The hit is served whatever happens to its count.
    if let Err(e) = store.increment(&keys.counter("hits"), 1) {
        eprintln!("cache: fast-path hit not counted: {e}");
    }
    Some(entry.serve(CacheStatus::Hit, now))
}

/// Serves a target: from Redis when it can, else from the origin, storing what may be stored.
fn serve(target: &Target, settings: &CacheSettings) -> Result<Served, ApiError> {
    let redis = match Redis::from_spin_variables() {
        Ok(redis) => redis,
        Err(e) => return bypass(target, settings, &e),
    };
    let keys = EntryKeys::new(&redis, target, settings.buckets);
    let factor = early_refresh_factor(settings);
    match FastPath::open() {
        Ok(Some(store)) => {
            if let Some(served) = fast_hit(&store, &keys, factor) {
                return Ok(served);
            }
        }
        Ok(None) => {}
        // A bad `redis_fast_path` is a Redis misconfiguration like any other.
        Err(e) => return bypass(target, settings, &RedisError::Config(e)),
    }
    let token = random_token(16);
    let found = match lookup(&redis, &keys, true, &token, settings, factor) {
        Ok(found) => found,
        Err(e) => return bypass(target, settings, &e),
    };
    let fill = Fill { redis: &redis, keys: &keys, target, settings };
    match found {
        Lookup::Hit(entry, now) => Ok(entry.serve(CacheStatus::Hit, now)),
        Lookup::Stale(entry, now) => Ok(entry.serve(CacheStatus::Stale, now)),
        Lookup::Refresh { entry, fresh } => fill.fetch_and_store(&token, Some((entry, fresh))),
        Lookup::Fetch => fill.fetch_and_store(&token, None),
        Lookup::Wait | Lookup::Gone => {
            // Another request is fetching: look again briefly, then go to the origin.
            for _ in 0..settings.lock_wait_ms / POLL_INTERVAL_MS {
                sleep_ms(POLL_INTERVAL_MS);
                match lookup(&redis, &keys, false, &token, settings, factor) {
                    Ok(Lookup::Hit(entry, now)) => return Ok(entry.serve(CacheStatus::Hit, now)),
                    Ok(Lookup::Stale(entry, now)) => {
                        return Ok(entry.serve(CacheStatus::Stale, now))
                    }
                    Ok(Lookup::Wait) => continue,
                    Ok(_) => break,
                    Err(e) => return bypass(target, settings, &e),
                }
            }
            fill.fetch_and_store("", None)
        }
    }
}

/// Redis is unusable: straight to the origin, nothing stored or counted.
fn bypass(target: &Target, settings: &CacheSettings, e: &RedisError) -> Result<Served, ApiError> {
    eprintln!("cache: Redis unavailable ({}), serving from the origin: {e}", e.reason());
    match fetch::get(&settings.origin_url, target.as_str(), settings.origin_timeout_ms) {
        Ok(response) => Ok(Served::from_origin(CacheStatus::Bypass, response)),
        Err(e) => Err(origin_error(&e)),
    }
}

fn origin_error(e: &OutboundError) -> ApiError {
    match e {
        OutboundError::Timeout => {
            ApiError::new(504, "origin_timeout", "the origin did not answer in time")
        }
        OutboundError::TooLarge => ApiError::new(
            502,
            "origin_response_too_large",
            format!("the origin's answer is larger than {MAX_ORIGIN_BODY} bytes"),
        ),
        e => {
            eprintln!("cache: origin unreachable: {e}");
            ApiError::new(502, "origin_unreachable", "the origin could not be reached")
        }
    }
}

/// One origin fetch and what follows it, for a request that holds the lock or gave up waiting.
struct Fill<'a> {
    redis: &'a Redis,
    keys: &'a EntryKeys,
    target: &'a Target,
    settings: &'a CacheSettings,
}

impl Fill<'_> {
    /// `token` is the lock this request holds ('' for none); `cached` the entry being
    /// refreshed, served instead when the origin fails (stale, or still fresh for XFetch).
    fn fetch_and_store(
        &self,
        token: &str,
        cached: Option<((Entry, i64), bool)>,
    ) -> Result<Served, ApiError> {
        let started = monotonic_ms();
        let result = fetch::get(
            &self.settings.origin_url,
            self.target.as_str(),
            self.settings.origin_timeout_ms,
        );
        let cost_ms = monotonic_ms().saturating_sub(started);
        let response = match result {
            Ok(r) if r.status < 500 => r,
            failed => {
                // Errors and 5xx are never cached: fall back to the cached copy if any.
                if let Some(((entry, now), fresh)) = cached {
                    let (counter, cache) = if fresh {
                        ("hits", CacheStatus::Hit)
                    } else {
                        ("stale", CacheStatus::Stale)
                    };
                    self.finish(token, None, counter, cost_ms);
                    return Ok(entry.serve(cache, now));
                }
                self.finish(token, None, "bypasses", cost_ms);
                return match failed {
                    Ok(server_error) => Ok(Served::from_origin(CacheStatus::Bypass, server_error)),
                    Err(e) => Err(origin_error(&e)),
                };
            }
        };
        match policy::decide(&response, self.settings) {
            Decision::Store { ttl_ms } => {
                let ttl_ms = policy::jittered(ttl_ms, self.settings.jitter, unit_random());
                let stored = self.finish(token, Some((&response, ttl_ms)), "misses", cost_ms);
                let cache = if stored { CacheStatus::Miss } else { CacheStatus::Bypass };
                Ok(Served::from_origin(cache, response))
            }
            Decision::Bypass(reason) => {
                eprintln!("cache: not storing {}: {reason}", self.target.as_str());
                self.finish(token, None, "bypasses", cost_ms);
                Ok(Served::from_origin(CacheStatus::Bypass, response))
            }
        }
    }

    /// The store script: entry and tag index (when `store` is given), unlock, counters.
    /// Returns whether the entry was stored; a Redis failure here only loses the cache.
    fn finish(
        &self,
        token: &str,
        store: Option<(&OutboundResponse, u64)>,
        counter: &str,
        cost_ms: u64,
    ) -> bool {
        let mut keys = vec![
            self.keys.entry.clone(),
            self.keys.lock.clone(),
            self.keys.counter(counter),
            self.keys.counter("origin_fetches"),
        ];
        let mut args =
            args![token, if store.is_some() { "store" } else { "skip" }, STATS_TTL_SECONDS];
        if let Some((response, ttl_ms)) = store {
            keys.extend(
                policy::tags(response)
                    .iter()
                    .filter_map(|t| tag_set_key(self.redis, self.keys.bucket, t)),
            );
            let content_type = response.header("content-type").unwrap_or_default();
            args.extend(args![
                u32::from(response.status),
                content_type,
                response.body.as_slice(),
                ttl_ms,
                ttl_ms + self.settings.stale_ms,
                cost_ms
            ]);
        }
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        match self.redis.eval(&STORE, &key_refs, args) {
            Ok(_) => store.is_some(),
            Err(e) => {
                eprintln!("cache: could not store ({}): {e}", e.reason());
                false
            }
        }
    }
}

fn proxy_response(served: Served, head: bool) -> Response {
    let mut response = Response::new(served.status)
        .with_header("x-cache", served.cache.as_str())
        .with_header("age", served.age_seconds());
    if !served.content_type.is_empty() {
        response = response.with_header("content-type", served.content_type.as_str());
    }
    response.with_body(if head { Vec::new() } else { served.body })
}

/// `GET /api/cache/profile/{user_id}`: the seed recipe's route on the same machinery (and
/// the same entries as `/api/cache/proxy/profiles/{user_id}`).
fn profile(user_id: &str, head: bool) -> Result<Response, ApiError> {
    let valid = !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID_LEN
        && user_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            format!("user_id must be 1 to {MAX_USER_ID_LEN} letters, digits, '-' or '_'"),
        ));
    }
    let settings = CacheSettings::from_spin_variables()?;
    let target = key::normalise(&format!("/profiles/{user_id}"), "")?;
    let served = serve(&target, &settings)?;
    let cache = served.cache.as_str();
    let age = served.age_seconds();
    let error = |e: ApiError| e.with_header("x-cache", cache).with_header("age", age.clone());
    match served.status {
        200 => {}
        404 => {
            return Err(error(ApiError::new(
                404,
                "profile_not_found",
                format!("no profile for user {user_id}"),
            )))
        }
        status => {
            return Err(error(ApiError::new(
                502,
                "origin_error",
                format!("the origin answered {status}"),
            )))
        }
    }
    // The origin's JSON is passed through as it is, not parsed and re-serialised (that would
    // cost the component 30 KB of JSON parser); only its outer shape is checked.
    let profile = served.body.trim_ascii();
    if !(profile.starts_with(b"{") && profile.ends_with(b"}")) {
        return Err(error(ApiError::new(
            502,
            "origin_invalid_response",
            "the origin's profile is not a JSON object",
        )));
    }
    let source = match served.cache {
        CacheStatus::Hit | CacheStatus::Stale => "cache",
        CacheStatus::Miss | CacheStatus::Bypass => "origin",
    };
    let mut body = format!("{{\"source\":\"{source}\",\"profile\":").into_bytes();
    body.extend_from_slice(profile);
    body.push(b'}');
    Ok(Response::new(200)
        .with_header("content-type", "application/json")
        .with_header("x-cache", cache)
        .with_header("age", age)
        .with_body(if head { Vec::new() } else { body }))
}

/// Purges need `Authorization: Bearer <cache_purge_token>`; an empty token disables them.
pub(crate) fn authorize_purge(req: &Request, settings: &CacheSettings) -> Result<(), ApiError> {
    require_bearer(req, &settings.purge_token, || {
        ApiError::new(403, "purge_disabled", "purging is disabled: set cache_purge_token")
    })
}

#[derive(Serialize)]
struct Purged<'a> {
    purged: i64,
    path: &'a str,
}

/// `DELETE /api/cache/proxy/{path}`: one entry, one round trip (delete, count, publish).
fn purge_entry(target: &Target, settings: &CacheSettings) -> Result<Response, ApiError> {
    let redis = Redis::from_spin_variables()?;
    let keys = EntryKeys::new(&redis, target, settings.buckets);
    let reply = redis.eval(
        &PURGE_ENTRY,
        &[&keys.entry, &keys.counter("purged")],
        args![settings.purge_channel.as_str(), target.as_str(), STATS_TTL_SECONDS],
    )?;
    Ok(Response::json(200, &Purged { purged: reply.int(0)?, path: target.as_str() }))
}

#[derive(Serialize)]
struct DemoCounter {
    key: &'static str,
    value: i64,
    ttl_seconds: i64,
}

/// `GET /api/cache/demo`: the seed recipe's counter, INCR and EXPIRE in one round trip.
fn demo_counter() -> Result<Response, ApiError> {
    let redis = Redis::from_spin_variables()?;
    let reply =
        redis.eval(&DEMO_COUNTER, &[&redis.key("demo:counter")], args![DEMO_TTL_SECONDS])?;
    let value = reply.int(0)?;
    Ok(Response::json(
        200,
        &DemoCounter { key: "demo:counter", value, ttl_seconds: DEMO_TTL_SECONDS },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn entry_values_parse_as_the_store_script_writes_them() {
        // The body may hold line breaks and any bytes.
        let mut raw = value("c1\n404\n1700000000000\n1700000300000\n42\napplication/json\n");
        raw.extend_from_slice(b"{\"a\":\n1}\xff\n");
        let e = Entry::parse(raw).unwrap();
        assert_eq!((e.status, e.content_type.as_str()), (404, "application/json"));
        assert_eq!((e.stored_ms, e.soft_ms, e.cost_ms), (1_700_000_000_000, 1_700_000_300_000, 42));
        assert_eq!(e.body, b"{\"a\":\n1}\xff\n");
        let e = Entry::parse(value("c1\n200\n1\n2\n0\n\n")).unwrap();
        assert_eq!((e.content_type.as_str(), e.body.len()), ("", 0));
        assert_eq!(e.serve(CacheStatus::Hit, 2500).age_seconds(), "2");
    }

    #[test]
    fn anything_else_is_no_entry() {
        for bad in [
            "",
            "c1",
            "c2\n200\n1\n2\n0\ntext/plain\nbody",
            "c1\n200\n1\n2\n0\ntext/plain",
            "c1\n200\n1\n2\ntext/plain\nbody",
            "c1\n-200\n1\n2\n0\ntext/plain\nbody",
            "c1\n70000\n1\n2\n0\ntext/plain\nbody",
            "c1\n200\n\n2\n0\ntext/plain\nbody",
            "c1\n200\n1 \n2\n0\ntext/plain\nbody",
            "c1\n200\n1234567890123456789\n2\n0\ntext/plain\nbody",
        ] {
            assert!(Entry::parse(value(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn lua_is_shipped_without_comments_or_indentation() {
        assert!(LOOKUP.source().starts_with("local t = redis.call('TIME')\n"));
        assert!(!STORE.source().contains("--") && !STORE.source().contains("\n "));
    }

    #[test]
    fn early_refresh_follows_xfetch() {
        let e = Entry::parse(value("c1\n200\n0\n10000\n500\n\n")).unwrap();
        // now + cost * factor >= soft: 9000 + 500 * 2 reaches 10000.
        assert!(e.refresh_early(9_000, 2_000_000));
        assert!(!e.refresh_early(9_000, 1_999_998));
        assert!(!e.refresh_early(9_999, 0));
    }
}
