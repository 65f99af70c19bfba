//! Microsoft Entra ID for outbound Redis: a managed identity's access token as the password,
//! the identity's object id as the user.
//!
//! The token comes from the Azure Instance Metadata Service (IMDS) on the node,
//! `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://redis.azure.com`
//! with `Metadata: true` (plus `client_id=` for a user-assigned identity such as an AKS node
//! pool's kubelet identity). Workload identity is not usable from a component: its
//! credential is a projected token file that rotates, and a Spin component reads no host files
//! (only the manifest's `files`, copied when the app starts) and no host environment.
//!
//! Spin makes an instance per request, so the token is kept where instances of one Spin
//! process share memory: the in-memory key-value store `breaker` (`type = "spin"`, no
//! `path`), never Redis and never a log line. It is used until a margin before it expires
//! (5 minutes, or half its lifetime if that is shorter); a connection that Redis refuses with
//! a cached token drops the token and tries once more with a fresh one, so a token revoked or
//! expired early costs one extra round trip, not a failed request.
//!
//! Only outbound Redis can do this: Spin 3.6.3 reads a key-value store's URL once, so the
//! pooled fast path stays on the access key (docs/fast-path.md).

use serde::Deserialize;
use spin_sdk::wit::wasi::keyvalue::store;

use super::clock::unix_now_ms;
use super::outbound::{self, OutboundError, OutboundRequest, Timeouts};
use super::redis::RedisError;
use super::settings::{ConfigError, Secret, Variables};
use super::url::HttpUrl;

/// The Spin variables.
pub mod vars {
    /// `key` (the access key, the default) or `entra`.
    pub const AUTH: &str = "redis_auth";
    pub const TOKEN_URL: &str = "redis_entra_token_url";
    pub const TOKEN_ORIGIN: &str = "redis_entra_token_origin";
    pub const CLIENT_ID: &str = "redis_entra_client_id";
    pub const OBJECT_ID: &str = "redis_entra_object_id";
}

/// Azure Cache for Redis and Azure Managed Redis accept tokens for this resource.
pub const RESOURCE: &str = "https://redis.azure.com";
/// Refresh this long before expiry at most (half the lifetime for shorter-lived tokens).
const REFRESH_MARGIN_MS: i64 = 5 * 60 * 1000;
/// IMDS answers from the node: a slow answer is a sick node, not worth waiting on.
const TIMEOUTS: Timeouts = Timeouts {
    connect_ms: 1_000,
    first_byte_ms: 3_000,
    between_bytes_ms: 3_000,
    deadline_ms: 4_000,
};
const MAX_ANSWER: usize = 64 * 1024;
/// Left as they are in a query value: RFC 3986 "unreserved".
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The cache's key in the in-memory store.
const CACHE_KEY: &str = "entra:token";

/// Where the token comes from and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraSettings {
    /// The token endpoint with its query (`api-version`, `resource`, `client_id`).
    pub token_url: String,
    /// The identity's object id; empty: the token's `oid` claim.
    pub object_id: String,
}

impl EntraSettings {
    /// `None` unless `redis_auth` is `entra`.
    pub fn from_variables(variables: &Variables) -> Result<Option<Self>, ConfigError> {
        match variables.text(vars::AUTH)?.to_ascii_lowercase().as_str() {
            "" | "key" => return Ok(None),
            "entra" => {}
            other => {
                return Err(ConfigError::new(
                    vars::AUTH,
                    format!("{other:?} is neither \"key\" (access key) nor \"entra\""),
                ))
            }
        }
        let url = variables.text(vars::TOKEN_URL)?;
        let origin = variables.http_origin(vars::TOKEN_ORIGIN)?;
        let parsed = HttpUrl::parse(&url).map_err(|e| {
            ConfigError::new(vars::TOKEN_URL, format!("is not an http(s) URL: {}", e.0))
        })?;
        if !HttpUrl::parse(&origin).is_ok_and(|o| o.same_origin(&parsed)) {
            return Err(ConfigError::new(
                vars::TOKEN_ORIGIN,
                format!(
                    "must be the token URL's origin ({}): it is the components' \
                     allowed_outbound_hosts entry",
                    parsed.origin()
                ),
            ));
        }
        let client_id = variables.text(vars::CLIENT_ID)?;
        let object_id = variables.text(vars::OBJECT_ID)?;
        for (name, value) in [(vars::CLIENT_ID, &client_id), (vars::OBJECT_ID, &object_id)] {
            if !value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') || value.len() > 64 {
                return Err(ConfigError::new(name, "is not a GUID"));
            }
        }
        let mut token_url = url;
        let mut sep = if token_url.contains('?') { '&' } else { '?' };
        for (name, value) in
            [("api-version", "2018-02-01"), ("resource", RESOURCE), ("client_id", &client_id)]
        {
            if value.is_empty() || token_url.contains(&format!("{name}=")) {
                continue;
            }
            let value = percent_encoding::utf8_percent_encode(value, QUERY_VALUE);
            token_url.push_str(&format!("{sep}{name}={value}"));
            sep = '&';
        }
        Ok(Some(Self { token_url, object_id }))
    }
}

