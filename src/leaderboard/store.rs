//! The leaderboard's Redis operations: one Lua script, one round trip, one hash slot each.

use crate::args;
use crate::lua_script;
use crate::platform::redis::{Redis, RedisError, Reply};
use crate::platform::script::{Script, CLOCK};

use super::boards::Board;
use super::keys::board_prefix;
use super::library::Submitted;

static SUBMIT: Script = lua_script!(CLOCK, include_str!("period.lua"), include_str!("submit.lua"));
static TOP: Script = lua_script!(CLOCK, include_str!("period.lua"), include_str!("top.lua"));
static MEMBER: Script = lua_script!(CLOCK, include_str!("period.lua"), include_str!("member.lua"));
static REMOVE: Script = lua_script!(CLOCK, include_str!("period.lua"), include_str!("remove.lua"));

/// One ranked entry; `rank` counts from 0 here (the API adds 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub rank: u64,
    pub member: String,
    pub score: f64,
}

pub struct Page {
    pub total: u64,
    pub period: String,
    pub entries: Vec<Entry>,
}

pub struct Standing {
    pub total: u64,
    pub period: String,
    /// The member's entry and its neighbours in rank order; `None` when it is not on the board.
    pub window: Option<(u64, Vec<Entry>)>,
}

/// An increment that would carry the score past the largest double.
pub struct Overflow;

fn unexpected(what: &str) -> RedisError {
    RedisError::UnexpectedReply(what.to_owned())
}

fn count(reply: &Reply, i: usize) -> Result<u64, RedisError> {
    u64::try_from(reply.int(i)?).map_err(|_| unexpected("a count is negative"))
}

/// A score as Redis writes it (`%.17g`, so the double round-trips exactly).
fn score(reply: &Reply, i: usize) -> Result<f64, RedisError> {
    reply
        .string(i)?
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .ok_or_else(|| unexpected("a score is not a finite number"))
}

/// Member/score pairs from index `from` on, ranked from `first_rank`.
fn entries(reply: &Reply, from: usize, first_rank: u64) -> Result<Vec<Entry>, RedisError> {
    (from..reply.len())
        .step_by(2)
        .zip(first_rank..)
        .map(|(i, rank)| {
            Ok(Entry { rank, member: reply.string(i)?.to_owned(), score: score(reply, i + 1)? })
        })
        .collect()
}

/// The arguments naming a board's period: kind, window, and which period ('' = current).
fn period_args(board: &Board) -> (&'static str, u64) {
    (board.period.kind(), board.period.window_ms())
}

pub fn submit(
    redis: &Redis,
    board: &Board,
    member: &str,
    value: f64,
) -> Result<Result<Submitted, Overflow>, RedisError> {
    let (kind, window) = period_args(board);
    let reply = redis.eval(
        &SUBMIT,
        &[&board_prefix(redis, &board.name)],
        args![
            board.mode.as_str(),
            value,
            kind,
            window,
            board.retention_ms,
            board.max_members,
            member
        ],
    )?;
    if reply.int(0)? == -1 {
        return Ok(Err(Overflow));
    }
    // From 1, as the API counts; `None` when the member cap removed the member at once (it
    // ranked last of a full board).
    let rank = if reply.is_nil(2)? { None } else { Some(count(&reply, 2)? + 1) };
    Ok(Ok(Submitted {
        changed: reply.int(0)? == 1,
        score: score(&reply, 1)?,
        rank,
        total: count(&reply, 3)?,
        period: reply.string(4)?.to_owned(),
    }))
}

pub fn top(
    redis: &Redis,
    board: &Board,
    period: &str,
    offset: u64,
    limit: u64,
) -> Result<Page, RedisError> {
    let (kind, window) = period_args(board);
    let reply = redis.eval(
        &TOP,
        &[&board_prefix(redis, &board.name)],
        args![kind, window, period, offset, limit],
    )?;
    Ok(Page {
        total: count(&reply, 0)?,
        period: reply.string(1)?.to_owned(),
        entries: entries(&reply, 2, offset)?,
    })
}

pub fn standing(
    redis: &Redis,
    board: &Board,
    period: &str,
    member: &str,
    neighbours: u64,
) -> Result<Standing, RedisError> {
    let (kind, window) = period_args(board);
    let reply = redis.eval(
        &MEMBER,
        &[&board_prefix(redis, &board.name)],
        args![kind, window, period, member, neighbours],
    )?;
    let window = if reply.len() > 2 {
        let rank = count(&reply, 2)?;
        Some((rank, entries(&reply, 4, count(&reply, 3)?)?))
    } else {
        None
    };
    Ok(Standing { total: count(&reply, 0)?, period: reply.string(1)?.to_owned(), window })
}

/// Removes a member; returns whether it was there, and the period id.
pub fn remove(
    redis: &Redis,
    board: &Board,
    period: &str,
    member: &str,
) -> Result<(bool, String), RedisError> {
    let (kind, window) = period_args(board);
    let reply = redis.eval(
        &REMOVE,
        &[&board_prefix(redis, &board.name)],
        args![kind, window, period, member],
    )?;
    Ok((reply.int(0)? == 1, reply.string(1)?.to_owned()))
}
