//! Standards mode (`cache_mode = "standard"`): the proxy as an RFC 9111 shared cache.
//!
//! What differs from the seed's cache-aside rules ([`super::policy::decide`]):
//! - every end-to-end field is forwarded and stored (a deny-list: hop-by-hop fields, those
//!   `Connection` names, `Proxy-Authentication-Info`; `Set-Cookie` answers still pass);
//! - freshness is explicit (`s-maxage`, `max-age`, `Expires` − `Date`), else a heuristic only
//!   for heuristically cacheable statuses (10% of the time since `Last-Modified`, else
//!   `cache_default_ttl_seconds`, 0 by default), capped by `cache_ttl_seconds`; the age on
//!   arrival is RFC 9111 4.2.3's corrected initial age;
//! - stale entries with validators are kept for revalidation; stale windows only as the
//!   origin grants them (capped by `cache_stale_seconds`);
//! - an answer to a request with `Authorization` is stored only with `public`,
//!   `must-revalidate` or `s-maxage` (3.5); `no-cache` answers are stored and always
//!   revalidated; any final status with explicit freshness may be stored;
//! - the targeted field (`cache_targeted_field`, `CDN-Cache-Control` by default, RFC 9213)
//!   replaces `Cache-Control` and `Expires` when it is a valid dictionary;
//! - `Vary` on any field: the entry is stored per variant (see lookup.lua / store.lua).

use super::policy::{age_seconds, delta_seconds, http_date_ms, parse_cache_control, CacheControl};
use super::policy::{Decision, Freshness};
use super::settings::CacheSettings;
use crate::platform::fields::{self, split_list};
use crate::platform::outbound::OutboundResponse;

/// Request fields a fill never forwards: the client's own conditionals and ranges (the cache
/// answers them from the full answer it fetches and stores).
const NOT_ON_FILLS: [&str; 6] =
    ["if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"];

/// Response fields never stored or replayed, besides the hop-by-hop ones: `Age` (computed),
/// `Set-Cookie` (such answers pass), `Proxy-Authentication-Info` (for the next hop).
const NOT_STORED: [&str; 3] = ["age", "set-cookie", "proxy-authentication-info"];

/// What a request brings that standards mode needs.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Each distinct request field (lower case) with its lines joined by `, `, for `Vary`.
    pub vary_pairs: Vec<(String, String)>,
    pub has_authorization: bool,
}

impl RequestContext {
    pub fn of(lines: &[(String, Vec<u8>)]) -> Self {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in lines {
            let name = name.to_ascii_lowercase();
            if name.starts_with("spin-") {
                continue;
            }
            let value = String::from_utf8_lossy(value).trim().to_owned();
            match pairs.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push_str(", ");
                    v.push_str(&value);
                }
                None => pairs.push((name, value)),
            }
        }
        let has_authorization = pairs.iter().any(|(n, _)| n == "authorization");
        Self { vary_pairs: pairs, has_authorization }
    }
}

/// The request fields a fill forwards: every end-to-end field but conditionals and ranges.
pub fn fill_headers(lines: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut kept = super::fetch::forwardable(lines);
    kept.retain(|(n, _)| !NOT_ON_FILLS.iter().any(|x| n.eq_ignore_ascii_case(x)));
    kept
}

/// The response fields stored and replayed: end-to-end, less [`NOT_STORED`], names lower
/// case, lines with line breaks dropped.
pub fn stored_fields(response: &OutboundResponse) -> Vec<(String, Vec<u8>)> {
    fields::end_to_end(&response.headers)
        .into_iter()
        .filter(|(n, v)| {
            !NOT_STORED.iter().any(|x| n.eq_ignore_ascii_case(x))
                && !v.iter().any(|&b| b == b'\r' || b == b'\n')
        })
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect()
}

/// Statuses with heuristic freshness (RFC 9110 15.1), less 206 (ranges pass).
fn heuristically_cacheable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Final statuses this cache understands (RFC 9111 3: an unknown status is not stored).
fn understood(status: u16) -> bool {
    matches!(status, 200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 428 | 429 | 431 | 451 | 500..=505 | 511)
}

/// A structured-field key (RFC 8941 3.1.2).
fn sf_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'*'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'))
}

