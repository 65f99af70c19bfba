//! The one outbound HTTP client: a blocking request over WASI HTTP with connect, first-byte
//! and between-bytes timeouts, an overall deadline, and a cap on the body it buffers.
//!
//! Blocking on WASI pollables keeps the components synchronous and small (the SDK's async
//! client brings its executor). Per-phase timeouts are handed to the host, which may ignore
//! them; the overall deadline is enforced here, by polling every wait together with a timer,
//! so a trickling peer that never breaks a per-phase timeout is still cut off.

use spin_sdk::wit::wasi::http0_2_0::{outgoing_handler, types as wt};
use wasi::io::poll::{poll, Pollable};
use wasi::io::streams::{InputStream, StreamError};

use super::clock::monotonic_ms;
use super::url::{HttpUrl, Scheme};

/// How long each phase may take, and the whole exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect_ms: u64,
    pub first_byte_ms: u64,
    pub between_bytes_ms: u64,
    /// From sending until the last body byte: the bound that holds whatever the peer does.
    pub deadline_ms: u64,
}

impl Timeouts {
    /// Every phase and the whole exchange bounded by the same figure.
    pub const fn uniform(ms: u64) -> Self {
        Self { connect_ms: ms, first_byte_ms: ms, between_bytes_ms: ms, deadline_ms: ms }
    }
}

/// One request to send.
pub struct OutboundRequest<'a> {
    pub method: &'a http::Method,
    /// `http(s)://authority/path?query`.
    pub url: &'a str,
    /// Field lines in order; repeated names stay repeated.
    pub headers: &'a [(String, Vec<u8>)],
    pub body: &'a [u8],
}

/// The whole answer, field lines in the order the peer sent them.
#[derive(Debug)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl OutboundResponse {
    /// Every value of a header (names compared case-insensitively), in order.
    pub fn header_values(&self, name: &str) -> impl Iterator<Item = &str> {
        let name = name.to_owned();
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every value of a header joined with `, ` (RFC 9110 list syntax); `None` if absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self.header_values(name).collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// A timeout or the deadline passed: answer 504.
    Timeout,
    /// `allowed_outbound_hosts` does not permit the destination: a configuration error.
    Denied,
    /// The request could not be built (a header wasi-http forbids, a bad URL).
    InvalidRequest(String),
    /// Refused, unreachable, TLS failure, or the answer broke off: answer 502.
    Unreachable(String),
    /// The body is larger than the cap: answer 502 (or 413, as the caller decides).
    TooLarge,
}

impl std::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Denied => f.write_str("not permitted by allowed_outbound_hosts"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Unreachable(m) => f.write_str(m),
            Self::TooLarge => f.write_str("the response body is too large"),
        }
    }
}

fn method(m: &http::Method) -> wt::Method {
    match *m {
        http::Method::GET => wt::Method::Get,
        http::Method::HEAD => wt::Method::Head,
        http::Method::POST => wt::Method::Post,
        http::Method::PUT => wt::Method::Put,
        http::Method::PATCH => wt::Method::Patch,
        http::Method::DELETE => wt::Method::Delete,
        http::Method::OPTIONS => wt::Method::Options,
        http::Method::TRACE => wt::Method::Trace,
        http::Method::CONNECT => wt::Method::Connect,
        ref other => wt::Method::Other(other.as_str().to_owned()),
    }
}

/// The URL as wasi-http takes it: scheme, authority, path and query (never a fragment), read
/// by the one URL parser.
fn split_url(url: &str) -> Result<(wt::Scheme, String, String), OutboundError> {
    let url = HttpUrl::parse(url).map_err(|e| OutboundError::InvalidRequest(e.to_string()))?;
    let scheme = match url.scheme {
        Scheme::Http => wt::Scheme::Http,
        Scheme::Https => wt::Scheme::Https,
    };
    Ok((scheme, url.authority(), url.path_and_query))
}

/// Sends one request and reads the whole answer, at most `max_body` bytes of it.
pub fn send(
    request: &OutboundRequest<'_>,
    timeouts: Timeouts,
    max_body: usize,
) -> Result<OutboundResponse, OutboundError> {
    let (scheme, authority, path) = split_url(request.url)?;
    send_to(request, scheme, &authority, &path, timeouts, max_body)
}

/// [`send`] to a path of this app itself (`request.url` is `/...`): Spin takes a request to a
/// host-less authority as one to the app (`http://self` in `allowed_outbound_hosts`); `:80`
/// is what spin-sdk sends for a relative URL.
pub fn send_to_self(
    request: &OutboundRequest<'_>,
    timeouts: Timeouts,
    max_body: usize,
) -> Result<OutboundResponse, OutboundError> {
    send_to(request, wt::Scheme::Http, ":80", request.url, timeouts, max_body)
}

