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
//! `N = sha256(target) mod cache_key_buckets`: the entry, its lock, its bucket's stats
//! hash and its bucket's tag sets. So a hit (lookup + count) and a miss's store (entry +
//! tag index + unlock + count) each stay one single-slot script on clustered Redis.
//!
//! ```text
//! {prefix}cache:{bN}:e:{target}      hash: status, type, body, stored, soft, cost, tags
//! {prefix}cache:{bN}:lock:{target}   stampede lock (random token, PX)
//! {prefix}cache:{bN}:tag:{tag}       set of entry keys of this bucket carrying the tag
//! {prefix}cache:{bN}:stats           hash: hits, misses, stale, bypasses, origin_fetches, purged
//! {prefix}demo:counter               GET /api/cache/demo
//! ```

pub mod admin;
pub mod fetch;
pub mod key;
pub mod policy;
pub mod settings;

use spin_sdk::http::{Method, Request, Response};

use crate::args;
use crate::error::ApiError;
use crate::http::{allow_methods, bearer_token, path_info, respond};
use crate::redis::{Redis, RedisError, Reply, Script};
use crate::secrets::{constant_time_eq, random_bytes, random_token, sha256};

use fetch::{FetchError, OriginResponse};
use key::Target;
use policy::Decision;
use settings::CacheSettings;

static LOOKUP: Script = Script::new(include_str!("lookup.lua"));
static STORE: Script = Script::new(include_str!("store.lua"));
static PURGE_ENTRY: Script = Script::new(include_str!("purge_entry.lua"));
static DEMO_COUNTER: Script = Script::new(include_str!("demo_counter.lua"));

/// Stats hashes expire this long after their last update.
pub(crate) const STATS_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// How often a request waiting on another's origin fetch looks again.
const POLL_INTERVAL_MS: u64 = 50;
const DEMO_TTL_SECONDS: i64 = 300;
const MAX_USER_ID_LEN: usize = 64;

pub fn handle(req: Request) -> Response {
    respond(|| route(&req))
}

fn route(req: &Request) -> Result<Response, ApiError> {
    let path = path_info(req);
    let head = *req.method() == Method::Head;
    if let Some(rest) = path.strip_prefix("/proxy/") {
        allow_methods(req, &[Method::Get, Method::Head, Method::Delete])?;
        let target = key::normalise(rest, req.query())?;
        let settings = cache_settings()?;
        return if *req.method() == Method::Delete {
            authorize_purge(req)?;
            purge_entry(&target, &settings)
        } else {
            Ok(proxy_response(serve(&target, &settings)?, head))
        };
    }
    if let Some(user_id) = path.strip_prefix("/profile/") {
        allow_methods(req, &[Method::Get, Method::Head])?;
        return profile(user_id, head);
    }
    match path {
        // Routed to the `cache-admin` component; reached here only if it is not deployed.
        "/purge" | "/stats" => Err(ApiError::not_found(
            "this route is served by the cache-admin component, which is not deployed",
        )),
        "/demo" => {
            allow_methods(req, &[Method::Get])?;
            demo_counter()
        }
        _ => Err(ApiError::not_found(
            "no such cache route: use /api/cache/proxy/{path}, /profile/{id}, /purge, /stats or /demo",
        )),
    }
}

