//! Answering from your own handler without the keep-alive stall.
//!
//! Spin 3.6.3 leaves Nagle's algorithm on for the connections it accepts, and a handler that
//! returns spin-sdk's `Response` has its head sent before its body: a keep-alive client
//! (browsers, ingresses, load balancers) then waits for a delayed ACK, about 40 ms per answer
//! (measured under the real Spin; docs/architecture.md, "The real Spin and the test host").
//! [`serve`] writes head, body and end in one piece with a `Content-Length`, as the
//! project's own components do.

use spin_sdk::http::conversions::TryFromIncomingRequest;
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};

use crate::platform::response as platform;

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
/// A request whose body cannot be read (the client went away mid-body) is answered `400`
/// without calling `handler`. A `HEAD` answer gets no `Content-Length` of its own: set the
/// GET body's length yourself if you want one.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let (response, head) = match spin_sdk::http::run(Request::try_from_incoming_request(request)) {
        Ok(request) => {
            let head = *request.method() == Method::Head;
            (handler(request), head)
        }
        Err(_) => (Response::new(400, "the request body could not be read"), false),
    };
    let mut answer = platform::Response::new(*response.status());
    answer.headers = response
        .headers()
        .map(|(name, value)| (name.to_owned(), value.as_bytes().to_vec()))
        .collect();
    answer.body = response.into_body();
    platform::write(out, answer, head);
}
