//! Who is calling, for the gateway: a known API key (its SHA-256 on the allow-list), and
//! always the client address Spin reports, believing `X-Forwarded-For` only when that address
//! is a trusted proxy, IPv6 addresses keyed by their prefix. A made-up key is no identity:
//! its caller is counted by address, so inventing keys earns no fresh quota.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::platform::secrets::{base64url, constant_time_eq, hex, hmac_sha256, sha256};
use crate::platform::{ApiError, Request};

use super::settings::GatewaySettings;

/// Who the gateway limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// `ip:<address>` or `ip:<IPv6 prefix>/<len>`.
    pub address: String,
    /// `key:<HMAC of the key>` when the caller sent a known API key.
    pub api_key: Option<String>,
}

/// Identifies the caller: 400 when the API key header is repeated (the limiter and the
/// upstream could otherwise read different values).
pub(crate) fn caller(req: &Request, s: &GatewaySettings, peer: IpAddr) -> Result<Caller, ApiError> {
    let forwarded = req.header_values("x-forwarded-for");
    let ip = client_ip(peer, &forwarded, &s.trusted_proxies);
    let address = format!("ip:{}", address_key(ip, s.ipv6_prefix));
    if s.api_key_header.is_empty() {
        return Ok(Caller { address, api_key: None });
    }
    // Refused even when keys do not count here: the upstream may read another copy than the
    // one a limiter or a log would.
    if req.header_count(&s.api_key_header) > 1 {
        return Err(ApiError::bad_request(
            "duplicate_identity_header",
            format!("send the {} header once", s.api_key_header),
        ));
    }
    if s.api_key_digests.is_empty() {
        return Ok(Caller { address, api_key: None });
    }
    let api_key = req.header(&s.api_key_header).map(str::trim).filter(|k| !k.is_empty());
    let known = api_key.filter(|key| {
        let digest = hex(&sha256(key.as_bytes()));
        // Every entry is compared, in constant time each.
        s.api_key_digests
            .iter()
            .fold(false, |found, d| found | constant_time_eq(d.as_bytes(), digest.as_bytes()))
    });
    // Stored as an HMAC under a secret: a leaked Redis does not let anyone test guesses.
    let api_key = known.map(|key| {
        format!(
            "key:{}",
            base64url(&hmac_sha256(s.identity_secret.expose().as_bytes(), key.as_bytes()))
        )
    });
    Ok(Caller { address, api_key })
}

/// The address as a key: IPv4 whole, IPv6 cut to `prefix` bits (one host usually holds a
/// whole /64, so keying per /128 would hand it 2^64 quotas).
pub(crate) fn address_key(ip: IpAddr, prefix: u8) -> String {
    match canonical(ip) {
        IpAddr::V6(v6) if prefix < 128 => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
        }
        other => other.to_string(),
    }
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `192.168.1.7` (a single address), `fd00::/8`, `::1`.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, Some(p.trim().parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Parses the `ratelimit_trusted_proxies` list: addresses or CIDRs, comma or space separated.
pub(crate) fn parse_trusted(list: &str) -> Result<Vec<Cidr>, String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| Cidr::parse(s).ok_or_else(|| format!("{s:?} is not an IP address or CIDR")))
        .collect()
}

/// One `X-Forwarded-For` element: an IP, maybe with a port or in brackets.
fn parse_forwarded_ip(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    t.parse::<IpAddr>()
        .ok()
        .or_else(|| t.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|r| r.parse().ok())
        })
        .map(canonical)
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` (all field lines, in order) that is not a trusted proxy.
/// An unparsable element stops the walk at the hop that added it. When every element is
/// trusted, the left-most one is the client.
pub(crate) fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = canonical(peer);
    if !is_trusted(client) {
        return client;
    }
    let hops: Vec<&str> = forwarded_for.iter().flat_map(|v| v.split(',')).collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_forwarded_ip(hop) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_by_prefix() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1"), 64), "2001:db8:1:2::/64");
        assert_eq!(address_key(ip("2001:db8:1:2:bbbb::9"), 64), "2001:db8:1:2::/64");
        assert_eq!(address_key(ip("2001:db8:1:2::1"), 128), "2001:db8:1:2::1");
        assert_eq!(address_key(ip("::ffff:198.51.100.7"), 64), "198.51.100.7");
        assert_eq!(address_key(ip("198.51.100.7"), 64), "198.51.100.7");
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.9.8.7")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(parse_trusted("10.0.0.0/8, 127.0.0.1 ::1").unwrap().len() == 3);
        assert!(parse_trusted("nope").is_err());
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = parse_trusted("127.0.0.1, 10.0.0.0/8").unwrap();
        // An untrusted peer: its own header is ignored.
        assert_eq!(client_ip(ip("203.0.113.9"), &["1.1.1.1"], &trusted), ip("203.0.113.9"));
        // Trusted peer: right-most untrusted element, over several field lines.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &["6.6.6.6, 198.51.100.2", "10.1.1.1"], &trusted),
            ip("198.51.100.2")
        );
        // Every element trusted: the left-most.
        assert_eq!(client_ip(ip("127.0.0.1"), &["10.0.0.2, 10.0.0.3"], &trusted), ip("10.0.0.2"));
        // Garbage stops the walk at the hop that added it.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &["6.6.6.6, junk, 10.0.0.3"], &trusted),
            ip("10.0.0.3")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("127.0.0.1"), &[], &trusted), ip("127.0.0.1"));
    }
}
