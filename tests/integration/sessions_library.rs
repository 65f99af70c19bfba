//! The sessions library's holder and backend calls (`Sessions::update`, `end_all`, `revoke`,
//! `set_server_data`, `list`, `rotate`) through the library fixture, beside the sessions
//! component on one real Redis: what one side writes the other reads, and both refuse the
//! same things with the same status, code and message (the routes now call the library).

use serde_json::{json, Value};
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestResponse};

use crate::library::{backend, components, fixture, lib, ok, TOKEN};

/// The holder's request with the session as a bearer token.
async fn holder(
    http: &TestApp,
    method: http::Method,
    path: &str,
    id: &str,
    body: Option<Value>,
) -> TestResponse {
    let req = http.request(method, path).header("authorization", &format!("Bearer {id}"));
    match body {
        Some(body) => req.json(&body).send().await,
        None => req.send().await,
    }
}

async fn http_get(http: &TestApp, id: &str) -> TestResponse {
    holder(http, http::Method::GET, "/api/sessions/current", id, None).await
}

/// A session created over HTTP: its id and handle.
async fn http_create(http: &TestApp, body: Value) -> (String, String) {
    let res = backend(http, "/api/sessions", body).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let json = res.json();
    (json["session_id"].as_str().unwrap().to_owned(), json["handle"].as_str().unwrap().to_owned())
}

/// A session created by the library: its id and handle.
async fn lib_create(app: &TestApp, user_id: &str) -> (String, String) {
    let created = ok(app, json!({"op": "session_create", "user_id": user_id})).await;
    (created["id"].as_str().unwrap().to_owned(), created["handle"].as_str().unwrap().to_owned())
}

/// The one result of a one-operation request, which must have failed: its error.
async fn err(app: &TestApp, op: Value) -> Value {
    let (results, res) = lib(app, json!([op])).await;
    assert!(results[0].get("err").is_some(), "{results:?} {}", res.logs);
    results[0]["err"].clone()
}

