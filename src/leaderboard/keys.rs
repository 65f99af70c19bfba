//! Redis key layout. Every key of a board starts with `<prefix>lb:{<board>}:`, so all of a
//! board's periods share one hash slot and each script touches one slot:
//! - `<prefix>lb:{<board>}:<period id>:z`, a sorted set of `<stamp>|<member>` by score;
//! - `<prefix>lb:{<board>}:<period id>:h`, a hash of member -> its name in the sorted set.
//!
//! The period id (`all`, `2026-11-28`, `2026-W48`, `2026-11`, `2026-11-28T06:00Z`) is
//! computed inside the scripts from Redis TIME (period.lua), so the scripts receive the
//! prefix as `KEYS[1]` and build the period's keys from it, in the same slot. Board names
//! cannot contain braces (boards.rs), so the hash tag is exactly the board name.

use crate::platform::redis::Redis;

/// The prefix of every key of `board`.
pub fn board_prefix(redis: &Redis, board: &str) -> String {
    redis.key(&format!("lb:{{{board}}}:"))
}
