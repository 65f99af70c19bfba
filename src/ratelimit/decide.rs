//! The decision: one script call for every limit of a decision (one round trip, atomic), the
//! reply decoded, and the policy's failure mode applied when Redis cannot be reached.
//!
//! Pooled refusals (issue 14): with `redis_fast_path` on, a decision of one token bucket
//! first reads the bucket's blocked-until marker through the pooled key-value store. The
//! script writes that marker on a consuming refusal, expiring when the wait ends, so a
//! refused client's flood is answered without opening a Redis connection on any instance.
//! The marker only ever refuses what the script refused (a cost at least as large, before
//! the wait ends by Redis's clock); everything else goes to the script. Window limits
//! decided alone go to the pool entirely (`pooled.rs`).
//!
//! Window limits keep one state on both paths (`windows.rs`): the script is given the window
//! counters as keys and the time elapsed in each window by this instance's clock, the same
//! reading the pooled path would decide by.

use crate::args;
use crate::lua_script;
use crate::platform::clock::unix_now_ms;
use crate::platform::fast_path::FastPath;
use crate::platform::log;
use crate::platform::redis::{Redis, RedisError};
use crate::platform::script::{self, Script};
use crate::Error;

use super::policy::{Algorithm, FailureMode, Limit};
use super::windows::{self, Window};

static DECIDE: Script = lua_script!(script::CLOCK, super::GCRA, include_str!("decide.lua"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Consume,
    DryRun,
    /// The current state: nothing consumed, `allowed` and `retry_after_ms` for the cost.
    Peek,
}

/// One limit to check, with its state key (without the deployment's key prefix).
pub(crate) struct Check<'a> {
    pub limit: &'a Limit,
    /// The name it is reported under (`RateLimit` list member).
    pub member: String,
    pub key: String,
}

/// One limit's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    pub allowed: bool,
    pub remaining: u64,
    pub reset_after_ms: u64,
    pub retry_after_ms: u64,
}

/// A limit as reported in the header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: String,
    pub quota: u64,
    pub window_secs: u64,
}

/// Every limit's answer, or none: Redis was unreachable under a `fail_open` policy.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub members: Vec<Member>,
    pub states: Option<Vec<State>>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.states.as_ref().is_none_or(|s| s.iter().all(|s| s.allowed))
    }

    /// The wait until every refusing limit would admit the request.
    pub fn retry_after_ms(&self) -> u64 {
        let states = self.states.iter().flatten();
        states.filter(|s| !s.allowed).map(|s| s.retry_after_ms).max().unwrap_or(0)
    }

    /// The members that refused.
    pub fn violated(&self) -> Vec<&str> {
        let states = self.states.iter().flatten();
        states
            .zip(&self.members)
            .filter(|(s, _)| !s.allowed)
            .map(|(_, m)| m.name.as_str())
            .collect()
    }
}

/// The blocked-until marker of a decision that is one token bucket: `<state key>:blocked`
/// (state keys end in their algorithm tag, so no marker is ever a state key).
pub(crate) fn marker_key(checks: &[Check]) -> Option<String> {
    match checks {
        [c] if matches!(c.limit.algorithm, Algorithm::TokenBucket { .. }) => {
            Some(format!("{}:blocked", c.key))
        }
        _ => None,
    }
}

