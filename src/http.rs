//! Small HTTP helpers shared by the components.

use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sdk::http::{Method, Request, Response};

use crate::error::ApiError;

/// Runs a handler and turns its error into the JSON error response.
pub fn respond(handler: impl FnOnce() -> Result<Response, ApiError>) -> Response {
    handler().unwrap_or_else(Response::from)
}

/// A JSON response with the given status.
pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(body)
        .build()
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

/// Parses a JSON request body of at most `max_bytes`: 413 when larger, 415 when the
/// content type says it is not JSON, 400 when it does not parse as `T`.
pub fn json_body<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T, ApiError> {
    if let Some(ct) = req.header("content-type").and_then(|v| v.as_str()) {
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media != "application/json" && !media.ends_with("+json") {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
    }
    let body = req.body();
    if body.len() > max_bytes {
        return Err(ApiError::new(
            413,
            "body_too_large",
            format!("the body is larger than {max_bytes} bytes"),
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("invalid_json", "the request body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid: {e}")))
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
