//! The read-through algorithm: fast-path hit, lookup, single flight, fill, revalidation,
//! remembered failures, refresh after the answer.
//!
//! **Single flight.** The first request for a missing or stale key takes its lock (random
//! token, PX = the fetch's overall deadline + 2 s) and fetches; the others wait while the lock
//! is held (polling the lookup script), are served the stale copy when the origin allows it,
//! or take the lock over when it is released without a result. The holder leaves behind an
//! entry, a "pass" marker (uncacheable answer: later requests go to the origin without
//! waiting, for `cache_pass_ttl_seconds`) or a failure marker (5xx, timeout, unreachable:
//! replayed to every request for `cache_error_ttl_seconds`, so a failing origin sees one
//! request per key per interval). Only the current holder may store, and only when no purge
//! happened since its fill started (see store.lua).

use super::entry::{self, Entry, Headers};
use super::fetch::{self, MAX_ORIGIN_BODY};
use super::keys::{tag_set_key, tag_tombstone_key, EntryKeys};
use super::policy::{self, Decision};
use super::respond::{Outcome, Served};
use super::scripts::{finish, lookup, Action, Lookup};
use super::settings::CacheSettings;
use super::standard::{self, RequestContext};
use super::target::Target;
use crate::platform::clock::{monotonic_ms, sleep_ms, unix_now_ms};
use crate::platform::fast_path::FastPath;
use crate::platform::log;
use crate::platform::outbound::{OutboundError, OutboundResponse};
use crate::platform::redis::{Redis, RedisError};
use crate::platform::secrets::{random_bytes, random_token};
use crate::platform::ApiError;

/// How often a request waiting on another's fetch looks again.
const POLL_INTERVAL_MS: u64 = 50;
/// Largest origin error body remembered in a failure marker; longer ones are cut.
const MAX_REMEMBERED_BODY: usize = 16 * 1024;

/// Work to run after the answer is sent ([`crate::platform::Response::after`]); `'a`: what
/// it borrows (the library's `&Redis`), `'static` for the proxy.
pub(crate) type After<'a> = Box<dyn FnOnce() + 'a>;

/// The origin: a `GET` of a target with these request fields. The proxy's sends it to
/// `origin_url` ([`super::fetch::send`]); the library's calls the application's fetch.
pub(crate) type Origin<'a> =
    Box<dyn Fn(&Target, &Headers) -> Result<OutboundResponse, OutboundError> + 'a>;

/// The request's Redis: the proxy's own, or the one a library caller lends.
pub(crate) enum RedisRef<'a> {
    Owned(Box<Redis>),
    Borrowed(&'a Redis),
}

impl std::ops::Deref for RedisRef<'_> {
    type Target = Redis;

    fn deref(&self) -> &Redis {
        match self {
            Self::Owned(redis) => redis,
            Self::Borrowed(redis) => redis,
        }
    }
}

/// A uniform random number in [0, 1) from the CSPRNG.
pub(crate) fn unit_random() -> f64 {
    let bytes: [u8; 8] = random_bytes(8).try_into().unwrap_or([0; 8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// XFetch's random factor for this request, 1e6 * beta * -ln(u), u uniform in (0, 1]: drawn
/// once, so the fast path and the lookup script make the same early-refresh decision.
fn early_refresh_factor(settings: &CacheSettings) -> i64 {
    if settings.early_refresh_beta > 0.0 {
        (settings.early_refresh_beta * -(1.0 - unit_random()).ln() * 1_000_000.0) as i64
    } else {
        0
    }
}

/// One target (and variant) being served: everything a fill needs, owned, so a refresh can
/// run after the answer.
pub(crate) struct Fill<'a> {
    pub redis: RedisRef<'a>,
    pub keys: EntryKeys,
    pub target: Target,
    pub settings: CacheSettings,
    /// The configured `Vary` request headers the client sent, forwarded to the origin
    /// (standards mode: every end-to-end field but conditionals and ranges).
    pub forward: Headers,
    /// Standards mode: what the request brings to the decisions; `None` in cache-aside mode.
    pub std: Option<RequestContext>,
    pub origin: Origin<'a>,
    /// Whether the pooled fast path (`redis_fast_path`, read from Spin variables) may serve
    /// hits: the proxy's; a library caller's Redis is configured in code.
    pub fast_path: bool,
}

pub(crate) fn origin_error(e: &OutboundError) -> ApiError {
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
            log::error("origin_unreachable", e);
            ApiError::new(502, "origin_unreachable", "the origin could not be reached")
        }
    }
}

