//! Small HTTP helpers shared by the components. Request bodies are read by [`crate::json`].

use serde::Serialize;
use spin_sdk::http::{Method, Request, Response};

use crate::error::ApiError;

/// Runs a handler and turns its error into the JSON error response.
pub fn respond(handler: impl FnOnce() -> Result<Response, ApiError>) -> Response {
    handler().unwrap_or_else(Response::from)
}

/// A JSON response with the given status.
pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    crate::json::text_response(status, body)
}

/// Accepts only the listed methods; anything else is 405 with an `Allow` header.
pub fn allow_methods(req: &Request, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(req.method()) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(method_name).collect();
    Err(ApiError::method_not_allowed(&names))
}

fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Connect => "CONNECT",
        Method::Trace => "TRACE",
        Method::Other(_) => "OTHER",
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.header("authorization")?.as_str()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The part of the path after the matched route's `/...`, as Spin reports it.
pub fn path_info(req: &Request) -> &str {
    req.header("spin-path-info").and_then(|v| v.as_str()).unwrap_or("")
}