pub(crate) fn cache_settings() -> Result<CacheSettings, ApiError> {
    CacheSettings::from_spin_variables().map_err(|e| {
        eprintln!("cache: {e}");
        ApiError::new(
            500,
            "cache_misconfigured",
            format!("the cache settings are invalid: {e}"),
        )
    })
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
    fn from_origin(cache: CacheStatus, response: OriginResponse) -> Self {
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

/// A cached entry as the lookup script returns it.
struct Entry {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    age_ms: i64,
}

impl Entry {
    fn from_reply(reply: &Reply) -> Result<Self, RedisError> {
        Ok(Self {
            status: u16::try_from(reply.int(1)?)
                .map_err(|_| RedisError::UnexpectedReply("entry status out of range".into()))?,
            content_type: String::from_utf8(reply.bytes(2)?.to_vec()).unwrap_or_default(),
            body: reply.bytes(3)?.to_vec(),
            age_ms: reply.int(4)?,
        })
    }

    fn serve(self, cache: CacheStatus) -> Served {
        Served {
            cache,
            status: self.status,
            content_type: self.content_type,
            body: self.body,
            age_ms: self.age_ms,
        }
    }
}

enum Lookup {
    Hit(Entry),
    Stale(Entry),
    /// This request holds the lock and refreshes `Entry` (stale, or early when fresh).
    Refresh {
        entry: Entry,
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
    stats: String,
}

pub(crate) fn bucket_prefix(redis: &Redis, bucket: u32) -> String {
    redis.key(&format!("cache:{{b{bucket}}}"))
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
}

pub(crate) fn tag_set_key(redis: &Redis, bucket: u32, tag: &str) -> Option<String> {
    key::tag_key_part(tag).map(|part| format!("{}:tag:{part}", bucket_prefix(redis, bucket)))
}

/// A uniform random number in [0, 1) from the CSPRNG.
fn unit_random() -> f64 {
    let bytes: [u8; 8] = random_bytes(8).try_into().unwrap_or([0; 8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

fn lookup(
    redis: &Redis,
    keys: &EntryKeys,
    first: bool,
    token: &str,
    settings: &CacheSettings,
) -> Result<Lookup, RedisError> {
    // XFetch: refresh early when now + cost * beta * -ln(u) passes the soft expiry.
    let factor = if settings.early_refresh_beta > 0.0 {
        settings.early_refresh_beta * -(1.0 - unit_random()).ln()
    } else {
        0.0
    };
    let reply = redis.eval(
        &LOOKUP,
        &[&keys.entry, &keys.lock, &keys.stats],
        args![
            if first { "first" } else { "poll" },
            token,
            settings.lock_ttl_ms(),
            // Micro-units as an integer: Rust's float formatting is large in .wasm.
            (factor * 1_000_000.0) as i64,
            STATS_TTL_SECONDS
        ],
    )?;
    Ok(match reply.string(0)? {
        "hit" => Lookup::Hit(Entry::from_reply(&reply)?),
        "stale" => Lookup::Stale(Entry::from_reply(&reply)?),
        "refresh" => Lookup::Refresh {
            entry: Entry::from_reply(&reply)?,
            fresh: false,
        },
        "early" => Lookup::Refresh {
            entry: Entry::from_reply(&reply)?,
            fresh: true,
        },
        "fetch" => Lookup::Fetch,
        "wait" => Lookup::Wait,
        "gone" => Lookup::Gone,
        other => {
            return Err(RedisError::UnexpectedReply(format!(
                "lookup state '{other}'"
            )))
        }
    })
}

/// Serves a target: from Redis when it can, else from the origin, storing what may be stored.
fn serve(target: &Target, settings: &CacheSettings) -> Result<Served, ApiError> {
    let redis = match Redis::from_spin_variables() {
        Ok(redis) => redis,
        Err(e) => return bypass(target, settings, &e),
    };
    let keys = EntryKeys::new(&redis, target, settings.buckets);
    let token = random_token(16);
    let found = match lookup(&redis, &keys, true, &token, settings) {
        Ok(found) => found,
        Err(e) => return bypass(target, settings, &e),
    };
    let fill = Fill {
        redis: &redis,
        keys: &keys,
        target,
        settings,
    };
    match found {
        Lookup::Hit(entry) => Ok(entry.serve(CacheStatus::Hit)),
        Lookup::Stale(entry) => Ok(entry.serve(CacheStatus::Stale)),
        Lookup::Refresh { entry, fresh } => fill.fetch_and_store(&token, Some((entry, fresh))),
        Lookup::Fetch => fill.fetch_and_store(&token, None),
        Lookup::Wait | Lookup::Gone => {
            // Another request is fetching: look again briefly, then go to the origin.
            for _ in 0..settings.lock_wait_ms / POLL_INTERVAL_MS {
                fetch::sleep_ms(POLL_INTERVAL_MS);
                match lookup(&redis, &keys, false, &token, settings) {
                    Ok(Lookup::Hit(entry)) => return Ok(entry.serve(CacheStatus::Hit)),
                    Ok(Lookup::Stale(entry)) => return Ok(entry.serve(CacheStatus::Stale)),
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
    eprintln!(
        "cache: Redis unavailable ({}), serving from the origin: {e}",
        e.reason()
    );
    match fetch::get(
        &settings.origin_url,
        target.as_str(),
        settings.origin_timeout_ms,
    ) {
        Ok(response) => Ok(Served::from_origin(CacheStatus::Bypass, response)),
        Err(e) => Err(origin_error(&e)),
    }
}

fn origin_error(e: &FetchError) -> ApiError {
    match e {
        FetchError::Timeout => {
            ApiError::new(504, "origin_timeout", "the origin did not answer in time")
        }
        FetchError::TooLarge => ApiError::new(
            502,
            "origin_response_too_large",
            format!(
                "the origin's answer is larger than {} bytes",
                fetch::MAX_ORIGIN_BODY
            ),
        ),
        FetchError::Unreachable(m) => {
            eprintln!("cache: origin unreachable: {m}");
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
        cached: Option<(Entry, bool)>,
    ) -> Result<Served, ApiError> {
        let started = fetch::monotonic_ms();
        let result = fetch::get(
            &self.settings.origin_url,
            self.target.as_str(),
            self.settings.origin_timeout_ms,
        );
        let cost_ms = fetch::monotonic_ms().saturating_sub(started);
        let response = match result {
            Ok(r) if r.status < 500 => r,
            failed => {
                // Errors and 5xx are never cached: fall back to the cached copy if any.
                if let Some((entry, fresh)) = cached {
                    let (counter, cache) = if fresh {
                        ("hits", CacheStatus::Hit)
                    } else {
                        ("stale", CacheStatus::Stale)
                    };
                    self.finish(token, None, counter, cost_ms);
                    return Ok(entry.serve(cache));
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
                let cache = if stored {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Bypass
                };
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
        store: Option<(&OriginResponse, u64)>,
        counter: &str,
        cost_ms: u64,
    ) -> bool {
        let mut keys = vec![
            self.keys.entry.clone(),
            self.keys.lock.clone(),
            self.keys.stats.clone(),
        ];
        let mut args = args![
            token,
            if store.is_some() { "store" } else { "skip" },
            counter,
            "1",
            STATS_TTL_SECONDS
        ];
        if let Some((response, ttl_ms)) = store {
            let tags = policy::tags(response);
            keys.extend(
                tags.iter()
                    .filter_map(|t| tag_set_key(self.redis, self.keys.bucket, t)),
            );
            let content_type = response.header("content-type").unwrap_or_default();
            args.extend(args![
                response.status.to_string(),
                content_type,
                response.body.as_slice(),
                ttl_ms,
                ttl_ms + self.settings.stale_ms,
                cost_ms,
                tags.join(",")
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
    let mut builder = Response::builder();
    builder
        .status(served.status)
        .header("x-cache", served.cache.as_str())
        .header("age", served.age_seconds());
    if !served.content_type.is_empty() {
        builder.header("content-type", served.content_type.as_str());
    }
    builder
        .body(if head { Vec::new() } else { served.body })
        .build()
}

/// `GET /api/cache/profile/{user_id}`: the seed recipe's route on the same machinery (and
/// the same entries as `/api/cache/proxy/profiles/{user_id}`).
fn profile(user_id: &str, head: bool) -> Result<Response, ApiError> {
    let valid = !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID_LEN
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            format!("user_id must be 1 to {MAX_USER_ID_LEN} letters, digits, '-' or '_'"),
        ));
    }
    let settings = cache_settings()?;
    let target = key::normalise(&format!("/profiles/{user_id}"), "")?;
    let served = serve(&target, &settings)?;
    let cache = served.cache.as_str();
    let age = served.age_seconds();
    let error = |e: ApiError| {
        e.with_header("x-cache", cache)
            .with_header("age", age.clone())
    };
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
    let mut builder = Response::builder();
    builder
        .status(200)
        .header("content-type", "application/json")
        .header("x-cache", cache)
        .header("age", age);
    Ok(builder.body(if head { Vec::new() } else { body }).build())
}

/// Purges need `Authorization: Bearer <cache_purge_token>`; an empty token disables them.
pub(crate) fn authorize_purge(req: &Request) -> Result<(), ApiError> {
    let expected = spin_sdk::variables::get(settings::vars::PURGE_TOKEN).unwrap_or_default();
    if expected.trim().is_empty() {
        return Err(ApiError::new(
            403,
            "purge_disabled",
            "purging is disabled: set cache_purge_token",
        ));
    }
    let given = bearer_token(req)
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <purge token>"))?;
    // Hash both sides so the comparison is constant-time whatever the lengths.
    if !constant_time_eq(
        &sha256(given.as_bytes()),
        &sha256(expected.trim().as_bytes()),
    ) {
        return Err(ApiError::unauthorized("the purge token is wrong"));
    }
    Ok(())
}

/// `DELETE /api/cache/proxy/{path}`: one entry, one round trip (delete, count, publish).
fn purge_entry(target: &Target, settings: &CacheSettings) -> Result<Response, ApiError> {
    let redis = Redis::from_spin_variables()?;
    let keys = EntryKeys::new(&redis, target, settings.buckets);
    let reply = redis.eval(
        &PURGE_ENTRY,
        &[&keys.entry, &keys.stats],
        args![
            settings.purge_channel.as_str(),
            target.as_str(),
            STATS_TTL_SECONDS
        ],
    )?;
    // A normal-form target holds only URL-safe characters: nothing to escape in JSON.
    let body = format!(
        r#"{{"purged":{},"path":"{}"}}"#,
        reply.int(0)?,
        target.as_str()
    );
    Ok(crate::json::text_response(200, body))
}

/// `GET /api/cache/demo`: the seed recipe's counter, INCR and EXPIRE in one round trip.
fn demo_counter() -> Result<Response, ApiError> {
    let redis = Redis::from_spin_variables()?;
    let reply = redis.eval(
        &DEMO_COUNTER,
        &[&redis.key("demo:counter")],
        args![DEMO_TTL_SECONDS],
    )?;
    let value = reply.int(0)?;
    Ok(crate::json::text_response(200, format!(
        r#"{{"key":"demo:counter","value":{value},"ttl_seconds":{DEMO_TTL_SECONDS}}}"#
    )))
}

