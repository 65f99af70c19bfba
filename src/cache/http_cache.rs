//! The HTTP cache in front of your own origin fetch: [`HttpCache`] is what
//! `GET`/`HEAD /api/cache/proxy/{path}` runs, with the origin request handed to the caller.
//!
//! The proxy route is a user of it: it reads the request, checks the method, and gives
//! [`HttpCache`] its outbound fetch of `origin_url` (a write it sends itself, then
//! [`HttpCache`] decides what the answer invalidates); the entries, variants, locks, purges
//! and answers are this module's, so an entry filled here is a hit for the proxy and the
//! other way round, and `/api/cache/purge` drops both.

use crate::platform::outbound::{OutboundError, OutboundResponse};
use crate::platform::redis::{Redis, RedisError};
use crate::platform::{ApiError, Request, Response};
use crate::{Config, Error};

use super::entry::Headers;
use super::read_through::{self, After, Fill, Origin, RedisRef};
use super::respond::{self, Served};
use super::settings::CacheSettings;
use super::standard;
use super::target::{self, QueryRules, Target};

/// The HTTP cache of the `cache` component (RFC 9111 in `cache_mode = "standard"`, the seed's
/// cache-aside rules otherwise) in front of an origin fetch of your own.
///
/// For a `GET` or `HEAD` it answers from Redis when it can; otherwise the first request for
/// a target fetches from your origin (conditionally when a stored copy has validators) and
/// stores what the origin's answer allows, while concurrent requests for the same target wait
/// for it (single flight) or get the stale copy the origin allows. Failures of the origin are
/// remembered briefly and replayed; a client's own `If-None-Match` / `If-Modified-Since` are
/// answered `304`, and in standards mode a `Range` is answered `206`/`416` from the whole
/// answer. The keys, Lua scripts and answers are the proxy's (`/api/cache/proxy/{path}`), so
/// the two share entries, and `/api/cache/purge`, `DELETE /api/cache/entries/{path}`,
/// [`super::ValueCache::purge`] and [`super::ValueCache::purge_tag`] drop them.
///
/// ```no_run
/// use spin_redis_patterns::cache::{
///     HttpCache, HttpRequest, OriginError, OriginRequest, OriginResponse,
/// };
/// use spin_redis_patterns::{Config, Error, Redis};
/// use spin_sdk::http::{run, send, Request, Response};
///
/// /// Your origin: any fetch that takes the target and fields the cache gives it.
/// fn origin(o: &OriginRequest<'_>) -> Result<OriginResponse, OriginError> {
///     let request = Request::get(format!("https://api.example.com{}", o.target))
///         .headers(o.headers.to_vec())
///         .build();
///     let response: Response =
///         run(send(request)).map_err(|e| OriginError::Unreachable(e.to_string()))?;
///     Ok(OriginResponse {
///         status: *response.status(),
///         headers: response
///             .headers()
///             .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
///             .collect(),
///         body: response.into_body(),
///     })
/// }
///
/// /// A handler's read through the cache (`cache_path_prefixes` must cover the path).
/// fn profile(req: &Request) -> Result<Response, Error> {
///     let config = Config::spin();
///     let redis = Redis::from_config(&config)?;
///     let cache = HttpCache::new(&config)?;
///     let headers = req.headers().map(|(n, v)| (n.to_owned(), v.as_bytes().to_vec()));
///     let request = HttpRequest::new("GET", req.path_and_query().unwrap_or("/"))
///         .with_headers(headers);
///     let mut answer = cache.serve(&redis, &request, origin)?;
///     println!("{:?}", answer.header("cache-status")); // spin-redis-cache; hit; ttl=41
///     // A stale answer's refresh: run it after the answer is sent (here, at once).
///     if let Some(refresh) = answer.take_refresh() {
///         refresh.run();
///     }
///     Ok(Response::builder()
///         .status(answer.status)
///         .headers(answer.headers)
///         .body(answer.body)
///         .build())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct HttpCache {
    settings: CacheSettings,
}