/// A bare item this parser accepts: integer, decimal, string, token, byte sequence, boolean.
fn sf_bare_item(item: &str) -> bool {
    let b = item.as_bytes();
    match b.first() {
        Some(b'-' | b'0'..=b'9') => {
            let digits = item.strip_prefix('-').unwrap_or(item);
            !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        }
        Some(b'"') => item.len() >= 2 && item.ends_with('"'),
        Some(b':') => item.len() >= 2 && item.ends_with(':'),
        Some(b'?') => item == "?0" || item == "?1",
        Some(c) if c.is_ascii_alphabetic() || *c == b'*' => {
            item.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c))
        }
        _ => false,
    }
}

/// The targeted field as a structured dictionary (RFC 9213 2.1): `None` when it is not one
/// or a directive has the wrong type, so the field is ignored as a whole.
pub fn parse_targeted(value: &str) -> Option<CacheControl> {
    for member in split_list(value) {
        let main = member.split(';').next().unwrap_or("").trim();
        let (key, item) = match main.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (main, None),
        };
        if !sf_key(key) {
            return None;
        }
        if let Some(item) = item {
            if !sf_bare_item(item) {
                return None;
            }
            let integer =
                matches!(key, "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error");
            if integer && delta_seconds(item.strip_prefix('-').unwrap_or(item)).is_none() {
                return None;
            }
        }
    }
    Some(parse_cache_control(value))
}

