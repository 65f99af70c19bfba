//! `cache::HttpCache`, the proxy's HTTP cache as a library API (issue 29), through the library
//! fixture (tests/host/fixtures/library, op `http`: an in-process origin that answers as told
//! and records what it was asked), beside the `cache` component on one real Redis: an entry
//! filled through the API is a hit for `/api/cache/proxy/...` and the other way round, the
//! admin purges drop the API's entries, and the API answers revalidations, conditionals,
//! ranges and refusals as the proxy does.

use serde_json::{json, Value};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::TestApp;

use crate::library::{backend, fixture, lib, lib_with, ok, TOKEN};
use crate::support::builder;

/// The cache component (and the demo origin it reaches at `origin_url`, answering at once).
fn proxy(redis: &RedisServer) -> TestApp {
    builder(redis)
        .variable("cache_purge_token", TOKEN)
        .variable("origin_delay_ms", "0")
        .load()
        .expect("the app loads")
}

/// An `http` op: a GET of `target` whose origin answers `body` with these fields.
fn get(target: &str, origin_fields: Value, body: &str) -> Value {
    json!({
        "op": "cache_http", "method": "GET", "target": target,
        "origin": {"status": 200, "headers": origin_fields, "body": body},
    })
}

fn fresh_for_five_minutes(tag: &str) -> Value {
    json!([
        ["content-type", "text/plain"],
        ["cache-control", "public, max-age=300"],
        ["cache-tag", tag],
    ])
}

fn asked(result: &Value) -> usize {
    result["origin_asked"].as_array().map_or(usize::MAX, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_filled_through_the_api_is_a_hit_for_the_proxy_and_back() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), proxy(&redis));

    // Filled by the library's origin (the demo origin has no such profile: it would be a 404).
    let filled =
        ok(&lib_app, get("/profiles/lib-h1", fresh_for_five_minutes("lib-team"), "from-lib")).await;
    assert_eq!((filled["status"].as_u64(), filled["outcome"].as_str()), (Some(200), Some("MISS")));
    assert_eq!(filled["body"], "from-lib");
    assert_eq!(asked(&filled), 1, "{filled}");
    assert_eq!(filled["origin_asked"][0]["target"], "/profiles/lib-h1");
    let hit = http.get("/api/cache/proxy/profiles/lib-h1").send().await;
    assert_eq!(hit.status, 200, "{}", hit.text());
    assert_eq!(hit.header("x-cache"), Some("HIT"), "{}", hit.text());
    assert_eq!(hit.text(), "from-lib");
    assert!(hit.header("cache-status").unwrap().starts_with("spin-redis-cache; hit; ttl="));

    // Filled by the proxy from the demo origin: the library's origin is not asked.
    let miss = http.get("/api/cache/proxy/profiles/7").send().await;
    assert_eq!(miss.header("x-cache"), Some("MISS"), "{}", miss.text());
    let hit = ok(&lib_app, get("/profiles/7", json!([]), "from-lib")).await;
    assert_eq!(hit["outcome"], "HIT", "{hit}");
    assert_eq!(asked(&hit), 0, "{hit}");
    assert_eq!(hit["body"].as_str().unwrap().as_bytes(), &miss.body[..]);
    let fields: Vec<&str> =
        hit["headers"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
    for name in ["content-type", "cache-control", "x-cache", "cache-status", "age"] {
        assert!(fields.contains(&name), "{name} in {fields:?}");
    }
}

/// A write the application sent to its origin invalidates the proxy's entry, as a write
/// through the proxy does; a read or a failed write does not.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_invalidated_through_the_api_drops_the_proxys_entry() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), proxy(&redis));
    assert_eq!(
        http.get("/api/cache/proxy/profiles/8").send().await.header("x-cache"),
        Some("MISS")
    );
    let write = |method: &str, status: u16| json!({"op": "cache_http_invalidate", "method": method, "target": "/profiles/8", "origin": {"status": status}});
    let (results, _) = lib(&lib_app, json!([write("GET", 200), write("PUT", 500)])).await;
    assert_eq!(
        (&results[0]["ok"], &results[1]["ok"]),
        (&json!(false), &json!(false)),
        "{results:?}"
    );
    assert_eq!(http.get("/api/cache/proxy/profiles/8").send().await.header("x-cache"), Some("HIT"));
    assert_eq!(ok(&lib_app, write("PUT", 204)).await, true);
    assert_eq!(
        http.get("/api/cache/proxy/profiles/8").send().await.header("x-cache"),
        Some("MISS")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_purges_drop_an_entry_filled_through_the_api() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), proxy(&redis));
    let fill = get("/profiles/lib-p1", fresh_for_five_minutes("lib-team"), "v1");
    assert_eq!(ok(&lib_app, fill.clone()).await["outcome"], "MISS");
    let hit = ok(&lib_app, fill.clone()).await;
    assert_eq!((hit["outcome"].as_str(), asked(&hit)), (Some("HIT"), 0), "{hit}");

    // By tag, through the cache-admin component.
    let res = backend(&http, "/api/cache/purge", json!({"tags": ["lib-team"]})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["purged"], 1, "{}", res.text());
    let refetched = ok(&lib_app, fill.clone()).await;
    assert_eq!((refetched["outcome"].as_str(), asked(&refetched)), (Some("MISS"), 1));

    // By path, through DELETE /api/cache/entries/{path}.
    let res = http
        .delete("/api/cache/entries/profiles/lib-p1")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let refetched = ok(&lib_app, fill).await;
    assert_eq!((refetched["outcome"].as_str(), asked(&refetched)), (Some("MISS"), 1));
}

