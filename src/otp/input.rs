//! What callers send, normalised and bounded before it reaches Redis: subjects (emails, phone
//! numbers, opaque user ids), purposes, channels and the two shapes of code.

/// Longest subject (an email address is at most 254 bytes).
pub(crate) const MAX_SUBJECT_LEN: usize = 254;
/// Longest channel name.
pub(crate) const MAX_CHANNEL_LEN: usize = 32;
/// Random bytes in a link token: 256 bits, 43 base64url characters.
pub(crate) const LINK_TOKEN_BYTES: usize = 32;
pub(crate) const LINK_TOKEN_LEN: usize = 43;

/// The two kinds of secret the component issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decimal digits a person types (`otp_code_length`).
    Code,
    /// A URL-safe token for a link (password reset, magic login).
    Link,
}

impl Format {
    pub(crate) fn parse(text: Option<&str>) -> Result<Self, &'static str> {
        match text {
            None | Some("code") => Ok(Self::Code),
            Some("link") => Ok(Self::Link),
            Some(_) => Err("format must be \"code\" or \"link\""),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Link => "link",
        }
    }
}

/// The canonical form of a subject, so `" Alice@Example.COM"` and `"alice@example.com"` are
/// one subject:
/// - an email (contains `@`): trimmed and lower-cased as a whole (mail providers treat the
///   local part case-insensitively in practice; ASCII letters only, other text is kept);
/// - a phone number (starts with `+`): spaces, dots, dashes and parentheses removed, then
///   E.164: `+` and 8 to 15 digits;
/// - anything else is an opaque id (a user id), kept as is: printable, no whitespace.
pub(crate) fn normalize_subject(raw: &str) -> Result<String, &'static str> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("subject is empty");
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err("subject is longer than 254 bytes");
    }
    if let Some(digits) = s.strip_prefix('+') {
        let digits: String =
            digits.chars().filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')')).collect();
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a phone subject must be + and 8 to 15 digits (E.164)");
        }
        return Ok(format!("+{digits}"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("subject must not contain whitespace or control characters");
    }
    if s.contains('@') {
        let (local, domain) = s.rsplit_once('@').unwrap_or(("", ""));
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || local.contains('@') || !domain_ok {
            return Err(
                "subject is not an email address (one @, a local part and a dotted domain)",
            );
        }
        return Ok(s.to_ascii_lowercase());
    }
    Ok(s.to_owned())
}

/// A channel name for the delivery worker: `email`, `sms`, ... (1-32 of a-z, 0-9, `_`, `-`).
pub(crate) fn parse_channel(raw: Option<&str>) -> Result<String, &'static str> {
    let c = raw.unwrap_or("email").trim();
    let ok = (1..=MAX_CHANNEL_LEN).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(c.to_owned())
    } else {
        Err("channel must be 1-32 of a-z, 0-9, _ and - (e.g. \"email\" or \"sms\")")
    }
}

/// Longest client key (an IPv6 address with zone, a device id).
pub(crate) const MAX_CLIENT_LEN: usize = 128;

/// The caller's client key in its one canonical form, from which every key derived from it
/// is made (budgets and the known-client mark alike: padding or respelling a key must never
/// buy a fresh budget). 1-128 printable ASCII characters after trimming; an IP address is
/// written the standard way (`2001:DB8:0::1` is `2001:db8::1`, `::ffff:192.0.2.1` is
/// `192.0.2.1`); anything else (a device key) is kept as is. Only its keyed hash is stored.
pub(crate) fn normalize_client(raw: &str) -> Result<String, &'static str> {
    let c = raw.trim();
    if !(1..=MAX_CLIENT_LEN).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "client must be 1-128 printable ASCII characters (the end user's address or device key)",
        );
    }
    Ok(match c.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => c.to_owned(),
    })
}

/// A submitted code, accepted only in one of the two shapes the component issues, so typos
/// and junk are rejected without spending an attempt; with the format it has (the stored
/// format must match, so a link token cannot be attacked with 6-digit guesses).
pub(crate) fn parse_code(raw: &str, code_length: usize) -> Result<(&str, Format), String> {
    let c = raw.trim();
    let digits = c.len() == code_length && c.bytes().all(|b| b.is_ascii_digit());
    let token = c.len() == LINK_TOKEN_LEN
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if digits {
        Ok((c, Format::Code))
    } else if token {
        Ok((c, Format::Link))
    } else {
        Err(format!(
            "code must be {code_length} digits, or a {LINK_TOKEN_LEN}-character link token"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_normalised() {
        assert_eq!(normalize_subject("  Alice@Example.COM ").unwrap(), "alice@example.com");
        assert_eq!(normalize_subject("+44 (20) 7946-0958").unwrap(), "+442079460958");
        assert_eq!(normalize_subject("user:{42}").unwrap(), "user:{42}");
        for bad in [
            "",
            "   ",
            "a b",
            "@x.com",
            "a@",
            "a@b",
            "a@.com",
            "a@b..com",
            "+12",
            "+1234567890123456",
            "+12ab5678",
            "x\u{0}y",
        ] {
            assert!(normalize_subject(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_subject(&"a".repeat(255)).is_err());
        assert!(normalize_subject(&"a".repeat(254)).is_ok());
    }

    #[test]
    fn codes_have_two_shapes() {
        assert_eq!(parse_code(" 012345 ", 6).unwrap(), ("012345", Format::Code));
        assert_eq!(parse_code(&"A".repeat(43), 6).unwrap().1, Format::Link);
        assert_eq!(normalize_client(" 203.0.113.7\t").unwrap(), "203.0.113.7");
        assert_eq!(normalize_client("2001:DB8:0:0::1").unwrap(), "2001:db8::1");
        assert_eq!(normalize_client("::ffff:192.0.2.1").unwrap(), "192.0.2.1");
        assert_eq!(normalize_client(" Device-Key ").unwrap(), "Device-Key");
        assert!(normalize_client("").is_err() && normalize_client("a b").is_err());
        assert!(normalize_client(&"a".repeat(129)).is_err());
        assert!(parse_code("01234", 6).is_err());
        assert!(parse_code("01234a", 6).is_err());
        assert!(parse_code(&"A".repeat(43), 6).is_ok());
        assert!(parse_code(&format!("{}=", "A".repeat(42)), 6).is_err());
    }

    #[test]
    fn channels_and_formats() {
        assert_eq!(parse_channel(None).unwrap(), "email");
        assert_eq!(parse_channel(Some("sms")).unwrap(), "sms");
        assert!(parse_channel(Some("SMS")).is_err());
        assert!(parse_channel(Some("")).is_err());
        assert_eq!(Format::parse(Some("link")), Ok(Format::Link));
        assert!(Format::parse(Some("pdf")).is_err());
    }
}
