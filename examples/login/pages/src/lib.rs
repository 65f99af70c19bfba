//! The login example's `pages` component: the signed-in pages, on the same session cookie
//! and Redis as the `login` component beside it (login-example-common says why there are
//! two).
//!
//! | Route | What happens |
//! |---|---|
//! | `GET /profile` | the session read (idle timeout slides), the profile read through the cache |
//! | `GET /leaderboard`, `POST /leaderboard/play` | a leaderboard: the top 10, one point a click |
//! | `GET /origin/profiles/{hex}` | the profile origin the cache reads from (slow on purpose) |

use std::time::Duration;

use login_example_common::page::{escape, see_other};
use login_example_common::{refuse, Ctx, BOARD};
use spin_redis_patterns::cache::{Fill, ValueCache};
use spin_redis_patterns::leaderboard::Leaderboards;
use spin_redis_patterns::Error;
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// How long a profile stays cached.
const PROFILE_TTL: Duration = Duration::from_secs(60);
/// How long the origin may take (it sleeps 50 ms on purpose).
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(5);

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    // Head and body in one write: spin-sdk's own answer stalls keep-alive browsers ~40 ms.
    spin_redis_patterns::http::serve(req, out, answer);
}

const ROUTES: &[(&str, Method)] = &[
    ("/profile", Method::Get),
    ("/leaderboard", Method::Get),
    ("/leaderboard/play", Method::Post),
];

fn answer(req: Request) -> Response {
    if let Some(hex) = req.path().strip_prefix("/origin/profiles/") {
        return origin(hex);
    }
    let mut ctx = Ctx::new(&req);
    if let Some(refused) = refuse(&req, &mut ctx, ROUTES) {
        return refused;
    }
    let result = match req.path() {
        "/profile" => profile(&req, &mut ctx),
        "/leaderboard" => leaderboard(&req, &mut ctx),
        _ => play(&req, &mut ctx),
    };
    result.unwrap_or_else(|e| ctx.error_page(&e))
}

fn profile(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let Some(session) = ctx.session(req)? else {
        return Ok(see_other("/", Vec::new()));
    };
    let hex = to_hex(session.user_id.as_bytes());
    let cache = ValueCache::new(&ctx.config)?;
    let fill = Fill { ttl: Some(PROFILE_TTL), tags: vec!["example-profiles".into()] };
    let key = format!("/profiles/{hex}");
    let cached = cache.get_or_fetch(ctx.redis()?, &key, &fill, || fetch_profile(&hex))?;
    ctx.acted(
        "cache",
        cached.status.as_str(),
        format!("{key}: age {} s, kept {} s", cached.age.as_secs(), PROFILE_TTL.as_secs()),
    );
    let profile: serde_json::Value = serde_json::from_slice(&cached.value).unwrap_or_default();
    let field = |name: &str| escape(profile[name].as_str().unwrap_or("?"));
    let body = format!(
        "<dl><dt>Name</dt><dd id=\"name\">{}</dd><dt>Email</dt><dd id=\"email\">{}</dd>\
         <dt>Plan</dt><dd>{}</dd><dt>Origin served it at</dt><dd id=\"served-at\">{}</dd></dl>\
         <p>Reload: the profile comes from the cache until it expires.</p>",
        field("display_name"),
        field("email"),
        field("plan"),
        field("served_at"),
    );
    Ok(ctx.page(200, "Your profile", body).render())
}

fn leaderboard(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let session = ctx.session(req)?;
    let boards = Leaderboards::new(&ctx.config)?;
    let board = boards.board(BOARD)?;
    let top = board.top(ctx.redis()?, 0, 10)?;
    let mut rows = String::new();
    for entry in &top.entries {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            entry.rank,
            escape(&mask(&entry.member)),
            entry.score
        ));
    }
    let mine = match &session {
        Some(s) => match board.rank(ctx.redis()?, &s.user_id, 0)? {
            Some(standing) => {
                let detail = format!("you: rank {}, {} points", standing.rank, standing.score);
                ctx.acted("leaderboard", "ranked", detail.clone());
                format!("<p id=\"my-rank\">{}</p>", escape(&detail))
            }
            None => {
                ctx.acted("leaderboard", "unranked", "you have no points yet".into());
                String::new()
            }
        },
        None => {
            ctx.acted("leaderboard", "read", format!("top {} of {BOARD}", top.entries.len()));
            String::new()
        }
    };
    let play = if session.is_some() {
        "<form method=\"post\" action=\"/leaderboard/play\"><button id=\"play\">+1 point</button></form>"
    } else {
        "<p><a href=\"/\">Log in</a> to play.</p>"
    };
    let body = format!(
        "{mine}{play}<table id=\"board\"><tr><th>Rank</th><th>Player</th><th>Points</th></tr>{rows}</table>"
    );
    Ok(ctx.page(200, "Leaderboard", body).render())
}

fn play(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let Some(session) = ctx.session(req)? else {
        return Ok(see_other("/", Vec::new()));
    };
    let boards = Leaderboards::new(&ctx.config)?;
    boards.board(BOARD)?.submit(ctx.redis()?, &session.user_id, 1.0)?;
    Ok(see_other("/leaderboard", Vec::new()))
}

/// The origin: what a profile service would answer, slowly (a database behind it), so a
/// cache hit is visibly faster than a miss.
fn origin(hex: &str) -> Response {
    let Some(email) = from_hex(hex).and_then(|b| String::from_utf8(b).ok()) else {
        return Response::new(404, "no such profile");
    };
    std::thread::sleep(Duration::from_millis(50));
    let name = email.split('@').next().unwrap_or_default();
    let mut display = name.chars();
    let display: String =
        display.next().map(|c| c.to_uppercase().chain(display).collect()).unwrap_or_default();
    let served_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let body = serde_json::json!({
        "email": email,
        "display_name": display,
        "plan": "free",
        "served_at": format!("{served_at} ms since 1970"),
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

/// The profile from the origin, this app's own `/origin/...` route (a relative URL: `http://self`),
/// through the library's blocking client (spin-sdk's async one would bring its executor).
fn fetch_profile(hex: &str) -> Result<Vec<u8>, String> {
    let request = Request::get(format!("/origin/profiles/{hex}")).build();
    let response = spin_redis_patterns::http::send(&request, ORIGIN_TIMEOUT)
        .map_err(|e| format!("profile origin unreachable: {e}"))?;
    if *response.status() != 200 {
        return Err(format!("profile origin answered {}", response.status()));
    }
    Ok(response.into_body())
}

/// `a***@b.example`: the leaderboard is public, the addresses are not.
fn mask(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            format!("{}***@{domain}", local.chars().next().unwrap_or('?'))
        }
        None => "***".into(),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || hex.len() > 512 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}