fn send_to(
    request: &OutboundRequest<'_>,
    scheme: wt::Scheme,
    authority: &str,
    path: &str,
    timeouts: Timeouts,
    max_body: usize,
) -> Result<OutboundResponse, OutboundError> {
    let deadline = Deadline::after(timeouts.deadline_ms);
    let fields = wt::Fields::new();
    for (name, value) in request.headers {
        fields.append(name, value).map_err(|_| {
            OutboundError::InvalidRequest(format!("header {name:?} cannot be sent"))
        })?;
    }
    let outgoing = wt::OutgoingRequest::new(fields);
    let invalid = |what: &str| OutboundError::InvalidRequest(format!("invalid {what}"));
    outgoing.set_method(&method(request.method)).map_err(|()| invalid("method"))?;
    outgoing.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    outgoing.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    outgoing.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;

    let options = wt::RequestOptions::new();
    // A host may refuse an option; the others, and the deadline, still apply.
    let nanos = |ms: u64| ms.saturating_mul(1_000_000);
    let _ = options.set_connect_timeout(Some(nanos(timeouts.connect_ms)));
    let _ = options.set_first_byte_timeout(Some(nanos(timeouts.first_byte_ms)));
    let _ = options.set_between_bytes_timeout(Some(nanos(timeouts.between_bytes_ms)));

    let outgoing_body = outgoing.body().map_err(|()| invalid("body"))?;
    let future = outgoing_handler::handle(outgoing, Some(options)).map_err(classify)?;
    if !request.body.is_empty() {
        let stream = outgoing_body.write().map_err(|()| invalid("body stream"))?;
        for chunk in request.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|_| OutboundError::Unreachable("sending the body failed".into()))?;
        }
    }
    wt::OutgoingBody::finish(outgoing_body, None).map_err(classify)?;

    let response = loop {
        if let Some(result) = future.get() {
            break result;
        }
        deadline.wait_for(&future.subscribe())?;
    };
    let response = response
        .map_err(|()| OutboundError::Unreachable("the response was already taken".into()))?
        .map_err(classify)?;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming =
        response.consume().map_err(|()| OutboundError::Unreachable("no response body".into()))?;
    let stream =
        incoming.stream().map_err(|()| OutboundError::Unreachable("no body stream".into()))?;
    let body = read_all(&stream, max_body, &deadline);
    drop(stream);
    drop(wt::IncomingBody::finish(incoming));
    Ok(OutboundResponse { status, headers, body: body? })
}

/// Reads a stream to its end within the deadline, refusing more than `max` bytes.
fn read_all(
    stream: &InputStream,
    max: usize,
    deadline: &Deadline,
) -> Result<Vec<u8>, OutboundError> {
    let mut body = Vec::new();
    loop {
        match stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => deadline.wait_for(&stream.subscribe())?,
            Ok(chunk) if body.len() + chunk.len() > max => return Err(OutboundError::TooLarge),
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(e)) => {
                let message = e.to_debug_string();
                return Err(if message.to_ascii_lowercase().contains("timeout") {
                    OutboundError::Timeout
                } else {
                    OutboundError::Unreachable(format!("the body broke off: {message}"))
                });
            }
        }
    }
}

/// The overall deadline of one exchange, on the monotonic clock.
struct Deadline {
    at_ms: u64,
}

impl Deadline {
    fn after(ms: u64) -> Self {
        Self { at_ms: monotonic_ms().saturating_add(ms) }
    }

    /// Waits until `ready` is ready or the deadline passes (then `Timeout`).
    fn wait_for(&self, ready: &Pollable) -> Result<(), OutboundError> {
        let left = self.at_ms.saturating_sub(monotonic_ms());
        if left == 0 {
            return Err(OutboundError::Timeout);
        }
        let timer = wasi::clocks::monotonic_clock::subscribe_duration(left * 1_000_000);
        let woke = poll(&[ready, &timer]);
        if woke.contains(&0) {
            Ok(())
        } else {
            Err(OutboundError::Timeout)
        }
    }
}

/// The WASI error codes in a few words; a derived `Debug` of the enum costs KBs of `.wasm`.
fn classify(e: wt::ErrorCode) -> OutboundError {
    use wt::ErrorCode as E;
    let unreachable = |m: &str| OutboundError::Unreachable(m.to_owned());
    match e {
        E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout
        | E::DnsTimeout => OutboundError::Timeout,
        E::HttpRequestDenied => OutboundError::Denied,
        E::DnsError(_) => unreachable("DNS lookup failed"),
        E::DestinationNotFound | E::DestinationUnavailable | E::DestinationIpUnroutable => {
            unreachable("destination unreachable")
        }
        E::ConnectionRefused => unreachable("connection refused"),
        E::ConnectionTerminated => unreachable("connection terminated"),
        E::TlsProtocolError | E::TlsCertificateError | E::TlsAlertReceived(_) => {
            unreachable("TLS failed")
        }
        E::HttpRequestHeaderSize(_)
        | E::HttpRequestHeaderSectionSize(_)
        | E::HttpRequestBodySize(_)
        | E::HttpRequestMethodInvalid
        | E::HttpRequestUriInvalid
        | E::HttpRequestUriTooLong => OutboundError::InvalidRequest("refused by the host".into()),
        E::HttpResponseBodySize(_) | E::HttpResponseContentCoding(_) => {
            unreachable("the response was malformed")
        }
        E::HttpProtocolError => unreachable("HTTP protocol error"),
        _ => unreachable("the request failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_target() {
        let (_, a, p) = split_url("http://origin.spin.internal").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("origin.spin.internal", "/"));
        let (_, a, p) = split_url("https://h:8443/x/y?q=1").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("h:8443", "/x/y?q=1"));
        let (_, a, p) = split_url("http://h?q").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("h", "/?q"));
        let (_, a, p) = split_url("http://[::1]/hook").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("[::1]", "/hook"));
        for bad in ["ftp://h", "https://h:99999/", "https://h:/", "https://h/x#frag"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
