//! Answering from your own handler without the keep-alive stall.
//!
//! Spin 3.6.3 leaves Nagle's algorithm on for the connections it accepts, and a handler that
//! returns spin-sdk's `Response` has its head sent before its body: a keep-alive client
//! (browsers, ingresses, load balancers) then waits for a delayed ACK, about 40 ms per answer
//! (measured under the real Spin; docs/architecture.md, "The real Spin and the test host").
//! [`serve`] writes head, body and end in one piece with a `Content-Length`, as the
//! project's own components do.
//!
//! [`send`] is a blocking outbound request for the same handlers (a cache fill's fetch, a
//! webhook). Both read and write bodies on WASI streams directly: spin-sdk's async request
//! conversions, its `send` and its executor (with `anyhow` and std's backtrace printer) cost
//! the login example 77 KB of `.wasm` (docs/benchmarks.md, "Component sizes").

use std::time::Duration;

use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};

use crate::platform::outbound::{self, OutboundError, OutboundRequest, Timeouts};
use crate::platform::request::{self as incoming, read_body};
use crate::platform::response as platform;
use crate::Error;

/// Runs `handler` on the request and writes its answer in one piece. Use it with the
/// `#[http_component]` signature that takes the raw request and the out-parameter:
///
/// ```no_run
/// use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
///
/// // #[spin_sdk::http_component]
/// fn handle(req: IncomingRequest, out: ResponseOutparam) {
///     spin_redis_patterns::http::serve(req, out, |req: Request| {
///         Response::new(200, format!("hello from {}", req.path()))
///     });
/// }
/// ```
///
/// The body is read whole before `handler` runs, at most [`MAX_REQUEST_BYTES`]: a larger one
/// is answered `413 body_too_large`, and one that cannot be read (the client went away
/// mid-body) `400 unreadable_body`, both as `application/problem+json`, without calling
/// `handler`. A `HEAD` answer gets no `Content-Length` of its own: set the GET body's length
/// yourself if you want one.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let method = request.method();
    let head = method == Method::Head;
    let uri = request.uri();
    // Copied out: the fields are a child of the request, which reading the body drops.
    let headers = request.headers().entries();
    let answer = match read_body(request, MAX_REQUEST_BYTES) {
        Ok(body) => {
            let response = handler(
                Request::builder().method(method).uri(uri).headers(headers).body(body).build(),
            );
            let mut answer = platform::Response::new(*response.status());
            answer.headers = response
                .headers()
                .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
                .collect();
            answer.body = response.into_body();
            answer
        }
        Err(refused) => refused.into(),
    };
    platform::write(out, answer, head);
}

/// The largest request body [`serve`] reads (1 MiB, nginx's default `client_max_body_size`):
/// the whole body is in memory before the handler runs, so a client must not choose its size.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The largest answer body [`send`] reads: past it the answer is refused (502).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Sends `request` and reads the whole answer, blocking, within `timeout` (connecting, the
/// first byte, and the whole exchange each bounded by it).
///
/// A URL that is a path alone (`/profiles/1`) goes to this app itself, as with spin-sdk's
/// `send` (`http://self` in `allowed_outbound_hosts`); `http://NAME.spin.internal/...`
/// reaches another component of the app (service chaining). The destination must be in the
/// component's `allowed_outbound_hosts`.
///
/// Errors are [`Error::Upstream`]: `504 upstream_timeout` when the time ran out,
/// `502 upstream_unreachable` when the peer could not be reached or its answer broke off or
/// ran past [`MAX_ANSWER_BYTES`], `502 upstream_denied` when `allowed_outbound_hosts` does not
/// allow the destination, `502 upstream_invalid_request` when the request cannot be sent.
/// Any status the peer answers, 4xx and 5xx included, is an `Ok` response.
///
/// ```no_run
/// use std::time::Duration;
/// use spin_sdk::http::Request;
///
/// # fn main() -> Result<(), spin_redis_patterns::Error> {
/// let request = Request::get("/origin/profiles/1").build();
/// let response = spin_redis_patterns::http::send(&request, Duration::from_secs(5))?;
/// assert_eq!(*response.status(), 200);
/// # Ok(())
/// # }
/// ```
pub fn send(request: &Request, timeout: Duration) -> Result<Response, Error> {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let method = incoming::method(request.method().clone());
    let headers: Vec<(String, Vec<u8>)> = request
        .headers()
        .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
        .collect();
    let outgoing = OutboundRequest {
        method: &method,
        url: request.uri(),
        headers: &headers,
        body: request.body(),
    };
    let this_app = request.uri().starts_with('/') && !request.uri().starts_with("//");
    let timeouts = Timeouts::uniform(ms);
    let answer = if this_app {
        outbound::send_to_self(&outgoing, timeouts, MAX_ANSWER_BYTES)
    } else {
        outbound::send(&outgoing, timeouts, MAX_ANSWER_BYTES)
    }
    .map_err(|e| upstream(request.uri(), e))?;
    Ok(Response::builder().status(answer.status).headers(answer.headers).body(answer.body).build())
}

fn upstream(url: &str, e: OutboundError) -> Error {
    let (status, code) = match e {
        OutboundError::Timeout => (504, "upstream_timeout"),
        OutboundError::Denied => (502, "upstream_denied"),
        OutboundError::InvalidRequest(_) => (502, "upstream_invalid_request"),
        OutboundError::Unreachable(_) | OutboundError::TooLarge => (502, "upstream_unreachable"),
    };
    Error::Upstream { status, code, message: format!("{url}: {e}"), retry_after_ms: None }
}
