//! What the origin's answer allows (RFC 9111, RFC 5861): store it or not, for how long,
//! how long it may be served stale, and its tags.

use std::time::UNIX_EPOCH;

use super::settings::CacheSettings;
use crate::platform::fields::split_list;
use crate::platform::outbound::OutboundResponse as OriginResponse;

/// Most tags kept per entry; more are ignored (and logged).
pub const MAX_TAGS_PER_ENTRY: usize = 16;

/// How an answer may be stored (times in ms; before jitter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// Fresh for this long from now.
    pub ttl_ms: u64,
    /// Its age on arrival (upstream `Age` plus the time the fetch took).
    pub age_ms: u64,
    /// After it turns stale: served stale while one request revalidates / while the origin
    /// fails, for this long (0 when the origin said must-revalidate and the like).
    pub swr_ms: u64,
    pub sie_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Store(Freshness),
    /// Serve, do not store; the reason is logged.
    Pass(&'static str),
    /// 403, 410, 451: the resource is gone or forbidden; drop any entry.
    Evict,
}

/// The directives of a `Cache-Control` value that matter to a shared cache.
#[derive(Debug, Default, PartialEq)]
pub struct CacheControl {
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

/// Parses `Cache-Control` (RFC 9111 5.2): directives split on commas outside quoted strings
/// (`community="UCI, max-age=999"` holds no max-age), names case-insensitive, and a repeated
/// directive read as its first occurrence (4.2.1). An unparsable delta-seconds is 0: stale.
pub fn parse_cache_control(value: &str) -> CacheControl {
    let mut cc = CacheControl::default();
    for directive in split_list(value) {
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        let arg = delta_seconds(
            arg.trim().strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(arg.trim()),
        );
        let first = |slot: &mut Option<u64>| {
            if slot.is_none() {
                *slot = Some(arg.unwrap_or(0));
            }
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" => cc.no_store = true,
            // The qualified forms (`private="set-cookie"`) are read as the plain ones: safer.
            "private" => cc.private = true,
            "no-cache" => cc.no_cache = true,
            "public" => cc.public = true,
            "must-revalidate" => cc.must_revalidate = true,
            "proxy-revalidate" => cc.proxy_revalidate = true,
            "must-understand" => cc.must_understand = true,
            "max-age" => first(&mut cc.max_age),
            "s-maxage" => first(&mut cc.s_maxage),
            "stale-while-revalidate" => first(&mut cc.stale_while_revalidate),
            "stale-if-error" => first(&mut cc.stale_if_error),
            _ => {}
        }
    }
    cc
}

/// delta-seconds (RFC 9111 1.2.2): digits only; values past 2^31 read as 2^31.
pub fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(u64::MAX).min(1 << 31))
}

/// The `Age` of an answer in seconds: the first member of its first line (RFC 9111 5.1);
/// anything but delta-seconds there is ignored (0).
pub fn age_seconds(response: &OriginResponse) -> u64 {
    response
        .header_values("age")
        .next()
        .and_then(|line| split_list(line).first().copied())
        .and_then(delta_seconds)
        .unwrap_or(0)
}

/// An HTTP date as Unix ms; `None` when it is not one.
pub fn http_date_ms(text: &str) -> Option<i64> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// Statuses stored without explicit freshness (RFC 9110 15.1 "heuristically cacheable", less
/// those this cache does not serve: 206, 405, 410, 414, 501).
fn heuristic(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404)
}

