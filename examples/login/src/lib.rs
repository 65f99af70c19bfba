//! The login example (issue 29): a Spin app whose own handler uses the spin-redis-patterns
//! library in-process, on one Redis connection per request:
//!
//! | Route | What happens |
//! |---|---|
//! | `GET /` | the login form (or a redirect to the profile when signed in) |
//! | `POST /login` | rate limits per address and per account, then a one-time code |
//! | `POST /login/code` | the code verified, a session created, its cookie set |
//! | `GET /profile` | the session read (idle timeout slides), the profile read through the cache |
//! | `GET /leaderboard`, `POST /leaderboard/play` | a leaderboard: the top 10, one point a click |
//! | `POST /logout` | the session ended, the cookie cleared |
//! | `GET /origin/profiles/{hex}` | the profile origin the cache reads from (slow on purpose) |
//!
//! Each page lists which pattern acted for this request (cache status, remaining quota,
//! session expiry).

mod page;

use std::time::Duration;

use page::{code_form, email_form, escape, see_other, Acted, Page};
use spin_redis_patterns::cache::{Fill, ValueCache};
use spin_redis_patterns::leaderboard::Leaderboards;
use spin_redis_patterns::otp::{IssueRequest, Otp, Verification, VerifyRequest};
use spin_redis_patterns::ratelimit::{Decision, Limiter};
use spin_redis_patterns::sessions::{NewSession, Session, Sessions};
use spin_redis_patterns::{Config, Error, Redis};
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// The login limits, given in code (the same JSON as `ratelimit_policies`): codes asked for
/// per client address, and per account (email), whoever asks.
const POLICIES: &str = r#"{
  "example_login_address": {"algorithm": "sliding_window", "limit": 20, "window": "600s"},
  "example_login_account": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 0.01}
}"#;
/// The leaderboard, given in code (it wins over the `leaderboard_boards` variable): one point
/// per click, all time.
const BOARD: &str = "example_clicks";
const BOARDS: &str = r#"{"example_clicks": {"mode": "increment"}}"#;
/// How long a profile stays cached.
const PROFILE_TTL: Duration = Duration::from_secs(60);
/// How long the origin may take (it sleeps 50 ms on purpose).
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(5);

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    // Head and body in one write: spin-sdk's own answer stalls keep-alive browsers ~40 ms.
    spin_redis_patterns::http::serve(req, out, answer);
}

fn answer(req: Request) -> Response {
    let mut ctx = Ctx::new(&req);
    match route(&req, &mut ctx) {
        Ok(res) => res,
        Err(e) => ctx.error_page(&e),
    }
}

/// One request: settings, the one Redis connection, and what the patterns did.
struct Ctx {
    config: Config,
    redis: Option<Redis>,
    acted: Vec<Acted>,
    signed_in: bool,
    ip: String,
}

impl Ctx {
    fn new(req: &Request) -> Self {
        Self {
            config: Config::spin().set("leaderboard_boards", BOARDS),
            redis: None,
            acted: Vec::new(),
            signed_in: false,
            ip: client_ip(req),
        }
    }

    /// Redis, opened on first use (the library connects lazily, once).
    fn redis(&mut self) -> Result<&Redis, Error> {
        if self.redis.is_none() {
            self.redis = Some(Redis::from_config(&self.config)?);
        }
        Ok(self.redis.as_ref().expect("set above"))
    }

    fn acted(&mut self, pattern: &'static str, status: &str, detail: String) {
        self.acted.push(Acted { pattern, status: status.to_owned(), detail });
    }

    fn page(&mut self, status: u16, title: &str, body: String) -> Page {
        let mut page = Page::new(status, title, body);
        page.acted = std::mem::take(&mut self.acted);
        page.signed_in = self.signed_in;
        page
    }

    fn error_page(&mut self, e: &Error) -> Response {
        let body = match e {
            Error::Config(_) => format!(
                "<p class=\"error\">The app is not configured: {}.</p><p>Set it (for example \
                 <code>SPIN_VARIABLE_OTP_PEPPER=$(openssl rand -base64 32)</code> in <code>.env</code>) \
                 and restart <code>spin up</code>.</p>",
                escape(&e.to_string())
            ),
            _ => format!("<p class=\"error\">{}</p>", escape(&e.to_string())),
        };
        let mut page = self.page(e.status(), "Something went wrong", body);
        page.headers.push(("x-error-code".into(), e.code().to_owned()));
        if let Some(after) = e.retry_after() {
            page.headers.push(("retry-after".into(), after.as_secs().max(1).to_string()));
        }
        page.render()
    }

