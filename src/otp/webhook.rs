//! Delivery webhook: one JSON POST per issued code, over WASI HTTP with bounded waits.
//! Blocking on WASI pollables keeps the component synchronous and small (the SDK's async
//! client would add its executor to the `.wasm`).

use spin_sdk::wit::wasi::http0_2_0::{outgoing_handler, types as wt};

/// Longest wait for the TCP/TLS connection, and then for the response to start.
const CONNECT_TIMEOUT_NS: u64 = 2_000_000_000;
const RESPONSE_TIMEOUT_NS: u64 = 5_000_000_000;

/// POSTs `body` (JSON) to `url`; `Ok` only for a 2xx answer. The error is safe to log: it
/// names the failure, never the body (which holds the code) or the token.
pub fn post(url: &str, bearer: &str, idempotency_key: &str, body: &[u8]) -> Result<(), String> {
    let (scheme, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (wt::Scheme::Https, rest),
        (_, Some(rest)) => (wt::Scheme::Http, rest),
        _ => return Err("the webhook URL is not http(s)".into()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };

    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
        ("idempotency-key".into(), idempotency_key.as_bytes().to_vec()),
    ];
    if !bearer.is_empty() {
        headers.push(("authorization".into(), format!("Bearer {bearer}").into_bytes()));
    }
    let fields = wt::Fields::from_list(&headers)
        .map_err(|_| "the webhook token is not a valid header value".to_owned())?;
    let request = wt::OutgoingRequest::new(fields);
    let invalid = |what: &str| format!("invalid webhook request {what}");
    request.set_method(&wt::Method::Post).map_err(|()| invalid("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    request.set_path_with_query(Some(&path)).map_err(|()| invalid("path"))?;

    let options = wt::RequestOptions::new();
    // A host may refuse to set a timeout; then its default applies.
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(RESPONSE_TIMEOUT_NS));
    let _ = options.set_between_bytes_timeout(Some(RESPONSE_TIMEOUT_NS));

    let outgoing_body = request.body().map_err(|()| invalid("body"))?;
    let future = outgoing_handler::handle(request, Some(options)).map_err(error_name)?;
    {
        let stream = outgoing_body.write().map_err(|()| invalid("body stream"))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|_| "writing the webhook body failed".to_owned())?;
        }
    }
    wt::OutgoingBody::finish(outgoing_body, None).map_err(error_name)?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response =
        response.map_err(|()| "the response was already taken".to_owned())?.map_err(error_name)?;
    let status = response.status();
    drop(response);
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

/// A short name for a WASI HTTP error (the derived `Debug` of the enum costs `.wasm` size).
fn error_name(e: wt::ErrorCode) -> String {
    use wt::ErrorCode as E;
    let name = match e {
        E::ConnectionRefused => "connection refused",
        E::ConnectionTimeout | E::ConnectionReadTimeout | E::HttpResponseTimeout => "timeout",
        E::HttpRequestDenied => "not permitted by allowed_outbound_hosts (otp_webhook_origin)",
        _ => "network, DNS, TLS or HTTP error",
    };
    format!("webhook delivery failed: {name}")
}