/// A failure marker's value: the 5xx answer in the entry format, or `err:{kind}`.
fn failure_marker(result: &Result<OutboundResponse, OutboundError>) -> Vec<u8> {
    match result {
        Ok(r) => {
            let mut value = format!("c2\n{}\n0\n0\n0\n0\n0\n", r.status).into_bytes();
            value.extend(entry::header_block(&entry::end_to_end(r)));
            value.extend_from_slice(&r.body[..r.body.len().min(MAX_REMEMBERED_BODY)]);
            value
        }
        Err(OutboundError::Timeout) => b"err:timeout".to_vec(),
        Err(OutboundError::TooLarge) => b"err:too_large".to_vec(),
        Err(_) => b"err:unreachable".to_vec(),
    }
}

/// Replays a remembered failure.
fn replay_failure<'a>(
    marker: Vec<u8>,
    now_ms: i64,
) -> Result<(Served, Option<After<'a>>), ApiError> {
    let detail = "hit; detail=origin-error".to_owned();
    match marker.as_slice() {
        b"err:timeout" => Err(origin_error(&OutboundError::Timeout)),
        b"err:too_large" => Err(origin_error(&OutboundError::TooLarge)),
        b"err:unreachable" => Err(origin_error(&OutboundError::Unreachable(String::new()))),
        _ => match Entry::parse(marker) {
            Some(e) => Ok((Served::from_entry(Outcome::Error, e, now_ms, detail), None)),
            None => Err(ApiError::new(502, "origin_error", "the origin failed moments ago")),
        },
    }
}

fn origin_get(
    origin: &Origin<'_>,
    target: &Target,
    forward: &Headers,
    extra: &[(String, Vec<u8>)],
) -> Result<OutboundResponse, OutboundError> {
    let mut headers = forward.clone();
    headers.extend_from_slice(extra);
    origin(target, &headers)
}

/// The proxy's origin: `GET origin_url + target`, bounded by `cache_origin_timeout_ms`.
pub(crate) fn proxy_origin(settings: &CacheSettings) -> Origin<'static> {
    let (url, timeout_ms) = (settings.origin_url.clone(), settings.origin_timeout_ms);
    Box::new(move |target, headers| {
        fetch::send(&http::Method::GET, &url, target.as_str(), headers, &[], timeout_ms)
    })
}

/// Redis is unusable: straight to the origin, nothing stored or counted.
pub(crate) fn bypass<'a>(
    origin: &Origin<'_>,
    settings: &CacheSettings,
    target: &Target,
    forward: &Headers,
    e: &RedisError,
) -> Result<(Served, Option<After<'a>>), ApiError> {
    log::warn(
        "redis_bypassed",
        format_args!("Redis unavailable ({}), serving from the origin: {e}", e.reason()),
    );
    let detail = "fwd=bypass; detail=redis-unavailable".to_owned();
    match origin_get(origin, target, forward, &[]) {
        Ok(r) => {
            Ok((Served::from_origin(Outcome::Bypass, r, true, detail, settings.standard), None))
        }
        Err(e) => Err(origin_error(&e)),
    }
}

