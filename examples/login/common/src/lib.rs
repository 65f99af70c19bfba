//! What the login example's two components share: the page layout ([`page`]), the request
//! context ([`Ctx`]: settings, the one Redis connection, what the patterns did), the route
//! checks every page passes ([`refuse`]) and header helpers.
//!
//! The app is two components because one carrying all five patterns is over the project's
//! 512 KiB per component (docs/benchmarks.md, "Component sizes"): `login` (`/`, `/login`,
//! `/login/code`, `/logout`: rate limits, one-time codes, sessions) and `pages` (`/profile`,
//! `/leaderboard`, `/origin/...`: the cache, the leaderboard, sessions read). Both read the
//! same session cookie from the same Redis.

pub mod page;

use page::{escape, Acted, Page};
use spin_redis_patterns::sessions::{Session, Sessions};
use spin_redis_patterns::{Config, Error, Redis};
use spin_sdk::http::{Method, Request, Response};

/// The leaderboard, given in code (it wins over the `leaderboard_boards` variable): one point
/// per click, all time.
pub const BOARD: &str = "example_clicks";
const BOARDS: &str = r#"{"example_clicks": {"mode": "increment"}}"#;

/// One request: settings, the one Redis connection, and what the patterns did.
pub struct Ctx {
    pub config: Config,
    redis: Option<Redis>,
    acted: Vec<Acted>,
    signed_in: bool,
    /// The client's address as Spin reports it.
    pub ip: String,
}

impl Ctx {
    pub fn new(req: &Request) -> Self {
        Self {
            config: Config::spin().set("leaderboard_boards", BOARDS),
            redis: None,
            acted: Vec::new(),
            signed_in: false,
            ip: client_ip(req),
        }
    }

    /// Redis, opened on first use (the library connects lazily, once).
    pub fn redis(&mut self) -> Result<&Redis, Error> {
        if self.redis.is_none() {
            self.redis = Some(Redis::from_config(&self.config)?);
        }
        Ok(self.redis.as_ref().expect("set above"))
    }

    pub fn acted(&mut self, pattern: &'static str, status: &str, detail: String) {
        self.acted.push(Acted { pattern, status: status.to_owned(), detail });
    }

    pub fn page(&mut self, status: u16, title: &str, body: String) -> Page {
        let mut page = Page::new(status, title, body);
        page.acted = std::mem::take(&mut self.acted);
        page.signed_in = self.signed_in;
        page
    }

    pub fn error_page(&mut self, e: &Error) -> Response {
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
    pub fn session(&mut self, req: &Request) -> Result<Option<Session>, Error> {
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

/// The checks before a page of `routes` (path, method) runs: `Some` answer for a path not
/// among them (404), another method (405), or a form posted from another site (403).
pub fn refuse(req: &Request, ctx: &mut Ctx, routes: &[(&str, Method)]) -> Option<Response> {
    let Some((_, allowed)) = routes.iter().find(|(path, _)| *path == req.path()) else {
        let body = "<p>No such page. <a href=\"/\">Start here</a>.</p>".to_owned();
        return Some(ctx.page(404, "Not found", body).render());
    };
    let post = *allowed == Method::Post;
    if req.method() != allowed {
        let mut page = ctx.page(405, "Method not allowed", String::new());
        page.headers.push(("allow".into(), if post { "POST" } else { "GET" }.into()));
        return Some(page.render());
    }
    if post && !same_origin(req) {
        let body = "<p class=\"error\">Forms are accepted from this site only.</p>".to_owned();
        return Some(ctx.page(403, "Cross-site form refused", body).render());
    }
    None
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

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.header(name).and_then(|v| v.as_str()).map(str::to_owned)
}

pub fn cookie_headers(req: &Request) -> Vec<String> {
    req.headers()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| v.as_str().map(str::to_owned))
        .collect()
}

/// An `application/x-www-form-urlencoded` body.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}
