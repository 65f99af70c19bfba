//! The one Lua script loader. A script is assembled at compile time from parts (shared
//! preludes such as [`CLOCK`], then the service's file), stripped of comment lines, blank lines
//! and indentation (the comments document the scripts for people; shipped, they would cost
//! KBs of `.wasm`), and sent by SHA1 (`EVALSHA`) with a fallback to `EVAL` in
//! [`super::redis::Redis::eval`].
//!
//! ```ignore
//! static DECIDE: Script = lua_script!(script::CLOCK, include_str!("decide.lua"));
//! ```

use std::sync::OnceLock;

/// Prelude: `now_us` and `now_ms` from Redis `TIME`, the clock every instance agrees on.
pub const CLOCK: &str = include_str!("lua/clock.lua");

/// A Lua script as Redis receives it: its stripped parts, in order. The parts stay separate
/// in the `.wasm` so that a prelude shared by several scripts (the clock, a leaderboard's
/// periods, the GCRA) is stored once (identical constants are merged at link time), not once
/// per script; the SHA1 is taken over them in order, and `EVAL` (rare) joins them.
pub struct Script {
    parts: &'static [&'static str],
    sha1: OnceLock<String>,
}

impl Script {
    pub const fn new(parts: &'static [&'static str]) -> Self {
        Self { parts, sha1: OnceLock::new() }
    }

    /// The whole script as bytes, for `EVAL`.
    pub fn source_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for part in self.parts {
            bytes.extend_from_slice(part.as_bytes());
        }
        bytes
    }

    /// The whole script.
    pub fn source(&self) -> String {
        self.parts.concat()
    }

    /// The script's SHA1, as `SCRIPT LOAD` would answer.
    pub fn sha1(&self) -> &str {
        self.sha1.get_or_init(|| {
            let mut sha1 = sha1_smol::Sha1::new();
            for part in self.parts {
                sha1.update(part.as_bytes());
            }
            sha1.digest().to_string()
        })
    }
}

/// Builds a [`Script`] from `&'static str` parts, each stripped at compile time.
#[macro_export]
macro_rules! lua_script {
    ($($part:expr),+ $(,)?) => {{
        const PARTS: &[&str] = &[$($crate::lua_part!($part)),+];
        $crate::platform::script::Script::new(PARTS)
    }};
}

/// One part of a [`lua_script!`], stripped at compile time.
#[doc(hidden)]
#[macro_export]
macro_rules! lua_part {
    ($part:expr) => {{
        const LEN: usize = $crate::platform::script::strip_lua::<0>(&[$part]).1;
        const BYTES: [u8; LEN] = $crate::platform::script::strip_lua::<LEN>(&[$part]).0;
        match ::core::str::from_utf8(&BYTES) {
            Ok(source) => source,
            Err(_) => panic!("a Lua script is not UTF-8"),
        }
    }};
}

/// `parts` joined, without the lines that are blank or only a `--` comment and without any
/// line's indentation, as the first `N` bytes, with the full stripped length (call with
/// `N = 0` to learn it). Lua needs neither; no script of ours has a long string or block
/// comment. A part that does not end with a newline gets one, so parts never share a line.
pub const fn strip_lua<const N: usize>(parts: &[&str]) -> ([u8; N], usize) {
    let mut out = [0u8; N];
    let mut len = 0;
    let mut last = b'\n';
    let mut p = 0;
    while p < parts.len() {
        let src = parts[p].as_bytes();
        let mut i = 0;
        while i < src.len() {
            while i < src.len() && (src[i] == b' ' || src[i] == b'\t') {
                i += 1;
            }
            let skip = i >= src.len()
                || src[i] == b'\n'
                || (src[i] == b'-' && i + 1 < src.len() && src[i + 1] == b'-');
            while i < src.len() {
                let b = src[i];
                i += 1;
                if !skip {
                    if len < N {
                        out[len] = b;
                    }
                    len += 1;
                    last = b;
                }
                if b == b'\n' {
                    break;
                }
            }
        }
        if last != b'\n' {
            if len < N {
                out[len] = b'\n';
            }
            len += 1;
            last = b'\n';
        }
        p += 1;
    }
    (out, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_matches_redis() {
        // `redis-cli SCRIPT LOAD "return 1"` answers this digest.
        assert_eq!(Script::new(&["return 1"]).sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        // Over the parts in order, as over the joined text.
        assert_eq!(
            Script::new(&["ret", "urn 1"]).sha1(),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }

    #[test]
    fn strips_comments_blank_lines_and_indentation_across_parts() {
        let (bytes, len) = strip_lua::<64>(&[
            "-- doc\n  local a = 1",
            "\n\t-- x\n  if a then\n\treturn 'x -- y'\nend",
        ]);
        assert_eq!(&bytes[..len], b"local a = 1\nif a then\nreturn 'x -- y'\nend\n");
        assert_eq!(strip_lua::<0>(&["  x\n"]).1, 2);
    }

    #[test]
    fn the_clock_prelude_defines_both_units() {
        static S: Script = crate::lua_script!(CLOCK, "return {now_us, now_ms}\n");
        assert!(S.source().starts_with("local t = redis.call('TIME')\n"));
        assert!(
            S.source().contains("local now_ms")
                && S.source().ends_with("return {now_us, now_ms}\n")
        );
    }
}
