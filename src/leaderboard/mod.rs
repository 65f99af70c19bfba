//! Leaderboards on Redis sorted sets: one Lua script, one round trip and one hash slot per
//! operation.
//!
//! Routes (component `leaderboard`; `{board}` is a name declared in `leaderboard_boards`):
//! - `GET /api/leaderboards`: the boards, with their modes and periods;
//! - `POST /api/leaderboards/{board}/scores` `{"member", "score"}` (`best` and `latest`
//!   boards) or `{"member", "increment"}` (`increment` boards), with the
//!   `leaderboard_api_token` bearer token: the member's new score, rank and the total;
//! - `GET /api/leaderboards/{board}?offset=&limit=&period=`: the top `limit` (at most
//!   `leaderboard_max_page_size`) from rank `offset + 1`, and the total count;
//! - `GET /api/leaderboards/{board}/members/{member}?neighbours=&period=`: the member's rank
//!   and score with up to `neighbours` entries above and below, and the total count;
//! - `DELETE /api/leaderboards/{board}/members/{member}?period=` (bearer token): removes it.
//!
//! Reads need `leaderboard_read_token` when it is set. Ranks count from 1. Equal scores rank
//! by time: whoever reached the score first ranks first (see period.lua for how). `period`
//! is `current` (the default), `previous`, or a period id such as `2026-11-28`.

mod boards;
mod input;
mod keys;
mod library;
pub mod settings;
mod store;

use http::Method;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::platform::auth::require_bearer;
use crate::platform::redis::Redis;
use crate::platform::{serve, ApiError, Request, Response};
pub use boards::{Board, Mode, Period};
use input::Query;
pub use library::{Leaderboards, Page, Ranked, Removed, Standing, Submitted};
use settings::{vars, Settings};

/// Largest submission body: a member name and a number fit many times over.
const MAX_SUBMIT_BODY: usize = 1024;
/// Entries a top read returns when `limit` is absent (capped by the page size).
const DEFAULT_LIMIT: u64 = 10;
/// Neighbours on each side when `neighbours` is absent (capped by the page size).
const DEFAULT_NEIGHBOURS: u64 = 2;

/// The component's entry point.
pub fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |mut req| {
        let settings = Settings::from_spin_variables()?;
        route(&mut req, &settings)
    })
}

/// The route table.
fn route(req: &mut Request, settings: &Settings) -> Result<Response, ApiError> {
    let path = req.path_info().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments[..] {
        [] => {
            req.allow(&[Method::GET])?;
            authorize_read(req, settings)?;
            Ok(list(settings))
        }
        [board] => {
            req.allow(&[Method::GET])?;
            authorize_read(req, settings)?;
            top(req, settings, find(settings, board)?)
        }
        [board, "scores"] => {
            req.allow(&[Method::POST])?;
            authorize_write(req, settings)?;
            submit(req, find(settings, board)?)
        }
        [board, "members", member] => {
            req.allow(&[Method::GET, Method::DELETE])?;
            if *req.method() == Method::GET {
                authorize_read(req, settings)?;
                standing(req, settings, find(settings, board)?, input::member(member)?)
            } else {
                authorize_write(req, settings)?;
                remove(req, find(settings, board)?, input::member(member)?)
            }
        }
        _ => Err(ApiError::not_found("no such leaderboard route")),
    }
}

fn authorize_write(req: &Request, settings: &Settings) -> Result<(), ApiError> {
    require_bearer(req, &settings.api_token, || {
        ApiError::new(
            403,
            "writes_disabled",
            format!("leaderboard writes are disabled: set the `{}` variable", vars::API_TOKEN),
        )
    })
}

/// Reads are public unless a read token is configured.
fn authorize_read(req: &Request, settings: &Settings) -> Result<(), ApiError> {
    if settings.read_token.is_empty() {
        return Ok(());
    }
    // The "disabled" answer is for an empty token, which was handled above.
    require_bearer(req, &settings.read_token, || ApiError::internal("no read token"))
}

fn find<'a>(settings: &'a Settings, name: &str) -> Result<&'a Board, ApiError> {
    settings.boards.get(name).ok_or_else(|| {
        ApiError::new(404, "unknown_board", format!("there is no leaderboard named {name:?}"))
    })
}

#[derive(Serialize)]
struct BoardInfo<'a> {
    name: &'a str,
    mode: &'static str,
    period: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_minutes: Option<u64>,
    max_members: u64,
}

#[derive(Serialize)]
struct BoardList<'a> {
    boards: Vec<BoardInfo<'a>>,
}

fn list(settings: &Settings) -> Response {
    let boards = settings
        .boards
        .iter()
        .map(|b| BoardInfo {
            name: &b.name,
            mode: b.mode.as_str(),
            period: b.period.kind(),
            window_minutes: (b.period.window_ms() > 0).then(|| b.period.window_ms() / 60_000),
            max_members: b.max_members,
        })
        .collect();
    Response::json(200, &BoardList { boards })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    member: String,
    score: Option<f64>,
    increment: Option<f64>,
}

#[derive(Serialize)]
struct SubmittedBody<'a> {
    board: &'a str,
    period: &'a str,
    member: &'a str,
    #[serde(serialize_with = "score_json")]
    score: f64,
    /// 1-based; null when the member cap removed the member at once.
    rank: Option<u64>,
    total: u64,
    /// False when the score did not change (a `best` board and no improvement).
    changed: bool,
}

