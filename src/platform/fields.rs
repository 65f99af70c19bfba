//! Field rules every proxying service shares: which fields are hop-by-hop (RFC 9110 §7.6.1),
//! and list-valued fields split on commas outside quoted strings (RFC 9110 §5.6.1, §5.6.4).
//!
//! Both the cache and the rate limiter's gateway forward requests and answers; they use this
//! one list, so a field one of them drops is dropped by the other too.

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus `Keep-Alive`, `Proxy-Connection`, `TE`'s kin and
/// the proxy authentication pair, which are meant for the next hop only), and the fields
/// wasi-http refuses to send (`Host`, `HTTP2-Settings`). Never forwarded in either direction,
/// never stored.
pub const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

/// A field line: name and raw value.
pub type FieldLine = (String, Vec<u8>);

/// Splits a list-valued field on commas outside quoted strings, trimming each member and
/// dropping empty ones: `a, b="x, y"` is two members, `a` and `b="x, y"`.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                members.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(value[start..].trim());
    members.retain(|m| !m.is_empty());
    members
}

/// The field names a message's `Connection` fields list, lower case.
pub fn connection_options(lines: &[FieldLine]) -> Vec<String> {
    lines
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(split_list)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Whether a field is hop-by-hop in a message whose `Connection` options are `named`.
pub fn is_hop_by_hop(name: &str, named: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    HOP_BY_HOP.contains(&lower.as_str()) || named.contains(&lower)
}

/// The end-to-end field lines of a message, in order: without the hop-by-hop fields, the
/// fields its `Connection` names, the body framing (`Content-Length`, recomputed by whoever
/// sends the message on) and Spin's own `spin-*` fields.
pub fn end_to_end(lines: &[FieldLine]) -> Vec<FieldLine> {
    let named = connection_options(lines);
    lines
        .iter()
        .filter(|(n, _)| {
            !(is_hop_by_hop(n, &named)
                || n.eq_ignore_ascii_case("content-length")
                || n.to_ascii_lowercase().starts_with("spin-"))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(pairs: &[(&str, &str)]) -> Vec<FieldLine> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_dropped() {
        let kept = end_to_end(&lines(&[
            ("accept", "*/*"),
            ("Connection", "keep-alive, X-Hop"),
            ("connection", "x-other"),
            ("x-hop", "secret"),
            ("X-Other", "secret"),
            ("Proxy-Authenticate", "Basic"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("set-cookie", "a=1"),
            ("spin-client-addr", "1.2.3.4:5"),
            ("content-length", "3"),
            ("te", "trailers"),
            ("set-cookie", "b=2"),
        ]));
        assert_eq!(kept, lines(&[("accept", "*/*"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]));
    }

    #[test]
    fn lists_split_outside_quoted_strings() {
        assert_eq!(split_list("a, b=1 ,,c"), ["a", "b=1", "c"]);
        assert_eq!(
            split_list(r#"community="UCI, max-age=999", x"#),
            [r#"community="UCI, max-age=999""#, "x"]
        );
        assert_eq!(split_list(r#""a,b", W/"c\",d""#), [r#""a,b""#, r#"W/"c\",d""#]);
        assert!(split_list(" , ").is_empty());
    }
}