    /// The request's session, if any; records what the sessions pattern saw.
    fn session(&mut self, req: &Request) -> Result<Option<Session>, Error> {
        let cookies = cookie_headers(req);
        let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let sessions = Sessions::new(&self.config)?;
        let session = sessions.current(self.redis()?, &cookies)?;
        match &session {
            Some(s) => {
                self.signed_in = true;
                self.acted(
                    "session",
                    "active",
                    format!(
                        "{}: idle expiry in {} s (slid by this request), absolute in {} s",
                        s.user_id,
                        s.expires_in.as_secs(),
                        s.absolute_expires_in.as_secs()
                    ),
                );
            }
            None => self.acted("session", "none", "no session cookie, or it has ended".into()),
        }
        Ok(session)
    }
}

fn route(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let path = req.path();
    let method = req.method();
    let is = |m: &Method| method == m;
    if let Some(hex) = path.strip_prefix("/origin/profiles/") {
        return Ok(origin(hex));
    }
    let (allowed, allow) = match path {
        "/" | "/profile" | "/leaderboard" => (Method::Get, "GET"),
        "/login" | "/login/code" | "/leaderboard/play" | "/logout" => (Method::Post, "POST"),
        _ => {
            let body = "<p>No such page. <a href=\"/\">Start here</a>.</p>".to_owned();
            return Ok(ctx.page(404, "Not found", body).render());
        }
    };
    if !is(&allowed) {
        let mut page = ctx.page(405, "Method not allowed", String::new());
        page.headers.push(("allow".into(), allow.into()));
        return Ok(page.render());
    }
    if is(&Method::Post) && !same_origin(req) {
        let body = "<p class=\"error\">Forms are accepted from this site only.</p>".to_owned();
        return Ok(ctx.page(403, "Cross-site form refused", body).render());
    }
    match path {
        "/" => home(req, ctx),
        "/login" => login(req, ctx),
        "/login/code" => verify_code(req, ctx),
        "/profile" => profile(req, ctx),
        "/leaderboard" => leaderboard(req, ctx),
        "/leaderboard/play" => play(req, ctx),
        _ => logout(req, ctx),
    }
}

fn home(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    if ctx.session(req)?.is_some() {
        return Ok(see_other("/profile", Vec::new()));
    }
    let body = format!(
        "<p>Log in with your email: you get a one-time code, then a session.</p>{}",
        email_form("")
    );
    Ok(ctx.page(200, "Log in", body).render())
}

fn login(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let form = Form::parse(req.body());
    let Some(email) = normalize_email(form.get("email")) else {
        let body = format!(
            "<p class=\"error\">That is not an email address.</p>{}",
            email_form(form.get("email"))
        );
        return Ok(ctx.page(422, "Log in", body).render());
    };
    let limiter = Limiter::from_json(POLICIES)?;
    // The address first: a refused address spends nothing of the account's budget.
    let ip = ctx.ip.clone();
    let by_address = limiter.limit(ctx.redis()?, "example_login_address", &ip)?;
    ctx.acted("ratelimit", decision_word(&by_address), quota("per address", &ip, &by_address));
    if !by_address.allowed() {
        return Ok(refused(ctx, &by_address, &email));
    }
    let by_account = limiter.limit(ctx.redis()?, "example_login_account", &email)?;
    ctx.acted("ratelimit", decision_word(&by_account), quota("per account", &email, &by_account));
    if !by_account.allowed() {
        return Ok(refused(ctx, &by_account, &email));
    }
    let otp = Otp::new(&ctx.config)?;
    let request = IssueRequest {
        subject: &email,
        purpose: "login",
        client: Some(&ip),
        channel: None,
        format: None,
    };
    let issued = match otp.issue(ctx.redis()?, &request) {
        Ok(issued) => issued,
        // A cooldown or an hourly cap: the code sent before is still good.
        Err(e @ Error::Refused { .. }) => {
            let wait = e.retry_after().map(|d| d.as_secs()).unwrap_or(0);
            ctx.acted("otp", "refused", format!("{} (retry in {wait} s)", e.code()));
            let body = format!(
                "<p class=\"error\">{}</p><p>Enter the code you already have:</p>{}",
                escape(&e.to_string()),
                code_form(&email, None)
            );
            let mut page = ctx.page(429, "Check your mail", body);
            page.headers.push(("retry-after".into(), wait.max(1).to_string()));
            return Ok(page.render());
        }
        Err(e) => return Err(e),
    };
    ctx.acted(
        "otp",
        "issued",
        format!(
            "a {}-character code for {email}, valid {} s; next one in {} s",
            issued.code().len(),
            issued.expires_in().as_secs(),
            issued.resend_after().as_secs()
        ),
    );
    let echo = dev_echo(&ctx.config).then(|| issued.code());
    let body = code_form(&email, echo);
    Ok(ctx.page(200, "Enter your code", body).render())
}

