//! The sessions' Redis key layout. Every key of one user carries the user's slot tag, so
//! create, rotate, logout, list and the revocations each run as one script on one slot.
//!
//! The tag is the first 16 bits of SHA-256 of the user id, and it is visible in every session
//! id (cookie): whoever sees a cookie learns those 16 bits, narrowing a guessable user-id space
//! to about 1 in 65,536 of its candidates. Not salted: a salt would need another secret and
//! would move every key.

use super::id::TAG_LEN;
use crate::platform::secrets;

/// A user, as keys name them: a slot tag and a digest of the user id (never the raw id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub tag: String,
    pub digest: String,
}

impl UserRef {
    pub fn of(user_id: &str) -> Self {
        let digest = secrets::sha256(user_id.as_bytes());
        Self { tag: secrets::hex(&digest[..TAG_LEN / 2]), digest: secrets::base64url(&digest) }
    }
}

/// Key layout, below the configured prefix:
/// - `sess:{TTTT}:s:<sha256(id)>`: the session, one JSON string (or, for a rotated-away id,
///   a forward record to its successor during the grace period);
/// - `sess:{TTTT}:u:<sha256(user id)>`: the user's index, a sorted set of session digests
///   scored by expiry (ms).
pub fn session_key_prefix(key_prefix: &str, tag: &str) -> String {
    format!("{key_prefix}sess:{{{tag}}}:s:")
}

pub fn index_key(key_prefix: &str, user: &UserRef) -> String {
    format!("{key_prefix}sess:{{{}}}:u:{}", user.tag, user.digest)
}

#[cfg(test)]
mod tests {
    use super::super::id::SessionId;
    use super::*;

    #[test]
    fn keys_share_the_users_slot_tag() {
        let user = UserRef::of("alice@example.com");
        let id = SessionId::generate(&user.tag);
        let session = session_key_prefix("srp:", id.tag()) + id.digest().as_str();
        let index = index_key("srp:", &user);
        assert!(session.starts_with(&format!("srp:sess:{{{}}}:s:", user.tag)));
        assert!(index.starts_with(&format!("srp:sess:{{{}}}:u:", user.tag)));
        assert!(!session.contains(id.as_str()) && !index.contains("alice"));
    }
}
