//! Redis key layout. A lock named `n` is `<prefix>lock:{n}`, a string `<fencing token>
//! <SHA-256 hex of the holder's token>` that expires with the lease; its fencing counter is
//! `<prefix>lock:{n}:fence`, which never expires (it must outlive every lease: see
//! acquire.lua). Both share the hash tag `{n}`, so each script touches one slot; lock names
//! cannot contain braces (see `valid_name`).

use crate::platform::redis::Redis;

/// The lock's key and its fencing counter's key.
pub fn lock_keys(redis: &Redis, name: &str) -> (String, String) {
    let lock = redis.key(&format!("lock:{{{name}}}"));
    let fence = format!("{lock}:fence");
    (lock, fence)
}

/// Longest lock name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Letters, digits and `_ - . :`: safe in a URL path as is, and never a hash tag.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}