/// A user and token to AUTH with.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub token: Secret,
    /// True when it came from the cache (a refusal then means: fetch a fresh one).
    pub cached: bool,
}

/// The cached token if it is not due for refresh, else a fresh one (cached for the others).
pub fn credentials(settings: &EntraSettings) -> Result<Credentials, RedisError> {
    let cache = store::open(super::breaker::LABEL).ok();
    if let Some(found) = cache.as_ref().and_then(read_cache) {
        return Ok(found);
    }
    fresh(settings, cache.as_ref())
}

/// Drops the cached token and fetches a fresh one.
pub fn refresh(settings: &EntraSettings) -> Result<Credentials, RedisError> {
    let cache = store::open(super::breaker::LABEL).ok();
    if let Some(cache) = &cache {
        let _ = cache.delete(CACHE_KEY);
    }
    fresh(settings, cache.as_ref())
}

/// `{expires_ms}\n{fetched_ms}\n{user}\n{token}`.
fn read_cache(cache: &store::Bucket) -> Option<Credentials> {
    let value = cache.get(CACHE_KEY).ok()??;
    let text = String::from_utf8(value).ok()?;
    let mut parts = text.splitn(4, '\n');
    let expires_ms: i64 = parts.next()?.parse().ok()?;
    let fetched_ms: i64 = parts.next()?.parse().ok()?;
    let user = parts.next()?.to_owned();
    let token = parts.next()?.to_owned();
    (!refresh_due(expires_ms, fetched_ms, unix_now_ms())).then(|| Credentials {
        user,
        token: Secret::new(token),
        cached: true,
    })
}

/// Whether a token fetched at `fetched_ms` that expires at `expires_ms` is to be replaced at
/// `now_ms`: from 5 minutes before it expires, or half its lifetime for shorter-lived ones.
fn refresh_due(expires_ms: i64, fetched_ms: i64, now_ms: i64) -> bool {
    let margin = REFRESH_MARGIN_MS.min((expires_ms - fetched_ms) / 2);
    now_ms >= expires_ms - margin
}

fn fresh(
    settings: &EntraSettings,
    cache: Option<&store::Bucket>,
) -> Result<Credentials, RedisError> {
    let fetched_ms = unix_now_ms();
    let token = fetch(&settings.token_url)?;
    let user = if settings.object_id.is_empty() {
        object_id_claim(&token.access_token).ok_or_else(|| {
            RedisError::Config(ConfigError::new(
                vars::OBJECT_ID,
                "is empty and the token has no oid claim: set the identity's object id",
            ))
        })?
    } else {
        settings.object_id.clone()
    };
    let expires_ms = fetched_ms + token.expires_in_s()? * 1000;
    if let Some(cache) = cache {
        let value = format!("{expires_ms}\n{fetched_ms}\n{user}\n{}", token.access_token);
        let _ = cache.set(CACHE_KEY, value.as_bytes());
    }
    Ok(Credentials { user, token: Secret::new(token.access_token), cached: false })
}

/// IMDS's answer (other fields ignored). `expires_in` is a string in IMDS's answers.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl TokenAnswer {
    fn expires_in_s(&self) -> Result<i64, RedisError> {
        let seconds = match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        seconds.filter(|s| *s >= 0).ok_or_else(|| {
            RedisError::AuthFailed("the token endpoint's answer has no valid expires_in".into())
        })
    }
}

