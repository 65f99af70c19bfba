//! The request bodies of the OTP routes: small JSON objects whose values are all strings,
//! read with the shared strict reader ([`crate::json`]).

use spin_sdk::http::Request;

use crate::error::ApiError;
use crate::json;

/// Nesting accepted while parsing; the fields themselves are flat strings.
const MAX_DEPTH: usize = 16;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_json", message)
}

/// The fields of a JSON object body, checked by `json::request_body` (415 for a
/// non-JSON content type, 413 above `max_bytes`, 400 when empty or malformed). Every field in
/// `names` must be a string or, when not in `required`, null or absent; any other field is
/// an error, so a misspelt field is reported rather than ignored.
pub fn string_fields<const N: usize>(
    req: &Request,
    max_bytes: usize,
    names: [&str; N],
    required: &[&str],
) -> Result<[Option<String>; N], ApiError> {
    let Some(members) = json::sdk_request_body(req, max_bytes, MAX_DEPTH)?.members() else {
        return Err(invalid("the body is not a JSON object of string fields"));
    };
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    // The reader has refused duplicate names, so each slot is filled at most once.
    for member in members {
        let name = member.name;
        let slot = names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| invalid(format!("unknown field `{name}`")))?;
        out[slot] = match member.value.as_str() {
            Some(text) => Some(text),
            None if member.value.is_null() => None,
            None => return Err(invalid(format!("field `{name}` must be a string"))),
        };
    }
    for (slot, name) in names.iter().enumerate() {
        if out[slot].is_none() && required.contains(name) {
            return Err(invalid(format!("missing field `{name}`")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spin_sdk::http::Method;

    fn parse(body: &str) -> Result<[Option<String>; 2], ApiError> {
        let req =
            Request::builder().method(Method::Post).uri("/").body(body.as_bytes().to_vec()).build();
        string_fields(&req, 256, ["a", "b"], &["a"])
    }

    #[test]
    fn reads_string_fields_with_escapes() {
        let [a, b] = parse(r#" { "a" : "x\"y\\z\u00e9\ud83d\ude00\n" , "b": null } "#).unwrap();
        assert_eq!(a.as_deref(), Some("x\"y\\zé😀\n"));
        assert_eq!(b, None);
        assert_eq!(parse(r#"{"a":"1"}"#).unwrap()[1], None);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a":1}"#,
            r#"{"a":"1","c":"2"}"#,
            r#"{"b":"2"}"#,
            r#"{"a":"1","a":"2"}"#,
            r#"{"a":"1"} x"#,
            r#"{"a":"1",}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"\q"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":true}"#,
            r#"{"a":nul}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_json"), "{bad:?}");
        }
        assert_eq!(parse(&format!(r#"{{"a":"{}"}}"#, "x".repeat(300))).unwrap_err().status, 413);
    }
}