/// Decides for an origin answer that arrived `cost_ms` after it was asked for, `now_ms`
/// being the local wall clock (for `Expires` without `Date`).
///
/// - 403, 410, 451 evict; 5xx never reach here (the caller remembers them as failures).
/// - `Set-Cookie`, `no-store`, `private`, `no-cache`, a `Vary` on anything but the
///   configured request headers, and bodies over `cache_max_entry_bytes` pass.
/// - Freshness: `s-maxage`, else `max-age`, else `Expires` - `Date`, else the configured
///   TTL (the negative TTL for 404), always capped by the configured TTL; less the age on
///   arrival (`Age` + fetch time). A status outside the heuristic set is stored only with
///   explicit freshness.
/// - Stale windows: the origin's `stale-while-revalidate` / `stale-if-error`, else
///   `cache_stale_seconds`, never above it; none with `must-revalidate`,
///   `proxy-revalidate` or `s-maxage` (which implies proxy-revalidate for shared caches).
pub fn decide(
    response: &OriginResponse,
    settings: &CacheSettings,
    cost_ms: u64,
    now_ms: i64,
) -> Decision {
    let status = response.status;
    if matches!(status, 403 | 410 | 451) {
        return Decision::Evict;
    }
    if response.header_values("set-cookie").next().is_some() {
        return Decision::Pass("the answer sets a cookie");
    }
    let cc = parse_cache_control(&response.header("cache-control").unwrap_or_default());
    if cc.no_store || cc.private || cc.no_cache {
        return Decision::Pass("origin said no-store, private or no-cache");
    }
    if let Some(vary) = response.header("vary") {
        let ok = vary
            .split(',')
            .map(|f| f.trim().to_ascii_lowercase())
            .all(|f| f.is_empty() || settings.vary.contains(&f));
        if !ok {
            return Decision::Pass("origin varies on a header not in cache_vary_headers");
        }
    }
    if response.body.len() > settings.max_entry_bytes {
        return Decision::Pass("body is larger than cache_max_entry_bytes");
    }
    let cap = if status == 404 { settings.negative_ttl_ms } else { settings.ttl_ms };
    let expires = response.header("expires").map(|e| {
        let date = response.header("date").and_then(|d| http_date_ms(&d)).unwrap_or(now_ms);
        // An invalid Expires (`0`, `-1`) means already expired (RFC 9111, 5.3).
        http_date_ms(&e).map_or(0, |e| (e - date).max(0) as u64)
    });
    let explicit = cc.s_maxage.or(cc.max_age).map(|s| s.saturating_mul(1000)).or(expires);
    let lifetime = match explicit {
        Some(ms) => ms.min(cap),
        None if heuristic(status) => cap,
        None => return Decision::Pass("status is not cacheable without explicit freshness"),
    };
    let age_ms = age_seconds(response).saturating_mul(1000).saturating_add(cost_ms);
    let ttl_ms = lifetime.saturating_sub(age_ms);
    if ttl_ms == 0 {
        return Decision::Pass("the answer is not fresh (max-age=0, expired or too old)");
    }
    let revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
    let window = |directive: Option<u64>| match (revalidate, directive) {
        (true, _) => 0,
        (false, Some(s)) => s.saturating_mul(1000).min(settings.stale_ms),
        (false, None) => settings.stale_ms,
    };
    Decision::Store(Freshness {
        ttl_ms,
        age_ms,
        swr_ms: window(cc.stale_while_revalidate),
        sie_ms: window(cc.stale_if_error),
    })
}

/// Takes up to `jitter` of the TTL off at random, so entries written together do not expire
/// together. Only ever shortens, so `max-age` stays an upper bound. Never below 1 ms.
pub fn jittered(ttl_ms: u64, jitter: f64, unit_random: f64) -> u64 {
    let cut = (ttl_ms as f64 * jitter * unit_random) as u64;
    ttl_ms.saturating_sub(cut).max(1)
}

