//! Cache-aside in front of an HTTP origin, to the standard of an HTTP cache (RFC 9111,
//! RFC 5861, RFC 9211): `/api/cache/...`.
//!
//! | Route | What |
//! |---|---|
//! | `GET`/`HEAD /api/cache/proxy/{path}` | read through the cache (`read_through`) |
//! | `POST`/`PUT`/`PATCH /api/cache/proxy/{path}` | write through to the origin; a 2xx purges the path |
//! | `DELETE /api/cache/proxy/{path}` | purge the path, every variant (`Soft-Purge: 1`: mark stale) |
//! | `PUT /api/cache/behind/{path}` | write-behind: cached and queued for the origin (`write_behind`) |
//! | `GET /api/cache/profile/{id}` | the seed recipe's profile route, same entries (`demo`) |
//! | `GET /api/cache/demo` | the seed recipe's counter |
//! | `POST /api/cache/purge`, `GET /api/cache/stats` | the `cache-admin` component (`admin`) |
//! | `POST /api/cache/drain`, `GET /api/cache/queue` | `cache-admin`: the write-behind queue |
//!
//! Files: `settings` (variables), `target` (request targets normalised), `keys` (Redis
//! key layout), `entry` (entry format), `policy` (what the origin allows), `fetch`
//! (origin requests), `scripts` (script calls) with `lookup.lua`, `store.lua`,
//! `purge.lua`, `read_through` (the algorithm), `respond` (client answers, 304s,
//! `Cache-Status`), `http_cache` ([`HttpCache`], the read path and write invalidation as a
//! library API, which the proxy goes through), `library` ([`ValueCache`]), `purge`, `demo`,
//! `admin`.
//!
//! What the proxy serves is bounded: only paths under `cache_path_prefixes`, query
//! parameters filtered by `cache_query_allow` / `cache_query_ignore`, request headers in
//! the key only as `cache_vary_headers` lists them (an origin `Vary` on anything else, or
//! `Set-Cookie`, makes the answer pass uncached).

pub mod admin;
pub(crate) mod demo;
pub(crate) mod entry;
pub(crate) mod fetch;
mod http_cache;
pub(crate) mod keys;
mod library;
pub(crate) mod policy;
pub(crate) mod purge;
pub(crate) mod read_through;
pub(crate) mod respond;
pub(crate) mod scripts;
pub(crate) mod settings;
pub(crate) mod standard;
pub(crate) mod target;
pub(crate) mod write_behind;

use http::Method;

pub use http_cache::{
    HttpCache, HttpRequest, HttpResponse, OriginError, OriginRequest, OriginResponse, Refresh,
};
pub use library::{CacheStatus, Cached, Fill, ValueCache, MAX_TAGS};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::redis::Redis;
use crate::platform::{serve as serve_http, ApiError, Request, Response};
use entry::Headers;
use keys::EntryKeys;
use read_through::{origin_error, proxy_origin, RedisRef};
use respond::{Outcome, Served};
use settings::CacheSettings;
use target::{QueryRules, Target};

/// Largest body a write through the proxy may carry.
const MAX_WRITE_BODY: usize = 1024 * 1024;

const PROXY_METHODS: &[Method] =
    &[Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve_http(req, out, |mut req| route(&mut req))
}

/// The route table.
fn route(req: &mut Request) -> Result<Response, ApiError> {
    let path = req.path_info().to_owned();
    if let Some(rest) = path.strip_prefix("/proxy/") {
        return proxy(req, rest);
    }
    if let Some(rest) = path.strip_prefix("/behind/") {
        req.allow(&[Method::PUT])?;
        return write_behind(req, rest);
    }
    if let Some(rest) = path.strip_prefix("/entries/") {
        req.allow(&[Method::DELETE])?;
        return purge_entries(req, rest);
    }
    if let Some(user_id) = path.strip_prefix("/profile/") {
        req.allow(&[Method::GET, Method::HEAD])?;
        demo::check_user_id(user_id)?;
        let cache = HttpCache::from_settings(CacheSettings::from_spin_variables()?);
        let target = target::normalise(&format!("/profiles/{user_id}"), "", QueryRules::default())?;
        let (served, after) =
            cache.read(req, target, proxy_redis(), proxy_origin(cache.settings()), true)?;
        let response = demo::profile(user_id, served, req.is_head())?;
        return Ok(with_after(response, after));
    }
    match path.as_str() {
        // Routed to the `cache-admin` component; reached here only if it is not deployed.
        "/purge" | "/stats" | "/drain" | "/queue" => Err(ApiError::not_found(
            "this route is served by the cache-admin component, which is not deployed",
        )),
        "/demo" => {
            req.allow(&[Method::GET])?;
            demo::demo_counter()
        }
        _ => Err(ApiError::not_found(
            "no such cache route: use /api/cache/proxy/{path}, /profile/{id}, /purge, /stats or /demo",
        )),
    }
}

fn with_after(response: Response, after: Option<read_through::After<'static>>) -> Response {
    match after {
        Some(work) => response.after(work),
        None => response,
    }
}

/// The configured `Vary` request headers as the client sent them (repeated lines joined).
fn vary_values(req: &Request, settings: &CacheSettings) -> Vec<(String, String)> {
    settings
        .vary
        .iter()
        .map(|name| (name.clone(), req.header_values(name).join(", ").trim().to_owned()))
        .collect()
}

