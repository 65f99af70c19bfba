//! The foundation's acceptance tests: `GET /health/cache` through the built component into
//! real Redis servers, plain and TLS with a password, and the ways it can fail.

use spin_test_host::redis_server::RedisServer;
use spin_test_host::{TestApp, TestAppBuilder};

use crate::support::{assert_error, check_response, AZURE_STYLE_KEY, SPIN_TOML};

fn builder() -> TestAppBuilder {
    // spin.toml's cache and sessions list the fast path's stores: Spin needs them defined.
    TestApp::builder(SPIN_TOML)
        .check_responses(check_response)
        .key_value_store("redis", "redis://127.0.0.1:6379")
        .key_value_store("redis_standby", "redis://127.0.0.1:6379")
        .in_memory_key_value_store("breaker")
}

fn app(redis: &RedisServer) -> TestApp {
    redis.configure(builder()).load().expect("app loads")
}

fn assert_down(res: &spin_test_host::TestResponse, reason: &str) {
    assert_error(res, 503, "redis_unavailable");
    let body = res.json();
    assert_eq!(body["redis"], "down", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    // The README promises it on every redis_unavailable 503.
    assert_eq!(res.header("retry-after"), Some("1"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_ok_over_plain_redis() {
    let redis = RedisServer::plain();
    let res = app(&redis).get("/health/cache").send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
    let body = res.json();
    assert_eq!(body["redis"], "ok");
    assert!(body["latency_ms"].as_f64().unwrap() > 0.0, "{body}");
    assert_eq!(res.redis_connections, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_ok_over_tls_with_an_azure_style_key() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let res = app(&redis).get("/health/cache").send().await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    assert_eq!(res.json()["redis"], "ok");
    assert_eq!(res.redis_connections, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_down_when_redis_stops_and_up_when_it_returns() {
    let mut redis = RedisServer::plain();
    let app = app(&redis);
    assert_eq!(app.get("/health/cache").send().await.status, 200);

    redis.stop();
    let res = app.get("/health/cache").send().await;
    assert_down(&res, "unreachable");
    assert_eq!(res.redis_connections, 1);

    redis.start();
    assert_eq!(app.get("/health/cache").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_redis_down_is_503_too() {
    let mut redis = RedisServer::tls(AZURE_STYLE_KEY);
    let app = app(&redis);
    redis.stop();
    assert_down(&app.get("/health/cache").send().await, "unreachable");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_auth_failed_and_never_leaks_the_key() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let wrong_key = "Wr0ng+Key/With==Symbols";
    let app = redis.configure(builder()).variable("redis_access_key", wrong_key).load().unwrap();
    let res = app.get("/health/cache").send().await;
    assert_down(&res, "auth_failed");
    let encoded = "Wr0ng%2BKey%2FWith%3D%3DSymbols";
    for text in [res.text(), app.logs()] {
        assert!(!text.contains(wrong_key) && !text.contains(encoded), "secret leaked: {text}");
    }
    assert_eq!(app.secret_values(), vec![wrong_key.to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_password_is_auth_failed() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let app = redis.configure(builder()).variable("redis_access_key", "").load().unwrap();
    assert_down(&app.get("/health/cache").send().await, "auth_failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_client_against_a_tls_only_server_is_unreachable() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let app = redis.configure(builder()).variable("redis_tls", "false").load().unwrap();
    let res = app.get("/health/cache").send().await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.json()["redis"], "down");
    assert_eq!(res.header("retry-after"), Some("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn address_outside_allowed_outbound_hosts_is_refused_before_connecting() {
    let redis = RedisServer::plain();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/host/fixtures/denied.toml");
    let app = TestApp::builder(manifest)
        .check_responses(check_response)
        .variable("redis_port", redis.port().to_string())
        .load()
        .unwrap();
    let res = app.get("/health/cache").send().await;
    assert_down(&res, "not_allowed");
    assert!(res.json()["detail"].as_str().unwrap().contains("allowed_outbound_hosts"));
    assert_eq!(res.redis_connections, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_host_without_tls_is_refused_without_any_connection() {
    // Never contacted: the component refuses before opening a connection.
    let app = builder()
        .variable("redis_host", "contoso.redis.cache.windows.net")
        .variable("redis_port", "6379")
        .load()
        .unwrap();
    let res = app.get("/health/cache").send().await;
    assert_down(&res, "misconfigured");
    let message = res.json()["detail"].as_str().unwrap().to_owned();
    assert!(message.contains("redis_tls"), "{message}");
    assert_eq!(res.redis_connections, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_settings_are_reported_by_variable_name() {
    for (name, value) in
        [("redis_port", "not-a-port"), ("redis_tls", "maybe"), ("redis_host", "redis://x")]
    {
        let app = builder().variable(name, value).load().unwrap();
        let res = app.get("/health/cache").send().await;
        assert_down(&res, "misconfigured");
        let message = res.json()["detail"].as_str().unwrap().to_owned();
        assert!(message.contains(name), "{name}: {message}");
        assert_eq!(res.redis_connections, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_methods_get_405_with_allow() {
    let redis = RedisServer::plain();
    let res = app(&redis).post("/health/cache").send().await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    assert_eq!(res.json()["code"], "method_not_allowed");
    assert_eq!(res.redis_connections, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unrouted_paths_get_spins_empty_404() {
    let redis = RedisServer::plain();
    let app = app(&redis);
    for path in ["/", "/health", "/health/cache/extra", "/nope"] {
        let res = app.get(path).send().await;
        assert_eq!(res.status, 404, "{path}");
        assert!(res.body.is_empty());
    }
    let res = app.get("/.well-known/spin/health").send().await;
    assert_eq!((res.status, res.text().as_str()), (200, "OK"));
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_config_in_the_repo_loads_and_reaches_local_redis_settings() {
    // The README's `spin up --runtime-config-file runtime-config.toml` must work as is.
    let redis = RedisServer::plain();
    let app = redis
        .configure(builder())
        .runtime_config(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config.toml"))
        .load()
        .unwrap();
    assert_eq!(app.get("/health/cache").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_toml_needs_the_fast_path_store_which_the_repo_runtime_config_defines() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml");
    // Like `spin up` without --runtime-config-file: refused, even with the fast path off.
    let err = TestApp::builder(manifest).load().err().expect("store label undefined");
    assert!(err.to_string().contains("unknown key_value_stores label \"redis\""), "{err}");
    // The README's command: the repo's runtime config defines it.
    TestApp::builder(manifest)
        .runtime_config(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config.toml"))
        .load()
        .expect("loads with the repo's runtime config");
}