/// The entry's tags: `Cache-Tag` (comma separated) and `Surrogate-Key` (space separated).
pub fn tags(response: &OriginResponse) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let cache_tag = response.header("cache-tag").unwrap_or_default();
    let surrogate = response.header("surrogate-key").unwrap_or_default();
    let all = cache_tag.split(',').chain(surrogate.split([' ', ',']));
    for tag in all.map(str::trim).filter(|t| !t.is_empty() && t.len() <= 256) {
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > MAX_TAGS_PER_ENTRY {
        crate::platform::log::warn(
            "tags_truncated",
            format_args!("origin sent {} tags; keeping the first {MAX_TAGS_PER_ENTRY}", tags.len()),
        );
        tags.truncate(MAX_TAGS_PER_ENTRY);
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::settings::Secret;

    fn settings() -> CacheSettings {
        CacheSettings {
            origin_url: "http://o".into(),
            ttl_ms: 300_000,
            jitter: 0.1,
            stale_ms: 100_000,
            negative_ttl_ms: 30_000,
            error_ttl_ms: 5000,
            pass_ttl_ms: 30_000,
            max_entry_bytes: 10,
            origin_timeout_ms: 1000,
            early_refresh_beta: 0.0,
            buckets: 1,
            purge_channel: "c".into(),
            purge_token: Secret::new(""),
            path_prefixes: vec!["/".into()],
            query_allow: vec![],
            query_ignore: vec![],
            vary: vec!["accept-language".into()],
            hit_sampling: 1,
            standard: false,
            default_ttl_ms: 300_000,
            targeted_field: String::new(),
            max_variants: 8,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> OriginResponse {
        OriginResponse {
            status,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn store(ttl_ms: u64, age_ms: u64, swr_ms: u64, sie_ms: u64) -> Decision {
        Decision::Store(Freshness { ttl_ms, age_ms, swr_ms, sie_ms })
    }

    fn decide(r: &OriginResponse, s: &CacheSettings) -> Decision {
        super::decide(r, s, 0, 1_700_000_000_000)
    }

    #[test]
    fn freshness() {
        let s = settings();
        assert_eq!(decide(&response(200, &[], "x"), &s), store(300_000, 0, 100_000, 100_000));
        let cc = |v: &str| response(200, &[("Cache-Control", v)], "x");
        assert_eq!(decide(&cc("public, max-age=60"), &s), store(60_000, 0, 100_000, 100_000));
        // s-maxage wins for a shared cache and implies proxy-revalidate: no stale windows.
        assert_eq!(decide(&cc("max-age=60, s-maxage=5"), &s), store(5_000, 0, 0, 0));
        assert_eq!(decide(&cc("max-age=9999"), &s), store(300_000, 0, 100_000, 100_000));
        assert_eq!(decide(&cc("max-age=60, must-revalidate"), &s), store(60_000, 0, 0, 0));
        assert_eq!(decide(&cc("max-age=60, proxy-revalidate"), &s), store(60_000, 0, 0, 0));
        // The origin's windows, the configured value as the ceiling.
        assert_eq!(
            decide(&cc("max-age=60, stale-while-revalidate=30, stale-if-error=9999"), &s),
            store(60_000, 0, 30_000, 100_000)
        );
        // Age on arrival: upstream Age plus the fetch's own time.
        let aged = response(200, &[("cache-control", "max-age=60"), ("age", "20")], "x");
        assert_eq!(super::decide(&aged, &s, 500, 0), store(39_500, 20_500, 100_000, 100_000));
        let old = response(200, &[("cache-control", "max-age=60"), ("age", "61")], "x");
        assert!(matches!(decide(&old, &s), Decision::Pass(_)));
        assert_eq!(decide(&response(404, &[], "x"), &s), store(30_000, 0, 100_000, 100_000));
    }

    #[test]
    fn expires_against_date() {
        let s = settings();
        let r = response(
            200,
            &[
                ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
            ],
            "x",
        );
        assert_eq!(decide(&r, &s), store(60_000, 0, 100_000, 100_000));
        let r = response(200, &[("Expires", "0")], "x");
        assert!(matches!(decide(&r, &s), Decision::Pass(_)));
        // max-age beats Expires.
        let r = response(200, &[("Expires", "0"), ("cache-control", "max-age=5")], "x");
        assert_eq!(decide(&r, &s), store(5_000, 0, 100_000, 100_000));
        assert_eq!(http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777_000));
        assert_eq!(http_date_ms("yesterday"), None);
    }

    #[test]
    fn passes_and_evictions() {
        let s = settings();
        for r in [
            response(200, &[("cache-control", "no-store")], "x"),
            response(200, &[("cache-control", "private, max-age=60")], "x"),
            response(200, &[("cache-control", "no-cache")], "x"),
            response(200, &[("cache-control", "max-age=0")], "x"),
            response(200, &[("set-cookie", "s=1")], "x"),
            response(200, &[("vary", "*")], "x"),
            response(200, &[("vary", "accept-language, cookie")], "x"),
            response(200, &[], "more than ten bytes"),
            response(201, &[], "x"),
            response(302, &[], "x"),
        ] {
            assert!(matches!(decide(&r, &s), Decision::Pass(_)), "{:?}", r.headers);
        }
        assert!(matches!(
            decide(&response(200, &[("vary", "Accept-Language")], "x"), &s),
            Decision::Store(_)
        ));
        assert!(matches!(
            decide(&response(302, &[("cache-control", "max-age=10")], "x"), &s),
            Decision::Store(_)
        ));
        for status in [403, 410, 451] {
            assert_eq!(decide(&response(status, &[], "x"), &s), Decision::Evict);
        }
    }

    #[test]
    fn directives_split_outside_quotes_and_the_first_duplicate_wins() {
        let cc = parse_cache_control(r#"community="UCI, max-age=999", max-age=5"#);
        assert_eq!(cc.max_age, Some(5));
        let cc = parse_cache_control("max-age=5, MAX-AGE=999, s-maxage=1, s-maxage=100");
        assert_eq!((cc.max_age, cc.s_maxage), (Some(5), Some(1)));
        assert_eq!(parse_cache_control(r#"max-age="7""#).max_age, Some(7));
        assert_eq!(parse_cache_control("max-age=-1").max_age, Some(0));
        assert_eq!(parse_cache_control("max-age='7'").max_age, Some(0));
        assert_eq!(parse_cache_control("max-age=003600").max_age, Some(3600));
        assert_eq!(parse_cache_control("max-age=99999999999").max_age, Some(1 << 31));
    }

    #[test]
    fn age_is_the_first_member_of_the_first_line() {
        let r = |lines: &[&str]| {
            let h: Vec<(&str, &str)> = lines.iter().map(|v| ("Age", *v)).collect();
            age_seconds(&response(200, &h, ""))
        };
        assert_eq!(r(&["10, 0"]), 10);
        assert_eq!(r(&["0", "10"]), 0);
        assert_eq!(r(&["-1"]), 0);
        assert_eq!(r(&["1.5"]), 0);
        assert_eq!(r(&["2147483649"]), 1 << 31);
    }

    #[test]
    fn jitter_only_shortens() {
        assert_eq!(jittered(1000, 0.1, 0.0), 1000);
        assert_eq!(jittered(1000, 0.1, 0.999), 901);
        assert_eq!(jittered(1000, 0.0, 0.5), 1000);
    }

    #[test]
    fn tags_from_both_headers() {
        let r = response(200, &[("Cache-Tag", "a, b"), ("Surrogate-Key", "b c")], "");
        assert_eq!(tags(&r), ["a", "b", "c"]);
    }
}
