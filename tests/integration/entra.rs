//! Microsoft Entra ID on outbound Redis (`redis_auth = "entra"`, src/platform/entra.rs): a
//! stand-in for the managed identity endpoint issues tokens, and Redis has an ACL user named
//! after the identity's object id whose passwords are the tokens that are valid now, as Azure
//! Redis takes any unexpired token of the identity. No access key is used: the default user is
//! switched off.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::Method;
use spin_test_host::redis::{self, AsyncCommands};
use spin_test_host::redis_server::RedisServer;
use spin_test_host::TestApp;

use crate::support::{builder, AZURE_STYLE_KEY};

const LOCKS_TOKEN: &str = "entra-test-locks-token-0123456789abcdef";
const OBJECT_ID: &str = "3f1c2b9a-8d7e-4c5b-9a1f-0e2d3c4b5a69";
const ADMIN_PASSWORD: &str = "admin-password-for-the-test-itself";

/// A JWT-shaped token (header.payload.signature, base64url) with the object id as `oid`, as
/// Entra issues them; `n` makes each one different.
fn token(n: u32) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.sig-{n}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#.into()),
        b64(format!(r#"{{"aud":"https://redis.azure.com","oid":"{OBJECT_ID}","n":{n}}}"#))
    )
}

/// Each request's line and `Metadata` header.
type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The stand-in managed identity endpoint: answers every GET with the current token and
/// counts the requests, recording each request line and `Metadata` header.
struct TokenEndpoint {
    port: u16,
    current: Arc<Mutex<String>>,
    requests: Requests,
}

impl TokenEndpoint {
    fn start(first: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let current = Arc::new(Mutex::new(first));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (token, log) = (current.clone(), requests.clone());
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut metadata = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let Some((name, value)) = line.trim_end().split_once(':') else { break };
                    if name.eq_ignore_ascii_case("metadata") {
                        metadata = Some(value.trim().to_owned());
                    }
                }
                log.lock().unwrap().push((request_line.trim_end().to_owned(), metadata));
                // IMDS's shape: numbers as strings.
                let body = format!(
                    r#"{{"access_token":"{}","expires_in":"3599","expires_on":"0","resource":"https://redis.azure.com","token_type":"Bearer"}}"#,
                    token.lock().unwrap()
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port, current, requests }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn fetches(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// A TLS Redis where only the identity (and the test's admin) can log in.
async fn entra_only_redis() -> (RedisServer, redis::aio::MultiplexedConnection) {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let mut setup = redis.client().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "admin", "on", &format!(">{ADMIN_PASSWORD}"), "~*", "&*", "+@all"])
        .query_async(&mut setup)
        .await
        .unwrap();
    let admin_url = format!("rediss://admin:{ADMIN_PASSWORD}@127.0.0.1:{}", redis.port());
    let mut admin =
        redis::Client::open(admin_url).unwrap().get_multiplexed_async_connection().await.unwrap();
    // No access key: the default user can no longer log in.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off", "resetpass"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", OBJECT_ID, "on", "~*", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    (redis, admin)
}

async fn acl_password(admin: &mut redis::aio::MultiplexedConnection, change: String) {
    let _: () =
        redis::cmd("ACL").arg(&["SETUSER", OBJECT_ID, &change]).query_async(admin).await.unwrap();
}

fn app(redis: &RedisServer, endpoint: &TokenEndpoint, object_id: &str) -> TestApp {
    builder(redis)
        .variable("redis_access_key", "")
        .variable("redis_auth", "entra")
        .variable(
            "redis_entra_token_url",
            format!("{}/metadata/identity/oauth2/token", endpoint.origin()),
        )
        .variable("redis_entra_token_origin", endpoint.origin())
        .variable("redis_entra_client_id", "6a0e1c3b-0000-4000-8000-00000000beef")
        .variable("redis_entra_object_id", object_id)
        .variable("locks_api_token", LOCKS_TOKEN)
        .load()
        .unwrap()
}

