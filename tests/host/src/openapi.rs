//! The app's OpenAPI description (`docs/openapi.yaml`) as a contract: [`check`] holds one
//! request and its answer to it. Both test suites run it on every exchange (the integration
//! suite's `check_response` through [`crate::TestAppBuilder::check_responses`], the
//! end-to-end suite's `App::send`), so an answer the document does not describe fails the
//! test that received it.
//!
//! What is checked: the method and path name an operation (`x-spin-wildcard` marks the path
//! parameter that takes the rest of the path), the status is one of its responses (or its
//! `default`), every header the response marks `required` is present and every documented
//! header that is present fits its schema, and the body fits the response's content: a
//! media type it lists, and for JSON the schema (JSON Schema 2020-12, formats included). A
//! request the app accepted (2xx) must also fit the operation's JSON request body.
//!
//! Requests to paths or methods the document does not list are held to what its
//! description says of them: a `404` or `405` problem (a `405` with `Allow`). The only
//! answers not checked are in [`EXEMPTIONS`], with the reason.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use http::{HeaderMap, Method};
use serde_json::Value;

/// The document, as the repository has it (and the app serves it).
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.yaml");

/// The document as JSON (YAML anchors resolved).
pub fn document() -> &'static Value {
    static DOC: LazyLock<Value> =
        LazyLock::new(|| serde_norway::from_str(DOCUMENT).expect("docs/openapi.yaml is YAML"));
    &DOC
}

/// The document read into `oas3`'s OpenAPI 3.1 model: every object where the specification
/// puts it, with the fields it requires and of the types it gives.
pub fn typed_document() -> Result<oas3::Spec, String> {
    let json = serde_json::to_string(document()).map_err(|e| e.to_string())?;
    let spec = oas3::from_json(json).map_err(|e| format!("not an OpenAPI 3.1 document: {e}"))?;
    let version = spec.validate_version().map_err(|e| e.to_string())?;
    if (version.major, version.minor) != (3, 1) {
        return Err(format!("openapi is {version}, not 3.1.x"));
    }
    Ok(spec)
}

/// One request and the answer it got.
pub struct Exchange<'a> {
    pub method: &'a Method,
    /// The path as sent, without the query.
    pub path: &'a str,
    pub query: &'a str,
    pub request_headers: &'a HeaderMap,
    pub request_body: &'a [u8],
    pub status: u16,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// An answer the document does not describe, and why it is not checked.
pub struct Exemption {
    pub what: &'static str,
    pub why: &'static str,
    applies: fn(&Exchange) -> bool,
}

/// Every answer [`check`] lets pass without holding it to the document.
pub const EXEMPTIONS: &[Exemption] = &[
    Exemption {
        what: "paths under /.well-known/spin/",
        why: "Spin's own routes (its health check), answered by Spin, not by the app",
        applies: |ex| ex.path.starts_with("/.well-known/spin/"),
    },
    Exemption {
        what: "404 with an empty body and no Content-Type",
        why: "Spin's router: no component is routed to the path (the tests of unrouted \
              paths); no component of the app answers that way",
        applies: |ex| {
            ex.status == 404 && ex.body.is_empty() && !ex.headers.contains_key("content-type")
        },
    },
];

/// Panics, saying what does not match, unless the document describes this exchange (or an
/// [`EXEMPTIONS`] entry covers it).
pub fn check(ex: &Exchange) {
    if let Err(problem) = verdict(ex) {
        panic!(
            "docs/openapi.yaml does not describe {} {}{}{} -> {}: {problem}\nbody: {}",
            ex.method,
            ex.path,
            if ex.query.is_empty() { "" } else { "?" },
            ex.query,
            ex.status,
            String::from_utf8_lossy(&ex.body[..ex.body.len().min(2000)]),
        );
    }
}