fn forward_headers(values: &[(String, String)]) -> Headers {
    values
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect()
}

fn entry_keys(redis: &Redis, req: &Request, target: &Target, s: &CacheSettings) -> EntryKeys {
    let values = vary_values(req, s);
    let pairs: Vec<(&str, String)> = values.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    EntryKeys::new(redis, target, &keys::variant(&pairs), s.buckets)
}

/// The proxy's Redis, from the component's Spin variables (unusable settings: the cache is
/// bypassed).
fn proxy_redis() -> Result<RedisRef<'static>, crate::RedisError> {
    Redis::from_spin_variables().map(|redis| RedisRef::Owned(Box::new(redis)))
}

/// `DELETE /api/cache/entries/{path}`: purge the path, every variant (`Soft-Purge: 1`: mark
/// stale). The proxy's own `DELETE` is the origin's in standards mode.
fn purge_entries(req: &mut Request, rest: &str) -> Result<Response, ApiError> {
    let settings = CacheSettings::from_spin_variables()?;
    let rules = QueryRules { allow: &settings.query_allow, ignore: &settings.query_ignore };
    let target = target::normalise(rest, req.query(), rules)?;
    purge::authorize_purge(req, &settings)?;
    let redis = Redis::from_spin_variables()?;
    let keys = entry_keys(&redis, req, &target, &settings);
    purge::purge_route(req, &keys, &redis, &target, &settings)
}

/// `PUT /api/cache/behind/{path}`: see [`write_behind::write`].
fn write_behind(req: &mut Request, rest: &str) -> Result<Response, ApiError> {
    write_behind::authorize_write(req)?;
    let settings = CacheSettings::from_spin_variables()?;
    let rules = QueryRules { allow: &settings.query_allow, ignore: &settings.query_ignore };
    let target = target::normalise(rest, req.query(), rules)?;
    if !settings.serves_path(target.path()) {
        return Err(ApiError::new(
            404,
            "not_proxied",
            "this path is not served by the cache (cache_path_prefixes)",
        ));
    }
    let body = req.body(MAX_WRITE_BODY)?;
    let redis = Redis::from_spin_variables()?;
    let keys = entry_keys(&redis, req, &target, &settings);
    write_behind::write(req, &target, &keys, &redis, &settings, &body)
}

/// `/api/cache/proxy/{path}`: reads go through [`HttpCache`] with the outbound fetch of
/// `origin_url`, writes are sent here and invalidate through it; the deprecated purge is the
/// route's own.
fn proxy(req: &mut Request, rest: &str) -> Result<Response, ApiError> {
    let cache = HttpCache::from_settings(CacheSettings::from_spin_variables()?);
    let settings = cache.settings();
    if !settings.standard {
        req.allow(PROXY_METHODS)?;
    }
    let target = cache.target(rest, req.query())?;
    if *req.method() == Method::DELETE && !settings.standard {
        // Deprecated: purges moved to DELETE /api/cache/entries/{path} (docs/cache.md).
        purge::authorize_purge(req, settings)?;
        let redis = Redis::from_spin_variables()?;
        let keys = entry_keys(&redis, req, &target, settings);
        let mut response = purge::purge_route(req, &keys, &redis, &target, settings)?;
        response.set_header("deprecation", "true");
        let successor =
            format!("</api/cache/entries{}>; rel=\"successor-version\"", target.as_str());
        response.set_header("link", successor);
        return Ok(response);
    }
    cache.check_served(&target)?;
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reading {
        return write_through(req, &target, &cache);
    }
    let origin = proxy_origin(settings);
    let (response, after) = cache.answer(req, target, proxy_redis(), origin, true)?;
    Ok(with_after(response, after))
}

/// A write goes to the origin as it came (body, end-to-end fields); a 2xx purges every
/// variant of the path, so the writer reads its own write. The purge needs Redis: when it
/// fails the write still stands, and the answer says so in `Cache-Status`.
fn write_through(
    req: &mut Request,
    target: &Target,
    cache: &HttpCache,
) -> Result<Response, ApiError> {
    let settings = cache.settings();
    let body = req.body(MAX_WRITE_BODY)?;
    let mut headers: Headers = fetch::forwardable(req.field_lines());
    // Framed by length, as the client sent it (not chunked: some origins refuse that).
    headers.push(("content-length".to_owned(), body.len().to_string().into_bytes()));
    let method = req.method().clone();
    let response = fetch::send(
        &method,
        &settings.origin_url,
        target.as_str(),
        &headers,
        &body,
        settings.origin_timeout_ms,
    )
    .map_err(|e| origin_error(&e))?;
    let mut detail = format!("fwd=method; fwd-status={}", response.status);
    let targets = cache.invalidated_by(&method, target, &response);
    if !targets.is_empty() {
        let purged =
            Redis::from_spin_variables().and_then(|redis| cache.purge(&redis, req, &targets));
        if let Err(e) = purged {
            crate::platform::log::warn(
                "purge_failed",
                format_args!("write not followed by a purge: {e}"),
            );
            detail.push_str("; detail=purge-failed");
        }
    }
    let served = Served::from_origin(Outcome::Bypass, response, true, detail, settings.standard);
    Ok(respond::to_response(req, served))
}
