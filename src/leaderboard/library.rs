//! Leaderboards as a library: [`Leaderboards`] and [`Board`] submit and read scores with the
//! same boards, scripts and keys as `/api/leaderboards`, so both see one board.

use crate::platform::redis::Redis;
use crate::{Config, Error};

use super::boards::{Board, Boards, Mode};
use super::input;
use super::settings::vars;
use super::store;

/// The boards of `leaderboard_boards`.
///
/// ```no_run
/// use spin_redis_patterns::leaderboard::Leaderboards;
/// use spin_redis_patterns::{Config, Redis};
///
/// # fn main() -> Result<(), spin_redis_patterns::Error> {
/// let config = Config::spin().set("leaderboard_boards", r#"{"global": {"mode": "best"}}"#);
/// let redis = Redis::from_config(&config)?;
/// let boards = Leaderboards::new(&config)?;
/// let board = boards.board("global")?;
/// board.submit(&redis, "alice", 120.0)?;
/// for entry in board.top(&redis, 0, 10)?.entries {
///     println!("{}. {} {}", entry.rank, entry.member, entry.score);
/// }
/// if let Some(me) = board.rank(&redis, "alice", 2)? {
///     println!("alice is #{} of {}", me.rank, me.total);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Leaderboards {
    boards: Boards,
}

impl Leaderboards {
    /// The boards declared in `leaderboard_boards` (a JSON object of name -> `{"mode",
    /// "period"?, "window_minutes"?, "retention_hours"?, "max_members"?}`).
    pub fn new(config: &Config) -> Result<Self, Error> {
        let text = config.get(vars::BOARDS)?;
        let boards = Boards::parse(&text)
            .map_err(|e| Error::Config(crate::ConfigError::new(vars::BOARDS, e)))?;
        Ok(Self { boards })
    }

    /// The board named `name`; 404 `unknown_board` when none is declared.
    pub fn board(&self, name: &str) -> Result<&Board, Error> {
        self.boards.get(name).ok_or_else(|| {
            Error::invalid(404, "unknown_board", format!("there is no leaderboard named {name:?}"))
        })
    }

    /// Every declared board.
    pub fn iter(&self) -> impl Iterator<Item = &Board> {
        self.boards.iter()
    }
}

/// One ranked member.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// From 1; equal scores rank by who reached the score first.
    pub rank: u64,
    /// The member name.
    pub member: String,
    /// The score.
    pub score: f64,
}

/// What a submission did.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// False when the score did not change (a `best` board and no improvement).
    pub changed: bool,
    /// The member's score now.
    pub score: f64,
    /// From 1; `None` when the member cap removed the member at once.
    pub rank: Option<u64>,
    /// Members on the board.
    pub total: u64,
    /// The period id the score landed in (`all` for all-time boards).
    pub period: String,
}

/// A page of the board.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Members on the board.
    pub total: u64,
    /// The period id.
    pub period: String,
    /// Best first.
    pub entries: Vec<Ranked>,
}

/// What [`Board::remove_of`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Whether the member had a score there.
    pub removed: bool,
    /// The period id it was removed from (`all` for all-time boards).
    pub period: String,
}

/// A member's place and neighbours.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// From 1.
    pub rank: u64,
    /// The member's score.
    pub score: f64,
    /// Members on the board.
    pub total: u64,
    /// The period id.
    pub period: String,
    /// Better ranked neighbours, best first.
    pub above: Vec<Ranked>,
    /// Worse ranked neighbours, best first.
    pub below: Vec<Ranked>,
}

fn ranked(entries: Vec<store::Entry>) -> Vec<Ranked> {
    entries
        .into_iter()
        .map(|e| Ranked { rank: e.rank + 1, member: e.member, score: e.score })
        .collect()
}

fn member(name: &str) -> Result<&str, Error> {
    input::member(name).map_err(Error::from_api)
}

/// `""` (the current period), `previous`, or a period id, as the scripts take it.
fn period<'a>(board: &Board, period: &'a str) -> Result<&'a str, Error> {
    match period {
        "" | "current" => Ok(""),
        "previous" => Ok("previous"),
        id if board.period.is_id(id) => Ok(id),
        id => Err(Error::invalid(
            400,
            "invalid_query",
            format!(
                "period {id:?} is not current, previous or a {} period id",
                board.period.kind()
            ),
        )),
    }
}