impl<'a> Fill<'a> {
    /// The pooled fast path: a fresh entry that XFetch does not pick for refresh is served
    /// with one `GET` on the store's shared connection. The hit is counted one time in
    /// `cache_hit_sampling`, by that many, after the answer: one round trip per hit on
    /// average plus 1/N. Anything else is `None`: the lookup script decides.
    fn fast_hit(&self, store: FastPath, factor_micros: i64) -> Option<(Served, Option<After<'a>>)> {
        let value = match store.get(&self.keys.entry) {
            Ok(value) => value?,
            Err(e) => {
                log::warn(
                    "fast_path_failed",
                    format_args!("fast path failed, using outbound Redis: {e}"),
                );
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
        let sampling = self.settings.hit_sampling;
        let after: Option<After<'a>> = (sampling == 1 || unit_random() * (sampling as f64) < 1.0)
            .then(|| {
                let counter = self.keys.counter("hits");
                Box::new(move || {
                    if let Err(e) = store.increment(&counter, sampling as i64) {
                        log::warn("hit_not_counted", &e);
                    }
                }) as After<'a>
            });
        Some((Served::cached(Outcome::Hit, entry, now), after))
    }

    /// Serves the target: from Redis when it can, else from the origin, storing what may be
    /// stored. Redis unavailable: straight to the origin (`BYPASS`).
    pub fn serve(self) -> Result<(Served, Option<After<'a>>), ApiError> {
        let factor = early_refresh_factor(&self.settings);
        match if self.fast_path { FastPath::open() } else { Ok(None) } {
            Ok(Some(store)) => {
                if let Some(served) = self.fast_hit(store, factor) {
                    return Ok(served);
                }
            }
            Ok(None) => {}
            // A bad `redis_fast_path` is a Redis misconfiguration like any other.
            Err(e) => return self.bypass(&RedisError::Config(e)),
        }
        let token = random_token(16);
        // Waiters give up only after the lock must have expired (its holder died) and they
        // could have taken it over: in practice they are answered or take over first.
        let give_up = monotonic_ms() + self.settings.lock_ttl_ms() + 1000;
        let mut first = true;
        loop {
            let (found, clock) = match lookup(
                &self.redis,
                &self.keys,
                first,
                &token,
                &self.settings,
                factor,
                self.pairs(),
            ) {
                Ok(found) => found,
                Err(e) => return self.bypass(&e),
            };
            let (now, start) = (clock.now_ms, clock.now_us);
            first = false;
            return match found {
                Lookup::Hit(entry) => Ok((Served::cached(Outcome::Hit, entry, now), None)),
                Lookup::Stale(entry) => Ok((Served::cached(Outcome::Stale, entry, now), None)),
                Lookup::Refresh { entry, fresh: false } if now < entry.swr_until_ms => {
                    // stale-while-revalidate: answer from the stale copy, refresh after.
                    let stale = Served::cached(Outcome::Stale, entry.clone(), now);
                    let after: After<'a> = Box::new(move || {
                        let _ = self.fetch_and_store(&token, start, Some((entry, false)));
                    });
                    Ok((stale, Some(after)))
                }
                Lookup::Refresh { entry, fresh } => {
                    self.fetch_and_store(&token, start, Some((entry, fresh))).map(|s| (s, None))
                }
                Lookup::Fetch => self.fetch_and_store(&token, start, None).map(|s| (s, None)),
                Lookup::Pass => self.pass(),
                Lookup::Error(marker) => replay_failure(marker, now),
                Lookup::Wait if monotonic_ms() < give_up => {
                    sleep_ms(POLL_INTERVAL_MS);
                    continue;
                }
                Lookup::Wait => Err(origin_error(&OutboundError::Timeout)),
            };
        }
    }

    /// The request's fields for `Vary` (standards mode; none otherwise).
    fn pairs(&self) -> &[(String, String)] {
        self.std.as_ref().map_or(&[], |c| c.vary_pairs.as_slice())
    }

    fn standard(&self) -> bool {
        self.std.is_some()
    }

    fn decide(&self, response: &OutboundResponse, cost_ms: u64) -> Decision {
        match &self.std {
            Some(ctx) => standard::decide(response, &self.settings, ctx, cost_ms, unix_now_ms()),
            None => policy::decide(response, &self.settings, cost_ms, unix_now_ms()),
        }
    }

    fn get(&self, extra: &[(String, Vec<u8>)]) -> Result<OutboundResponse, OutboundError> {
        origin_get(&self.origin, &self.target, &self.forward, extra)
    }