/// `Ok` when the document describes the exchange (or it is exempt), else why not.
pub fn verdict(ex: &Exchange) -> Result<(), String> {
    if EXEMPTIONS.iter().any(|e| (e.applies)(ex)) {
        return Ok(());
    }
    let doc = document();
    let Some((template, item_pointer)) = match_path(doc, ex.path) else {
        // A path under a component's route that no operation names (info.description).
        return undocumented(ex, "no path of the document matches", &[]);
    };
    let method = ex.method.as_str().to_ascii_lowercase();
    let op_pointer = format!("{item_pointer}/{method}");
    let Some(operation) = pointer(doc, &op_pointer) else {
        let listed: Vec<String> = METHODS
            .iter()
            .filter(|m| pointer(doc, &format!("{item_pointer}/{m}")).is_some())
            .map(|m| m.to_ascii_uppercase())
            .collect();
        return undocumented(ex, &format!("{template} has no {method} operation"), &listed);
    };
    let responses = format!("{op_pointer}/responses");
    let status = ex.status.to_string();
    let range = format!("{}XX", ex.status / 100);
    let Some(key) = [status.as_str(), range.as_str(), "default"]
        .into_iter()
        .find(|k| pointer(doc, &format!("{responses}/{k}")).is_some())
    else {
        return Err(format!("status {} is not documented for {method} {template}", ex.status));
    };
    let response = format!("{responses}/{key}");
    check_response(ex, &response).map_err(|e| format!("{method} {template} {key}: {e}"))?;
    if (200..300).contains(&ex.status) {
        check_request_body(ex, operation, &op_pointer)
            .map_err(|e| format!("{method} {template} request body: {e}"))?;
    }
    Ok(())
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// An exchange no operation describes: the 404 or 405 problem the document's description
/// promises for it (`listed`: the methods the path has, which a 405's `Allow` must name).
fn undocumented(ex: &Exchange, why: &str, listed: &[String]) -> Result<(), String> {
    let response = match ex.status {
        404 => "#/components/responses/NotFound",
        405 => "#/components/responses/MethodNotAllowed",
        _ => return Err(format!("{why}, and only a 404 or 405 problem may answer it")),
    };
    check_response(ex, &response[1..]).map_err(|e| format!("{why}: {e}"))?;
    if ex.status == 405 && !listed.is_empty() {
        let allow = header_text(ex.headers, "allow").unwrap_or_default();
        let mut named: Vec<String> =
            allow.split(',').map(|m| m.trim().to_ascii_uppercase()).collect();
        let mut listed = listed.to_vec();
        named.sort();
        listed.sort();
        if named != listed {
            return Err(format!("Allow is {allow:?}; the document lists {listed:?}"));
        }
    }
    Ok(())
}

/// The path template (and its item's JSON pointer) that `path` falls under: the one with the
/// most literal segments when several match, as Spin and OpenAPI both prefer.
fn match_path(doc: &Value, path: &str) -> Option<(String, String)> {
    let sent: Vec<&str> = path.split('/').collect();
    let (_, template) = doc
        .get("paths")?
        .as_object()?
        .iter()
        .filter_map(|(template, item)| {
            let wildcard = item.get("x-spin-wildcard").and_then(Value::as_str);
            let parts: Vec<&str> = template.split('/').collect();
            literal_segments(&parts, &sent, wildcard).map(|n| (n, template))
        })
        .max_by_key(|(n, _)| *n)?;
    Some((template.clone(), format!("/paths/{}", escape(template))))
}

/// The number of literal segments of a template that matches `sent`, or `None`.
fn literal_segments(parts: &[&str], sent: &[&str], wildcard: Option<&str>) -> Option<usize> {
    let mut literal = 0;
    for (i, part) in parts.iter().enumerate() {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            // The rest of the path, `/` included (at least one character).
            Some(name) if Some(name) == wildcard && i == parts.len() - 1 => {
                let rest = sent.get(i..)?.join("/");
                return (!rest.is_empty()).then_some(literal);
            }
            Some(_) if sent.get(i).is_none_or(|s| s.is_empty()) => return None,
            Some(_) => {}
            None if sent.get(i) != Some(part) => return None,
            None => literal += 1,
        }
    }
    (sent.len() == parts.len()).then_some(literal)
}

/// A JSON pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn pointer<'a>(doc: &'a Value, at: &str) -> Option<&'a Value> {
    doc.pointer(at)
}

/// The object at `at`, following local `$ref`s; with the pointer it was found at.
fn resolve(at: &str) -> Result<(String, &'static Value), String> {
    let doc = document();
    let mut at = at.to_owned();
    for _ in 0..16 {
        let value = doc.pointer(&at).ok_or_else(|| format!("nothing at #{at}"))?;
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                at = r.strip_prefix('#').ok_or_else(|| format!("non-local $ref {r}"))?.into()
            }
            None => return Ok((at, value)),
        }
    }
    Err(format!("$ref loop at #{at}"))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The media type without parameters, lower case.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// Of a content map, the key that serves `media_type`: itself, else `type/*`, else `*/*`.
fn media_key(content: &serde_json::Map<String, Value>, media_type: &str) -> Option<String> {
    let wild = format!("{}/*", media_type.split('/').next().unwrap_or(""));
    content
        .keys()
        .find(|k| k.eq_ignore_ascii_case(media_type))
        .or_else(|| content.keys().find(|k| **k == wild))
        .or_else(|| content.keys().find(|k| *k == "*/*"))
        .cloned()
}