/// The lower-case, sorted, distinct field names an answer varies on; `Err` for `Vary: *`.
pub fn vary_names(response: &OutboundResponse) -> Result<Vec<String>, ()> {
    let mut names: Vec<String> = Vec::new();
    for line in response.header_values("vary") {
        for name in split_list(line) {
            if name == "*" {
                return Err(());
            }
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The directives that govern an answer with these fields: the targeted field when it is a
/// valid dictionary (`true`), else `Cache-Control`.
pub fn directives(headers: &[(String, Vec<u8>)], settings: &CacheSettings) -> (CacheControl, bool) {
    let field = |name: &str| {
        let mut lines = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .peekable();
        lines.peek().is_some().then(|| lines.collect::<Vec<_>>().join(", "))
    };
    let targeted = (!settings.targeted_field.is_empty())
        .then(|| field(&settings.targeted_field))
        .flatten()
        .and_then(|v| parse_targeted(&v));
    match targeted {
        Some(cc) => (cc, true),
        None => (parse_cache_control(&field("cache-control").unwrap_or_default()), false),
    }
}

/// Whether a stale entry with these fields may be served because the origin cannot be
/// reached (RFC 9111 4.2.4, "disconnected"): not when the origin asked for revalidation
/// (`must-revalidate`, `proxy-revalidate`, `no-cache`, or `s-maxage`, which implies
/// `proxy-revalidate`), and for at most `cache_stale_seconds` past its freshness.
pub fn servable_disconnected(headers: &[(String, Vec<u8>)], settings: &CacheSettings) -> bool {
    let (cc, _) = directives(headers, settings);
    settings.stale_ms > 0
        && !(cc.no_cache || cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some())
}

/// Decides for an answer in standards mode; `cost_ms` is how long the fetch took, `now_ms`
/// the wall clock when it arrived.
pub fn decide(
    response: &OutboundResponse,
    settings: &CacheSettings,
    request: &RequestContext,
    cost_ms: u64,
    now_ms: i64,
) -> Decision {
    let status = response.status;
    // 206 and 304 need a cache that combines them (not this one); other statuses may be
    // stored with explicit freshness even when unknown (RFC 9111 3), unless `must-understand`.
    if matches!(status, 206 | 304) || !(200..=599).contains(&status) {
        return Decision::Pass("partial, 304 or non-final answer");
    }
    if response.header_values("set-cookie").next().is_some() {
        return Decision::Pass("the answer sets a cookie");
    }
    let (cc, from_targeted) = directives(&response.headers, settings);
    if cc.must_understand && !understood(status) {
        return Decision::Pass("must-understand with a status this cache does not understand");
    }
    if (cc.no_store && !cc.must_understand) || cc.private {
        return Decision::Pass("origin said no-store or private");
    }
    if request.has_authorization && !(cc.public || cc.must_revalidate || cc.s_maxage.is_some()) {
        return Decision::Pass("the request carried Authorization (RFC 9111 3.5)");
    }
    if vary_names(response).is_err() {
        return Decision::Pass("Vary: *");
    }
    if response.body.len() > settings.max_entry_bytes {
        return Decision::Pass("body is larger than cache_max_entry_bytes");
    }
    let date = response.header("date").and_then(|d| http_date_ms(&d));
    let expires = if from_targeted {
        None
    } else {
        response.header("expires").map(|e| {
            // An invalid Expires (`0`, two lines) means already expired (RFC 9111 5.3).
            http_date_ms(&e).map_or(0, |e| (e - date.unwrap_or(now_ms)).max(0) as u64)
        })
    };
    let explicit = cc.s_maxage.or(cc.max_age).map(|s| s.saturating_mul(1000)).or(expires);
    let validators =
        response.header("etag").is_some() || response.header("last-modified").is_some();
    let lifetime = match explicit {
        Some(ms) => ms,
        None if heuristically_cacheable(status) || cc.public => {
            let modified = response.header("last-modified").and_then(|m| http_date_ms(&m));
            match modified {
                Some(m) => (date.unwrap_or(now_ms) - m).max(0) as u64 / 10,
                None => settings.default_ttl_ms,
            }
        }
        None => return Decision::Pass("status is not cacheable without explicit freshness"),
    };
    let lifetime = if cc.no_cache { 0 } else { lifetime.min(settings.ttl_ms) };
    // Corrected initial age (RFC 9111 4.2.3): the larger of the apparent age (by Date) and
    // the origin's Age plus the time the fetch took.
    let apparent = date.map_or(0, |d| (now_ms - d).max(0) as u64);
    let age_ms = apparent.max(age_seconds(response).saturating_mul(1000).saturating_add(cost_ms));
    let ttl_ms = lifetime.saturating_sub(age_ms);
    if ttl_ms == 0 && !validators {
        return Decision::Pass("the answer is not fresh and has no validators");
    }
    let revalidate =
        cc.no_cache || cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
    let window = |directive: Option<u64>| match (revalidate, directive) {
        (false, Some(s)) => s.saturating_mul(1000).min(settings.stale_ms),
        _ => 0,
    };
    Decision::Store(Freshness {
        ttl_ms,
        age_ms,
        swr_ms: window(cc.stale_while_revalidate),
        sie_ms: window(cc.stale_if_error),
    })
}

/// How long past its freshness an entry stays in Redis: long enough for its stale windows,
/// and, with validators, for revalidation (up to `cache_ttl_seconds` more).
pub fn keep_ms(
    freshness: &Freshness,
    response: &OutboundResponse,
    settings: &CacheSettings,
) -> u64 {
    let windows = freshness.swr_ms.max(freshness.sie_ms);
    let validators =
        response.header("etag").is_some() || response.header("last-modified").is_some();
    let kept = if validators { windows.max(settings.ttl_ms) } else { windows };
    // Kept for serving while the origin is unreachable, when the origin allows that.
    if servable_disconnected(&response.headers, settings) {
        kept.max(settings.stale_ms)
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> OutboundResponse {
        OutboundResponse {
            status,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
            body: b"x".to_vec(),
        }
    }

    fn settings() -> CacheSettings {
        use crate::platform::settings::Variables;
        let vars = Variables::from_fn(|n| {
            Ok(match n {
                "origin_url" => "http://o",
                "cache_ttl_seconds" => "3600",
                "cache_ttl_jitter" | "cache_early_refresh_beta" => "0",
                "cache_stale_seconds" => "60",
                "cache_negative_ttl_seconds" | "cache_error_ttl_seconds" => "0",
                "cache_default_ttl_seconds" => "",
                "cache_pass_ttl_seconds" => "0",
                "cache_max_entry_bytes" => "1000",
                "cache_origin_timeout_ms" => "1000",
                "cache_key_buckets" | "cache_hit_sampling" => "1",
                "cache_purge_channel" => "c",
                "cache_path_prefixes" => "/",
                "cache_mode" => "standard",
                "cache_targeted_field" => "cdn-cache-control",
                "cache_max_variants" => "8",
                _ => "",
            }
            .to_owned())
        });
        CacheSettings::from_variables(&vars).unwrap()
    }

    fn decide(r: &OutboundResponse, auth: bool) -> Decision {
        let ctx = RequestContext { vary_pairs: vec![], has_authorization: auth };
        super::decide(r, &settings(), &ctx, 0, 1_700_000_000_000)
    }

    fn ttl(d: Decision) -> Option<u64> {
        match d {
            Decision::Store(f) => Some(f.ttl_ms),
            _ => None,
        }
    }

    #[test]
    fn no_heuristic_without_validators_or_a_default() {
        assert_eq!(ttl(decide(&response(200, &[]), false)), None);
        // With a validator: stored stale, for revalidation.
        assert_eq!(ttl(decide(&response(200, &[("etag", "\"a\"")]), false)), Some(0));
        assert_eq!(ttl(decide(&response(201, &[("etag", "\"a\"")]), false)), None);
        assert_eq!(
            ttl(decide(&response(503, &[("cache-control", "max-age=5")]), false)),
            Some(5000)
        );
        // An unknown status with explicit freshness may be stored (RFC 9111 3), unless
        // must-understand asks for a cache that knows it.
        assert_eq!(
            ttl(decide(&response(599, &[("cache-control", "max-age=5")]), false)),
            Some(5000)
        );
        let cc = [("cache-control", "max-age=5, no-store, must-understand")];
        assert_eq!(ttl(decide(&response(599, &cc), false)), None);
        assert_eq!(ttl(decide(&response(200, &cc), false)), Some(5000));
        assert_eq!(ttl(decide(&response(599, &[]), false)), None);
        assert_eq!(ttl(decide(&response(206, &[("cache-control", "max-age=5")]), false)), None);
        assert_eq!(
            ttl(decide(&response(200, &[("cache-control", "max-age=99999")]), false)),
            Some(3_600_000)
        );
    }

    #[test]
    fn authorization_needs_public_must_revalidate_or_s_maxage() {
        assert_eq!(ttl(decide(&response(200, &[("cache-control", "max-age=5")]), true)), None);
        assert_eq!(
            ttl(decide(&response(200, &[("cache-control", "public, max-age=5")]), true)),
            Some(5000)
        );
    }

    #[test]
    fn the_targeted_field_wins_when_valid() {
        let r =
            response(200, &[("cdn-cache-control", "max-age=10"), ("cache-control", "no-store")]);
        assert_eq!(ttl(decide(&r, false)), Some(10_000));
        for bad in ["max-age=10, &&&&&", "max-age=\"10\""] {
            let r = response(200, &[("cdn-cache-control", bad), ("cache-control", "no-store")]);
            assert_eq!(ttl(decide(&r, false)), None, "{bad}");
        }
    }

    #[test]
    fn stale_when_disconnected_unless_the_origin_asked_for_revalidation() {
        let h = |v: &str| vec![("Cache-Control".to_owned(), v.as_bytes().to_vec())];
        assert!(servable_disconnected(&h("max-age=2"), &settings()));
        for strict in ["max-age=2, must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=2"] {
            assert!(!servable_disconnected(&h(strict), &settings()), "{strict}");
        }
        // The targeted field governs when valid.
        let mut both = h("max-age=2");
        both.push(("CDN-Cache-Control".to_owned(), b"max-age=2, must-revalidate".to_vec()));
        assert!(!servable_disconnected(&both, &settings()));
    }

    #[test]
    fn vary_star_anywhere_passes() {
        assert!(vary_names(&response(200, &[("vary", ", *")])).is_err());
        assert!(vary_names(&response(200, &[("vary", "foo"), ("vary", "*")])).is_err());
        assert_eq!(
            vary_names(&response(200, &[("vary", "B, a"), ("vary", "b")])).unwrap(),
            ["a", "b"]
        );
    }

    #[test]
    fn only_end_to_end_fields_are_stored() {
        let r = response(
            200,
            &[
                ("X-Any", "1"),
                ("Connection", "x-hop"),
                ("x-hop", "2"),
                ("Age", "3"),
                ("Keep-Alive", "4"),
                ("Date", "d"),
            ],
        );
        let names: Vec<String> = stored_fields(&r).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x-any", "date"]);
    }
}
