//! Responses: the [`Response`] every handler returns, the error shape ([`ApiError`], RFC 9457
//! problem details as `application/problem+json`: `type`, `title`, `status`, `detail` and the
//! stable snake_case `code`), and [`serve`], which runs a handler and writes its answer to
//! Spin, with an `x-request-id` and one access log line.
//!
//! A response is a list of field lines, not a map: repeated names (`Set-Cookie`, `Link`,
//! `Vary`) survive, in order. `serve` writes the body and then runs the response's
//! [`Response::after`] work, so a handler can answer first and refresh a cache entry after.

use serde::Serialize;
use spin_sdk::http::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

use super::redis::RedisError;
use super::request::Request;
use super::settings::ConfigError;

/// What a handler answers.
pub struct Response {
    pub status: u16,
    /// Field lines in order; names lower case by convention.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    after: Option<Box<dyn FnOnce()>>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new(), after: None }
    }

    /// `value` as JSON, `Content-Type: application/json`, `Cache-Control: no-store` (API
    /// answers are about one caller's state; no shared cache may keep them).
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self::new(status)
            .with_header("content-type", "application/json")
            .with_header("cache-control", "no-store")
            .with_body(body)
    }

    /// Appends a field line (a repeated name stays repeated).
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces every line of `name` with one.
    pub fn set_header(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.remove_header(name);
        self.headers.push((name.to_ascii_lowercase(), value.into()));
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The first value of a header, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Work to do once the response is fully sent, within the same invocation (Spin keeps
    /// the instance until the handler returns; the client already has its answer).
    pub fn after(mut self, work: impl FnOnce() + 'static) -> Self {
        self.after = Some(Box::new(work));
        self
    }
}

/// An error answer: status, a stable snake_case code for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers, such as `Allow`, `Retry-After` or `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
}

/// Where problem types live: `type` is this prefix and the `code`. An identifier (RFC 9457
/// §3.1.1 allows one that does not resolve); README.md lists the codes.
pub const PROBLEM_TYPE_PREFIX: &str = "https://spin-redis-patterns.dev/problems/";

/// An RFC 9457 problem: the standard members, the `code` extension, and any extension
/// members of `extra` (flattened).
#[derive(Serialize)]
struct Problem<'a, E: Serialize> {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(flatten)]
    extra: E,
}

/// The problem type's title: the code in words (`redis_unavailable` is "Redis unavailable"),
/// the same for every occurrence, as RFC 9457 asks.
fn title(code: &str) -> String {
    let words = code.replace('_', " ");
    let mut chars = words.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// An `application/problem+json` answer of `status` with this code and detail, and the
/// extension members of `extra` (a struct, or `()` for none).
pub fn problem<E: Serialize>(status: u16, code: &str, detail: &str, extra: E) -> Response {
    let body = Problem {
        kind: format!("{PROBLEM_TYPE_PREFIX}{code}"),
        title: title(code),
        status,
        detail,
        code,
        extra,
    };
    problem_json(status, &body)
}

/// `body`, already a problem object, as `application/problem+json`.
pub fn problem_json<T: Serialize + ?Sized>(status: u16, body: &T) -> Response {
    let mut response = Response::json(status, body);
    response.set_header("content-type", "application/problem+json");
    response
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn method_not_allowed(allowed: &[http::Method]) -> Self {
        let names: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
        Self::new(405, "method_not_allowed", format!("use {}", names.join(" or ")))
            .with_header("allow", names.join(", "))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message).with_header("www-authenticate", "Bearer")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    pub fn to_response(&self) -> Response {
        let mut response = problem(self.status, self.code, &self.message, ());
        for (name, value) in &self.headers {
            response = response.with_header(name, value.as_str());
        }
        response
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        e.to_response()
    }
}

/// A setting is wrong: the log says which and why; the client learns only which variable,
/// never its value.
impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        super::log::error("misconfigured", &e);
        Self::new(
            500,
            "misconfigured",
            format!("the server is misconfigured: variable `{}` (details in the log)", e.variable),
        )
    }
}

