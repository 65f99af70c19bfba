//! Structured logs: one JSON object per line on stderr, which Spin (and a container log
//! pipeline after it) collects per component.
//!
//! Every line has `level`, `component`, `route` (the route pattern, never the request path,
//! which may carry ids), `request_id`, `event` and `message`; the access line that [`serve`]
//! writes once per request adds `method`, `status` and `duration_ms`. What a message may
//! hold: names, reasons and counts, never a secret, token, code, session id or Redis
//! password (Redis errors are already redacted by [`super::redis::RedisError`]'s `Display`).
//!
//! The request id is the client's `x-request-id` when it is printable ASCII of at most 128
//! characters, else the trace id of a valid W3C `traceparent`, else 16 random bytes in hex;
//! [`serve`] returns it as `x-request-id` on every answer.
//!
//! [`serve`]: super::response::serve

use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write;

use serde::Serialize;

#[derive(Default)]
struct Context {
    component: String,
    route: String,
    method: String,
    request_id: String,
}

thread_local! {
    // One request per instance at a time: the context is the current request's.
    static CONTEXT: RefCell<Context> = RefCell::new(Context::default());
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Serialize)]
struct Line<'a> {
    level: Level,
    component: &'a str,
    route: &'a str,
    request_id: &'a str,
    event: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
}

fn emit(level: Level, event: &str, message: &str, access: Option<(u16, u64)>) {
    CONTEXT.with(|c| {
        let c = c.borrow();
        let line = Line {
            level,
            component: &c.component,
            route: &c.route,
            request_id: &c.request_id,
            event,
            message,
            method: access.map(|_| c.method.as_str()),
            status: access.map(|(status, _)| status),
            duration_ms: access.map(|(_, ms)| ms),
        };
        if let Ok(mut text) = serde_json::to_string(&line) {
            // One write per line: `eprintln!` writes the newline separately, and concurrent
            // instances share the component's log, so a line could be split by another's.
            text.push('\n');
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    });
}

/// Something worth knowing that is not a failure.
pub fn info(event: &str, message: impl Display) {
    emit(Level::Info, event, &message.to_string(), None);
}

/// Something failed and the request went on another way (fallback, fail-open...).
pub fn warn(event: &str, message: impl Display) {
    emit(Level::Warn, event, &message.to_string(), None);
}

/// Something failed that an operator must fix or that answers the client with an error.
pub fn error(event: &str, message: impl Display) {
    emit(Level::Error, event, &message.to_string(), None);
}

/// The component's name from the file that serves it: `src/cache/admin.rs` is
/// `cache-admin`, `src/cache/mod.rs` is `cache`.
pub(crate) fn component_of(file: &str) -> String {
    let file = file.rsplit_once("src/").map_or(file, |(_, rest)| rest);
    let file = file.strip_suffix(".rs").unwrap_or(file);
    let file = file.strip_suffix("/mod").unwrap_or(file);
    file.replace('/', "-")
}

/// Sets the context of the request about to be served.
pub(crate) fn begin(component: String, route: &str, method: &str, request_id: String) {
    CONTEXT.with(|c| {
        *c.borrow_mut() =
            Context { component, route: route.to_owned(), method: method.to_owned(), request_id }
    });
}

/// The one access line of a request.
pub(crate) fn access(status: u16, duration_ms: u64) {
    let level = if status >= 500 { Level::Error } else { Level::Info };
    emit(level, "request", "answered", Some((status, duration_ms)));
}

/// The request id: the client's `x-request-id` if acceptable, else `traceparent`'s trace id,
/// else a fresh random one.
pub(crate) fn request_id(x_request_id: Option<&str>, traceparent: Option<&str>) -> String {
    if let Some(id) = x_request_id.filter(|id| valid_request_id(id)) {
        return id.to_owned();
    }
    if let Some(trace_id) = traceparent.and_then(trace_id) {
        return trace_id.to_owned();
    }
    super::secrets::hex(&super::secrets::random_bytes(16))
}

/// Printable ASCII (no controls, so it cannot split a log line or a header), 1 to 128 chars.
fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The trace id of a W3C Trace Context `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); the
/// all-zero id is invalid.
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_follow_the_serving_file() {
        assert_eq!(component_of("src/cache/admin.rs"), "cache-admin");
        assert_eq!(component_of("src/cache/mod.rs"), "cache");
        assert_eq!(component_of("/x/y/src/health.rs"), "health");
    }

    #[test]
    fn request_ids() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(request_id(Some("abc-1"), Some(tp)), "abc-1");
        assert_eq!(request_id(None, Some(tp)), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(request_id(Some("has space"), Some(tp)), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(request_id(Some(&"a".repeat(129)), Some(tp)).len(), 32);
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let generated = request_id(Some("line\nbreak"), Some(zero));
        assert_eq!(generated.len(), 32);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(generated, request_id(None, None));
        assert!(trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
        assert!(trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_none());
    }
}