async fn lock_status(app: &TestApp, name: &str) -> u16 {
    let res = app
        .request(Method::GET, &format!("/api/locks/{name}"))
        .header("authorization", &format!("Bearer {LOCKS_TOKEN}"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{} {}", res.text(), res.logs);
    res.status
}

#[tokio::test(flavor = "multi_thread")]
async fn with_entra_only_outbound_routes_work_on_one_cached_token() {
    let (redis, mut admin) = entra_only_redis().await;
    let first = token(1);
    acl_password(&mut admin, format!(">{first}")).await;
    let endpoint = TokenEndpoint::start(first.clone());
    // The object id from the token's oid claim (none configured).
    let app = app(&redis, &endpoint, "");
    for i in 0..5 {
        lock_status(&app, &format!("job-{i}")).await;
    }
    // A write too: the lock is in Redis, written as the identity.
    let res = app
        .request(Method::POST, "/api/locks/entra-job")
        .header("authorization", &format!("Bearer {LOCKS_TOKEN}"))
        .json(&serde_json::json!({"ttl_ms": 60000}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{} {}", res.text(), res.logs);
    let keys: Vec<String> = admin.keys("srp:*entra-job*").await.unwrap();
    assert!(!keys.is_empty());

    // One token for the whole process: fetched once, kept in memory, never logged.
    assert_eq!(endpoint.fetches(), 1);
    let (line, metadata) = endpoint.requests.lock().unwrap()[0].clone();
    assert!(line.starts_with("GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fredis.azure.com&client_id=6a0e1c3b"), "{line}");
    assert_eq!(metadata.as_deref(), Some("true"));
    assert!(!app.logs().contains(&first));
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut admin).await.unwrap();
    assert!(!clients.contains("user=default"), "{clients}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_expires_under_load_is_replaced_without_a_failed_request() {
    let (redis, mut admin) = entra_only_redis().await;
    let first = token(1);
    acl_password(&mut admin, format!(">{first}")).await;
    let endpoint = TokenEndpoint::start(first.clone());
    let app = Arc::new(app(&redis, &endpoint, OBJECT_ID));
    lock_status(&app, "warm").await;
    assert_eq!(endpoint.fetches(), 1);

    // Four clients keep requesting; once 40 requests are done, the first token expires: Redis
    // stops taking it and the endpoint issues the next one. Every request must still succeed,
    // with no restart.
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (app, done) = (app.clone(), done.clone());
        load.push(tokio::spawn(async move {
            for i in 0..40 {
                lock_status(&app, &format!("w{worker}-{i}")).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while done.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let second = token(2);
    *endpoint.current.lock().unwrap() = second.clone();
    acl_password(&mut admin, format!(">{second}")).await;
    acl_password(&mut admin, format!("<{first}")).await;
    for task in load {
        task.await.unwrap();
    }
    // After the rotation: the new token, fetched again only by requests that held the old one.
    lock_status(&app, "after").await;
    let fetches = endpoint.fetches();
    assert!(fetches >= 2, "the expired token was never replaced");
    assert!(fetches <= 2 + 4, "{fetches} fetches: the fresh token is not shared");
    let logs = app.logs();
    assert!(!logs.contains(&first) && !logs.contains(&second));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_refuses_is_a_clear_error_not_a_hang() {
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let endpoint = TokenEndpoint::start(token(1));
    let app = builder(&redis)
        .variable("redis_auth", "entra")
        .variable("redis_entra_token_url", format!("{}/token", endpoint.origin()))
        // Not the URL's origin: refused before any request.
        .variable("redis_entra_token_origin", "http://127.0.0.1:9")
        .variable("locks_api_token", LOCKS_TOKEN)
        .load()
        .unwrap();
    let res = app
        .request(Method::GET, "/api/locks/x")
        .header("authorization", &format!("Bearer {LOCKS_TOKEN}"))
        .send()
        .await;
    assert_eq!(res.status, 500, "{}", res.text());
    assert!(res.text().contains("redis_entra_token_origin"), "{}", res.text());
    assert_eq!(endpoint.fetches(), 0);
}
