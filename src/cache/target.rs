//! Request targets: the request's path and query normalised, bounded and encoded.
//!
//! The origin is asked for exactly the normalised URL that forms the key, so two requests
//! share an entry only when the origin would see the same request. Normalising:
//! - path: empty segments (`//`) dropped except a trailing slash, which is kept (`/dir/` and
//!   `/dir` are different resources: the first is where `/dir` usually redirects), `.`/`..`
//!   refused, every segment percent-decoded and re-encoded with one fixed set (`%7e` and `~`
//!   agree; `%2F` stays data, not a slash);
//! - query: pairs split on `&`, empty pairs and pairs with an empty name dropped, `+` read as
//!   a space (form encoding) and written `%20`, names and values re-encoded like the path,
//!   `a` written `a=`, parameters the configuration drops (`cache_query_allow`,
//!   `cache_query_ignore`) removed, then sorted by name (stable: repeated names keep their
//!   order).
//!
//! Braces are always encoded, so user input can never supply a Redis hash tag.

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::platform::percent;
use crate::platform::secrets::{hex, sha256};
use crate::platform::ApiError;

/// Longest raw path plus query accepted (414 above).
pub const MAX_TARGET_LEN: usize = 2048;
/// Most query parameters accepted.
pub const MAX_QUERY_PARAMS: usize = 64;
/// Longest normalised form kept readable inside a key; longer ones are hashed.
pub const MAX_READABLE_KEY_LEN: usize = 128;

/// Bytes left as they are: RFC 3986 unreserved plus the sub-delimiters that are harmless in
/// a path segment or query component. Everything else, `{` `}` `%` `/` `?` `#` `&` `=` `+`
/// and spaces included, is written `%XX`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b':')
    .remove(b'@');

/// A request target in normal form: `/a/b?x=1&y=2` (no `?` when the query is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(String);

impl Target {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part of the Redis key naming this entry: the normal form when short, else
    /// `sha256:<hex>` (a normal form always starts with `/`, so the two cannot collide).
    pub fn key_part(&self) -> String {
        bounded(&self.0)
    }

    /// The path part, without the query.
    pub fn path(&self) -> &str {
        self.0.split('?').next().unwrap_or("/")
    }

    /// Which of `buckets` hash slots groups this target's entries (see [`super::keys`]).
    pub fn bucket(&self, buckets: u32) -> u32 {
        let digest = sha256(self.0.as_bytes());
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % buckets.max(1)
    }
}

pub(crate) fn bounded(text: &str) -> String {
    if text.len() <= MAX_READABLE_KEY_LEN {
        text.to_owned()
    } else {
        format!("sha256:{}", hex(&sha256(text.as_bytes())))
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_path", message)
}

/// Decodes `%XX` escapes through the platform's one strict decoder: a `%` not followed by
/// two hex digits (`%+f` included) is an error.
fn percent_decode(text: &str, plus_is_space: bool) -> Result<Vec<u8>, ApiError> {
    percent::decode(text, plus_is_space)
        .map_err(|_| invalid("the URL has a malformed percent-escape"))
}

pub(crate) fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, COMPONENT).to_string()
}

/// Which query parameters (by decoded name) the key keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueryRules<'a> {
    /// Empty: every name not ignored.
    pub allow: &'a [String],
    pub ignore: &'a [String],
}

impl QueryRules<'_> {
    fn keeps(&self, name: &[u8]) -> bool {
        let listed = |list: &[String]| list.iter().any(|n| n.as_bytes() == name);
        (self.allow.is_empty() || listed(self.allow)) && !listed(self.ignore)
    }
}