/// Standards mode through the API: an entry marked stale (a soft purge through the admin
/// route) is revalidated with the stored validator and the origin's 304 refreshes it; the
/// client's own conditional is answered 304 and its range 206 from the entry; an origin
/// failure is remembered and replayed; the proxy's refusals are the API's errors.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_revalidates_answers_conditionals_and_ranges_and_refuses_as_the_proxy() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), proxy(&redis));
    let standard = json!({"cache_mode": "standard", "cache_error_ttl_seconds": "3600"});
    let fields =
        json!([["cache-control", "max-age=300"], ["etag", "\"v1\""], ["cache-tag", "s-team"]]);
    let (results, _) =
        lib_with(&lib_app, standard.clone(), json!([get("/profiles/s1", fields, "0123456789")]))
            .await;
    assert_eq!(results[0]["ok"]["outcome"], "MISS", "{results:?}");
    let res = backend(&http, "/api/cache/purge", json!({"tags": ["s-team"], "soft": true})).await;
    assert_eq!(res.json()["purged"], 1, "{}", res.text());

    let not_modified = json!({
        "op": "cache_http", "method": "GET", "target": "/profiles/s1",
        "origin": {"status": 304, "headers": [["etag", "\"v1\""], ["cache-control", "max-age=300"]], "body": ""},
    });
    let with = |mut op: Value, fields: Value| {
        op["headers"] = fields;
        op
    };
    let (results, res) = lib_with(
        &lib_app,
        standard.clone(),
        json!([
            not_modified.clone(),
            with(not_modified.clone(), json!([["if-none-match", "\"v1\""]])),
            with(not_modified, json!([["range", "bytes=2-4"]])),
        ]),
    )
    .await;
    assert!(results.iter().all(|r| r.get("ok").is_some()), "{results:?} {}", res.logs);
    let r: Vec<&Value> = results.iter().map(|r| &r["ok"]).collect();
    // Revalidated: the origin was asked with the stored validator and its 304 served the entry.
    let validator = json!([["if-none-match", "\"v1\""]]);
    assert_eq!(r[0]["origin_asked"][0]["headers"], validator, "{results:?}");
    assert_eq!((r[0]["status"].as_u64(), r[0]["body"].as_str()), (Some(200), Some("0123456789")));
    assert!(r[0]["cache_status"].as_str().unwrap().contains("fwd=stale"), "{}", r[0]);
    // Fresh again: the client's conditional and its range are answered from the entry.
    assert_eq!((r[1]["status"].as_u64(), r[1]["body"].as_str()), (Some(304), Some("")));
    assert_eq!((r[2]["status"].as_u64(), r[2]["body"].as_str()), (Some(206), Some("234")));
    assert_eq!((asked(r[1]), asked(r[2])), (0, 0), "{results:?}");

    // A failing origin: an error, remembered (the next request does not ask the origin).
    let down =
        json!({"op": "cache_http", "target": "/profiles/s2", "origin": {"error": "timeout"}});
    let up = get("/profiles/s2", json!([["cache-control", "max-age=60"]]), "fine");
    let (results, _) = lib_with(&lib_app, standard.clone(), json!([down, up])).await;
    for r in &results {
        assert_eq!(
            (&r["err"]["status"], &r["err"]["code"]),
            (&json!(504), &json!("origin_timeout"))
        );
    }

    // Refused before Redis or the origin: the proxy's statuses and codes.
    let (results, res) = lib(
        &lib_app,
        json!([
            {"op": "cache_http", "method": "POST", "target": "/profiles/x", "origin": {}},
            {"op": "cache_http", "target": "/elsewhere/x", "origin": {}},
            {"op": "cache_http", "target": "/profiles/../x", "origin": {}},
        ]),
    )
    .await;
    let codes: Vec<(&Value, &Value)> =
        results.iter().map(|r| (&r["err"]["status"], &r["err"]["code"])).collect();
    assert_eq!(
        codes,
        [
            (&json!(405), &json!("method_not_allowed")),
            (&json!(404), &json!("not_proxied")),
            (&json!(400), &json!("invalid_path")),
        ],
        "{results:?}"
    );
    assert_eq!(res.redis_connections, 0);
}
