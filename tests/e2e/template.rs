//! The Spin template (`templates/redis-patterns-rust`, issue 29) with the real Spin: installed
//! from this checkout, `spin new` makes an app on the library (by path: no network), and the
//! app builds with `spin build` and answers under `spin up`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use spin_test_host::real_spin::SpinUp;
use spin_test_host::redis_server::RedisServer;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command, what: &str) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_new_app_builds_and_answers() {
    let Some(spin) = crate::support::spin_or_skip("template::spin_new_app_builds_and_answers")
    else {
        return;
    };
    let dir = tempfile::Builder::new().prefix("srp-template-").tempdir().unwrap();
    // Spin keeps installed templates under $XDG_DATA_HOME/spin: the test's own, not the user's.
    let data = dir.path().join("data");
    let spin_cmd = |args: &[&str], cwd: &Path| {
        let mut cmd = Command::new(&spin);
        cmd.args(args).current_dir(cwd).env("XDG_DATA_HOME", &data);
        cmd
    };
    let installed =
        run(&mut spin_cmd(&["templates", "install", "--dir", ROOT], dir.path()), "install");
    let listed = String::from_utf8_lossy(&installed.stdout);
    assert!(listed.contains("redis-patterns-rust"), "{listed}");

    let library = format!("library-path={ROOT}");
    let new_args = [
        "new",
        "-t",
        "redis-patterns-rust",
        "hello-redis",
        "--accept-defaults",
        "--value",
        &library,
    ];
    run(&mut spin_cmd(&new_args, dir.path()), "spin new");
    let app = dir.path().join("hello-redis");
    for file in ["spin.toml", "Cargo.toml", "src/lib.rs", "runtime-config.toml"] {
        assert!(app.join(file).is_file(), "spin new wrote no {file}");
    }
    let manifest = std::fs::read_to_string(app.join("spin.toml")).unwrap();
    assert!(manifest.contains("\"redis://{{ redis_host }}:{{ redis_port }}\""), "{manifest}");
    let source = std::fs::read_to_string(app.join("src/lib.rs")).unwrap();
    assert!(source.contains("Hello from hello-redis"), "{source}");

    // Offline: the checkout's lock file pins the versions already in Cargo's cache, and the
    // build output goes to a directory kept between runs (a cold build takes minutes here).
    std::fs::copy(Path::new(ROOT).join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    let kept = Path::new(ROOT).join("target/template-app");
    std::fs::create_dir_all(&kept).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&kept, app.join("target")).unwrap();
    let mut build = spin_cmd(&["build"], &app);
    build.env("CARGO_NET_OFFLINE", "true");
    run(&mut build, "spin build");

    let redis = RedisServer::plain();
    let config = std::fs::read_to_string(app.join("runtime-config.toml")).unwrap();
    let up = SpinUp::new(&spin, app.join("spin.toml"), &config)
        .variable("redis_port", redis.port().to_string())
        .start()
        .await
        .expect("spin up starts the new app");
    let first = up.send_within(Duration::from_secs(30), get("/")).await.unwrap();
    assert_eq!(first.status, 200, "{}\n{}", first.text(), up.output());
    assert_eq!(first.text(), "Hello from hello-redis");
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert!(first.header("ratelimit").is_some_and(|v| v.contains("r=59")), "{:?}", first.headers);
    let second = up.send_within(Duration::from_secs(30), get("/anything")).await.unwrap();
    assert_eq!(second.header("x-cache"), Some("hit"), "{:?}", second.headers);
    assert!(second.header("ratelimit").is_some_and(|v| v.contains("r=58")), "{:?}", second.headers);
}

fn get(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    spin_test_host::real_spin::request(http::Method::GET, path, &[], Vec::new())
}