/// Normalises a path (as routed, e.g. `/profiles/42`) and a raw query string.
pub fn normalise(path: &str, query: &str, rules: QueryRules<'_>) -> Result<Target, ApiError> {
    if path.len() + query.len() > MAX_TARGET_LEN {
        return Err(ApiError::new(
            414,
            "uri_too_long",
            format!("the path and query are longer than {MAX_TARGET_LEN} bytes"),
        ));
    }
    if path.bytes().chain(query.bytes()).any(|b| b.is_ascii_control() || b == b' ' || b == b'#') {
        return Err(invalid("the URL contains control characters, spaces or '#'"));
    }
    let mut out = String::with_capacity(path.len() + query.len() + 2);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode(segment, false)?;
        if decoded == b"." || decoded == b".." {
            return Err(invalid("'.' and '..' path segments are not allowed"));
        }
        out.push('/');
        out.push_str(&encode(&decoded));
    }
    if out.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if path.ends_with('/') {
        out.push('/');
    }

    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name, true)?;
        if name.is_empty() || !rules.keeps(&name) {
            continue;
        }
        params.push((encode(&name), encode(&percent_decode(value, true)?)));
        if params.len() > MAX_QUERY_PARAMS {
            return Err(invalid(format!("more than {MAX_QUERY_PARAMS} query parameters")));
        }
    }
    // Insertion sort (stable, at most 64 items) rather than slice::sort's larger code.
    for i in 1..params.len() {
        let mut j = i;
        while j > 0 && params[j - 1].0 > params[j].0 {
            params.swap(j - 1, j);
            j -= 1;
        }
    }
    for (i, (name, value)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    Ok(Target(out))
}

/// A surrogate key (`Cache-Tag` value) in the form used inside Redis keys: encoded like a
/// path segment (no braces), hashed when long. Empty tags are `None`.
pub fn tag_key_part(tag: &str) -> Option<String> {
    let tag = tag.trim();
    (!tag.is_empty()).then(|| bounded(&encode(tag.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str, query: &str) -> String {
        normalise(path, query).unwrap().as_str().to_owned()
    }

    fn normalise(path: &str, query: &str) -> Result<Target, ApiError> {
        super::normalise(path, query, QueryRules::default())
    }

    #[test]
    fn equivalent_urls_share_a_form() {
        assert_eq!(n("/a//b", "y=2&x=1"), "/a/b?x=1&y=2");
        // The trailing slash is kept: `/a/b/` is another resource.
        assert_eq!(n("/a//b/", "y=2&x=1"), "/a/b/?x=1&y=2");
        assert_eq!(normalise("/a/b/", "").unwrap().path(), "/a/b/");
        assert_eq!(n("/%7euser", ""), "/~user");
        assert_eq!(n("/~user", "&&q&=z"), "/~user?q=");
        assert_eq!(n("/s", "q=a+b"), n("/s", "q=a%20b"));
        assert_ne!(n("/s", "q=a+b"), n("/s", "q=a%2Bb"));
        assert_eq!(n("/s", "a=2&b=0&a=1"), "/s?a=2&a=1&b=0");
    }

    #[test]
    fn braces_and_slashes_in_data_stay_encoded() {
        assert_eq!(n("/%7Bx%7D/a%2Fb", "k={v}"), "/%7Bx%7D/a%2Fb?k=%7Bv%7D");
        assert!(!n("/{x}", "").contains('{'));
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(normalise("/a/%zz", "").unwrap_err().status, 400);
        assert_eq!(normalise("/a/../b", "").unwrap_err().status, 400);
        assert_eq!(normalise("/a/%2e%2E", "").unwrap_err().status, 400);
        assert_eq!(normalise("//", "").unwrap_err().status, 400);
        assert_eq!(normalise("/", "").unwrap_err().status, 400);
        assert_eq!(normalise(&"/a".repeat(2000), "").unwrap_err().status, 414);
        let many: Vec<String> = (0..65).map(|i| format!("p{i}=1")).collect();
        assert_eq!(normalise("/a", &many.join("&")).unwrap_err().status, 400);
    }

    #[test]
    fn query_rules_drop_parameters() {
        let (allow, ignore) = (vec!["q".to_owned(), "page".to_owned()], vec!["page".to_owned()]);
        let t = |allow: &[String], ignore: &[String]| {
            super::normalise("/s", "utm_source=x&q=1&page=2&z", QueryRules { allow, ignore })
                .unwrap()
                .as_str()
                .to_owned()
        };
        assert_eq!(t(&[], &[]), "/s?page=2&q=1&utm_source=x&z=");
        assert_eq!(t(&[], &["utm_source".to_owned()]), "/s?page=2&q=1&z=");
        assert_eq!(t(&allow, &[]), "/s?page=2&q=1");
        assert_eq!(t(&allow, &ignore), "/s?q=1");
    }

    #[test]
    fn long_targets_are_hashed() {
        let t = normalise(&format!("/{}", "x".repeat(300)), "").unwrap();
        assert!(t.key_part().starts_with("sha256:") && t.key_part().len() == 71);
        assert_eq!(normalise("/a", "").unwrap().key_part(), "/a");
        assert!(t.bucket(16) < 16);
    }
}
