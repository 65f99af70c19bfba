//! Session ids and the Redis keys derived from them.
//!
//! An id is `TTTT.SECRET`: `TTTT` is the user's slot tag (4 hex digits, the first 16 bits of
//! SHA-256 of the user id) and `SECRET` is 32 CSPRNG bytes in base64url (256 bits). The tag
//! lets a request that carries only the id name its session key, and that key shares the
//! hash slot of the user's index, so create, rotate, logout, list and revoke-all each run as
//! one script on one slot. Redis only ever sees SHA-256 of the whole id.

use crate::platform::secrets;

/// Random bytes in an id: 256 bits, twice OWASP's floor of 128.
const SECRET_BYTES: usize = 32;
/// Hex digits of the slot tag: 65,536 tags spread users over all 16,384 cluster slots.
pub(crate) const TAG_LEN: usize = 4;
/// base64url length of [`SECRET_BYTES`] without padding.
const SECRET_LEN: usize = 43;
/// Length of a well-formed id; anything else is refused before Redis is asked.
pub const ID_LEN: usize = TAG_LEN + 1 + SECRET_LEN;

/// A well-formed session id. Its `Debug` hides the secret part.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({}.***)", self.tag())
    }
}

impl SessionId {
    /// A fresh id for a user with slot tag `tag`.
    pub fn generate(tag: &str) -> Self {
        Self(format!("{tag}.{}", secrets::random_token(SECRET_BYTES)))
    }

    /// Checks the shape only: length, a lower-case hex tag, a dot, and canonical base64url
    /// of exactly 32 bytes. Whether the session exists is Redis's answer.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != ID_LEN {
            return None;
        }
        let (tag, rest) = text.split_at(TAG_LEN);
        let secret = rest.strip_prefix('.')?;
        let tag_ok = tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let secret_ok =
            secrets::from_base64url(secret).is_some_and(|bytes| bytes.len() == SECRET_BYTES);
        (tag_ok && secret_ok).then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn tag(&self) -> &str {
        &self.0[..TAG_LEN]
    }

    /// The id's name in Redis: base64url of its SHA-256. The id itself is never stored.
    pub fn digest(&self) -> String {
        secrets::base64url(&secrets::sha256(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_carry_the_tag() {
        let user = super::super::keys::UserRef::of("u1");
        let id = SessionId::generate(&user.tag);
        assert_eq!(id.as_str().len(), ID_LEN);
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.tag(), user.tag);
        assert_ne!(SessionId::generate(&user.tag), id);
        assert!(!format!("{id:?}").contains(&id.as_str()[5..]));
    }

    #[test]
    fn malformed_ids_are_refused() {
        let good = SessionId::generate("0a1b");
        let s = good.as_str();
        for bad in [
            String::new(),
            s[..ID_LEN - 1].to_owned(),
            format!("{s}A"),
            s.replacen('.', "-", 1),
            format!("0A1B{}", &s[4..]),
            format!("{}!", &s[..ID_LEN - 1]),
            format!("{}{{x}}", &s[..ID_LEN - 3]),
            // Non-canonical final character (trailing bits set) is not an id we issued.
            format!("{}B", &s[..ID_LEN - 1]),
        ] {
            assert_eq!(SessionId::parse(&bad), None, "{bad:?}");
        }
    }
}
