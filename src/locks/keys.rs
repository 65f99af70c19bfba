//! Redis key layout. A lock named `n` is `<prefix>lock:{n}`, a string `<fencing token>
//! <SHA-256 hex of the holder's token>` that expires with the lease; its fencing counter is
//! `<prefix>lock:{n}:fence`, which outlives the lease by [`FENCE_KEPT_MS`] (and by as far as
//! it runs ahead of Redis TIME: see acquire.lua). Both share the hash tag `{n}`, so each script
//! touches one slot; lock names cannot contain braces (see `valid_name`).

use crate::platform::redis::Redis;

/// How long a name's fencing counter is kept after its last lease ends: a day. Tokens keep
/// growing after it expires (the TIME floor, see acquire.lua); keeping it a while only keeps
/// `last_fencing_token` visible and spares names in steady use a restart from TIME.
pub const FENCE_KEPT_MS: u64 = 86_400_000;

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
