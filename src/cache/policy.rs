//! What the origin's answer allows: store it or not, and for how long.

use super::settings::CacheSettings;
use crate::platform::outbound::OutboundResponse as OriginResponse;

/// Most tags kept per entry; more are ignored (and logged).
pub const MAX_TAGS_PER_ENTRY: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store with this soft TTL (before jitter).
    Store { ttl_ms: u64 },
    /// Serve, but do not store; the reason is logged.
    Bypass(&'static str),
}

/// The directives of a `Cache-Control` value that matter to a shared cache.
#[derive(Debug, Default, PartialEq)]
pub struct CacheControl {
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

pub fn parse_cache_control(value: &str) -> CacheControl {
    let mut cc = CacheControl::default();
    for directive in value.split(',') {
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        let arg = arg.trim().trim_matches('"').parse::<u64>().ok();
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" => cc.no_store = true,
            "private" => cc.private = true,
            "no-cache" => cc.no_cache = true,
            // An unparsable max-age means "stale at once" (RFC 9111, 4.2.1).
            "max-age" => cc.max_age = Some(arg.unwrap_or(0)),
            "s-maxage" => cc.s_maxage = Some(arg.unwrap_or(0)),
            _ => {}
        }
    }
    cc
}

/// 200 is cached for the default TTL, 404 for the negative TTL; `max-age` (or `s-maxage`,
/// which wins for shared caches) can only shorten either. `no-store`, `private` and
/// `no-cache` are honoured by not storing; so are every other status and oversized bodies.
pub fn decide(response: &OriginResponse, settings: &CacheSettings) -> Decision {
    let base_ttl = match response.status {
        200 => settings.ttl_ms,
        404 if settings.negative_ttl_ms > 0 => settings.negative_ttl_ms,
        _ => return Decision::Bypass("status is not cacheable"),
    };
    let cc = parse_cache_control(&response.header("cache-control").unwrap_or_default());
    if cc.no_store || cc.private || cc.no_cache {
        return Decision::Bypass("origin said no-store, private or no-cache");
    }
    if response.header("vary").is_some_and(|v| v.split(',').any(|f| f.trim() == "*")) {
        return Decision::Bypass("origin said Vary: *");
    }
    if response.body.len() > settings.max_entry_bytes {
        return Decision::Bypass("body is larger than cache_max_entry_bytes");
    }
    let ttl_ms = match cc.s_maxage.or(cc.max_age) {
        Some(seconds) => base_ttl.min(seconds.saturating_mul(1000)),
        None => base_ttl,
    };
    if ttl_ms == 0 {
        return Decision::Bypass("origin said max-age=0");
    }
    Decision::Store { ttl_ms }
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
        eprintln!("cache: origin sent {} tags; keeping the first {MAX_TAGS_PER_ENTRY}", tags.len());
        tags.truncate(MAX_TAGS_PER_ENTRY);
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CacheSettings {
        CacheSettings {
            origin_url: "http://o".into(),
            ttl_ms: 300_000,
            jitter: 0.1,
            stale_ms: 0,
            negative_ttl_ms: 30_000,
            max_entry_bytes: 10,
            origin_timeout_ms: 1000,
            lock_wait_ms: 0,
            early_refresh_beta: 0.0,
            buckets: 1,
            purge_channel: "c".into(),
            purge_token: Default::default(),
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> OriginResponse {
        OriginResponse {
            status,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn decisions() {
        let s = settings();
        assert_eq!(decide(&response(200, &[], "x"), &s), Decision::Store { ttl_ms: 300_000 });
        assert_eq!(
            decide(&response(200, &[("Cache-Control", "public, max-age=60")], "x"), &s),
            Decision::Store { ttl_ms: 60_000 }
        );
        assert_eq!(
            decide(&response(200, &[("cache-control", "max-age=60, s-maxage=5")], "x"), &s),
            Decision::Store { ttl_ms: 5_000 }
        );
        assert_eq!(
            decide(&response(200, &[("cache-control", "max-age=9999")], "x"), &s),
            Decision::Store { ttl_ms: 300_000 }
        );
        assert_eq!(decide(&response(404, &[], "x"), &s), Decision::Store { ttl_ms: 30_000 });
        for r in [
            response(200, &[("cache-control", "no-store")], "x"),
            response(200, &[("cache-control", "private, max-age=60")], "x"),
            response(200, &[("cache-control", "max-age=0")], "x"),
            response(200, &[], "more than ten bytes"),
            response(500, &[], "x"),
            response(201, &[], "x"),
        ] {
            assert!(matches!(decide(&r, &s), Decision::Bypass(_)), "{:?}", r.headers);
        }
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
