//! The one percent-decoder (RFC 3986 §2.1), strict: every `%` must start an escape of exactly
//! two hex digits. The leaderboard's query, the rate limiter's key in a path and the cache's
//! key all decode through it, so one input never means two things to two routes.
//!
//! (`u8::from_str_radix` takes a sign, so a decoder built on it reads `%+f` as 0x0F; the
//! `percent-encoding` crate's decoder passes a malformed escape through as text.)

/// A `%` that does not start a two-hex-digit escape, or (for [`decode_utf8`]) bytes that are
/// not UTF-8 once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PercentError {
    MalformedEscape,
    NotUtf8,
}

impl std::fmt::Display for PercentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MalformedEscape => "a '%' is not followed by two hex digits",
            Self::NotUtf8 => "the decoded text is not UTF-8",
        })
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; with `plus_is_space` (form-encoded query text), `+` is a space.
pub fn decode(text: &str, plus_is_space: bool) -> Result<Vec<u8>, PercentError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PercentError::MalformedEscape);
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// [`decode`] into UTF-8 text.
pub fn decode_utf8(text: &str, plus_is_space: bool) -> Result<String, PercentError> {
    String::from_utf8(decode(text, plus_is_space)?).map_err(|_| PercentError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode("a%2Fb%2fc%20", false).unwrap(), b"a/b/c ");
        assert_eq!(decode("a+b", false).unwrap(), b"a+b");
        assert_eq!(decode("a+b%2B", true).unwrap(), b"a b+");
        assert_eq!(decode_utf8("%C3%A9", false).unwrap(), "é");
        assert_eq!(decode("", false).unwrap(), b"");
    }

    #[test]
    fn refuses_malformed_escapes() {
        for bad in ["%+f", "%-1", "%+1", "% f", "%f", "%", "a%", "%zz", "%g0", "%0g", "%%41"] {
            assert_eq!(decode(bad, false), Err(PercentError::MalformedEscape), "{bad}");
            assert_eq!(decode(bad, true), Err(PercentError::MalformedEscape), "{bad}");
        }
        assert_eq!(decode_utf8("%FF", false), Err(PercentError::NotUtf8));
    }
}
