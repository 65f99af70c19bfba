//! docs/openapi.yaml: a valid OpenAPI 3.1 document, served by the app at `/openapi.yaml`.
//! (Every exchange of both suites is held to it by `support::check_response`.)

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use spin_test_host::openapi::{self, document, DOCUMENT};
use spin_test_host::redis_server::RedisServer;

use crate::support::{self, SPIN_TOML};

/// OpenAPI 3.1's own model reads it: every object where the specification puts it, with
/// the fields it requires, of the types it gives (the `oas3` crate).
#[test]
fn the_document_is_openapi_3_1() {
    let spec = openapi::typed_document().unwrap_or_else(|e| panic!("{e}"));
    assert!(spec.operations().count() >= 40, "{} operations", spec.operations().count());
}

/// Every schema compiles as JSON Schema 2020-12 (their `$ref`s resolve), and every local
/// `$ref` anywhere points at something.
#[test]
fn every_schema_compiles_and_every_reference_resolves() {
    let schemas = openapi::schema_pointers();
    assert!(schemas.len() > 50, "{} schemas", schemas.len());
    for at in &schemas {
        openapi::compiles(at).unwrap_or_else(|e| panic!("{e}"));
    }
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(document(), &mut all);
    for r in all {
        let at = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(document().pointer(at).is_some(), "$ref {r} points at nothing");
    }
}

/// What the specification requires beyond the shape: unique operation ids, and each path
/// template's parameters declared as path parameters (and only those).
#[test]
fn operation_ids_are_unique_and_path_parameters_declared() {
    let paths = document()["paths"].as_object().unwrap();
    let mut ids = HashSet::new();
    for (template, item) in paths {
        let named: HashSet<&str> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let resolve = |p: &'_ Value| -> Value {
            match p.get("$ref").and_then(Value::as_str) {
                Some(r) => document().pointer(&r[1..]).unwrap().clone(),
                None => p.clone(),
            }
        };
        let common: Vec<Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(resolve)
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let Some(op) = op.as_object().filter(|_| method != "parameters") else { continue };
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            }
            let own = op.get("parameters").and_then(Value::as_array).into_iter().flatten();
            let declared: HashSet<String> = common
                .iter()
                .cloned()
                .chain(own.map(resolve))
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{template} {method}: {p}");
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            let declared: HashSet<&str> = declared.iter().map(String::as_str).collect();
            assert_eq!(declared, named, "{template} {method}");
        }
    }
}

/// The reference validator of the Python ecosystem, `openapi-spec-validator` (the OpenAPI
/// 3.1 JSON Schema it ships, and its semantic checks), where it is installed: the Rust
/// checks above run everywhere; CI installs it (.ci/run), so there it must run.
#[test]
fn the_reference_validator_accepts_the_document() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let run = Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&file).output();
    let installed = run.as_ref().is_ok_and(|o| {
        !String::from_utf8_lossy(&o.stderr).contains("No module named openapi_spec_validator")
    });
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 -m openapi_spec_validator (.ci/run installs it)"
        );
        println!(
            "skipped: no python3 -m openapi_spec_validator (pip install openapi-spec-validator)"
        );
        return;
    }
    let out = run.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned()
        + String::from_utf8_lossy(&out.stderr).as_ref();
    assert!(out.status.success() && text.contains(": OK"), "{text}");
}

/// The running app serves the document it was built with, as YAML.
#[tokio::test(flavor = "multi_thread")]
async fn the_app_serves_its_own_description() {
    let redis = RedisServer::plain();
    let app = support::builder(&redis).load().unwrap();
    let res = app.get("/openapi.yaml").send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/yaml"));
    assert_eq!(res.text(), DOCUMENT, "the served document is docs/openapi.yaml");
    let head = app.request(http::Method::HEAD, "/openapi.yaml").send().await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    // Other methods: 405 with Allow, as the document's description says.
    let post = app.post("/openapi.yaml").send().await;
    support::assert_error(&post, 405, "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // It is the manifest's own route, of the small health component.
    let manifest = std::fs::read_to_string(SPIN_TOML).unwrap();
    assert!(manifest.contains("route = \"/openapi.yaml\"\ncomponent = \"health\""));
}
