//! The session cookie: reading it from `Cookie` headers and writing `Set-Cookie`.

/// How the session cookie is named and scoped. `HttpOnly` is always set: no script on the
/// page ever needs the session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    pub name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub domain: Option<String>,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "strict" => Some(Self::Strict),
            "lax" => Some(Self::Lax),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl CookieSettings {
    /// Checks the combination the way browsers will: a `__Host-` cookie needs `Secure`,
    /// `Path=/` and no `Domain`; `__Secure-` and `SameSite=None` need `Secure`.
    pub fn validate(&self) -> Result<(), String> {
        if !is_token(&self.name) || self.name.len() > 64 {
            return Err(format!(
                "cookie name {:?} is not a valid cookie name (an HTTP token, at most 64 bytes)",
                self.name
            ));
        }
        if !self.path.starts_with('/')
            || self.path.bytes().any(|b| b == b';' || !b.is_ascii_graphic())
        {
            return Err(format!(
                "cookie path {:?} must start with / and hold no spaces or semicolons",
                self.path
            ));
        }
        if let Some(domain) = &self.domain {
            let ok = domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !ok || domain.is_empty() {
                return Err(format!("cookie domain {domain:?} is not a host name"));
            }
        }
        let host_prefixed = self.name.starts_with("__Host-");
        if host_prefixed && (!self.secure || self.path != "/" || self.domain.is_some()) {
            return Err(
                "a __Host- cookie needs secure=true, path / and no domain (browsers drop it otherwise)"
                    .into(),
            );
        }
        if (host_prefixed || self.name.starts_with("__Secure-")) && !self.secure {
            return Err("a __Secure- cookie needs secure=true".into());
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err("SameSite=None needs secure=true (browsers drop it otherwise)".into());
        }
        Ok(())
    }

    fn attributes(&self) -> String {
        let mut out = format!("; Path={}", self.path);
        if let Some(domain) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if self.secure {
            out.push_str("; Secure");
        }
        out.push_str("; HttpOnly; SameSite=");
        out.push_str(self.same_site.as_str());
        out
    }

    /// A session cookie (no `Max-Age`: the browser drops it when it closes, as OWASP
    /// recommends; the server-side timeouts still apply).
    pub fn set(&self, value: &str) -> String {
        format!("{}={value}{}", self.name, self.attributes())
    }

    /// Deletes the cookie: same name, path and domain, empty value, `Max-Age=0`.
    pub fn clear(&self) -> String {
        format!("{}=; Max-Age=0{}", self.name, self.attributes())
    }
}

/// Every value of cookie `name` in the given `Cookie` header values, in order. Tolerates
/// what real clients send: several headers (HTTP/2 splits them), spaces or tabs around
/// `;` and `=`, empty pairs, pairs without `=`, and values in double quotes.
pub fn values<'a>(headers: &'a [String], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (n.trim_matches([' ', '\t']) == name).then(|| {
                let v = v.trim_matches([' ', '\t']);
                v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_settings() -> CookieSettings {
        CookieSettings {
            name: "__Host-session".into(),
            secure: true,
            same_site: SameSite::Lax,
            domain: None,
            path: "/".into(),
        }
    }

    #[test]
    fn set_and_clear() {
        let c = default_settings();
        assert_eq!(c.set("abc"), "__Host-session=abc; Path=/; Secure; HttpOnly; SameSite=Lax");
        assert_eq!(c.clear(), "__Host-session=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax");
        let c = CookieSettings {
            name: "sid".into(),
            secure: false,
            same_site: SameSite::Strict,
            domain: Some("example.com".into()),
            path: "/app".into(),
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.set("x"), "sid=x; Path=/app; Domain=example.com; HttpOnly; SameSite=Strict");
    }

    #[test]
    fn browser_rules_are_enforced() {
        assert!(default_settings().validate().is_ok());
        for broken in [
            CookieSettings { secure: false, ..default_settings() },
            CookieSettings { path: "/app".into(), ..default_settings() },
            CookieSettings { domain: Some("example.com".into()), ..default_settings() },
            CookieSettings { name: "__Secure-s".into(), secure: false, ..default_settings() },
            CookieSettings {
                name: "s".into(),
                secure: false,
                same_site: SameSite::None,
                ..default_settings()
            },
            CookieSettings { name: "bad name".into(), ..default_settings() },
            CookieSettings { name: "s".into(), path: "/a;b".into(), ..default_settings() },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn parses_what_clients_send() {
        let headers = vec![
            "theme=dark;  __Host-session = \"abc\" ;flag; =x".to_owned(),
            "a=1;\t__Host-session=def".to_owned(),
        ];
        assert_eq!(values(&headers, "__Host-session"), vec!["abc", "def"]);
        assert_eq!(values(&headers, "theme"), vec!["dark"]);
        assert!(values(&headers, "flag").is_empty());
        assert!(values(&headers, "Host-session").is_empty());
        assert!(values(&[], "x").is_empty());
        assert_eq!(values(&["x=a=b".to_owned()], "x"), vec!["a=b"]);
    }
}