/// A refusal read from the marker through the pooled store, when it applies to this cost.
/// Store errors fall through to the script (logged), which then answers as it always does.
fn pooled_refusal(marker: &str, cost: u64) -> Result<Option<State>, Error> {
    let Some(store) = FastPath::open()? else { return Ok(None) };
    let text = match store.get(marker) {
        Ok(Some(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
        Ok(None) => return Ok(None),
        Err(e) => {
            log::warn(
                "fast_path_failed",
                format_args!("pooled marker read failed, using the script: {e}"),
            );
            return Ok(None);
        }
    };
    let fields: Vec<i64> = text.split(' ').filter_map(|f| f.parse().ok()).collect();
    let [until, marked_cost, remaining, reset_at] = fields[..] else { return Ok(None) };
    if (cost as i64) < marked_cost {
        return Ok(None);
    }
    // The marker exists, so by Redis's clock the wait has not ended; this instance's clock
    // only sizes the answer, never less than 1 ms.
    let now = unix_now_ms();
    let ms = |at: i64| u64::try_from(at - now).unwrap_or(0).max(1);
    Ok(Some(State {
        allowed: false,
        remaining: u64::try_from(remaining).unwrap_or(0),
        reset_after_ms: ms(reset_at),
        retry_after_ms: ms(until),
    }))
}

fn run(
    redis: &Redis,
    checks: &[Check],
    windows: &[Option<Window>],
    marker: Option<&str>,
    cost: u64,
    mode: Mode,
) -> Result<Vec<State>, RedisError> {
    // Each limit's state (a window limit's current counter), then each window limit's
    // previous counter, then the marker.
    let mut keys: Vec<String> = checks
        .iter()
        .zip(windows)
        .map(|(c, w)| w.as_ref().map_or_else(|| redis.key(&c.key), Window::current))
        .collect();
    keys.extend(windows.iter().flatten().map(Window::previous));
    keys.extend(marker.map(|m| redis.key(m)));
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mode = match mode {
        Mode::Consume => "consume",
        Mode::DryRun => "dry",
        Mode::Peek => "peek",
    };
    let mut argv = args![cost, mode, checks.len() as u64];
    for (check, window) in checks.iter().zip(windows) {
        let limit = check.limit;
        let param = match limit.algorithm {
            Algorithm::TokenBucket { interval_us } => interval_us,
            _ => limit.window_ms(),
        };
        let elapsed = window.as_ref().map_or(0, |w| w.elapsed.unsigned_abs());
        argv.extend(args![limit.key_tag(), param, limit.quota, elapsed]);
    }
    let reply = redis.eval(&DECIDE, &key_refs, argv)?;
    if reply.len() != 4 * checks.len() {
        return Err(RedisError::UnexpectedReply(format!("{} values", reply.len())));
    }
    let n = |i: usize| -> Result<u64, RedisError> {
        u64::try_from(reply.int(i)?)
            .map_err(|_| RedisError::UnexpectedReply(format!("value {i} is negative")))
    };
    (0..checks.len())
        .map(|i| {
            Ok(State {
                allowed: n(4 * i)? == 1,
                remaining: n(4 * i + 1)?,
                reset_after_ms: n(4 * i + 2)?,
                retry_after_ms: n(4 * i + 3)?,
            })
        })
        .collect()
}

/// Decides on `redis` (the library's caller's connection, or the component's: the routes
/// decide through the library's `Limiter`). `pooled`: the
/// fast path is on (`redis_fast_path`). Only Redis being unreachable (or timing out) opens
/// the gate of a `fail_open` policy: a wrong password or a broken script is a mistake to fix,
/// and opening on it would hide it and hand whoever provokes it an unlimited quota; those
/// are errors.
pub(crate) fn evaluate_on(
    redis: &Redis,
    pooled: bool,
    checks: &[Check],
    cost: u64,
    mode: Mode,
    failure_mode: FailureMode,
) -> Result<Decision, Error> {
    let members = checks
        .iter()
        .map(|c| Member {
            name: c.member.clone(),
            quota: c.limit.quota,
            window_secs: c.limit.window_secs(),
        })
        .collect();
    // Markers are written and read only with the fast path on: nobody else reads them.
    let marker = marker_key(checks).filter(|_| pooled);
    if let (Some(marker), Mode::Consume | Mode::DryRun) = (&marker, mode) {
        if let Some(state) = pooled_refusal(&redis.key(marker), cost)? {
            return Ok(Decision { members, states: Some(vec![state]) });
        }
    }
    // One clock reading for every window of the decision, on whichever path decides it.
    // (Token buckets use Redis time: a decision of buckets alone needs no reading.)
    let now = if checks.iter().any(|c| c.limit.is_window()) {
        windows::now_ms().map_err(Error::from_api)?
    } else {
        0
    };
    let windows: Vec<Option<Window>> =
        checks.iter().map(|c| Window::of(&redis.key(&c.key), c.limit, now)).collect();
    // A window limit alone goes to the pool; when the breaker keeps this request off it, the
    // script decides in the same counters (one round trip).
    let store = match (checks, pooled) {
        ([check], true) if check.limit.is_window() => FastPath::open()?,
        _ => None,
    };
    let result = match (&store, checks, windows.as_slice()) {
        (Some(store), [check], [Some(window)]) => {
            // A store error is Redis being unavailable: the failure mode decides.
            super::pooled::decide(store, redis, check, window, cost, mode).map(|s| vec![s])
        }
        _ => run(redis, checks, &windows, marker.as_deref(), cost, mode),
    };
    match result {
        Ok(states) => Ok(Decision { members, states: Some(states) }),
        Err(e @ RedisError::Unavailable(_)) if failure_mode == FailureMode::Open => {
            let names: Vec<&str> = checks.iter().map(|c| c.member.as_str()).collect();
            log::warn(
                "failed_open",
                format_args!("{names:?} not checked, failing open ({}): {e}", e.reason()),
            );
            Ok(Decision { members, states: None })
        }
        Err(e) => Err(e.into()),
    }
}
