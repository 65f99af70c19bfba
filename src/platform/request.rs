//! The incoming request as every service reads it.
//!
//! - Field lines are kept in order, so a repeated header is seen as repeated. A singleton
//!   field ([`Request::header`]) that arrives more than once reads as absent: the request is
//!   ambiguous, and a proxy in front may have read the other value.
//! - `spin-*` headers are read as Spin defines them: Spin appends its own value after any a
//!   client sent, so the LAST value is Spin's ([`Request::spin_header`]).
//! - The body is read only when a handler asks, with a limit: a declared `Content-Length`
//!   over it is refused (413) before a byte is read, and a stream that runs past it is cut.

use std::net::{IpAddr, SocketAddr};

use serde::de::DeserializeOwned;
use spin_sdk::http::IncomingRequest;
use spin_sdk::wit::wasi::http0_2_0::types::{IncomingBody, Method as WasiMethod};
use wasi::io::streams::StreamError;

use super::json;
use super::response::ApiError;

pub struct Request {
    method: http::Method,
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
    /// Until the body is read.
    incoming: Option<IncomingRequest>,
}

pub(crate) fn method(m: WasiMethod) -> http::Method {
    match m {
        WasiMethod::Get => http::Method::GET,
        WasiMethod::Head => http::Method::HEAD,
        WasiMethod::Post => http::Method::POST,
        WasiMethod::Put => http::Method::PUT,
        WasiMethod::Patch => http::Method::PATCH,
        WasiMethod::Delete => http::Method::DELETE,
        WasiMethod::Options => http::Method::OPTIONS,
        WasiMethod::Trace => http::Method::TRACE,
        WasiMethod::Connect => http::Method::CONNECT,
        // Spin has already checked the token syntax; an unparsable one cannot match a route.
        WasiMethod::Other(name) => {
            http::Method::from_bytes(name.as_bytes()).unwrap_or(http::Method::OPTIONS)
        }
    }
}

impl Request {
    pub fn new(incoming: IncomingRequest) -> Self {
        Self {
            method: method(incoming.method()),
            path_with_query: incoming.path_with_query().unwrap_or_default(),
            headers: incoming.headers().entries(),
            incoming: Some(incoming),
        }
    }

    /// A request without a body, from its parts: what a library caller describes (the
    /// cache's `HttpRequest`), read by the same rules as an incoming one.
    pub(crate) fn from_parts(
        method: http::Method,
        path_with_query: String,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Self {
        Self { method, path_with_query, headers, incoming: None }
    }

    /// A request without a body, for unit tests of routing and header rules.
    #[cfg(test)]
    pub(crate) fn for_test(method: http::Method, path: &str, headers: &[(&str, &str)]) -> Self {
        let headers =
            headers.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())).collect();
        Self::from_parts(method, path.to_owned(), headers)
    }

    pub fn method(&self) -> &http::Method {
        &self.method
    }

    pub fn is_head(&self) -> bool {
        self.method == http::Method::HEAD
    }

    /// Accepts only the listed methods; anything else is 405 with an `Allow` header.
    pub fn allow(&self, allowed: &[http::Method]) -> Result<(), ApiError> {
        if allowed.contains(&self.method) {
            Ok(())
        } else {
            let mut error = ApiError::method_not_allowed(allowed);
            let names: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
            error.message = format!("use {}", readable_list(&names));
            Err(error)
        }
    }

    /// The path and query as the client sent them.
    pub fn path_with_query(&self) -> &str {
        &self.path_with_query
    }

    /// The query string, without `?`.
    pub fn query(&self) -> &str {
        self.path_with_query.split_once('?').map_or("", |(_, q)| q)
    }

    /// Every field line, in order.
    pub fn field_lines(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// Every UTF-8 value of a header, in order (names compare case-insensitively).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .collect()
    }

    /// How many field lines carry `name`.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }

    /// The value of a singleton header: `None` when absent, not UTF-8, or repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.header_values(name)[..] {
            [only] if self.header_count(name) == 1 => Some(only),
            _ => None,
        }
    }

    /// The value Spin set for a `spin-*` header: the last one, since Spin appends its own
    /// after any the client sent.
    pub fn spin_header(&self, name: &str) -> Option<&str> {
        self.header_values(name).last().copied()
    }

    /// The path after the route's `/...` wildcard, as Spin reports it.
    pub fn path_info(&self) -> &str {
        self.spin_header("spin-path-info").unwrap_or("")
    }

    /// The route pattern that matched, as Spin reports it (`/api/limited/...`).
    pub fn component_route(&self) -> &str {
        self.spin_header("spin-component-route").unwrap_or("")
    }

    /// The peer's address as Spin reports it (`0.0.0.0` for service chaining).
    pub fn client_addr(&self) -> Option<IpAddr> {
        let value = self.spin_header("spin-client-addr")?;
        value.parse::<SocketAddr>().map(|s| s.ip()).or_else(|_| value.parse::<IpAddr>()).ok()
    }

    /// The token of a single `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let (scheme, token) = self.header("authorization")?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    }

    /// `Content-Length` as declared: `Ok(None)` when absent, 400 when malformed or repeated.
    pub fn content_length(&self) -> Result<Option<u64>, ApiError> {
        match self.header_count("content-length") {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_content_length",
                    "Content-Length is repeated",
                ))
            }
        }
        self.header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("invalid_content_length", "Content-Length is not a number")
            })
    }

    /// 413 when the declared `Content-Length` is over `limit`: refused before a byte is read.
    fn check_declared_length(&self, limit: usize) -> Result<(), ApiError> {
        match self.content_length()? {
            Some(n) if n > limit as u64 => Err(too_large(limit)),
            _ => Ok(()),
        }
    }

    /// The whole body, at most `limit` bytes: 413 when the declared length or the stream is
    /// larger. The body can be read once.
    pub fn body(&mut self, limit: usize) -> Result<Vec<u8>, ApiError> {
        self.check_declared_length(limit)?;
        let Some(incoming) = self.incoming.take() else {
            return Ok(Vec::new());
        };
        read_body(incoming, limit)
    }

    /// The body as the JSON object `T`, at most `limit` bytes: 415 unless the content type is
    /// JSON (which also keeps a cross-site HTML form from posting it without a CORS
    /// preflight), 400 `invalid_json` when it is not a JSON object (serde would take an
    /// array of the field values in order, see [`super::json`]) or does not fit `T`.
    pub fn json<T: DeserializeOwned>(&mut self, limit: usize) -> Result<T, ApiError> {
        // The declared size first: an oversized upload is refused whatever its type.
        self.check_declared_length(limit)?;
        if !is_json_media_type(self.header("content-type").unwrap_or("")) {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let body = self.body(limit)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body is empty; send a JSON object",
            ));
        }
        json::object(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not a valid JSON object: {e}"),
            )
        })
    }
}

