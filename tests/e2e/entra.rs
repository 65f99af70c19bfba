//! Issue 31, item 3, under the real Spin: outbound Redis with Microsoft Entra ID only
//! (`redis_auth=entra`). A stand-in for the managed identity endpoint issues tokens; Redis's
//! default user is off (no access key works) and an ACL user named after the identity's object
//! id takes the tokens that are valid now. Checks that spin.toml's `allowed_outbound_hosts`
//! lets the components reach the endpoint, that Spin's in-memory store keeps one token for
//! every request of the process, and that a token Redis stops taking is replaced without a
//! failed request or a restart.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use spin_test_host::redis;
use spin_test_host::redis_server::RedisServer;

use crate::support::{self, req, Mode, AZURE_STYLE_KEY};

const LOCKS_TOKEN: &str = "e2e-entra-locks-token-0123456789abcdef";
const OBJECT_ID: &str = "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
const ADMIN: &str = "admin-password-of-the-e2e-test";

/// Answers every request with the current token, as IMDS does; counts the requests.
fn token_endpoint(current: Arc<Mutex<String>>) -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(Mutex::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            *seen.lock().unwrap() += 1;
            let body = format!(
                r#"{{"access_token":"{}","expires_in":"3599","token_type":"Bearer"}}"#,
                current.lock().unwrap()
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, count)
}

async fn acl(admin: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let _: () = redis::cmd("ACL").arg(args).query_async(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_entra_only_the_outbound_routes_work_and_the_token_is_refreshed() {
    let Some(spin) = support::spin_or_skip(module_path!()) else { return };
    let redis = RedisServer::tls(AZURE_STYLE_KEY);
    let mut setup = redis.client().await;
    let admin_pass = format!(">{ADMIN}");
    acl(&mut setup, &["SETUSER", "admin", "on", &admin_pass, "~*", "&*", "+@all"]).await;
    let url = format!("rediss://admin:{ADMIN}@localhost:{}", redis.port());
    let mut admin =
        redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    acl(&mut admin, &["SETUSER", "default", "off", "resetpass"]).await;
    let first = "entra-token-one.aaaa-bbbb_cccc".to_owned();
    acl(&mut admin, &["SETUSER", OBJECT_ID, "on", &format!(">{first}"), "~*", "&*", "+@all"]).await;
    let current = Arc::new(Mutex::new(first.clone()));
    let (port, fetches) = token_endpoint(current.clone());
    let origin = format!("http://127.0.0.1:{port}");
    let token_url = format!("{origin}/metadata/identity/oauth2/token");
    let app = support::start_on(
        &spin,
        &redis,
        Mode::Outbound,
        &[
            ("redis_access_key", ""),
            ("redis_auth", "entra"),
            ("redis_entra_token_url", &token_url),
            ("redis_entra_token_origin", &origin),
            ("redis_entra_object_id", OBJECT_ID),
            ("locks_api_token", LOCKS_TOKEN),
        ],
    )
    .await;
    let status = |name: String| {
        let app = &app;
        async move {
            let auth = format!("Bearer {LOCKS_TOKEN}");
            let get =
                req(Method::GET, &format!("/api/locks/{name}"), &[("authorization", &auth)], None);
            let res = app.send_within(Duration::from_secs(30), get).await.unwrap();
            assert_eq!(res.status.as_u16(), 200, "{}\n{}", res.text(), app.output());
        }
    };
    for i in 0..10 {
        status(format!("a{i}")).await;
    }
    assert_eq!(*fetches.lock().unwrap(), 1, "one token for every request of the process");

    // The token expires: Redis stops taking it, the endpoint issues the next.
    let second = "entra-token-two.dddd-eeee_ffff".to_owned();
    *current.lock().unwrap() = second.clone();
    acl(&mut admin, &["SETUSER", OBJECT_ID, &format!(">{second}"), &format!("<{first}")]).await;
    for i in 0..10 {
        status(format!("b{i}")).await;
    }
    assert_eq!(*fetches.lock().unwrap(), 2, "replaced once, then shared");
    let output = app.output();
    assert!(!output.contains(&first) && !output.contains(&second));
}