    fn bypass(&self, e: &RedisError) -> Result<(Served, Option<After<'a>>), ApiError> {
        bypass(&self.origin, &self.settings, &self.target, &self.forward, e)
    }

    /// Hit-for-pass: to the origin without the lock, nothing stored.
    fn pass(&self) -> Result<(Served, Option<After<'a>>), ApiError> {
        let result = self.get(&[]);
        let _ = finish(&self.redis, &self.keys, "", 0, Action::Skip, "bypasses");
        match result {
            Ok(r) => {
                let detail = format!("fwd=uri-miss; fwd-status={}; detail=pass", r.status);
                Ok((Served::from_origin(Outcome::Bypass, r, true, detail, self.standard()), None))
            }
            Err(e) => Err(origin_error(&e)),
        }
    }

    /// One origin fetch (conditional when `cached` has validators) and what follows it, for
    /// the request holding the lock since `started_us` (Redis µs). `cached` is the entry being refreshed
    /// (`true`: still fresh, XFetch), served instead when the origin fails and the entry
    /// allows it.
    fn fetch_and_store(
        &self,
        token: &str,
        started_us: i64,
        cached: Option<(Entry, bool)>,
    ) -> Result<Served, ApiError> {
        let mut conditional = Vec::new();
        if let Some((entry, _)) = &cached {
            if let Some(etag) = entry.header("etag") {
                conditional.push(("if-none-match".to_owned(), etag.as_bytes().to_vec()));
            } else if let Some(modified) = entry.header("last-modified") {
                conditional.push(("if-modified-since".to_owned(), modified.as_bytes().to_vec()));
            }
        }
        let fwd = if cached.is_some() { "stale" } else { "uri-miss" };
        let started = monotonic_ms();
        let result = self.get(&conditional);
        let cost_ms = monotonic_ms().saturating_sub(started);

        let origin_status = result.as_ref().map_or(0, |r| r.status);
        let response = match result {
            Ok(r) if r.status == 304 && cached.is_some() => {
                let (entry, _) = cached.unwrap_or_else(|| unreachable!());
                self.revalidated(entry, r)
            }
            Ok(r) if r.status < 500 => r,
            // Standards mode: a 5xx with explicit freshness is stored like any answer.
            Ok(r) if self.standard() && matches!(self.decide(&r, cost_ms), Decision::Store(_)) => r,
            failed => return self.failed(token, started_us, cached, failed),
        };
        let detail = |stored: bool| {
            format!("fwd={fwd}; fwd-status={origin_status}{}", if stored { "; stored" } else { "" })
        };
        let std = self.standard();
        match self.decide(&response, cost_ms) {
            Decision::Store(freshness) => {
                let ttl_ms =
                    policy::jittered(freshness.ttl_ms, self.settings.jitter, unit_random());
                let (headers, keep_ms, vary) = match &self.std {
                    Some(ctx) => {
                        let names = standard::vary_names(&response).unwrap_or_default();
                        let vary = (!names.is_empty()).then(|| {
                            (names.join(","), self.settings.max_variants, ctx.vary_pairs.as_slice())
                        });
                        let keep = standard::keep_ms(&freshness, &response, &self.settings);
                        (standard::stored_fields(&response), keep, vary)
                    }
                    None => (entry::end_to_end(&response), self.settings.stale_ms, None),
                };
                let tag_keys = policy::tags(&response)
                    .iter()
                    .filter_map(|t| {
                        let bucket = self.keys.bucket;
                        Some([
                            tag_set_key(&self.redis, bucket, t)?,
                            tag_tombstone_key(&self.redis, bucket, t)?,
                        ])
                    })
                    .flatten()
                    .collect();
                let action = Action::Store {
                    status: response.status,
                    headers: entry::header_block(&headers),
                    body: &response.body,
                    age_ms: freshness.age_ms,
                    ttl_ms,
                    hard_ms: ttl_ms + keep_ms,
                    swr_ms: freshness.swr_ms,
                    sie_ms: freshness.sie_ms,
                    cost_ms,
                    tag_keys,
                    vary,
                };
                let stored = finish(&self.redis, &self.keys, token, started_us, action, "misses");
                let outcome = if stored { Outcome::Miss } else { Outcome::Bypass };
                let mut served = Served::from_origin(outcome, response, false, detail(stored), std);
                // Our Age, not the origin's: the corrected initial age.
                served.headers.retain(|(n, _)| n != "age");
                served.age_ms = freshness.age_ms as i64;
                Ok(served)
            }
            Decision::Pass(reason) => {
                log::info("not_stored", reason);
                let action = if self.settings.pass_ttl_ms > 0 {
                    Action::Mark { value: b"pass".to_vec(), ttl_ms: self.settings.pass_ttl_ms }
                } else {
                    Action::Skip
                };
                finish(&self.redis, &self.keys, token, started_us, action, "bypasses");
                let detail = detail(false);
                Ok(Served::from_origin(Outcome::Bypass, response, true, detail, std))
            }
            Decision::Evict => {
                finish(&self.redis, &self.keys, token, started_us, Action::Evict, "bypasses");
                let detail = detail(false);
                Ok(Served::from_origin(Outcome::Bypass, response, true, detail, std))
            }
        }
    }