impl Board {
    /// Records `score` for `member` as the board's mode says: `best` keeps the highest,
    /// `latest` the last, `increment` adds it.
    pub fn submit(&self, redis: &Redis, member_name: &str, score: f64) -> Result<Submitted, Error> {
        let member = member(member_name)?;
        if !score.is_finite() {
            return Err(Error::invalid(400, "invalid_score", "the number must be finite"));
        }
        store::submit(redis, self, member, score)?.map_err(|_| {
            Error::invalid(
                422,
                "score_overflow",
                "the increment would take the score beyond the largest number a score can hold",
            )
        })
    }

    /// Whether submissions add up (`increment`) or replace (`best`, `latest`).
    pub fn adds_up(&self) -> bool {
        self.mode == Mode::Increment
    }

    /// `limit` entries from rank `offset + 1` of the current period.
    pub fn top(&self, redis: &Redis, offset: u64, limit: u64) -> Result<Page, Error> {
        self.top_of(redis, "", offset, limit)
    }

    /// `limit` entries from rank `offset + 1` of `period`: `current`, `previous` or a
    /// period id (`2026-11-28`, `2026-W48`, ...).
    pub fn top_of(
        &self,
        redis: &Redis,
        period_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page, Error> {
        let period = period(self, period_id)?;
        let page = store::top(redis, self, period, offset, limit)?;
        Ok(Page { total: page.total, period: page.period, entries: ranked(page.entries) })
    }

    /// The member's rank and score in the current period with up to `neighbours` entries
    /// on each side; `None` when it has no score.
    pub fn rank(
        &self,
        redis: &Redis,
        member_name: &str,
        neighbours: u64,
    ) -> Result<Option<Standing>, Error> {
        self.rank_of(redis, "", member_name, neighbours)
    }

    /// As [`Board::rank`], in `period`.
    pub fn rank_of(
        &self,
        redis: &Redis,
        period_id: &str,
        member_name: &str,
        neighbours: u64,
    ) -> Result<Option<Standing>, Error> {
        Ok(self.standing_of(redis, period_id, member_name, neighbours)?.1)
    }

    /// As [`Board::rank_of`], with the period's id even when the member has no score.
    pub(crate) fn standing_of(
        &self,
        redis: &Redis,
        period_id: &str,
        member_name: &str,
        neighbours: u64,
    ) -> Result<(String, Option<Standing>), Error> {
        let member = member(member_name)?;
        let period = period(self, period_id)?;
        let found = store::standing(redis, self, period, member, neighbours)?;
        let Some((rank, window)) = found.window else { return Ok((found.period, None)) };
        let at = window.iter().position(|e| e.rank == rank).ok_or_else(|| {
            Error::Redis(crate::RedisError::UnexpectedReply(
                "the member is missing from its own neighbourhood".into(),
            ))
        })?;
        let mut window = ranked(window);
        let below = window.split_off(at + 1);
        let me = window.pop().unwrap_or_else(|| unreachable!());
        Ok((
            found.period.clone(),
            Some(Standing {
                rank: me.rank,
                score: me.score,
                total: found.total,
                period: found.period,
                above: window,
                below,
            }),
        ))
    }

    /// Removes the member from the current period; true when it was there.
    pub fn remove(&self, redis: &Redis, member_name: &str) -> Result<bool, Error> {
        Ok(self.remove_of(redis, "", member_name)?.removed)
    }

    /// Removes the member from `period` (`current`, `previous` or a period id), as
    /// `DELETE /api/leaderboards/{board}/members/{member}?period=` does.
    pub fn remove_of(
        &self,
        redis: &Redis,
        period_id: &str,
        member_name: &str,
    ) -> Result<Removed, Error> {
        let member = member(member_name)?;
        let period = period(self, period_id)?;
        let (removed, period) = store::remove(redis, self, period, member)?;
        Ok(Removed { removed, period })
    }
}
