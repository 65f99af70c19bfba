//! The Redis key layout. Decision API state and gateway state live in separate namespaces
//! (`rl:a:` and `rl:g:`), so no API call can name a gateway caller's state.
//!
//! - API: `rl:a:{<policy>:<key>}:[<limit>:]<alg>`: one slot per (policy, key), so every
//!   limit of one decision is in one slot. Policy and limit names hold no `:`, `{` or `}`
//!   and the suffix is parsed from the end, so distinct pairs never share a key.
//! - Gateway: `rl:g:{gw}:<policy>:<identity>:[<limit>:]<alg>`, identity `ip:<address or
//!   IPv6 prefix>` or `key:<HMAC of the API key>`. One decision checks the caller's key and
//!   address together in one script, and a key is used from many addresses, so the gateway's
//!   keys share one slot (`{gw}`): on a clustered Redis the gateway's counters live on one
//!   shard, the price of checking both limits atomically.
//!
//! `alg` (`fw`, `sw`, `tb`) keeps a changed algorithm from reading another's state. A token
//! bucket's state is its state key; a window limit's is its per-window counters, the state
//! key plus `:<window index>` (`windows.rs`). A token bucket's blocked-until marker (fast
//! path on) is its state key plus `:blocked`. All share the state key's slot, and state keys
//! end in their algorithm tag, so no counter or marker is ever a state key or each other.

use crate::platform::secrets::sha256;

use super::policy::{Algorithm, Limit, Policy};

fn suffix(limit: &Limit) -> String {
    match &limit.part {
        Some(part) => format!("{part}:{}", limit.key_tag()),
        None => limit.key_tag().to_owned(),
    }
}

/// The state key of one limit of a policy for a key given to the decision API.
pub(crate) fn api(policy: &Policy, limit: &Limit, key: &str) -> String {
    format!("rl:a:{{{}:{key}}}:{}", policy.name, suffix(limit))
}

/// The state key of one limit of a policy for a gateway identity.
pub(crate) fn gateway(policy: &Policy, limit: &Limit, identity: &str) -> String {
    format!("rl:g:{{gw}}:{}:{identity}:{}", policy.name, suffix(limit))
}

/// Where a fixed window of this key starts, in ms past a multiple of the window: derived
/// from the key, so windows of different keys roll over at different instants (and refused
/// clients do not all retry together), yet every instance computes the same offset.
pub(crate) fn window_offset_ms(key: &str, limit: &Limit) -> u64 {
    match limit.algorithm {
        Algorithm::FixedWindow { window_ms } => {
            let digest = sha256(key.as_bytes());
            let mut head = [0u8; 8];
            head.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(head) % window_ms
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::policy::Policies;

    #[test]
    fn namespaces_and_offsets() {
        let p = Policies::parse(
            r#"{"p": {"algorithm": "fixed_window", "limit": 5, "window": "1s"},
                "m": {"limits": {"burst": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 1}}}}"#,
        )
        .unwrap();
        let (one, many) = (p.get("p").unwrap(), p.get("m").unwrap());
        assert_eq!(api(one, &one.limits[0], "k"), "rl:a:{p:k}:fw");
        assert_eq!(api(many, &many.limits[0], "k"), "rl:a:{m:k}:burst:tb");
        assert_eq!(gateway(one, &one.limits[0], "ip:1.2.3.4"), "rl:g:{gw}:p:ip:1.2.3.4:fw");
        let offsets: std::collections::HashSet<u64> =
            (0..50).map(|i| window_offset_ms(&format!("k{i}"), &one.limits[0])).collect();
        assert!(offsets.len() > 40 && offsets.iter().all(|o| *o < 1000), "{offsets:?}");
        assert_eq!(window_offset_ms("k", &many.limits[0]), 0);
    }
}