    /// A 304 to our conditional request: the stored answer with the 304's fields (RFC 9111
    /// 4.3.4), and its `Age`, decided on again as a fresh answer.
    fn revalidated(&self, entry: Entry, not_modified: OutboundResponse) -> OutboundResponse {
        let updates = if self.standard() {
            standard::stored_fields(&not_modified)
        } else {
            entry::end_to_end(&not_modified)
        };
        let mut headers: Headers = entry
            .headers
            .into_iter()
            .filter(|(name, _)| !updates.iter().any(|(n, _)| n == name))
            .collect();
        headers.extend(updates);
        for name in ["age", "date", "cache-tag", "surrogate-key"] {
            if self.standard() && name != "age" {
                continue;
            }
            headers.extend(
                not_modified.header_values(name).map(|v| (name.to_owned(), v.as_bytes().to_vec())),
            );
        }
        OutboundResponse { status: entry.status, headers, body: entry.body }
    }

    /// The origin failed (5xx, timeout, unreachable): remember it, release the lock, and
    /// serve the cached copy when it is fresh or its stale-if-error window allows.
    fn failed(
        &self,
        token: &str,
        started_us: i64,
        cached: Option<(Entry, bool)>,
        result: Result<OutboundResponse, OutboundError>,
    ) -> Result<Served, ApiError> {
        let action = if self.settings.error_ttl_ms > 0 {
            Action::Mark { value: failure_marker(&result), ttl_ms: self.settings.error_ttl_ms }
        } else {
            Action::Skip
        };
        let now = unix_now_ms();
        // Standards mode: an origin that cannot be reached leaves the cache "disconnected"
        // (RFC 9111 4.2.4), and a stale entry may be served unless its origin forbade it.
        let disconnected = self.standard() && matches!(result, Err(OutboundError::Unreachable(_)));
        if let Some((entry, fresh)) = cached {
            let disconnected_ok = disconnected
                && now < entry.soft_ms.saturating_add(self.settings.stale_ms as i64)
                && standard::servable_disconnected(&entry.headers, &self.settings);
            if fresh || now < entry.sie_until_ms || disconnected_ok {
                let (counter, outcome) =
                    if fresh { ("hits", Outcome::Hit) } else { ("stale", Outcome::Stale) };
                finish(&self.redis, &self.keys, token, started_us, action, counter);
                let mut served = Served::cached(outcome, entry, now);
                served.detail.push_str("; detail=stale-if-error");
                return Ok(served);
            }
        }
        finish(&self.redis, &self.keys, token, started_us, action, "bypasses");
        match result {
            Ok(r) => {
                let detail = format!("fwd=uri-miss; fwd-status={}", r.status);
                Ok(Served::from_origin(Outcome::Bypass, r, true, detail, self.standard()))
            }
            Err(e) => Err(origin_error(&e)),
        }
    }
}
