//! Answers to clients: the served response with `X-Cache`, `Cache-Status` (RFC 9211) and
//! `Age`, and `304 Not Modified` for clients' own conditional requests (RFC 9110 13.1).

use super::entry::{Entry, Headers};
use super::policy::http_date_ms;
use crate::platform::fields::split_list;
use crate::platform::outbound::OutboundResponse;
use crate::platform::{Request, Response};

/// The cache's name in `Cache-Status`.
pub const CACHE_NAME: &str = "spin-redis-cache";

/// How a response was produced; sent as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Stale,
    /// Not from the cache and not stored: uncacheable, a write, or Redis unavailable.
    Bypass,
    /// A failure of the origin remembered for `cache_error_ttl_seconds`, replayed.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
            Self::Error => "ERROR",
        }
    }
}

/// An answer ready to send.
pub struct Served {
    pub outcome: Outcome,
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub age_ms: i64,
    /// `Cache-Status` parameters after the cache's name, e.g. `hit; ttl=42`.
    pub detail: String,
}

impl Served {
    pub fn from_entry(outcome: Outcome, entry: Entry, now_ms: i64, detail: String) -> Self {
        Self {
            outcome,
            status: entry.status,
            headers: entry.headers,
            body: entry.body,
            age_ms: now_ms - entry.stored_ms,
            detail,
        }
    }

    /// A hit or a stale copy: `hit; ttl=N` (negative when stale).
    pub fn cached(outcome: Outcome, entry: Entry, now_ms: i64) -> Self {
        let ttl = (entry.soft_ms - now_ms).div_euclid(1000);
        Self::from_entry(outcome, entry, now_ms, format!("hit; ttl={ttl}"))
    }

    /// Straight from the origin. `cookies`: also pass `Set-Cookie` (never for stored answers).
    /// `standard`: every end-to-end field, the origin's `Age` included (kept as it came when
    /// the answer is not stored); else the cache-aside list.
    pub fn from_origin(
        outcome: Outcome,
        response: OutboundResponse,
        cookies: bool,
        detail: String,
        standard: bool,
    ) -> Self {
        let mut headers = if standard {
            let mut h = super::standard::stored_fields(&response);
            h.extend(
                response
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("age"))
                    .map(|(_, v)| ("age".to_owned(), v.clone())),
            );
            h
        } else {
            super::entry::end_to_end(&response)
        };
        if cookies {
            headers.extend(
                response
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
                    .map(|(_, v)| ("set-cookie".to_owned(), v.clone())),
            );
        }
        // -1: no Age of ours (standards mode passes the origin's, or none).
        let age_ms = if standard { -1 } else { 0 };
        Self { outcome, status: response.status, headers, body: response.body, age_ms, detail }
    }

    pub fn age_seconds(&self) -> String {
        (self.age_ms.max(0) / 1000).to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Weak comparison of entity tags (RFC 9110 8.8.3.2): `W/"x"` matches `"x"`.
/// The list is split on commas outside quoted strings: `"a,b"` is one tag.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    if_none_match.trim() == "*"
        || split_list(if_none_match).into_iter().any(|t| bare(t) == bare(etag))
}

/// Whether a client's conditional GET/HEAD is answered `304` (RFC 9110 13.2.2):
/// `If-None-Match` when present, else `If-Modified-Since` against `Last-Modified`.
pub fn not_modified(req: &Request, served: &Served) -> bool {
    let read = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
    if !read || served.status != 200 {
        return false;
    }
    let inm = req.header_values("if-none-match");
    if !inm.is_empty() {
        let inm = inm.join(",");
        return served.header("etag").is_some_and(|etag| etag_matches(&inm, etag));
    }
    match (req.header("if-modified-since"), served.header("last-modified")) {
        (Some(since), Some(modified)) => match (http_date_ms(since), http_date_ms(modified)) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        },
        _ => false,
    }
}

/// The fields a 304 carries (RFC 9110 15.4.5), and a passed answer's cookies (stored
/// entries never hold any).
const NOT_MODIFIED_FIELDS: &[&str] = &[
    "cache-control",
    "content-location",
    "etag",
    "expires",
    "vary",
    "last-modified",
    "set-cookie",
];

/// The client's answer: the served response (no body for HEAD), or a 304.
pub fn to_response(req: &Request, served: Served) -> Response {
    let head = req.is_head();
    let not_modified = not_modified(req, &served);
    let status = if not_modified { 304 } else { served.status };
    let mut response = Response::new(status);
    for (name, value) in &served.headers {
        if !not_modified || NOT_MODIFIED_FIELDS.contains(&name.as_str()) {
            response = response.with_header(name, value.clone());
        }
    }
    let cache_status = format!("{CACHE_NAME}; {}", served.detail);
    response = response
        .with_header("x-cache", served.outcome.as_str())
        .with_header("cache-status", cache_status);
    // An answer passed in standards mode keeps the origin's own Age, or has none.
    if served.age_ms >= 0 && served.header("age").is_none() {
        response = response.with_header("age", served.age_seconds());
    }
    if head || not_modified {
        response
    } else {
        response.with_body(served.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("W/\"a\"", "\"a\""));
        assert!(etag_matches("\"b\", W/\"a\"", "W/\"a\""));
        assert!(etag_matches("*", "\"z\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
        // A comma inside a tag is part of it.
        assert!(etag_matches("\"x\", \"a,b\"", "\"a,b\""));
        assert!(!etag_matches("\"a,b\"", "\"a\""));
    }
}
