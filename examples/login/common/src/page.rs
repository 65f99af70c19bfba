//! Server-rendered HTML: one layout, with a panel listing what each pattern did for this
//! request. Every value is escaped; the page has no script, and its CSP allows none.

use spin_sdk::http::Response;

/// What one pattern did for this request, shown in the panel (and read by the browser test
/// through `data-pattern` and `data-status`).
pub struct Acted {
    pub pattern: &'static str,
    /// A short machine-readable word: "hit", "miss", "allowed", "refused", "active", ...
    pub status: String,
    pub detail: String,
}

/// A page's parts.
pub struct Page {
    pub status: u16,
    pub title: String,
    /// Already-escaped HTML.
    pub body: String,
    pub acted: Vec<Acted>,
    /// Whether a session was found (the header shows "Log out").
    pub signed_in: bool,
    pub headers: Vec<(String, String)>,
}

impl Page {
    pub fn new(status: u16, title: &str, body: String) -> Self {
        Self {
            status,
            title: title.to_owned(),
            body,
            acted: Vec::new(),
            signed_in: false,
            headers: Vec::new(),
        }
    }

    pub fn render(self) -> Response {
        let nav = if self.signed_in {
            "<a href=\"/profile\">Profile</a> <a href=\"/leaderboard\">Leaderboard</a> \
             <form method=\"post\" action=\"/logout\"><button id=\"logout\">Log out</button></form>"
        } else {
            "<a href=\"/\">Log in</a> <a href=\"/leaderboard\">Leaderboard</a>"
        };
        let mut panel = String::new();
        if self.acted.is_empty() {
            panel.push_str("<li>No pattern acted on this request.</li>");
        }
        for a in &self.acted {
            panel.push_str(&format!(
                "<li data-pattern=\"{p}\" data-status=\"{s}\"><b>{p}</b> <code>{s}</code> {d}</li>",
                p = escape(a.pattern),
                s = escape(&a.status),
                d = escape(&a.detail),
            ));
        }
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} · login example</title><style>{STYLE}</style></head>\
             <body><header><a href=\"/\"><b>spin-redis-patterns</b> login example</a>\
             <nav>{nav}</nav></header><main id=\"main\"><h1>{title}</h1>{body}</main>\
             <aside id=\"patterns\"><h2>Patterns on this request</h2><ul>{panel}</ul></aside>\
             </body></html>\n",
            title = escape(&self.title),
            body = self.body,
        );
        let mut builder = Response::builder();
        builder
            .status(self.status)
            .header("content-type", "text/html; charset=utf-8")
            // Pages carry a user's data and codes: never stored by a cache.
            .header("cache-control", "no-store")
            .header(
                "content-security-policy",
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            )
            .header("x-content-type-options", "nosniff")
            .header("referrer-policy", "no-referrer");
        for (name, value) in self.headers {
            builder.header(name, value);
        }
        builder.body(html).build()
    }
}

/// A 303 to `location` (after a POST: the browser then GETs it), with extra headers.
pub fn see_other(location: &str, headers: Vec<(String, String)>) -> Response {
    let mut builder = Response::builder();
    builder.status(303).header("location", location).header("cache-control", "no-store");
    for (name, value) in headers {
        builder.header(name, value);
    }
    builder.body(Vec::new()).build()
}

/// HTML text and attribute escaping.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The login form (email).
pub fn email_form(email: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/login\"><label>Email \
         <input id=\"email\" name=\"email\" type=\"email\" required maxlength=\"254\" \
         autocomplete=\"email\" value=\"{}\"></label> <button id=\"send-code\">Send me a code</button></form>",
        escape(email)
    )
}

/// The code form for `email`, with the code itself when dev echo is on.
pub fn code_form(email: &str, dev_code: Option<&str>) -> String {
    let echo = match dev_code {
        Some(code) => format!(
            "<p class=\"dev\">Dev echo (<code>otp_dev_echo</code>, local Redis only): your code is \
             <output id=\"dev-code\">{}</output></p>",
            escape(code)
        ),
        None => "<p>Check your mail for the code.</p>".to_owned(),
    };
    format!(
        "{echo}<form method=\"post\" action=\"/login/code\">\
         <input type=\"hidden\" name=\"email\" value=\"{email}\">\
         <label>Code <input id=\"code\" name=\"code\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" required maxlength=\"64\"></label> \
         <button id=\"verify\">Log in</button></form>",
        email = escape(email)
    )
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:1rem auto;\
padding:0 1rem;color:#222}header{display:flex;justify-content:space-between;align-items:center;\
border-bottom:1px solid #ddd;padding-bottom:.5rem}header a{color:#222;text-decoration:none}\
nav a,nav form{display:inline;margin-left:1rem}aside{margin-top:2rem;padding:.5rem 1rem;\
background:#f4f6f8;border-radius:6px}aside li{margin:.25rem 0}code,output{background:#e8ecef;\
padding:0 .3rem;border-radius:3px}.error{color:#a00}.dev{background:#fff6d6;padding:.5rem}\
table{border-collapse:collapse}td,th{padding:.2rem .8rem;border-bottom:1px solid #eee;\
text-align:left}";
