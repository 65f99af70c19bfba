//! `GET /health/cache` through the built component, against real Redis servers.

use spin_test_host::redis_server::RedisServer;
use spin_test_host::TestApp;

fn app(redis: &RedisServer) -> TestApp {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml");
    redis.configure(TestApp::builder(manifest)).load().expect("app loads")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_ok_over_plain_redis() {
    let redis = RedisServer::plain();
    let res = app(&redis).get("/health/cache").send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["redis"], "ok");
    assert!(body["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(res.redis_connections, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_ok_over_tls_with_an_azure_style_key() {
    let redis = RedisServer::tls("Az+ure/Key==0123456789abcdefghij");
    let res = app(&redis).get("/health/cache").send().await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    assert_eq!(res.json()["redis"], "ok");
    assert_eq!(res.redis_connections, 1);
}