fn check_response(ex: &Exchange, at: &str) -> Result<(), String> {
    let doc = document();
    let (at, response) = resolve(at)?;
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for name in headers.keys() {
            let (header_at, header) = resolve(&format!("{at}/headers/{}", escape(name)))?;
            let required = header.get("required").and_then(Value::as_bool).unwrap_or(false);
            let values: Vec<&str> =
                ex.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
            if values.is_empty() && required {
                return Err(format!("the required header {name} is missing"));
            }
            if header.get("schema").is_some() {
                let schema_at = format!("{header_at}/schema");
                for value in values {
                    let integer = header.pointer("/schema/type") == Some(&Value::from("integer"));
                    let instance = match value.trim().parse::<i64>() {
                        Ok(n) if integer => Value::from(n),
                        _ => Value::from(value),
                    };
                    validate(&schema_at, &instance).map_err(|e| format!("header {name}: {e}"))?;
                }
            }
        }
    }
    let content = response.get("content").and_then(Value::as_object);
    // A HEAD answer's body is never sent (Spin's HTTP server drops it): nothing to check.
    if *ex.method == Method::HEAD {
        return Ok(());
    }
    let bodiless = matches!(ex.status, 204 | 304);
    if ex.body.is_empty() {
        let any = content.is_some_and(|c| c.contains_key("*/*"));
        return match content {
            Some(_) if !bodiless && !any => {
                Err("the body is empty; the document gives it content".into())
            }
            _ => Ok(()),
        };
    }
    if bodiless {
        return Err("a body where HTTP allows none".into());
    }
    let Some(content) = content else {
        return Err("a body where the document describes none".into());
    };
    let media_type = essence(header_text(ex.headers, "content-type").unwrap_or(""));
    let Some(key) = media_key(content, &media_type) else {
        let listed: Vec<&String> = content.keys().collect();
        return Err(format!("Content-Type {media_type:?} is not one of {listed:?}"));
    };
    // A schema for JSON is given under a JSON media type; `*/*` means any content.
    let schema_at = format!("{at}/content/{}/schema", escape(&key));
    if is_json(&key) && doc.pointer(&schema_at).is_some() {
        let body: Value =
            serde_json::from_slice(ex.body).map_err(|e| format!("the body is not JSON ({e})"))?;
        validate(&schema_at, &body)?;
    }
    Ok(())
}

/// A JSON body of an accepted request fits the operation's request body schema.
fn check_request_body(ex: &Exchange, operation: &Value, at: &str) -> Result<(), String> {
    if ex.request_body.is_empty() || operation.get("requestBody").is_none() {
        return Ok(());
    }
    let (body_at, body) = resolve(&format!("{at}/requestBody"))?;
    let Some(content) = body.get("content").and_then(Value::as_object) else {
        return Ok(());
    };
    let media_type = essence(header_text(ex.request_headers, "content-type").unwrap_or(""));
    let Some(key) = media_key(content, &media_type) else {
        return Err(format!("Content-Type {media_type:?} was accepted but is not documented"));
    };
    let schema_at = format!("{body_at}/content/{}/schema", escape(&key));
    if is_json(&key) && document().pointer(&schema_at).is_some() {
        let Ok(value) = serde_json::from_slice::<Value>(ex.request_body) else {
            return Err("a body that is not JSON was accepted".into());
        };
        validate(&schema_at, &value)?;
    }
    Ok(())
}

/// Validates `instance` against the schema at `at` (a JSON pointer into the document), whose
/// `$ref`s resolve against the document.
fn validate(at: &str, instance: &Value) -> Result<(), String> {
    static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        LazyLock::new(Default::default);
    let validator = {
        let mut cache = VALIDATORS.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(at) {
            Some(v) => v.clone(),
            None => {
                let v = Arc::new(compile(at)?);
                cache.insert(at.to_owned(), v.clone());
                v
            }
        }
    };
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {:?}", e, e.instance_path().to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("does not fit the schema at #{at}: {}", errors.join("; ")))
    }
}

/// A validator for the schema at `at`: the document itself is the root resource, so
/// `#/components/schemas/...` references resolve as they do in the document.
fn compile(at: &str) -> Result<jsonschema::Validator, String> {
    let mut root = document().clone();
    let object = root.as_object_mut().ok_or("the document is not an object")?;
    object.insert("$schema".into(), "https://json-schema.org/draft/2020-12/schema".into());
    // A URI fragment: the pointer's `{`, `}` (path templates) and the like percent-encoded.
    let fragment: String = at
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            b'-' | b'.' | b'_' | b'~' | b'/' | b'*' | b'+' | b',' | b';' | b'=' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    object.insert("$ref".into(), format!("#{fragment}").into());
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("the schema at #{at} does not compile: {e}"))
}

