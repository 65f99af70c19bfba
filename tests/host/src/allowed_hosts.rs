//! `allowed_outbound_hosts` as Spin 3.6 checks it (`crates/outbound-networking-config`):
//! entries are `scheme://host[:port]` with `*` wildcards (`*://`, `*.example.com`, `:*`),
//! port ranges (`:8000..9000`), and a default port only for schemes that have one
//! (`redis` 6379, `http` 80, `https` 443, ...; none for `rediss`, so it must be written).
//! `*.spin.internal` allows service chaining to every component of the app.

use anyhow::{bail, Context, Result};
use url::Host;

const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum HostRule {
    Any,
    AnySubdomain(String),
    Literal(Host),
}

#[derive(Debug, Clone, PartialEq)]
enum PortRule {
    Any,
    Port(u16),
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostRule,
    port: PortRule,
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("{entry:?} does not contain a scheme (e.g., 'http://' or '*://')");
        };
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match port.split_once('/') {
            Some((_, path)) if !path.is_empty() => {
                bail!("{entry:?} has a path but is not allowed to")
            }
            Some((p, _)) => p,
            None => port,
        };
        let port = match port {
            "" => PortRule::Port(well_known_port(scheme).with_context(|| {
                format!("no port was provided and the scheme {scheme:?} does not have a known default port number")
            })?),
            "*" => PortRule::Any,
            p => match p.split_once("..") {
                Some((a, b)) => PortRule::Range(a.parse()?, b.parse()?),
                None => PortRule::Port(p.parse().with_context(|| format!("port {p:?} is not a number"))?),
            },
        };
        let scheme = match scheme {
            "*" => None,
            s if s.chars().all(|c| c.is_alphabetic()) => Some(s.to_owned()),
            s => bail!("invalid allowed host scheme {s:?}"),
        };
        let host = host.trim().trim_end_matches('/');
        let host = if host == "*" {
            HostRule::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            HostRule::AnySubdomain(format!(".{domain}"))
        } else if host.contains('*') || host.contains('/') {
            bail!("invalid allowed host {host:?}");
        } else {
            HostRule::Literal(
                Host::parse(host).with_context(|| format!("invalid allowed host {host:?}"))?,
            )
        };
        Ok(Self { scheme, host, port })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let Ok(host) = Host::parse(host) else { return false };
        let host_ok = match (&self.host, &host) {
            (HostRule::Any, _) => true,
            (HostRule::AnySubdomain(suffix), Host::Domain(d)) => d.ends_with(suffix.as_str()),
            (HostRule::AnySubdomain(_), _) => false,
            (HostRule::Literal(l), h) => l == h,
        };
        let port_ok = match (&self.port, port.or_else(|| well_known_port(scheme))) {
            (PortRule::Any, _) => true,
            (_, None) => false,
            (PortRule::Port(p), Some(q)) => *p == q,
            (PortRule::Range(a, b), Some(q)) => (*a..*b).contains(&q),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's resolved `allowed_outbound_hosts`.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    /// Parses resolved entries; `*.spin.internal` expands to each component of the app.
    pub fn parse(entries: &[String], component_ids: &[String]) -> Result<Self> {
        if entries.len() == 1 && entries[0] == "insecure:allow-all" {
            bail!("'insecure:allow-all' is not allowed - use '*://*:*' instead");
        }
        let mut hosts = Vec::new();
        for entry in entries {
            let host = AllowedHost::parse(entry)?;
            if host.host == HostRule::AnySubdomain(SERVICE_CHAINING_SUFFIX.into()) {
                for id in component_ids {
                    let mut h = host.clone();
                    h.host =
                        HostRule::Literal(Host::Domain(format!("{id}{SERVICE_CHAINING_SUFFIX}")));
                    hosts.push(h);
                }
            } else {
                hosts.push(host);
            }
        }
        Ok(Self(hosts))
    }

    /// Is this URL allowed? Unparsable URLs are not.
    pub fn allows_url(&self, url: &str) -> bool {
        let Ok(url) = url::Url::parse(url) else { return false };
        let Some(host) = url.host_str() else { return false };
        self.0.iter().any(|h| h.allows(url.scheme(), host, url.port()))
    }
}

/// The component a `http://COMPONENT.spin.internal/...` URL chains to.
pub fn service_chaining_target(host: &str) -> Option<&str> {
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let (first, rest) = host.split_once('.')?;
    (rest == "spin.internal").then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowedHosts::parse(&entries, &["origin".into(), "cache".into()]).unwrap()
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let a = allowed(&["rediss://cache.example.com:6380"]);
        assert!(a.allows_url("rediss://:key@cache.example.com:6380"));
        assert!(!a.allows_url("redis://cache.example.com:6380"));
        assert!(!a.allows_url("rediss://cache.example.com:10000"));
        assert!(!a.allows_url("rediss://other.example.com:6380"));
        // rediss has no default port: a URL without one is refused.
        assert!(!a.allows_url("rediss://cache.example.com"));
    }

    #[test]
    fn rediss_entry_needs_a_port() {
        assert!(AllowedHost::parse("rediss://cache.example.com").is_err());
        assert!(AllowedHost::parse("redis://cache.example.com").is_ok());
    }

    #[test]
    fn default_ports_and_wildcards() {
        let a = allowed(&["redis://127.0.0.1", "https://*.example.com", "http://localhost:*"]);
        assert!(a.allows_url("redis://127.0.0.1:6379"));
        assert!(a.allows_url("redis://127.0.0.1"));
        assert!(!a.allows_url("redis://127.0.0.1:6380"));
        assert!(a.allows_url("https://api.example.com/x"));
        assert!(!a.allows_url("https://example.com/x"));
        assert!(a.allows_url("http://localhost:8123/x"));
    }

    #[test]
    fn port_ranges_exclude_the_end() {
        let a = allowed(&["http://127.0.0.1:8000..8002"]);
        assert!(a.allows_url("http://127.0.0.1:8001/"));
        assert!(!a.allows_url("http://127.0.0.1:8002/"));
    }

    #[test]
    fn service_chaining_wildcard_expands_to_components() {
        let a = allowed(&["http://*.spin.internal"]);
        assert!(a.allows_url("http://origin.spin.internal/profiles/1"));
        assert!(!a.allows_url("http://unknown.spin.internal/"));
        assert_eq!(service_chaining_target("origin.spin.internal"), Some("origin"));
        assert_eq!(service_chaining_target("example.com"), None);
    }
}
