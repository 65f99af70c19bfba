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

/// What a `Range` request field asks of a representation of `len` bytes (RFC 9110 14.2).
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// Serve the whole representation: no range, an invalid one, another unit, or several
    /// ranges (a server may ignore `Range`; one range is all this cache slices).
    Whole,
    /// Bytes `first..=last`.
    Part(usize, usize),
    /// 416: no byte of the range exists.
    Unsatisfiable,
}

fn byte_range(spec: &str, len: usize) -> ByteRange {
    let Some((unit, set)) = spec.trim().split_once('=') else { return ByteRange::Whole };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else { return ByteRange::Whole };
    let number = |t: &str| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().unwrap_or(u64::MAX))
    };
    let len64 = len as u64;
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => ByteRange::Whole,
            Some(0) => ByteRange::Unsatisfiable,
            _ if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part((len64 - n.min(len64)) as usize, len - 1),
        },
        (first, last) => {
            let Some(first) = number(first) else { return ByteRange::Whole };
            let last = match last {
                "" => None,
                l => match number(l) {
                    Some(l) if l >= first => Some(l),
                    _ => return ByteRange::Whole,
                },
            };
            if first >= len64 {
                return ByteRange::Unsatisfiable;
            }
            let last = last.map_or(len64 - 1, |l| l.min(len64 - 1));
            ByteRange::Part(first as usize, last as usize)
        }
    }
}

/// Whether `If-Range` lets the range apply (RFC 9110 13.1.5): a strong entity tag equal to
/// the answer's strong `ETag`, or a date equal to its `Last-Modified`.
fn if_range_holds(if_range: &str, served: &Served) -> bool {
    let if_range = if_range.trim();
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        let etag = served.header("etag").map(str::trim);
        !if_range.starts_with("W/") && etag.is_some_and(|e| !e.starts_with("W/") && e == if_range)
    } else {
        served.header("last-modified").is_some_and(|m| m.trim() == if_range)
    }
}

/// Standards mode: a `GET` with `Range` answered from a complete `200` (stored or just
/// fetched) as a `206` of the one range asked for, or `416`; anything else as it is. A
/// client's conditional answered `304` takes precedence (RFC 9110 13.2.2).
pub fn ranged(req: &Request, mut served: Served) -> Served {
    let Some(spec) = req.header("range") else { return served };
    if *req.method() != http::Method::GET || served.status != 200 || not_modified(req, &served) {
        return served;
    }
    if req.header("if-range").is_some_and(|v| !if_range_holds(v, &served)) {
        return served;
    }
    let len = served.body.len();
    match byte_range(spec, len) {
        ByteRange::Whole => {}
        ByteRange::Part(first, last) => {
            served.status = 206;
            served.body = served.body[first..=last].to_vec();
            served.headers.retain(|(n, _)| n != "content-range");
            let value = format!("bytes {first}-{last}/{len}");
            served.headers.push(("content-range".to_owned(), value.into_bytes()));
        }
        ByteRange::Unsatisfiable => {
            served.status = 416;
            served.body = Vec::new();
            served.headers.retain(|(n, _)| n != "content-range" && n != "content-type");
            served
                .headers
                .push(("content-range".to_owned(), format!("bytes */{len}").into_bytes()));
        }
    }
    served
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
        // `*` matches any current representation, with or without an ETag (RFC 9110
        // 13.1.2): a stored 200 is one.
        if inm.trim() == "*" {
            return true;
        }
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
    fn one_byte_range_is_sliced_others_ignored() {
        use ByteRange::*;
        assert_eq!(byte_range("bytes=0-1", 11), Part(0, 1));
        assert_eq!(byte_range("Bytes = 5-", 11), Part(5, 10));
        assert_eq!(byte_range("bytes=-3", 11), Part(8, 10));
        assert_eq!(byte_range("bytes=-30", 11), Part(0, 10));
        assert_eq!(byte_range("bytes=4-400", 11), Part(4, 10));
        assert_eq!(byte_range("bytes=11-", 11), Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 11), Unsatisfiable);
        assert_eq!(byte_range("bytes=0-0", 0), Unsatisfiable);
        for whole in ["bytes=0-1,3-4", "items=0-1", "bytes=3-1", "bytes=a-b", "bytes", "bytes=-"] {
            assert_eq!(byte_range(whole, 11), Whole, "{whole}");
        }
    }

    #[test]
    fn if_none_match_star_matches_an_entry_without_an_etag() {
        let served = Served {
            outcome: Outcome::Hit,
            status: 200,
            headers: vec![("content-type".to_owned(), b"text/plain".to_vec())],
            body: b"hi".to_vec(),
            age_ms: 0,
            detail: String::new(),
        };
        let req = |inm: &str| {
            Request::for_test(http::Method::GET, "/api/cache/proxy/x", &[("if-none-match", inm)])
        };
        assert!(not_modified(&req("*"), &served));
        assert!(!not_modified(&req("\"a\""), &served));
        let missing = Served { status: 404, ..served };
        assert!(!not_modified(&req("*"), &missing));
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let served = |h: &[(&str, &str)]| Served {
            outcome: Outcome::Hit,
            status: 200,
            headers: h.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
            body: vec![],
            age_ms: 0,
            detail: String::new(),
        };
        let s = served(&[("etag", "\"a\""), ("last-modified", "Wed, 01 Jan 2020 00:00:00 GMT")]);
        assert!(if_range_holds("\"a\"", &s));
        assert!(!if_range_holds("W/\"a\"", &s));
        assert!(!if_range_holds("\"b\"", &s));
        assert!(if_range_holds("Wed, 01 Jan 2020 00:00:00 GMT", &s));
        assert!(!if_range_holds("Thu, 02 Jan 2020 00:00:00 GMT", &s));
        assert!(!if_range_holds("\"a\"", &served(&[("etag", "W/\"a\"")])));
    }

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