/// Every schema of the document compiles, as JSON Schema 2020-12 (with the OpenAPI keywords
/// the dialect adds left to annotations).
pub fn schema_pointers() -> Vec<String> {
    fn walk(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let here = format!("{at}/{}", escape(k));
                    if k == "schema" && v.is_object() {
                        out.push(here.clone());
                    }
                    walk(v, here, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(document(), String::new(), &mut out);
    if let Some(schemas) = document().pointer("/components/schemas").and_then(Value::as_object) {
        out.extend(schemas.keys().map(|k| format!("/components/schemas/{}", escape(k))));
    }
    out
}

/// Compiles the schema at `at` (see [`schema_pointers`]).
pub fn compiles(at: &str) -> Result<(), String> {
    compile(at).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    fn judge(
        method: Method,
        path: &str,
        status: u16,
        h: &HeaderMap,
        body: &str,
    ) -> Result<(), String> {
        let none = HeaderMap::new();
        verdict(&Exchange {
            method: &method,
            path,
            query: "",
            request_headers: &none,
            request_body: b"",
            status,
            headers: h,
            body: body.as_bytes(),
        })
    }

    const PROBLEM: &str = r#"{"type":"https://spin-redis-patterns.dev/problems/x","title":"X","status":404,"detail":"d","code":"x"}"#;

    #[test]
    fn a_described_exchange_passes() {
        let h = headers(&[("content-type", "application/json"), ("x-request-id", "r1")]);
        judge(Method::GET, "/health/cache", 200, &h, r#"{"redis":"ok","latency_ms":0.5}"#).unwrap();
        let h = headers(&[("content-type", "application/problem+json"), ("x-request-id", "r1")]);
        judge(Method::GET, "/api/sessions/nope", 404, &h, PROBLEM).unwrap();
        // A wildcard parameter takes the rest of the path.
        let h =
            headers(&[("x-request-id", "r"), ("x-cache", "MISS"), ("content-type", "text/plain")]);
        judge(Method::GET, "/api/cache/proxy/profiles/1/x", 200, &h, "hello").unwrap();
    }

    #[test]
    fn what_the_document_does_not_describe_fails() {
        let ok = headers(&[("content-type", "application/json"), ("x-request-id", "r1")]);
        let body = r#"{"redis":"ok","latency_ms":0.5}"#;
        // An undocumented status.
        let e = judge(Method::GET, "/health/cache", 201, &ok, body).unwrap_err();
        assert!(e.contains("status 201 is not documented"), "{e}");
        // A required header missing.
        let bare = headers(&[("content-type", "application/json")]);
        let e = judge(Method::GET, "/health/cache", 200, &bare, body).unwrap_err();
        assert!(e.contains("X-Request-Id is missing"), "{e}");
        // A body that does not fit the schema.
        let e = judge(Method::GET, "/health/cache", 200, &ok, r#"{"redis":"ok"}"#).unwrap_err();
        assert!(e.contains("latency_ms"), "{e}");
        // A media type the response does not list.
        let text = headers(&[("content-type", "text/plain"), ("x-request-id", "r1")]);
        let e = judge(Method::GET, "/health/cache", 200, &text, "ok").unwrap_err();
        assert!(e.contains("text/plain"), "{e}");
        // An undocumented path answered with anything but a 404/405 problem.
        let e = judge(Method::GET, "/api/sessions/nope", 200, &ok, "{}").unwrap_err();
        assert!(e.contains("no path of the document matches"), "{e}");
        // An undocumented method whose 405 names other methods than the document.
        let p = headers(&[
            ("content-type", "application/problem+json"),
            ("x-request-id", "r1"),
            ("allow", "GET"),
        ]);
        let problem = PROBLEM.replace("404", "405");
        let e = judge(Method::POST, "/health/cache", 405, &p, &problem).unwrap_err();
        assert!(e.contains("Allow"), "{e}");
        // A header value outside its schema.
        let h =
            headers(&[("x-request-id", "r"), ("x-cache", "MAYBE"), ("content-type", "text/plain")]);
        let e = judge(Method::GET, "/api/cache/proxy/profiles/1", 200, &h, "x").unwrap_err();
        assert!(e.contains("X-Cache"), "{e}");
    }

    #[test]
    fn spins_own_answers_are_the_only_exemptions() {
        let none = HeaderMap::new();
        judge(Method::GET, "/nowhere", 404, &none, "").unwrap();
        judge(Method::GET, "/.well-known/spin/health", 200, &none, "OK").unwrap();
        assert!(judge(Method::GET, "/nowhere", 500, &none, "").is_err());
    }
}