/// A request to answer through the cache: method, target and every field line the client
/// sent (its `Cache-Control` is not obeyed; its conditionals, `Range`, `Authorization` and the
/// fields the entry varies on are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` or `HEAD`; anything else is refused (405).
    pub method: String,
    /// The path and query, `/profiles/42?lang=en`: normalised and filtered by
    /// `cache_query_allow` / `cache_query_ignore` before it names the entry.
    pub target: String,
    /// The request's field lines, in order (names in any case).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl HttpRequest {
    /// A request without fields.
    pub fn new(method: &str, target: &str) -> Self {
        Self { method: method.to_owned(), target: target.to_owned(), headers: Vec::new() }
    }

    /// The same request with one more field line.
    #[must_use]
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The same request with these field lines added.
    #[must_use]
    pub fn with_headers<V: Into<Vec<u8>>>(
        mut self,
        lines: impl IntoIterator<Item = (String, V)>,
    ) -> Self {
        self.headers.extend(lines.into_iter().map(|(n, v)| (n, v.into())));
        self
    }
}

/// What the cache asks of your origin: always a `GET`.
#[derive(Debug, Clone, Copy)]
pub struct OriginRequest<'r> {
    /// The normalised target, `/path?query`: the origin must answer for exactly this.
    pub target: &'r str,
    /// The fields to send: the request's fields the mode forwards (standards mode: every
    /// end-to-end one but the client's conditionals and `Range`; cache-aside: those named by
    /// `cache_vary_headers`), and on a revalidation `If-None-Match` or `If-Modified-Since`.
    pub headers: &'r [(String, Vec<u8>)],
}

impl OriginRequest<'_> {
    /// The first value of a field (names compared case-insensitively), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Your origin's whole answer. Its `Cache-Control`, `Expires`, `ETag`, `Last-Modified`,
/// `Vary`, `Set-Cookie`, `Cache-Tag` decide what is stored, for how long and under which tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginResponse {
    /// The status.
    pub status: u16,
    /// Field lines in order; repeated names stay repeated.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, whole.
    pub body: Vec<u8>,
}

/// Why your origin gave no answer. Remembered for `cache_error_ttl_seconds` like the
/// proxy's failures, and answered as the proxy answers them (a stale copy when the entry
/// allows, else [`Error::Upstream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    /// It did not answer in time: 504 `origin_timeout`.
    Timeout,
    /// Its answer is too large to read: 502 `origin_response_too_large`.
    TooLarge,
    /// It could not be reached or broke off (the text is logged): 502 `origin_unreachable`.
    /// In standards mode a stale entry may be served while it lasts (RFC 9111 4.2.4).
    Unreachable(String),
}

/// The cache's answer, ready to send.
pub struct HttpResponse<'a> {
    /// The status: the stored or fetched one, `304` for a client's matching conditional,
    /// `206` or `416` for a `Range` (standards mode).
    pub status: u16,
    /// Field lines in order, names lower case: the answer's end-to-end fields, `X-Cache`,
    /// `Cache-Status` (RFC 9211) and `Age`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body: empty for `HEAD` and `304`.
    pub body: Vec<u8>,
    refresh: Option<Refresh<'a>>,
}

impl std::fmt::Debug for HttpResponse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("refresh", &self.refresh.is_some())
            .finish()
    }
}

impl<'a> HttpResponse<'a> {
    /// The first value of a field (names compared case-insensitively), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// How it was produced, as `X-Cache` says: `HIT`, `MISS`, `STALE`, `BYPASS` or `ERROR`.
    pub fn outcome(&self) -> &str {
        self.header("x-cache").unwrap_or("BYPASS")
    }

    /// The refresh of a stale answer served under `stale-while-revalidate`: it holds the
    /// target's single-flight lock, so run it once the answer is sent. Dropped unrun, the
    /// lock expires by itself after `cache_origin_timeout_ms` + 2 s, and until then other
    /// requests are served the stale copy or wait.
    pub fn take_refresh(&mut self) -> Option<Refresh<'a>> {
        self.refresh.take()
    }
}

/// A refresh to run after the answer is sent ([`HttpResponse::take_refresh`]).
pub struct Refresh<'a>(After<'a>);

impl Refresh<'_> {
    /// Fetches from the origin and stores the answer (or remembers the failure).
    pub fn run(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Refresh<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresh")
    }
}

impl From<OriginResponse> for OutboundResponse {
    fn from(r: OriginResponse) -> Self {
        Self { status: r.status, headers: r.headers, body: r.body }
    }
}

impl From<OriginError> for OutboundError {
    fn from(e: OriginError) -> Self {
        match e {
            OriginError::Timeout => Self::Timeout,
            OriginError::TooLarge => Self::TooLarge,
            OriginError::Unreachable(m) => Self::Unreachable(m),
        }
    }
}

