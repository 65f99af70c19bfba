//! The Redis key layout of one-time codes. Every key of a subject carries the subject's shard
//! hash tag `{otp:N}` (N from a keyed hash of the subject), so issuing and verifying are each
//! one script on one hash slot, even on clustered Redis; the raw subject and client never
//! appear in a key name (they are keyed hashes under the pepper).
//!
//! A subject and purpose has three lanes (code state, resend cooldown, issue budget and a
//! failure guard each): lane `k` serves the subject's known clients (clients that verified one
//! of its codes recently), lane `o` everyone else's digit codes and lane `l` everyone else's
//! links, which shares lane `o`'s guard but is never locked by it. So a flood from strangers
//! never spends the known clients' budget or locks them out, and guesses at codes never lock,
//! burn or replace a link.

use super::settings::Settings;
use crate::platform::redis::Redis;
use crate::platform::secrets;

/// The keys one issue or verify script receives, in its `KEYS` order.
pub(crate) struct Keys {
    names: Vec<String>,
    shard: u32,
}

/// Index of KEYS[13], the link pointer.
const LINK_POINTER: usize = 12;

impl Keys {
    /// `client` is the client id ([`client_id`] of the normalised client key), "" if none.
    pub(crate) fn new(
        redis: &Redis,
        settings: &Settings,
        subject: &str,
        purpose: &str,
        client: &str,
    ) -> Self {
        let digest = keyed(settings, &[b"otp-subject", subject.as_bytes()]);
        let shard = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
            % settings.outbox_shards;
        let id = secrets::base64url(&digest[4..20]);
        let tag = format!("otp:{{otp:{shard}}}");
        // Without a client key, the per-client keys are never touched (the script checks
        // ARGV); a fixed name keeps KEYS the same shape.
        let client = if client.is_empty() { "-" } else { client };
        // Budgets are the rate limiter's token buckets (strings); the names differ from the
        // sorted-set logs of earlier versions, which expire by themselves within the hour.
        let mut names = vec![
            format!("{tag}:known:{id}"),
            format!("{tag}:client-issue-budget:{client}"),
            format!("{tag}:client-failure-budget:{client}"),
            format!("otp:outbox:{{otp:{shard}}}"),
        ];
        let lane = |names: &mut Vec<String>, lane: &str| {
            names.push(format!("{tag}:code:{purpose}:{id}:{lane}"));
            names.push(format!("{tag}:cooldown:{purpose}:{id}:{lane}"));
            names.push(format!("{tag}:issue-budget:{id}:{lane}"));
        };
        for l in ["o", "k"] {
            lane(&mut names, l);
            names.push(format!("{tag}:guard:{purpose}:{id}:{l}"));
        }
        // KEYS[13], the link pointer: an unused name in the same slot until `with_link`.
        names.push(format!("{tag}:link:-"));
        lane(&mut names, "l");
        Self { names: names.iter().map(|n| redis.key(n)).collect(), shard }
    }

    /// Sets KEYS[13] to the link pointer of `token`: a link token issued for this subject, so
    /// in its shard.
    pub(crate) fn with_link(mut self, redis: &Redis, settings: &Settings, token: &str) -> Self {
        self.names[LINK_POINTER] = link_key(redis, settings, token).1;
        self
    }

    pub(crate) fn shard(&self) -> u32 {
        self.shard
    }

    pub(crate) fn all(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }
}

/// A link token's shard and pointer key. Link tokens are drawn until their shard is their
/// subject's (see [`super::issue`]), so the token alone finds the subject's slot and a link
/// verifies without the subject.
pub(crate) fn link_key(redis: &Redis, settings: &Settings, token: &str) -> (u32, String) {
    let digest = keyed(settings, &[b"otp-link", token.as_bytes()]);
    let shard =
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % settings.outbox_shards;
    let id = secrets::base64url(&digest[4..20]);
    (shard, redis.key(&format!("otp:{{otp:{shard}}}:link:{id}")))
}

/// A client key as stored: a keyed hash, so Redis never holds end users' addresses.
pub(crate) fn client_id(settings: &Settings, client: &str) -> String {
    secrets::base64url(&keyed(settings, &[b"otp-client", client.as_bytes()])[..16])
}

/// HMAC-SHA-256 under the pepper of NUL-separated parts (domain label first).
pub(crate) fn keyed(settings: &Settings, parts: &[&[u8]]) -> [u8; 32] {
    secrets::hmac_sha256(settings.pepper.expose().as_bytes(), &parts.join(&0u8))
}

/// What is stored for a code: bound to its purpose and subject, so a code never verifies
/// another purpose or subject even if state were copied between keys.
pub(crate) fn code_hmac(settings: &Settings, purpose: &str, subject: &str, code: &str) -> String {
    secrets::hex(&keyed(
        settings,
        &[b"otp-code", purpose.as_bytes(), subject.as_bytes(), code.as_bytes()],
    ))
}