/// One GET with `Metadata: true`, retried once when the endpoint is busy or unreachable.
fn fetch(url: &str) -> Result<TokenAnswer, RedisError> {
    let headers = vec![("metadata".to_owned(), b"true".to_vec())];
    let request = OutboundRequest { method: &http::Method::GET, url, headers: &headers, body: &[] };
    let mut last = String::new();
    for attempt in 0..2 {
        if attempt > 0 {
            super::clock::sleep_ms(200);
        }
        match outbound::send(&request, TIMEOUTS, MAX_ANSWER) {
            Ok(answer) if answer.status == 200 => {
                return serde_json::from_slice::<TokenAnswer>(&answer.body)
                    .ok()
                    .filter(|t| !t.access_token.is_empty())
                    .ok_or_else(|| {
                        RedisError::AuthFailed(
                            "the token endpoint's answer has no access_token".into(),
                        )
                    });
            }
            // Throttled or failing: worth one more try. Anything else is the identity's setup.
            Ok(answer) if answer.status == 429 || answer.status >= 500 => {
                last = format!("the managed identity endpoint answered {}", answer.status);
            }
            Ok(answer) => {
                return Err(RedisError::AuthFailed(format!(
                    "the managed identity endpoint answered {} (is the identity assigned, and \
                     redis_entra_client_id right?)",
                    answer.status
                )))
            }
            Err(OutboundError::Denied) => {
                return Err(RedisError::Config(ConfigError::new(
                    vars::TOKEN_ORIGIN,
                    "is not the token endpoint's origin: Spin refused the request",
                )))
            }
            Err(e) => last = format!("the managed identity endpoint: {e}"),
        }
    }
    Err(RedisError::Unavailable(last))
}

/// The `oid` claim of a JWT's payload (read, not verified: the token came from the identity
/// endpoint, and Redis verifies it).
fn object_id_claim(jwt: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Claims {
        oid: String,
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = super::secrets::from_base64url(payload.trim_end_matches('='))?;
    serde_json::from_slice::<Claims>(&bytes).ok().map(|c| c.oid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(
        overrides: &[(&'static str, &'static str)],
    ) -> Result<Option<EntraSettings>, ConfigError> {
        let mut map: HashMap<&str, &str> = HashMap::from([
            (vars::AUTH, "entra"),
            (vars::TOKEN_URL, "http://169.254.169.254/metadata/identity/oauth2/token"),
            (vars::TOKEN_ORIGIN, "http://169.254.169.254"),
            (vars::CLIENT_ID, ""),
            (vars::OBJECT_ID, ""),
        ]);
        map.extend(overrides.iter().copied());
        let variables = Variables::from_fn(|n| Ok(map[n].to_owned()));
        EntraSettings::from_variables(&variables)
    }

    #[test]
    fn imds_query() {
        let s = settings(&[(vars::CLIENT_ID, "0b1c-2d")]).unwrap().unwrap();
        assert_eq!(
            s.token_url,
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01\
             &resource=https%3A%2F%2Fredis.azure.com&client_id=0b1c-2d"
        );
        assert!(settings(&[(vars::AUTH, "key")]).unwrap().is_none());
        assert_eq!(settings(&[(vars::AUTH, "aad")]).unwrap_err().variable, vars::AUTH);
        let elsewhere = [(vars::TOKEN_ORIGIN, "http://127.0.0.1:9")];
        assert_eq!(settings(&elsewhere).unwrap_err().variable, vars::TOKEN_ORIGIN);
        assert_eq!(settings(&[(vars::OBJECT_ID, "x y")]).unwrap_err().variable, vars::OBJECT_ID);
    }

    #[test]
    fn refreshed_shortly_before_expiry() {
        let hour = 3_600_000;
        // An hour's token: kept until 5 minutes before it expires.
        assert!(!refresh_due(hour, 0, hour - 300_001));
        assert!(refresh_due(hour, 0, hour - 300_000));
        // A 4-second token: kept for half its life.
        assert!(!refresh_due(4_000, 0, 1_999));
        assert!(refresh_due(4_000, 0, 2_000));
        // Already expired, or issued expired.
        assert!(refresh_due(1_000, 0, 5_000));
        assert!(refresh_due(0, 0, 0));
    }

    #[test]
    fn oid_from_the_token() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(r#"{"oid":"abc-123"}"#));
        assert_eq!(object_id_claim(&jwt).as_deref(), Some("abc-123"));
        assert_eq!(object_id_claim("opaque-token"), None);
    }
}