/// Reads a request body to its end, blocking, at most `limit` bytes (413 past it).
pub(crate) fn read_body(incoming: IncomingRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    let unreadable =
        || ApiError::bad_request("unreadable_body", "the request body could not be read");
    let body = incoming.consume().map_err(|()| unreadable())?;
    let stream = body.stream().map_err(|()| unreadable())?;
    let mut data = Vec::new();
    let result = loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if data.len() + chunk.len() > limit => break Err(too_large(limit)),
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(data),
            Err(StreamError::LastOperationFailed(_)) => break Err(unreadable()),
        }
    };
    drop(stream);
    drop(IncomingBody::finish(body));
    result
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(413, "body_too_large", format!("the body is larger than {limit} bytes"))
}

/// `application/json` or any `+json` type, parameters allowed.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `A`, `A or B`, `A, B or C`: a list people read, not "A or B or C or D".
fn readable_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod readable_list_tests {
    use super::readable_list;

    #[test]
    fn lists_read_as_english() {
        assert_eq!(readable_list(&["GET"]), "GET");
        assert_eq!(readable_list(&["GET", "HEAD"]), "GET or HEAD");
        assert_eq!(readable_list(&["GET", "HEAD", "POST"]), "GET, HEAD or POST");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn spin_headers_read_the_value_spin_appended() {
        let req = Request::for_test(
            Method::DELETE,
            "/api/sessions/current",
            &[("spin-path-info", ""), ("spin-path-info", "/current")],
        );
        assert_eq!(req.path_info(), "/current");
    }

    #[test]
    fn repeated_singletons_read_as_absent() {
        let req = Request::for_test(
            Method::GET,
            "/",
            &[("Authorization", "Bearer a"), ("authorization", "Bearer b"), ("x-one", "1")],
        );
        assert_eq!(req.bearer_token(), None);
        assert_eq!(req.header("X-One"), Some("1"));
        assert_eq!(req.header_values("authorization").len(), 2);
    }

    #[test]
    fn bearer_tokens() {
        let req = Request::for_test(Method::GET, "/", &[("authorization", "bearer  tok ")]);
        assert_eq!(req.bearer_token(), Some("tok"));
        let req = Request::for_test(Method::GET, "/", &[("authorization", "Basic abc")]);
        assert_eq!(req.bearer_token(), None);
    }

    #[test]
    fn declared_length_over_the_limit_is_413_before_reading() {
        let mut req = Request::for_test(Method::POST, "/", &[("content-length", "5000")]);
        assert_eq!(req.body(4096).unwrap_err().status, 413);
        let mut req = Request::for_test(Method::POST, "/", &[("content-length", "x")]);
        assert_eq!(req.body(4096).unwrap_err().status, 400);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
    }
}