/// The proxy's `404 not_proxied`.
fn not_proxied() -> ApiError {
    ApiError::new(404, "not_proxied", "this path is not served by the cache (cache_path_prefixes)")
}

impl HttpCache {
    /// Settings from the `cache_*` variables, as the `cache` component reads them:
    /// `cache_mode`, `cache_path_prefixes` (only targets under them are served),
    /// `cache_query_allow` / `cache_query_ignore`, `cache_vary_headers`, the TTLs and stale
    /// windows, `cache_max_entry_bytes`, `cache_key_buckets`, `cache_origin_timeout_ms` (sizes
    /// the single-flight lock: your fetch should give up within it). `origin_url` is not
    /// used: the origin is yours.
    pub fn new(config: &Config) -> Result<Self, Error> {
        Ok(Self::from_settings(CacheSettings::from_variables(&config.variables())?))
    }

    pub(crate) fn from_settings(settings: CacheSettings) -> Self {
        Self { settings }
    }

    pub(crate) fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// Answers `request` (`GET` or `HEAD`) through the cache, asking `origin` on a miss, a
    /// revalidation or a pass. `origin` runs at most once, maybe in the answer's
    /// [`Refresh`].
    ///
    /// Errors, as the proxy answers them: [`Error::Invalid`] 405 `method_not_allowed`,
    /// 400 `invalid_path`, 414 `uri_too_long`, 404 `not_proxied` (outside
    /// `cache_path_prefixes`); [`Error::Upstream`] 504 `origin_timeout`, 502
    /// `origin_unreachable` / `origin_response_too_large` / `origin_error` when the origin
    /// failed and no stored copy may stand in. An origin's 4xx/5xx answer is an answer, not
    /// an error. Redis unavailable: your origin answers, nothing is stored (`BYPASS`).
    pub fn serve<'a, F>(
        &self,
        redis: &'a Redis,
        request: &HttpRequest,
        origin: F,
    ) -> Result<HttpResponse<'a>, Error>
    where
        F: Fn(&OriginRequest<'_>) -> Result<OriginResponse, OriginError> + 'a,
    {
        let method = match request.method.to_ascii_uppercase().as_str() {
            "GET" => http::Method::GET,
            "HEAD" => http::Method::HEAD,
            _ => return Err(Error::invalid(405, "method_not_allowed", "use GET or HEAD")),
        };
        let req = Request::from_parts(method, request.target.clone(), request.headers.clone());
        let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
        let answered = self.target(path, query).and_then(|target| {
            self.check_served(&target)?;
            let origin: Origin<'a> = Box::new(move |target: &Target, headers: &Headers| {
                let asked = OriginRequest { target: target.as_str(), headers };
                origin(&asked).map(Into::into).map_err(Into::into)
            });
            self.answer(&req, target, Ok(RedisRef::Borrowed(redis)), origin, false)
        });
        let (response, after) = answered.map_err(Error::from_api)?;
        Ok(HttpResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
            refresh: after.map(Refresh),
        })
    }

    /// After your origin answered a write (any method but `GET`, `HEAD`, `OPTIONS`, `TRACE`)
    /// for `request.target`: purges every variant of that target when the answer is a 2xx
    /// (standards mode: 2xx or 3xx, and also the targets its `Location` and
    /// `Content-Location` name, RFC 9111 4.4), as the proxy's write-through does, so the
    /// writer reads its own write. True when it purged; false when the method or status does
    /// not invalidate. A fill that started before the purge does not store.
    pub fn invalidate(
        &self,
        redis: &Redis,
        request: &HttpRequest,
        response: &OriginResponse,
    ) -> Result<bool, Error> {
        let method = http::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::invalid(400, "invalid_method", "not an HTTP method"))?;
        let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
        let target = self.target(path, query).map_err(Error::from_api)?;
        let answer = OutboundResponse {
            status: response.status,
            headers: response.headers.clone(),
            body: Vec::new(),
        };
        let targets = self.invalidated_by(&method, &target, &answer);
        if targets.is_empty() {
            return Ok(false);
        }
        let req = Request::from_parts(method, request.target.clone(), request.headers.clone());
        self.purge(redis, &req, &targets)?;
        Ok(true)
    }

    /// The targets a write's answer invalidates (RFC 9111 4.4): none for a safe method or
    /// an answer that is not a 2xx (standards mode: 2xx or 3xx); else the target and, in
    /// standards mode, the same-origin `Location` and `Content-Location` targets.
    pub(crate) fn invalidated_by(
        &self,
        method: &http::Method,
        target: &Target,
        response: &OutboundResponse,
    ) -> Vec<Target> {
        use http::Method;
        let settings = &self.settings;
        let unsafe_method =
            !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
        let invalidating = if settings.standard { 200..400 } else { 200..300 };
        if !unsafe_method || !invalidating.contains(&response.status) {
            return Vec::new();
        }
        let mut targets = vec![target.clone()];
        if settings.standard {
            targets.extend(related_targets(response, settings));
        }
        targets
    }

    /// Purges every variant of each target (the request names the variant's fields).
    pub(crate) fn purge(
        &self,
        redis: &Redis,
        req: &Request,
        targets: &[Target],
    ) -> Result<(), RedisError> {
        for t in targets {
            let keys = super::entry_keys(redis, req, t, &self.settings);
            super::purge::purge_target(redis, &keys, t, &self.settings, false, false)?;
        }
        Ok(())
    }

    /// The request's target in normal form, its query filtered by the configured rules.
    pub(crate) fn target(&self, path: &str, query: &str) -> Result<Target, ApiError> {
        let s = &self.settings;
        target::normalise(
            path,
            query,
            QueryRules { allow: &s.query_allow, ignore: &s.query_ignore },
        )
    }

    /// Refuses a target outside `cache_path_prefixes`.
    pub(crate) fn check_served(&self, target: &Target) -> Result<(), ApiError> {
        if self.settings.serves_path(target.path()) {
            Ok(())
        } else {
            Err(not_proxied())
        }
    }

    /// A read of `target` (`GET`/`HEAD`): through the cache, or straight from the origin when
    /// Redis is unusable. `fast_path`: hits may come from the pooled store (the proxy's).
    pub(crate) fn read<'a>(
        &self,
        req: &Request,
        target: Target,
        redis: Result<RedisRef<'a>, RedisError>,
        origin: Origin<'a>,
        fast_path: bool,
    ) -> Result<(Served, Option<After<'a>>), ApiError> {
        let settings = self.settings.clone();
        let (forward, std) = if settings.standard {
            let ctx = standard::RequestContext::of(req.field_lines());
            (standard::fill_headers(req.field_lines()), Some(ctx))
        } else {
            (super::forward_headers(&super::vary_values(req, &settings)), None)
        };
        match redis {
            Ok(redis) => {
                let keys = super::entry_keys(&redis, req, &target, &settings);
                Fill { redis, keys, target, settings, forward, std, origin, fast_path }.serve()
            }
            Err(e) => read_through::bypass(&origin, &settings, &target, &forward, &e),
        }
    }

    /// [`Self::read`] answered to the client: `304` for its conditionals, in standards mode
    /// `206`/`416` for its range, no body for `HEAD`; and the work to run after.
    pub(crate) fn answer<'a>(
        &self,
        req: &Request,
        target: Target,
        redis: Result<RedisRef<'a>, RedisError>,
        origin: Origin<'a>,
        fast_path: bool,
    ) -> Result<(Response, Option<After<'a>>), ApiError> {
        let (served, after) = self.read(req, target, redis, origin, fast_path)?;
        // Standards mode answers a range from the complete answer (fills never ask for ranges).
        let served = if self.settings.standard { respond::ranged(req, served) } else { served };
        Ok((respond::to_response(req, served), after))
    }
}

/// The targets a write's `Location` and `Content-Location` name on this cache's origin:
/// origin-relative, on `origin_url`, or on the proxy's own route.
fn related_targets(response: &OutboundResponse, settings: &CacheSettings) -> Vec<Target> {
    let rules = QueryRules { allow: &settings.query_allow, ignore: &settings.query_ignore };
    ["location", "content-location"]
        .iter()
        .filter_map(|name| response.header(name))
        .filter_map(|value| {
            let value = value.trim();
            let path = if let Some(rest) = value.strip_prefix(settings.origin_url.as_str()) {
                rest.to_owned()
            } else if value.starts_with('/') {
                value.to_owned()
            } else {
                let after_scheme = value.split_once("://")?.1;
                after_scheme[after_scheme.find('/')?..].to_owned()
            };
            let path = path.strip_prefix("/api/cache/proxy").unwrap_or(&path).to_owned();
            let (path, query) = path.split_once('?').unwrap_or((&path, ""));
            target::normalise(path, query, rules).ok()
        })
        .collect()
}
