//! The boards, as the `leaderboard_boards` variable declares them: a JSON object of
//! name -> `{"mode", "period"?, "window_minutes"?, "retention_hours"?, "max_members"?}`.

use serde::Deserialize;

use crate::platform::json::{Object, UniqueMap};

/// Longest board name.
pub const MAX_BOARD_NAME_LEN: usize = 64;
/// Default and largest cap on members per board (per period).
pub const DEFAULT_MAX_MEMBERS: u64 = 100_000;
pub const MAX_MAX_MEMBERS: u64 = 10_000_000;
/// Default retention of a finished period: a week, long enough to read last period's winners.
pub const DEFAULT_RETENTION_HOURS: u64 = 168;
/// Longest retention: about ten years.
pub const MAX_RETENTION_HOURS: u64 = 24 * 3660;
/// Longest fixed window: a year.
pub const MAX_WINDOW_MINUTES: u64 = 366 * 24 * 60;

/// How a submission changes a member's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep the highest score submitted (`ZADD GT`'s rule: only a strictly higher one replaces).
    Best,
    /// Keep the last score submitted.
    Latest,
    /// Add `increment` to the score (`ZINCRBY`'s rule).
    Increment,
}

impl Mode {
    /// `best`, `latest` or `increment`, as `leaderboard_boards` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Best => "best",
            Self::Latest => "latest",
            Self::Increment => "increment",
        }
    }
}

/// Which board a submission lands in: one for all time, or one per UTC calendar period or
/// fixed window (the period's id is part of the Redis key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// One board for all time.
    All,
    /// UTC calendar days: `2026-11-28`.
    Daily,
    /// ISO 8601 weeks, Monday to Sunday, named by ISO week-numbering year: `2026-W48`.
    Weekly,
    /// UTC calendar months: `2026-11`.
    Monthly,
    /// Windows of this many ms counted from the Unix epoch, named by their UTC start.
    Window(u64),
}

impl Period {
    /// `all`, `daily`, `weekly`, `monthly` or `window`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Window(_) => "window",
        }
    }

    /// A fixed window's length in ms; 0 for the others.
    pub fn window_ms(self) -> u64 {
        match self {
            Self::Window(ms) => ms,
            _ => 0,
        }
    }

    /// True when `id` has the shape of one of this period's ids (`2026-11-28`, `2026-W48`,
    /// `2026-11`, `2026-11-28T06:00Z`; `all` for all-time boards). Checked before Redis is
    /// asked, so a client cannot name any other key.
    pub fn is_id(self, id: &str) -> bool {
        let template = match self {
            Self::All => return id == "all",
            Self::Daily => "dddd-dd-dd",
            Self::Weekly => "dddd-Wdd",
            Self::Monthly => "dddd-dd",
            Self::Window(_) => "dddd-dd-ddTdd:ddZ",
        };
        id.len() == template.len()
            && id.bytes().zip(template.bytes()).all(|(c, t)| match t {
                b'd' => c.is_ascii_digit(),
                _ => c == t,
            })
    }
}

/// A board as declared: see [`super::Leaderboards`] for the library's use of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// Letters, digits, `_`, `-` and `.`.
    pub name: String,
    /// How a submission changes a score.
    pub mode: Mode,
    /// One board for all time, or one per period.
    pub period: Period,
    /// How long a finished period's board is kept, in ms; 0 for all-time boards.
    pub retention_ms: u64,
    /// Most members kept; inserting one more removes the lowest ranked.
    pub max_members: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardSpec {
    mode: String,
    period: Option<String>,
    window_minutes: Option<u64>,
    retention_hours: Option<u64>,
    max_members: Option<u64>,
}

/// Letters, digits, `_`, `-` and `.`: safe in a URL path and in a Redis hash tag.
pub fn valid_board_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_BOARD_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boards(Vec<Board>);

