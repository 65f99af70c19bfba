//! One GET to the origin over WASI HTTP, with connect, first-byte and between-bytes
//! timeouts (the SDK's async client cannot set them) and a cap on the body it buffers.

use spin_sdk::wit::wasi::http0_2_0::{outgoing_handler, types as wt};
use wasi::io::streams::StreamError;

/// Largest origin body read at all; bigger answers are a 502 (entries over the configured
/// maximum but under this are served, not stored).
pub const MAX_ORIGIN_BODY: usize = 16 * 1024 * 1024;

pub struct OriginResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl OriginResponse {
    /// Every value of a header (names compared case-insensitively), joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| String::from_utf8(v.clone()).ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No answer in time: 504.
    Timeout,
    /// Refused, unreachable, denied, or the answer broke off: 502.
    Unreachable(String),
    /// The body is larger than [`MAX_ORIGIN_BODY`]: 502.
    TooLarge,
}

fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// GETs `origin_url` + `target` (a normalised `/path?query`).
pub fn get(origin_url: &str, target: &str, timeout_ms: u64) -> Result<OriginResponse, FetchError> {
    let (scheme, authority) =
        match (origin_url.strip_prefix("http://"), origin_url.strip_prefix("https://")) {
            (Some(a), _) => (wt::Scheme::Http, a),
            (_, Some(a)) => (wt::Scheme::Https, a),
            _ => return Err(FetchError::Unreachable("origin_url is not http(s)".into())),
        };
    // No request headers are forwarded: the key is the target alone, so the origin must not
    // answer differently by header.
    let request = wt::OutgoingRequest::new(wt::Fields::new());
    let bad = |what: &str| FetchError::Unreachable(format!("invalid origin request {what}"));
    request.set_method(&wt::Method::Get).map_err(|()| bad("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| bad("authority"))?;
    request.set_path_with_query(Some(target)).map_err(|()| bad("path"))?;

    let options = wt::RequestOptions::new();
    // Hosts may refuse to honour an option; the others still apply.
    let _ = options.set_connect_timeout(Some(nanos(timeout_ms)));
    let _ = options.set_first_byte_timeout(Some(nanos(timeout_ms)));
    let _ = options.set_between_bytes_timeout(Some(nanos(timeout_ms)));

    let future = outgoing_handler::handle(request, Some(options)).map_err(classify)?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| FetchError::Unreachable("the response was already taken".into()))?
        .map_err(classify)?;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming =
        response.consume().map_err(|()| FetchError::Unreachable("no response body".into()))?;
    let stream =
        incoming.stream().map_err(|()| FetchError::Unreachable("no body stream".into()))?;
    let mut body = Vec::new();
    let result = loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if body.len() + chunk.len() > MAX_ORIGIN_BODY => {
                break Err(FetchError::TooLarge)
            }
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                let message = e.to_debug_string();
                break Err(if message.to_ascii_lowercase().contains("timeout") {
                    FetchError::Timeout
                } else {
                    FetchError::Unreachable(format!("the body broke off: {message}"))
                });
            }
        }
    };
    drop(stream);
    drop(wt::IncomingBody::finish(incoming));
    result.map(|()| OriginResponse { status, headers, body })
}

fn classify(e: wt::ErrorCode) -> FetchError {
    use wt::ErrorCode as E;
    match e {
        E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => FetchError::Timeout,
        // Named by hand: a derived Debug of ErrorCode costs tens of KB of .wasm.
        E::DnsError(_) => FetchError::Unreachable("DNS lookup failed".into()),
        E::ConnectionRefused => FetchError::Unreachable("connection refused".into()),
        E::ConnectionTerminated => FetchError::Unreachable("connection terminated".into()),
        E::HttpRequestDenied => FetchError::Unreachable("denied by allowed_outbound_hosts".into()),
        E::TlsCertificateError | E::TlsAlertReceived(_) | E::TlsProtocolError => {
            FetchError::Unreachable("TLS failed".into())
        }
        _ => FetchError::Unreachable("the request failed".into()),
    }
}

/// Milliseconds on the host's monotonic clock, to time origin fetches.
pub fn monotonic_ms() -> u64 {
    wasi::clocks::monotonic_clock::now() / 1_000_000
}

/// Sleeps without burning CPU: a WASI monotonic-clock pollable.
pub fn sleep_ms(ms: u64) {
    wasi::clocks::monotonic_clock::subscribe_duration(nanos(ms)).block();
}
