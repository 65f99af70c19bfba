//! Blocking WASI HTTP for the gateway: read the incoming body and send one request upstream,
//! waiting on WASI pollables. The SDK's async client (`spin_sdk::http::send`) does the same
//! through a futures executor and costs about 30 KB more `.wasm`.

use spin_sdk::http::IncomingRequest;
use spin_sdk::wit::wasi::http0_2_0::{outgoing_handler, types as wt};
use wasi::io::streams::{InputStream, StreamError};

/// Largest request or upstream response body the component buffers.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Failed(String),
}

fn read_stream(stream: &InputStream) -> Result<Vec<u8>, BodyError> {
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
            }
            Err(StreamError::Closed) => return Ok(data),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(BodyError::Failed(e.to_debug_string()))
            }
        }
    }
}

/// The whole body of the incoming request (at most [`MAX_BODY`] bytes).
pub fn request_body(req: &IncomingRequest) -> Result<Vec<u8>, BodyError> {
    let body =
        req.consume().map_err(|()| BodyError::Failed("the body was already taken".into()))?;
    let stream = body.stream().map_err(|()| BodyError::Failed("no body stream".into()))?;
    let data = read_stream(&stream);
    drop(stream);
    drop(wt::IncomingBody::finish(body));
    data
}

/// A short name for the WASI HTTP error codes a gateway meets; the derived `Debug` of the
/// whole enum would cost 5 KB of `.wasm`.
fn error_code(e: wt::ErrorCode) -> String {
    use wt::ErrorCode as E;
    let name = match e {
        E::DnsTimeout => "DNS timeout",
        E::DnsError(_) => "DNS error",
        E::DestinationNotFound => "destination not found",
        E::DestinationUnavailable => "destination unavailable",
        E::DestinationIpUnroutable => "destination IP unroutable",
        E::ConnectionRefused => "connection refused",
        E::ConnectionTerminated => "connection terminated",
        E::ConnectionTimeout => "connection timeout",
        E::ConnectionReadTimeout => "read timeout",
        E::ConnectionWriteTimeout => "write timeout",
        E::TlsProtocolError | E::TlsCertificateError | E::TlsAlertReceived(_) => "TLS error",
        E::HttpRequestDenied => "request denied (not in allowed_outbound_hosts)",
        E::HttpResponseTimeout => "response timeout",
        E::HttpProtocolError => "HTTP protocol error",
        _ => "other HTTP error",
    };
    name.to_owned()
}

pub struct UpstreamResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Sends one request and waits for the whole response. `url` is `http(s)://authority/path?query`.
pub fn send(
    method: &wt::Method,
    url: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<UpstreamResponse, String> {
    let (scheme, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (wt::Scheme::Http, rest),
        (_, Some(rest)) => (wt::Scheme::Https, rest),
        _ => return Err("the upstream URL is not http:// or https://".into()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let fields = wt::Fields::from_list(headers)
        .map_err(|e| format!("a header cannot be forwarded: {e:?}"))?;
    let request = wt::OutgoingRequest::new(fields);
    let invalid = |what: &str| format!("invalid upstream request {what}");
    request.set_method(method).map_err(|()| invalid("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    request.set_path_with_query(Some(&path)).map_err(|()| invalid("path"))?;
    let outgoing_body = request.body().map_err(|()| invalid("body"))?;
    let future = outgoing_handler::handle(request, None).map_err(error_code)?;
    {
        let stream = outgoing_body.write().map_err(|()| invalid("body stream"))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|_| "writing the body failed".to_owned())?;
        }
    }
    wt::OutgoingBody::finish(outgoing_body, None).map_err(error_code)?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response =
        response.map_err(|()| "the response was already taken".to_owned())?.map_err(error_code)?;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|()| "no response body".to_owned())?;
    let stream = incoming.stream().map_err(|()| "no response body stream".to_owned())?;
    let body = read_stream(&stream).map_err(|e| match e {
        BodyError::TooLarge => format!("the response body is larger than {MAX_BODY} bytes"),
        BodyError::Failed(m) => format!("reading the response body: {m}"),
    });
    drop(stream);
    drop(wt::IncomingBody::finish(incoming));
    Ok(UpstreamResponse { status, headers, body: body? })
}
