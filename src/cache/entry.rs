//! The entry format. Entries are plain strings, so Spin's key-value store (`GET` only) can
//! read them on the pooled fast path ([`crate::platform::fast_path`]) as well as the scripts:
//!
//! ```text
//! c2\n{status}\n{stored_ms}\n{soft_ms}\n{cost_ms}\n{swr_until_ms}\n{sie_until_ms}\n
//! {n}\n{name}:{value}\n ... (n header lines) {body...}
//! ```
//!
//! `c2` is the format version: a reader that does not recognise it treats the value as no
//! entry (the lookup then refetches and overwrites it). Times are Unix milliseconds from
//! Redis `TIME`: `stored_ms` is when the response was generated (the store time minus its
//! age on arrival, so `Age` = now - stored), `soft_ms` when it stops being fresh (the key's
//! own PX is the hard expiry), `swr_until_ms` / `sie_until_ms` until when it may be served
//! stale while one request revalidates it / while the origin fails (RFC 5861; both equal
//! `soft_ms` when the origin said must-revalidate). `cost_ms` is how long the origin took
//! (for XFetch). Header lines are the end-to-end fields a client needs ([`STORED`]), names in
//! lower case; HTTP forbids line breaks in values and the writer drops any line that has one.

use crate::platform::outbound::OutboundResponse;

/// The response fields stored with an entry and replayed on hits; anything else the origin
/// sends (`Set-Cookie`, `Cache-Tag`, hop-by-hop fields, server internals) is not.
pub const STORED: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-language",
    "content-location",
    "content-disposition",
    "location",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
    "vary",
    "link",
    "strict-transport-security",
    "content-security-policy",
    "content-security-policy-report-only",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "permissions-policy",
    "cross-origin-opener-policy",
    "cross-origin-embedder-policy",
    "cross-origin-resource-policy",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "x-robots-tag",
];

/// A header list: lower-case names, values in order.
pub type Headers = Vec<(String, Vec<u8>)>;

