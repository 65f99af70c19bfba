//! The login example (issue 29): a Spin app whose own handlers use the spin-redis-patterns
//! library in-process, on one Redis connection per request. This is its `login` component:
//!
//! | Route | What happens |
//! |---|---|
//! | `GET /` | the login form (or a redirect to the profile when signed in) |
//! | `POST /login` | rate limits per address and per account, then a one-time code |
//! | `POST /login/code` | the code verified, a session created, its cookie set |
//! | `POST /logout` | the session ended, the cookie cleared |
//!
//! The profile and the leaderboard are the `pages` component (`pages/`), beside it in the
//! same app (login-example-common says why there are two). Each page lists which pattern acted
//! for this request (cache status, remaining quota, session expiry).

use hmac::{Hmac, Mac};
use login_example_common::page::{code_form, email_form, escape, see_other};
use login_example_common::{cookie_headers, header, refuse, Ctx, Form};
use sha2::Sha256;
use spin_redis_patterns::otp::{IssueRequest, Otp, Verification, VerifyRequest};
use spin_redis_patterns::ratelimit::{Decision, Limiter};
use spin_redis_patterns::sessions::{NewSession, Sessions};
use spin_redis_patterns::{Config, Error};
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// The login limits, given in code (the same JSON as `ratelimit_policies`): codes asked for
/// per client address, and per account (email), whoever asks.
const POLICIES: &str = r#"{
  "example_login_address": {"algorithm": "sliding_window", "limit": 20, "window": "600s"},
  "example_login_account": {"algorithm": "token_bucket", "capacity": 5, "refill_per_sec": 0.01}
}"#;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    // Head and body in one write: spin-sdk's own answer stalls keep-alive browsers ~40 ms.
    spin_redis_patterns::http::serve(req, out, answer);
}

/// This component's pages; any other path is its 404 (the app routes `/...` here).
const ROUTES: &[(&str, Method)] = &[
    ("/", Method::Get),
    ("/login", Method::Post),
    ("/login/code", Method::Post),
    ("/logout", Method::Post),
];

fn answer(req: Request) -> Response {
    let mut ctx = Ctx::new(&req);
    if let Some(refused) = refuse(&req, &mut ctx, ROUTES) {
        return refused;
    }
    let result = match req.path() {
        "/" => home(&req, &mut ctx),
        "/login" => login(&req, &mut ctx),
        "/login/code" => verify_code(&req, &mut ctx),
        _ => logout(&req, &mut ctx),
    };
    result.unwrap_or_else(|e| ctx.error_page(&e))
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
    // Built first: it refuses a missing or short pepper before anything is spent.
    let otp = Otp::new(&ctx.config)?;
    let pepper = ctx.config.get("otp_pepper")?;
    let limiter = Limiter::from_json(POLICIES)?;
    // The address first: a refused address spends nothing of the account's budget.
    let ip = ctx.ip.clone();
    let by_address = limiter.limit(
        ctx.redis()?,
        "example_login_address",
        &pseudonym(&pepper, "address", &ip),
    )?;
    ctx.acted("ratelimit", decision_word(&by_address), quota("per address", &ip, &by_address));
    if !by_address.allowed() {
        return Ok(refused(ctx, &by_address, &email));
    }
    let account = pseudonym(&pepper, "account", &email);
    let by_account = limiter.limit(ctx.redis()?, "example_login_account", &account)?;
    ctx.acted("ratelimit", decision_word(&by_account), quota("per account", &email, &by_account));
    if !by_account.allowed() {
        return Ok(refused(ctx, &by_account, &email));
    }
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

fn logout(req: &Request, ctx: &mut Ctx) -> Result<Response, Error> {
    let sessions = Sessions::new(&ctx.config)?;
    let cookies = cookie_headers(req);
    let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
    if let Some(id) = sessions.id_from_cookies(&cookies) {
        sessions.end(ctx.redis()?, &id)?;
    }
    Ok(see_other("/", vec![("set-cookie".into(), sessions.clear_cookie())]))
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

/// Lower-cased and trimmed; one `@` with something on each side, a dot in the domain, no
/// spaces or controls, at most 254 characters.
/// A rate-limit key for an address or an account: a keyed hash (HMAC-SHA-256 under the OTP
/// pepper, with a label of its own), so Redis key names never hold an email or an IP address,
/// as the OTP module keeps its subjects.
fn pseudonym(pepper: &str, kind: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(pepper.as_bytes()).expect("HMAC takes any key");
    mac.update(b"example-login-limit\0");
    mac.update(kind.as_bytes());
    mac.update(b"\0");
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

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
