//! The one parser of http(s) URLs: configured origins and webhook URLs, every outbound
//! request's URL, and the `Origin` a browser sends, all read the same way.
//!
//! Built on `http::Uri` (RFC 3986, already linked through spin-sdk), with the rules it leaves
//! to its callers made strict here, so two readers of one URL never disagree:
//! - the scheme is `http` or `https`, and there is a host;
//! - a port, when written, is 1 to 65535 in plain digits without a leading zero (`http::Uri`
//!   takes `:99999`, `:` and `:+80`);
//! - no credentials (`user:pass@`) and no fragment (`http::Uri` would drop a `#...` silently;
//!   refused, so a fragment is never sent and never quietly lost);
//! - IPv6 literals in brackets (`http://[::1]/hook`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it writes none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// An absolute http(s) URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub scheme: Scheme,
    /// As written (case kept: it must match `allowed_outbound_hosts`); an IPv6 literal keeps
    /// its brackets.
    pub host: String,
    /// The port, when one is written.
    pub port: Option<u16>,
    /// `/path?query`: never empty, never a fragment.
    pub path_and_query: String,
}

/// Why a text is not an http(s) URL this project accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub &'static str);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        if text.contains('#') {
            return Err(UrlError("a URL with a #fragment is refused (a fragment is never sent)"));
        }
        let uri: http::Uri = text.parse().map_err(|_| UrlError("not a valid URL"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => return Err(UrlError("the URL is not http:// or https://")),
        };
        let authority = uri.authority().ok_or(UrlError("the URL has no host"))?.as_str();
        if authority.contains('@') {
            return Err(UrlError("a URL with credentials (user@host) is refused"));
        }
        let host = uri.host().unwrap_or("");
        if host.is_empty() {
            return Err(UrlError("the URL has no host"));
        }
        let port = match &authority[host.len()..] {
            "" => None,
            written => Some(parse_port(written.strip_prefix(':').unwrap_or(written))?),
        };
        let path_and_query = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        Ok(Self { scheme, host: host.to_owned(), port, path_and_query })
    }

    /// `host[:port]`, as written.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// `scheme://host[:port]`, as written (the scheme lower-case).
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority())
    }

    /// The port the URL reaches: the written one or the scheme's default.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// Whether both name the same origin (RFC 6454): scheme, host (case-insensitive) and
    /// port (a default port written or not is the same).
    pub fn same_origin(&self, other: &Self) -> bool {
        self.scheme == other.scheme
            && self.host.eq_ignore_ascii_case(&other.host)
            && self.effective_port() == other.effective_port()
    }
}

/// 1 to 65535 in plain digits, no sign, no leading zero.
fn parse_port(text: &str) -> Result<u16, UrlError> {
    let plain = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    match text.parse::<u16>() {
        Ok(port) if plain => Ok(port),
        _ => Err(UrlError("the URL's port is not a number from 1 to 65535")),
    }
}

/// A webhook's URL, checked against the origin the component may reach (the variable that is
/// also its `allowed_outbound_hosts` entry): https, except to a component of this app or a
/// loopback sidecar (the body may carry a secret), and under that origin. Errors name
/// `url_variable` or `origin_variable`.
pub fn webhook_url(
    url: &str,
    origin: &str,
    url_variable: &'static str,
    origin_variable: &'static str,
) -> Result<HttpUrl, crate::platform::settings::ConfigError> {
    use crate::platform::settings::ConfigError;
    let parsed = HttpUrl::parse(url).map_err(|e| {
        ConfigError::new(
            url_variable,
            format!("is not an http(s) URL with a host and no credentials or fragment: {e}"),
        )
    })?;
    let host = parsed.host.to_ascii_lowercase();
    let inside = host.ends_with(".spin.internal")
        || matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]");
    if parsed.scheme == Scheme::Http && !inside {
        return Err(ConfigError::new(
            url_variable,
            "must start with https:// (plain http only to a *.spin.internal component or a \
             loopback sidecar)",
        ));
    }
    let same =
        HttpUrl::parse(origin).is_ok_and(|o| o.path_and_query == "/" && o.same_origin(&parsed));
    if !same {
        return Err(ConfigError::new(
            origin_variable,
            format!(
                "must be the webhook URL's origin ({}): it is the component's \
                 allowed_outbound_hosts entry",
                parsed.origin()
            ),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_docs_allow() {
        let u = HttpUrl::parse("http://[::1]/hook").unwrap();
        assert_eq!((u.scheme, u.host.as_str(), u.port), (Scheme::Http, "[::1]", None));
        assert_eq!((u.authority(), u.path_and_query.as_str()), ("[::1]".into(), "/hook"));
        let u = HttpUrl::parse("https://H.example:8443/x/y?q=1").unwrap();
        assert_eq!(
            (u.authority(), u.path_and_query.as_str()),
            ("H.example:8443".into(), "/x/y?q=1")
        );
        assert_eq!(u.origin(), "https://H.example:8443");
        let u = HttpUrl::parse("http://origin.spin.internal").unwrap();
        assert_eq!(
            (u.authority(), u.path_and_query.as_str()),
            ("origin.spin.internal".into(), "/")
        );
        assert_eq!(HttpUrl::parse("http://h?q").unwrap().path_and_query, "/?q");
        assert_eq!(HttpUrl::parse("HTTPS://h:65535").unwrap().port, Some(65535));
        assert_eq!(HttpUrl::parse("http://[::1]:8080/").unwrap().effective_port(), 8080);
    }

    #[test]
    fn refuses_what_hand_splitters_let_through() {
        for bad in [
            "https://a.example:99999",
            "https://a.example:",
            "https://a.example:0",
            "https://a.example:+80",
            "https://a.example:080",
            "https://a.example/hook#frag",
            "https://a.example#",
            "https://u:p@a.example/",
            "https://@a.example/",
            "https://:80/",
            "https:///x",
            "ftp://a.example/",
            "a.example/x",
            "/x",
            "https://a b/",
            "https://[::1/",
            "",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = |t| HttpUrl::parse(t).unwrap();
        assert!(o("https://A.example").same_origin(&o("https://a.example:443/x")));
        assert!(o("http://127.0.0.1:3000").same_origin(&o("http://127.0.0.1:3000/api")));
        assert!(!o("http://a.example").same_origin(&o("https://a.example")));
        assert!(!o("https://a.example").same_origin(&o("https://a.example:8443")));
        assert!(!o("https://a.example").same_origin(&o("https://b.a.example")));
    }
}