impl Boards {
    pub fn get(&self, name: &str) -> Option<&Board> {
        self.0.iter().find(|b| b.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Board> {
        self.0.iter()
    }

    /// Parses the variable's JSON; the error names the board and the field at fault.
    pub fn parse(json: &str) -> Result<Self, String> {
        let specs: UniqueMap<Object<BoardSpec>> =
            serde_json::from_str(json).map_err(|e| format!("not a valid board list: {e}"))?;
        if specs.0.is_empty() {
            return Err("declares no board".into());
        }
        specs
            .0
            .into_iter()
            .map(|(name, Object(spec))| {
                parse_board(&name, spec).map_err(|e| format!("board {name:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

fn parse_board(name: &str, spec: BoardSpec) -> Result<Board, String> {
    if !valid_board_name(name) {
        return Err(format!(
            "the name must be 1-{MAX_BOARD_NAME_LEN} characters of letters, digits, '_', '-', '.'"
        ));
    }
    let mode = match spec.mode.as_str() {
        "best" => Mode::Best,
        "latest" => Mode::Latest,
        "increment" => Mode::Increment,
        other => return Err(format!("mode {other:?} is not best, latest or increment")),
    };
    let period = match spec.period.as_deref().unwrap_or("all") {
        "all" => Period::All,
        "daily" => Period::Daily,
        "weekly" => Period::Weekly,
        "monthly" => Period::Monthly,
        "window" => match spec.window_minutes {
            Some(m) if (1..=MAX_WINDOW_MINUTES).contains(&m) => Period::Window(m * 60_000),
            _ => {
                return Err(format!(
                    "a window period needs window_minutes from 1 to {MAX_WINDOW_MINUTES}"
                ))
            }
        },
        other => {
            return Err(format!("period {other:?} is not all, daily, weekly, monthly or window"))
        }
    };
    if spec.window_minutes.is_some() && !matches!(period, Period::Window(_)) {
        return Err("window_minutes belongs to period \"window\"".into());
    }
    let retention_ms = match (period, spec.retention_hours) {
        (Period::All, Some(_)) => {
            return Err("an all-time board never expires: remove retention_hours".into())
        }
        (Period::All, None) => 0,
        (_, None) => DEFAULT_RETENTION_HOURS * 3_600_000,
        (_, Some(h)) if h <= MAX_RETENTION_HOURS => h * 3_600_000,
        (_, Some(_)) => {
            return Err(format!("retention_hours must be from 0 to {MAX_RETENTION_HOURS}"))
        }
    };
    let max_members = match spec.max_members {
        None => DEFAULT_MAX_MEMBERS,
        Some(n) if (1..=MAX_MAX_MEMBERS).contains(&n) => n,
        Some(_) => return Err(format!("max_members must be from 1 to {MAX_MAX_MEMBERS}")),
    };
    Ok(Board { name: name.to_owned(), mode, period, retention_ms, max_members })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_board_with_defaults() {
        let boards = Boards::parse(
            r#"{"g": {"mode": "best"},
                "d": {"mode": "latest", "period": "daily", "retention_hours": 48, "max_members": 10},
                "w": {"mode": "increment", "period": "weekly"},
                "m": {"mode": "best", "period": "monthly", "retention_hours": 0},
                "h6": {"mode": "best", "period": "window", "window_minutes": 360}}"#,
        )
        .unwrap();
        let g = boards.get("g").unwrap();
        assert_eq!(
            (g.mode, g.period, g.retention_ms, g.max_members),
            (Mode::Best, Period::All, 0, DEFAULT_MAX_MEMBERS)
        );
        let d = boards.get("d").unwrap();
        assert_eq!(
            (d.mode, d.period, d.retention_ms, d.max_members),
            (Mode::Latest, Period::Daily, 48 * 3_600_000, 10)
        );
        assert_eq!(boards.get("w").unwrap().retention_ms, DEFAULT_RETENTION_HOURS * 3_600_000);
        assert_eq!(boards.get("m").unwrap().retention_ms, 0);
        assert_eq!(boards.get("h6").unwrap().period, Period::Window(360 * 60_000));
        assert!(boards.get("x").is_none());
    }

    #[test]
    fn refuses_mistakes_naming_the_board() {
        for (json, needle) in [
            (r#"{}"#, "no board"),
            (r#"{"a": {"mode": "max"}}"#, "mode"),
            (r#"{"a": {"mode": "best", "period": "hourly"}}"#, "period"),
            (r#"{"a": {"mode": "best", "period": "window"}}"#, "window_minutes"),
            (
                r#"{"a": {"mode": "best", "period": "daily", "window_minutes": 5}}"#,
                "window_minutes",
            ),
            (r#"{"a": {"mode": "best", "retention_hours": 5}}"#, "never expires"),
            (r#"{"a": {"mode": "best", "max_members": 0}}"#, "max_members"),
            (r#"{"a": {"mode": "best", "cap": 1}}"#, "unknown field"),
            (r#"{"a{b}": {"mode": "best"}}"#, "name"),
            (r#"{"a": {"mode": "best"}, "a": {"mode": "latest"}}"#, "duplicate"),
            (r#"{"a": ["best"]}"#, "object"),
        ] {
            let err = Boards::parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn period_ids_have_the_periods_shape() {
        assert!(Period::Daily.is_id("2026-11-28"));
        assert!(!Period::Daily.is_id("2026-11-28:z"));
        assert!(Period::Weekly.is_id("2026-W48"));
        assert!(Period::Monthly.is_id("2026-11"));
        assert!(Period::Window(60_000).is_id("2026-11-28T06:00Z"));
        assert!(!Period::Window(60_000).is_id("2026-11-28"));
        assert!(Period::All.is_id("all"));
        assert!(!Period::All.is_id("2026"));
    }
}
