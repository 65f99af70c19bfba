//! Issue 31, item 1: the pub/sub subscriber (`spin-subscriber.toml`, Spin's Redis trigger)
//! under the real Spin, beside the main app, on a TLS-only Redis with an Azure-shaped access
//! key. A purge through the HTTP route publishes its event; the subscriber, connected over
//! TLS, forwards it to a webhook (retrying a 503) and records it in the capped audit stream.
//! Then Redis goes away: the subscriber's `spin up` exits (nothing restarts it; SpinKube
//! restarts the container), while the main app, a separate `spin up`, keeps answering.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use spin_test_host::real_spin::{RealSpin, SpinUp};
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::webhook::{self, Webhook};

use crate::support::{self, req, runtime_config_for, Mode, AZURE_STYLE_KEY};

const SUBSCRIBER_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/spin-subscriber.toml");
const PURGE_TOKEN: &str = "e2e-purge-token-0123456789abcdef-0123";
const HOOK_TOKEN: &str = "e2e-hook-token-0123456789abcdef-01234";
const CHANNEL: &str = "srp:cache:purge";

async fn start_subscriber(spin: &std::path::Path, redis: &RedisServer, origin: &str) -> RealSpin {
    // The trigger takes one URL: the access key percent-encoded, as in the runtime config.
    let key = utf8_percent_encode(AZURE_STYLE_KEY, NON_ALPHANUMERIC);
    SpinUp::new(spin, SUBSCRIBER_TOML, &runtime_config_for(redis))
        .variable("subscriber_redis_url", format!("rediss://:{key}@localhost:{}", redis.port()))
        .variable("redis_host", "localhost")
        .variable("redis_port", redis.port().to_string())
        .variable("redis_tls", "true")
        .variable("redis_access_key", AZURE_STYLE_KEY)
        .variable("subscriber_webhook_url", format!("{origin}/hooks/purge"))
        .variable("subscriber_webhook_origin", origin)
        .variable("subscriber_webhook_token", HOOK_TOKEN)
        .variable("subscriber_audit_maxlen", "100")
        .start_without_http("Active Channels")
        .await
        .expect("the subscriber starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_the_subscriber_over_tls_and_a_dropped_connection_ends_it() {
    let Some(spin) = support::spin_or_skip(module_path!()) else { return };
    support::build();
    let cargo = std::process::Command::new(env!("CARGO"))
        .args(["build", "--target", "wasm32-wasip2", "--release", "-p", "subscriber"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(cargo.success());
    let mut redis = RedisServer::tls(AZURE_STYLE_KEY);
    // The webhook answers 503 once, then 204.
    let hook = Webhook::start();
    hook.then_answer(503);
    let mut subscriber = start_subscriber(&spin, &redis, &hook.origin()).await;
    let app =
        support::start_on(&spin, &redis, Mode::Outbound, &[("cache_purge_token", PURGE_TOKEN)])
            .await;

    // The subscriber's connection is TLS with the key: the only way in.
    let mut client = redis.client().await;
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut client).await.unwrap();
    assert!(clients.contains("sub=1"), "{clients}");

    let purge = req(
        Method::DELETE,
        "/api/cache/entries/profiles/42",
        &[("authorization", &format!("Bearer {PURGE_TOKEN}"))],
        None,
    );
    let res = app.send_within(Duration::from_secs(30), purge).await.unwrap();
    assert_eq!(res.status.as_u16(), 200, "{}", res.text());

    // The subscriber acts on the event (its own pace: poll, with a generous bound).
    let stream = format!("srp:events:{{{CHANNEL}}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries: Vec<HashMap<String, String>> = loop {
        let reply: redis::streams::StreamRangeReply = client.xrange_all(&stream).await.unwrap();
        if !reply.ids.is_empty() {
            break reply
                .ids
                .iter()
                .map(|e| {
                    e.map
                        .iter()
                        .map(|(k, v)| (k.clone(), redis::from_redis_value(v).unwrap()))
                        .collect()
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "no audit entry:\n{}", subscriber.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    let payload: serde_json::Value = serde_json::from_str(&entry["payload"]).unwrap();
    assert_eq!(payload["type"], "purge");
    assert_eq!(payload["path"], "/profiles/42");
    assert_eq!((entry["delivery"].as_str(), entry["attempts"].as_str()), ("delivered", "2"));

    // The webhook got it twice (503, then 204), the same id each time for deduplication.
    let received = hook.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for webhook::Received { headers, body } in &received {
        assert_eq!(headers[":request"], "POST /hooks/purge HTTP/1.1");
        assert_eq!(headers["authorization"], format!("Bearer {HOOK_TOKEN}"));
        assert_eq!(headers["idempotency-key"], entry["id"]);
        assert_eq!(headers["x-event-source"], CHANNEL);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(body).unwrap(), payload);
    }
    assert!(!subscriber.output().contains(HOOK_TOKEN));

    // Redis goes away: the subscriber's spin up exits with an error; the main app answers on.
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = subscriber.exit_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running:\n{}", subscriber.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    assert!(subscriber.output().contains("disconnected from"), "{}", subscriber.output());
    let health = app.get("/.well-known/spin/health").await.unwrap();
    assert_eq!(health.status.as_u16(), 200);
}
