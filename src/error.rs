//! The JSON error every route answers with: `{"error": {"code": "...", "message": "..."}}`.

use spin_sdk::http::Response;

use crate::redis::RedisError;

/// An error response: status, a stable snake_case code for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers, such as `Allow`, `Retry-After` or `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
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

    pub fn method_not_allowed(allowed: &[&str]) -> Self {
        Self::new(405, "method_not_allowed", format!("use {}", allowed.join(" or ")))
            .with_header("allow", allowed.join(", "))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message).with_header("www-authenticate", "Bearer")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    pub fn to_response(&self) -> Response {
        // Written by hand: `json!` builds a `serde_json::Value`, whose map and float writer
        // cost about 9 KB of every component's .wasm. Same bytes as `json!(..).to_string()`.
        let body = format!(
            r#"{{"error":{{"code":{},"message":{}}}}}"#,
            crate::json::quote(self.code),
            crate::json::quote(&self.message)
        );
        let mut builder = Response::builder();
        builder
            .status(self.status)
            .header("content-type", "application/json")
            .header("cache-control", "no-store");
        for (name, value) in &self.headers {
            builder.header(*name, value.as_str());
        }
        builder.body(body.to_string()).build()
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        e.to_response()
    }
}

/// Redis failures become 503 `redis_unavailable` (clients may retry), except a reply the
/// code did not expect, which is our bug: 500. Details go to the log, not to the client.
impl From<RedisError> for ApiError {
    fn from(e: RedisError) -> Self {
        eprintln!("redis error ({}): {e}", e.reason());
        match e {
            RedisError::UnexpectedReply(_) => Self::internal("unexpected reply from Redis"),
            RedisError::Config(c) => Self::new(
                500,
                "redis_misconfigured",
                format!("the Redis settings are invalid: {c}"),
            ),
            _ => Self::new(503, "redis_unavailable", "Redis is unavailable; try again shortly")
                .with_header("retry-after", "1"),
        }
    }
}