/// Redis failures become 503 `redis_unavailable` (clients may retry), except a reply the
/// code did not expect or a script error, which is our bug, and a refused password, which is
/// the operator's: 500, loudly. Details go to the log, not to the client.
impl From<RedisError> for ApiError {
    fn from(e: RedisError) -> Self {
        super::log::error("redis_error", format_args!("{}: {e}", e.reason()));
        match e {
            RedisError::Config(c) => c.into(),
            RedisError::UnexpectedReply(_) | RedisError::Reply(_) => {
                Self::new(500, "redis_error", "Redis answered with an error; see the log")
            }
            RedisError::AuthFailed(_) | RedisError::NotAllowed => Self::new(
                500,
                "redis_misconfigured",
                "the Redis credentials or address are wrong; see the log",
            ),
            RedisError::Unavailable(_) => {
                Self::new(503, "redis_unavailable", "Redis is unavailable; try again shortly")
                    .with_header("retry-after", "1")
            }
        }
    }
}

/// Runs `handler` on the request and writes its answer (or its error) to Spin, then runs the
/// answer's [`Response::after`] work.
#[track_caller]
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Result<Response, ApiError>,
) {
    // The component's settings snapshot is named after the file that serves it (each
    // component's handler lives in a file of its own).
    let file = std::panic::Location::caller().file();
    super::settings_snapshot::set_component(file);
    let started = super::clock::monotonic_ms();
    let request = Request::new(request);
    let request_id =
        super::log::request_id(request.header("x-request-id"), request.header("traceparent"));
    let method = request.method().as_str().to_owned();
    super::log::begin(
        super::log::component_of(file),
        request.component_route(),
        &method,
        request_id.clone(),
    );
    let head = request.is_head();
    let mut response = handler(request).unwrap_or_else(Response::from);
    response.set_header("x-request-id", request_id);
    let after = response.after.take();
    let status = response.status;
    write(out, response, head);
    super::log::access(status, super::clock::monotonic_ms().saturating_sub(started));
    if let Some(work) = after {
        work();
    }
    super::breaker::probe_after_response();
    super::settings_snapshot::save();
}

/// Writes the answer so that Spin's HTTP server sends it in one piece.
///
/// Spin 3.6.3 does not set `TCP_NODELAY` on the sockets it accepts, so with Nagle's
/// algorithm a second small write waits for the client's (delayed) ACK of the first. If the
/// response head reached hyper before the body, hyper flushed them separately, and a
/// keep-alive client waited ~25 ms for every answer (measured under the real Spin; a
/// `Connection: close` client did not, as the close flushes). So the body is written and
/// finished *before* the response is handed over, with a `Content-Length`: hyper then finds
/// head, body and end together and writes them at once. Bodies larger than what the body
/// channel takes without a reader are streamed after the handover instead.
pub(crate) fn write(out: ResponseOutparam, mut response: Response, head: bool) {
    // A HEAD answer's length is the GET body's (RFC 9110 §9.3.2): the handler sets it, or none.
    // 1xx, 204 and 304 carry no body and no length of their own.
    let bodiless = head || matches!(response.status, 100..=199 | 204 | 304);
    if !bodiless && response.header("content-length").is_none() {
        response.set_header("content-length", response.body.len().to_string());
    }
    let fields = Fields::new();
    for (name, value) in &response.headers {
        // wasi-http refuses some names (hop-by-hop, `Host`...): skip them, keep the rest.
        if fields.append(name, value).is_err() {
            super::log::warn(
                "header_dropped",
                format_args!("response header {name:?} dropped: not permitted by wasi-http"),
            );
        }
    }
    let outgoing = OutgoingResponse::new(fields);
    if outgoing.set_status_code(response.status).is_err() {
        let _ = outgoing.set_status_code(500);
    }
    let Ok(body) = outgoing.body() else {
        out.set(outgoing);
        return;
    };
    let Ok(stream) = body.write() else {
        out.set(outgoing);
        return;
    };
    // What the stream takes now without blocking: wasmtime-wasi-http's body channel holds a
    // whole chunk (1 MiB by default) before anyone reads it.
    let fits = stream.check_write().is_ok_and(|budget| budget >= response.body.len() as u64);
    if fits {
        if !response.body.is_empty() && stream.write(&response.body).is_err() {
            drop(stream);
            out.set(outgoing);
            return;
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
        out.set(outgoing);
        return;
    }
    out.set(outgoing);
    for chunk in response.body.chunks(64 * 1024) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            // The client went away; nothing more to send.
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_problem_details_with_their_code() {
        let r = ApiError::method_not_allowed(&[http::Method::GET]).to_response();
        assert_eq!(r.status, 405);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.header("allow"), Some("GET"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "https://spin-redis-patterns.dev/problems/method_not_allowed",
                "title": "Method not allowed",
                "status": 405,
                "detail": "use GET",
                "code": "method_not_allowed",
            })
        );
    }
}