fn submit(req: &mut Request, board: &Board) -> Result<Response, ApiError> {
    let body: Submission = req.json(MAX_SUBMIT_BODY)?;
    let member = input::member(&body.member)?;
    let value = match (board.mode, body.score, body.increment) {
        (Mode::Increment, None, Some(v)) | (Mode::Best | Mode::Latest, Some(v), None) => v,
        (Mode::Increment, _, _) => {
            return Err(ApiError::bad_request(
                "invalid_submission",
                format!(
                    "board {:?} adds up increments: send {{\"member\", \"increment\"}}",
                    board.name
                ),
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_submission",
                format!(
                    "board {:?} keeps the {} score: send {{\"member\", \"score\"}}",
                    board.name,
                    board.mode.as_str()
                ),
            ))
        }
    };
    // serde_json refuses NaN and infinities in JSON, and numbers beyond a double's range;
    // checked again so no other path can store one.
    if !value.is_finite() {
        return Err(ApiError::bad_request("invalid_score", "the number must be finite"));
    }
    // The library does the rest, for this route and in-process callers alike.
    let redis = Redis::from_spin_variables()?;
    let done = board.submit(&redis, member, value)?;
    Ok(Response::json(
        200,
        &SubmittedBody {
            board: &board.name,
            period: &done.period,
            member,
            score: done.score,
            rank: done.rank,
            total: done.total,
            changed: done.changed,
        },
    ))
}

/// Scores are doubles, but an integral one goes out as `10`, not `10.0`: what the client sent.
/// Only up to 2^53, where every integer is exact; larger or fractional ones stay doubles.
fn score_json<S: serde::Serializer>(score: &f64, out: S) -> Result<S::Ok, S::Error> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if score.fract() == 0.0 && score.abs() <= EXACT {
        out.serialize_i64(*score as i64)
    } else {
        out.serialize_f64(*score)
    }
}

#[derive(Serialize)]
struct RankedEntry<'a> {
    rank: u64,
    member: &'a str,
    #[serde(serialize_with = "score_json")]
    score: f64,
}

fn ranked(entries: &[Ranked]) -> Vec<RankedEntry<'_>> {
    entries
        .iter()
        .map(|e| RankedEntry { rank: e.rank, member: &e.member, score: e.score })
        .collect()
}

#[derive(Serialize)]
struct TopPage<'a> {
    board: &'a str,
    period: &'a str,
    total: u64,
    offset: u64,
    entries: Vec<RankedEntry<'a>>,
}

fn top(req: &Request, settings: &Settings, board: &Board) -> Result<Response, ApiError> {
    let query = Query::parse(req.query(), &["offset", "limit", "period"])?;
    let offset = query.whole("offset", 0, board.max_members)?;
    let limit =
        query.whole("limit", DEFAULT_LIMIT.min(settings.max_page_size), settings.max_page_size)?;
    let period = query.period(board.period)?;
    let redis = Redis::from_spin_variables()?;
    let page = board.top_of(&redis, &period, offset, limit)?;
    Ok(Response::json(
        200,
        &TopPage {
            board: &board.name,
            period: &page.period,
            total: page.total,
            offset,
            entries: ranked(&page.entries),
        },
    ))
}

#[derive(Serialize)]
struct StandingBody<'a> {
    board: &'a str,
    period: &'a str,
    total: u64,
    member: &'a str,
    rank: u64,
    #[serde(serialize_with = "score_json")]
    score: f64,
    /// Better ranked neighbours, best first.
    above: Vec<RankedEntry<'a>>,
    /// Worse ranked neighbours, best first.
    below: Vec<RankedEntry<'a>>,
}

fn standing(
    req: &Request,
    settings: &Settings,
    board: &Board,
    member: &str,
) -> Result<Response, ApiError> {
    let query = Query::parse(req.query(), &["neighbours", "period"])?;
    let neighbours = query.whole(
        "neighbours",
        DEFAULT_NEIGHBOURS.min(settings.max_page_size),
        settings.max_page_size,
    )?;
    let period = query.period(board.period)?;
    let redis = Redis::from_spin_variables()?;
    let (period, found) = board.standing_of(&redis, &period, member, neighbours)?;
    let Some(found) = found else {
        return Err(ApiError::new(
            404,
            "member_not_ranked",
            format!("{member:?} has no score on board {:?} in period {period}", board.name),
        ));
    };
    Ok(Response::json(
        200,
        &StandingBody {
            board: &board.name,
            period: &found.period,
            total: found.total,
            member,
            rank: found.rank,
            score: found.score,
            above: ranked(&found.above),
            below: ranked(&found.below),
        },
    ))
}

#[derive(Serialize)]
struct RemovedBody<'a> {
    board: &'a str,
    period: &'a str,
    member: &'a str,
    removed: bool,
}

fn remove(req: &Request, board: &Board, member: &str) -> Result<Response, ApiError> {
    let query = Query::parse(req.query(), &["period"])?;
    let period = query.period(board.period)?;
    let redis = Redis::from_spin_variables()?;
    let done = board.remove_of(&redis, &period, member)?;
    Ok(Response::json(
        200,
        &RemovedBody { board: &board.name, period: &done.period, member, removed: done.removed },
    ))
}