fn verify_code(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let form = Form::parse(req.body());
    let (Some(email), code) = (normalize_email(form.get("email")), form.get("code").trim()) else {
        return Ok(see_other("/", Vec::new()));
    };
    let ip = ctx.ip.clone();
    let otp = Otp::new(&ctx.config)?;
    let request =
        VerifyRequest { subject: Some(&email), purpose: "login", code, client: Some(&ip) };
    let verification = otp.verify(ctx.redis()?, &request)?;
    let Verification::Verified { subject } = verification else {
        ctx.acted("otp", verification.code(), describe(&verification));
        let body = format!(
            "<p class=\"error\">{}</p>{}",
            escape(&describe(&verification)),
            match verification {
                Verification::Wrong { .. } => code_form(&email, None),
                _ => email_form(&email),
            }
        );
        return Ok(ctx.page(verification.status(), "Enter your code", body).render());
    };
    let sessions = Sessions::new(&ctx.config)?;
    // A new session id at login, whatever the browser had (session fixation).
    let cookies = cookie_headers(req);
    let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
    if let Some(old) = sessions.id_from_cookies(&cookies) {
        sessions.end(ctx.redis()?, &old)?;
    }
    let data = serde_json::json!({ "email": subject }).to_string();
    let user_agent = header(req, "user-agent").unwrap_or_default();
    let new = NewSession { data: Some(&data), server_data: None, user_agent: &user_agent };
    let created = sessions.create(ctx.redis()?, &subject, &new)?;
    Ok(see_other("/profile", vec![("set-cookie".into(), sessions.set_cookie(&created.id))]))
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

fn logout(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let sessions = Sessions::new(&ctx.config)?;
    let cookies = cookie_headers(req);
    let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
    if let Some(id) = sessions.id_from_cookies(&cookies) {
        sessions.end(ctx.redis()?, &id)?;
    }
    Ok(see_other("/", vec![("set-cookie".into(), sessions.clear_cookie())]))
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

fn refused(ctx: &mut Ctx, decision: &Decision, email: &str) -> Response {
    let wait = decision.retry_after().as_secs().max(1);
    let body = format!(
        "<p class=\"error\">Too many codes asked for. Try again in {wait} s.</p>{}",
        email_form(email)
    );
    let mut page = ctx.page(429, "Slow down", body);
    page.headers.extend(decision.headers().into_iter().map(|(n, v)| (n.to_owned(), v)));
    page.render()
}

fn decision_word(decision: &Decision) -> &'static str {
    if decision.allowed() {
        "allowed"
    } else {
        "refused"
    }
}

fn quota(scope: &str, key: &str, decision: &Decision) -> String {
    let left = decision.remaining().map_or("?".to_owned(), |n| n.to_string());
    let reset = decision.reset_after().map_or(0, |d| d.as_secs());
    format!("{scope} ({key}): {left} of {} left, all back in {reset} s", decision.limit())
}

fn describe(v: &Verification) -> String {
    match v {
        Verification::Verified { .. } => "verified".into(),
        Verification::Wrong { attempts_left } => {
            format!("Wrong code: {attempts_left} attempts left.")
        }
        Verification::Burned { retry_after } => format!(
            "Too many wrong codes: ask for a new one in {} s.",
            retry_after.as_secs().max(1)
        ),
        Verification::Locked { retry_after } | Verification::ClientLimited { retry_after } => {
            format!("Too many failures: try again in {} s.", retry_after.as_secs().max(1))
        }
        Verification::NoCode => "That code has expired or was used: ask for a new one.".into(),
    }
}

/// Codes are shown on the page only with `otp_dev_echo` and a Redis on loopback, as the OTP
/// component's own dev echo.
fn dev_echo(config: &Config) -> bool {
    let on = config.get("otp_dev_echo").is_ok_and(|v| v == "true");
    let host = config.get("redis_host").unwrap_or_default();
    on && matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

/// Forms from this site only: `Sec-Fetch-Site` where the browser sends it, else `Origin`
/// against `Host` (a cross-site POST carries one or the other in every current browser).
fn same_origin(req: &Request) -> bool {
    if let Some(site) = header(req, "sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (header(req, "origin"), header(req, "host")) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))
                == Some(host.as_str())
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The client's address as Spin reports it (`spin-client-addr`, ip:port).
fn client_ip(req: &Request) -> String {
    header(req, "spin-client-addr")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.header(name).and_then(|v| v.as_str()).map(str::to_owned)
}

fn cookie_headers(req: &Request) -> Vec<String> {
    req.headers()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| v.as_str().map(str::to_owned))
        .collect()
}

/// Lower-cased and trimmed; one `@` with something on each side, a dot in the domain, no
/// spaces or controls, at most 254 characters.
fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok = email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(email)
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

/// An `application/x-www-form-urlencoded` body.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}