/// The fields of an origin answer that a client may see (stored or passed through).
pub fn end_to_end(response: &OutboundResponse) -> Headers {
    response
        .headers
        .iter()
        .filter(|(name, value)| {
            STORED.iter().any(|s| name.eq_ignore_ascii_case(s))
                && !value.iter().any(|&b| b == b'\r' || b == b'\n')
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect()
}

/// The header lines as an entry holds them: the count, then `name:value` per line.
pub fn header_block(headers: &Headers) -> Vec<u8> {
    let mut out = format!("{}\n", headers.len()).into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// A cached entry, parsed from its value.
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub stored_ms: i64,
    pub soft_ms: i64,
    pub cost_ms: i64,
    pub swr_until_ms: i64,
    pub sie_until_ms: i64,
}

/// A decimal as the store script writes it: ASCII digits only, at most 18 of them.
fn decimal(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 18 {
        return None;
    }
    text.iter().try_fold(0i64, |n, &b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
}

impl Entry {
    /// `None` for anything but a well-formed format-2 value.
    pub fn parse(mut value: Vec<u8>) -> Option<Self> {
        if !value.starts_with(b"c2\n") {
            return None;
        }
        let mut pos = 3;
        let mut line = |value: &[u8]| {
            let len = value.get(pos..)?.iter().position(|&b| b == b'\n')?;
            let range = pos..pos + len;
            pos += len + 1;
            Some(range)
        };
        let mut numbers = [0i64; 7];
        for n in &mut numbers {
            *n = decimal(&value[line(&value)?])?;
        }
        let [status, stored_ms, soft_ms, cost_ms, swr_until_ms, sie_until_ms, count] = numbers;
        let mut headers = Vec::new();
        for _ in 0..count.min(256) {
            let text = &value[line(&value)?];
            let colon = text.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&text[..colon]).ok()?.to_owned();
            headers.push((name, text[colon + 1..].to_vec()));
        }
        Some(Self {
            status: u16::try_from(status).ok()?,
            headers,
            body: value.split_off(pos),
            stored_ms,
            soft_ms,
            cost_ms,
            swr_until_ms,
            sie_until_ms,
        })
    }

    /// XFetch: refresh early when now + cost * beta * -ln(u) reaches the soft expiry
    /// (`factor_micros` = 1e6 * beta * -ln(u), as lookup.lua computes it).
    pub fn refresh_early(&self, now_ms: i64, factor_micros: i64) -> bool {
        now_ms as f64 + factor_micros as f64 / 1_000_000.0 * self.cost_ms as f64
            >= self.soft_ms as f64
    }

    /// The first value of a stored header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
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
        let mut raw = value("c2\n404\n1700000000000\n1700000300000\n42\n1700000400000\n");
        raw.extend_from_slice(b"1700000500000\n2\ncontent-type:application/json\netag:\"x:1\"\n");
        raw.extend_from_slice(b"{\"a\":\n1}\xff\n");
        let e = Entry::parse(raw).unwrap();
        assert_eq!((e.status, e.header("content-type")), (404, Some("application/json")));
        assert_eq!(e.header("etag"), Some("\"x:1\""));
        assert_eq!((e.stored_ms, e.soft_ms, e.cost_ms), (1_700_000_000_000, 1_700_000_300_000, 42));
        assert_eq!((e.swr_until_ms, e.sie_until_ms), (1_700_000_400_000, 1_700_000_500_000));
        assert_eq!(e.body, b"{\"a\":\n1}\xff\n");
        let e = Entry::parse(value("c2\n200\n1\n2\n0\n2\n2\n0\n")).unwrap();
        assert_eq!((e.headers.len(), e.body.len()), (0, 0));
    }

    #[test]
    fn header_blocks_round_trip() {
        let headers = vec![
            ("location".to_owned(), b"/dir/".to_vec()),
            ("link".to_owned(), b"</a>; rel=preload".to_vec()),
        ];
        let mut raw = value("c2\n301\n1\n2\n0\n2\n2\n");
        raw.extend(header_block(&headers));
        raw.extend_from_slice(b"moved");
        let e = Entry::parse(raw).unwrap();
        assert_eq!((e.headers, e.body), (headers, b"moved".to_vec()));
    }

    #[test]
    fn anything_else_is_no_entry() {
        for bad in [
            "",
            "c2",
            "c1\n200\n1\n2\n0\ntext/plain\nbody",
            "c2\n200\n1\n2\n0\n2\n2\n",
            "c2\n200\n1\n2\n0\n2\n2\n1\nno-colon\n",
            "c2\n200\n1\n2\n0\n2\n2\n2\na:b\n",
            "c2\n-200\n1\n2\n0\n2\n2\n0\n",
            "c2\n70000\n1\n2\n0\n2\n2\n0\n",
            "c2\n200\n\n2\n0\n2\n2\n0\n",
            "c2\n200\n1 \n2\n0\n2\n2\n0\n",
            "c2\n200\n1234567890123456789\n2\n0\n2\n2\n0\n",
        ] {
            assert!(Entry::parse(value(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn early_refresh_follows_xfetch() {
        let e = Entry::parse(value("c2\n200\n0\n10000\n500\n10000\n10000\n0\n")).unwrap();
        // now + cost * factor >= soft: 9000 + 500 * 2 reaches 10000.
        assert!(e.refresh_early(9_000, 2_000_000));
        assert!(!e.refresh_early(9_000, 1_999_998));
        assert!(!e.refresh_early(9_999, 0));
    }

    #[test]
    fn only_end_to_end_fields_are_kept() {
        let r = OutboundResponse {
            status: 200,
            headers: vec![
                ("Content-Type".into(), b"text/html".to_vec()),
                ("Set-Cookie".into(), b"s=1".to_vec()),
                ("ETag".into(), b"\"v1\"".to_vec()),
                ("Cache-Tag".into(), b"a".to_vec()),
                ("Connection".into(), b"close".to_vec()),
                ("Link".into(), b"</a>".to_vec()),
                ("Link".into(), b"</b>".to_vec()),
            ],
            body: Vec::new(),
        };
        let kept = end_to_end(&r);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "etag", "link", "link"]);
    }
}