/// An HTTP refusal and the library's for the same thing: same status, code and message.
fn same_refusal(res: &TestResponse, lib_err: &Value) {
    let body = res.json();
    assert_eq!(res.status, lib_err["status"].as_u64().unwrap() as u16, "{} {lib_err}", res.text());
    assert_eq!(body["code"], lib_err["code"], "{} {lib_err}", res.text());
    let message = lib_err["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!("{}: {}", body["code"].as_str().unwrap(), body["detail"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_the_library_patches_is_read_over_http_and_back() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    let (id, _) = http_create(
        &http,
        json!({"user_id": "u-1", "data": {"theme": "light"}, "server_data": {"role": "admin"}}),
    )
    .await;

    // Patched by the library: a merge at the top level, numbers kept as sent.
    let patch = r#"{"theme":"dark","n":12345678901234567890123}"#;
    let data = ok(&lib_app, json!({"op": "session_update", "id": id, "patch": patch})).await;
    assert!(data.as_array().unwrap().contains(&json!(["theme", "\"dark\""])), "{data}");
    let res = http_get(&http, &id).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains(r#""n":12345678901234567890123"#), "{}", res.text());
    let body = res.json();
    assert_eq!(body["data"]["theme"], "dark");
    assert_eq!(body["data"]["role"], "admin");
    assert_eq!(body["server_keys"], json!(["role"]));

    // Patched over HTTP (a null removes a name): the library reads it, with both deadlines.
    let res = holder(
        &http,
        http::Method::PATCH,
        "/api/sessions/current",
        &id,
        Some(json!({"theme": null, "lang": "fi"})),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let session = ok(&lib_app, json!({"op": "session_get", "id": id})).await;
    let names: Vec<&str> =
        session["data"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    assert!(names.contains(&"lang") && !names.contains(&"theme"), "{session}");
    assert_eq!(session["server_keys"], json!(["role"]));
    // spin.toml's defaults: idle 1800 s, absolute 43200 s; just used, so idle is the nearer.
    let (idle, absolute) =
        (session["expires_in"].as_u64().unwrap(), session["absolute_expires_in"].as_u64().unwrap());
    assert!(idle > 0 && idle <= 1800 && absolute > 1800 && absolute <= 43200, "{session}");

    // The same refusals, word for word: a server-owned name, data over the cap, not an object.
    let lib_refusal =
        err(&lib_app, json!({"op": "session_update", "id": id, "patch": r#"{"role":"user"}"#}))
            .await;
    let res = holder(
        &http,
        http::Method::PATCH,
        "/api/sessions/current",
        &id,
        Some(json!({"role": "user"})),
    )
    .await;
    same_refusal(&res, &lib_refusal);
    assert_eq!(lib_refusal["code"], "server_owned_key");
    let big = "x".repeat(9000);
    let lib_refusal = err(
        &lib_app,
        json!({"op": "session_update", "id": id, "patch": json!({"big": big}).to_string()}),
    )
    .await;
    let res =
        holder(&http, http::Method::PATCH, "/api/sessions/current", &id, Some(json!({"big": big})))
            .await;
    same_refusal(&res, &lib_refusal);
    assert_eq!(lib_refusal["code"], "data_too_large");
    let e = err(&lib_app, json!({"op": "session_update", "id": id, "patch": "[1]"})).await;
    assert_eq!((e["status"].as_u64(), e["code"].as_str()), (Some(422), Some("invalid_data")));
    // Nothing of those was written.
    let data = http_get(&http, &id).await.json()["data"].clone();
    let mut names: Vec<&String> = data.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["lang", "n", "role"], "{data}");
    assert_eq!(data["role"], "admin");

    // A rotated-away id may not write, through either; an ended session is None.
    let new_id = ok(&lib_app, json!({"op": "session_rotate", "id": id})).await;
    let lib_refusal =
        err(&lib_app, json!({"op": "session_update", "id": id, "patch": r#"{"a":1}"#})).await;
    let res =
        holder(&http, http::Method::PATCH, "/api/sessions/current", &id, Some(json!({"a": 1})))
            .await;
    same_refusal(&res, &lib_refusal);
    assert_eq!(lib_refusal["code"], "session_rotated");
    let new_id = new_id.as_str().unwrap();
    assert_eq!(ok(&lib_app, json!({"op": "session_end", "id": new_id})).await, true);
    let gone = json!({"op": "session_update", "id": new_id, "patch": r#"{"a":1}"#});
    assert_eq!(ok(&lib_app, gone).await, Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_ended_on_one_side_are_gone_on_the_other() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));

    // The backend's revoke by handle over HTTP: that session is gone for `Sessions::get`,
    // the user's other one lives.
    let (a, a_handle) = lib_create(&lib_app, "u-9").await;
    let (b, _) = lib_create(&lib_app, "u-9").await;
    let (other, _) = lib_create(&lib_app, "u-10").await;
    let res =
        backend(&http, "/api/sessions/admin/revoke", json!({"user_id": "u-9", "handle": a_handle}))
            .await;
    assert_eq!((res.status, res.json()["revoked"].as_u64()), (200, Some(1)), "{}", res.text());
    assert_eq!(ok(&lib_app, json!({"op": "session_get", "id": a})).await, Value::Null);
    assert_eq!(ok(&lib_app, json!({"op": "session_get", "id": b})).await["user_id"], "u-9");
    // The library's revoke of all of a user's sessions: gone over HTTP, other users untouched.
    let n = ok(&lib_app, json!({"op": "session_revoke", "user_id": "u-9"})).await;
    assert_eq!(n, 1);
    assert_eq!(http_get(&http, &b).await.status, 401);
    assert_eq!(http_get(&http, &other).await.status, 200);
    // Its refusals are the route's.
    let e =
        err(&lib_app, json!({"op": "session_revoke", "user_id": "u-9", "handle": "short"})).await;
    let res =
        backend(&http, "/api/sessions/admin/revoke", json!({"user_id": "u-9", "handle": "short"}))
            .await;
    same_refusal(&res, &e);
    assert_eq!(e["code"], "invalid_handle");
    let e = err(&lib_app, json!({"op": "session_revoke", "user_id": ""})).await;
    let res = backend(&http, "/api/sessions/admin/revoke", json!({"user_id": ""})).await;
    same_refusal(&res, &e);
    assert_eq!(e["code"], "invalid_user_id");

    // Log out everywhere: through the library, then over HTTP.
    let (c, _) = http_create(&http, json!({"user_id": "u-11"})).await;
    let (d, _) = http_create(&http, json!({"user_id": "u-11"})).await;
    assert_eq!(ok(&lib_app, json!({"op": "session_end_all", "id": c})).await, 2);
    assert_eq!(http_get(&http, &d).await.status, 401);
    assert_eq!(ok(&lib_app, json!({"op": "session_end_all", "id": c})).await, Value::Null);
    let (e_id, _) = lib_create(&lib_app, "u-12").await;
    let (f_id, _) = lib_create(&lib_app, "u-12").await;
    let res = holder(&http, http::Method::DELETE, "/api/sessions", &e_id, None).await;
    assert_eq!((res.status, res.json()["revoked"].as_u64()), (200, Some(2)), "{}", res.text());
    assert_eq!(ok(&lib_app, json!({"op": "session_get", "id": f_id})).await, Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_data_lists_and_rotated_handles_are_shared() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    let (id, handle) = lib_create(&lib_app, "u-20").await;

    // Server data set by the library: read over HTTP, read-only to the holder.
    let set = json!({"op": "session_server_data", "user_id": "u-20", "handle": handle,
                     "data": r#"{"mfa":true}"#});
    assert_eq!(ok(&lib_app, set).await, true);
    let body = http_get(&http, &id).await.json();
    assert_eq!(
        (body["data"]["mfa"].clone(), body["server_keys"].clone()),
        (json!(true), json!(["mfa"]))
    );
    // And set over HTTP: the library reads it.
    let res = http
        .request(http::Method::PATCH, "/api/sessions/admin/data")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .json(&json!({"user_id": "u-20", "handle": handle, "data": {"role": "ops", "mfa": null}}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let session = ok(&lib_app, json!({"op": "session_get", "id": id})).await;
    assert_eq!(session["server_keys"], json!(["role"]), "{session}");
    // No such session: false from the library where the route answers 404.
    let unknown = json!({"op": "session_server_data", "user_id": "u-21", "handle": handle,
                         "data": "{}"});
    assert_eq!(ok(&lib_app, unknown).await, false);
    let e = err(
        &lib_app,
        json!({"op": "session_server_data", "user_id": "u-20", "handle": handle,
               "data": json!({"big": "x".repeat(9000)}).to_string()}),
    )
    .await;
    assert_eq!((e["status"].as_u64(), e["code"].as_str()), (Some(422), Some("data_too_large")));

    // Rotation keeps the handle, and the library says so: the backend revokes the rotated
    // session by the handle `rotate` gave.
    let (_, _) = lib_create(&lib_app, "u-20").await;
    let rotated = ok(&lib_app, json!({"op": "session_rotate", "id": id, "full": true})).await;
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_eq!(rotated["handle"], handle.as_str(), "{rotated}");
    // The library's list is the route's: same handles, same current one, same order.
    let listed = ok(&lib_app, json!({"op": "session_list_full", "id": new_id})).await;
    let res = holder(&http, http::Method::GET, "/api/sessions", &new_id, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let http_list = res.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    for (l, h) in listed.as_array().unwrap().iter().zip(&http_list) {
        assert_eq!(
            (&l["handle"], &l["current"]),
            (&h["handle"], &h["current"]),
            "{listed} {http_list:?}"
        );
        let (ls, hs) = (l["expires_in"].as_u64().unwrap(), h["expires_in"].as_u64().unwrap());
        assert!(ls > 0 && hs > 0 && ls <= 1800 && hs <= 1800, "{listed} {http_list:?}");
    }
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[0]["handle"], handle.as_str());
    let revoke = json!({"op": "session_revoke", "user_id": "u-20", "handle": rotated["handle"]});
    assert_eq!(ok(&lib_app, revoke).await, 1);
    assert_eq!(http_get(&http, &new_id).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_stored_before_handles_were_kept_keeps_its_handle_through_rotation() {
    let redis = RedisServer::plain();
    let (lib_app, http) = (fixture(&redis), components(&redis));
    let (id, handle) = lib_create(&lib_app, "u-30").await;
    // As such a record was stored: no `h`, the handle being its digest's first 16 characters.
    let mut client = redis.client().await;
    let keys: Vec<String> = client.keys("srp:sess:*:s:*").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let raw: String = client.get(&keys[0]).await.unwrap();
    let mut record: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(record["h"], handle.as_str());
    record.as_object_mut().unwrap().remove("h");
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(record.to_string())
        .arg("KEEPTTL")
        .query_async(&mut client)
        .await
        .unwrap();

    let rotated = ok(&lib_app, json!({"op": "session_rotate", "id": id, "full": true})).await;
    assert_eq!(rotated["handle"], handle.as_str(), "{rotated}");
    // Rotated again: still that handle (the record keeps it now), and the backend revokes by it.
    let again = json!({"op": "session_rotate", "id": rotated["id"], "full": true});
    let again = ok(&lib_app, again).await;
    assert_eq!(again["handle"], handle.as_str(), "{again}");
    let res =
        backend(&http, "/api/sessions/admin/revoke", json!({"user_id": "u-30", "handle": handle}))
            .await;
    assert_eq!(res.json(), json!({"revoked": 1}), "{}", res.text());
}
