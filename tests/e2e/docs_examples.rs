//! Every `curl` example of README.md and docs/*.md, run as written under the real Spin.
//!
//! The convention the docs follow (docs/architecture.md, "Docs that run"):
//! - a fenced `sh` block holding a `curl` line is an example, run by this test, unless the
//!   line before its fence is `<!-- illustrative: why -->` (an AKS host, a placeholder URL);
//! - each `curl` line ends with `# STATUS` and optionally the body it answers, as JSON where
//!   `…` stands for any value and an object lists only the fields it promises: both are
//!   asserted;
//! - a quoted `THE CODE`-style placeholder is the field (`code`) of an earlier answer in the
//!   same block, as a reader would paste it;
//! - blocks run in the shell of the README's first hour: its `.env` recipe (run as written,
//!   minus `spin up`) and its `set -a; . ./.env` line come first. The test's only changes are
//!   the address (`127.0.0.1:3000` becomes Spin's free port) and the Redis port.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use spin_test_host::real_spin::SpinUp;
use spin_test_host::redis_server::RedisServer;

use crate::support::{build, runtime_config_for, spin_or_skip, SPIN_TOML};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const README_ADDRESS: &str = "127.0.0.1:3000";
const ILLUSTRATIVE: &str = "<!-- illustrative:";

/// One fenced block of a Markdown file.
struct Block {
    file: String,
    line: usize,
    text: String,
    illustrative: bool,
}

/// One `curl` command of a block with what the docs say it answers.
#[derive(Debug)]
struct Curl {
    command: String,
    status: u16,
    header: Option<(String, String)>,
    body: Option<Value>,
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The fenced `sh` blocks of every file.
fn sh_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    for path in markdown_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.strip_prefix(ROOT).unwrap().display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let Some(lang) = lines[i].strip_prefix("```") else {
                i += 1;
                continue;
            };
            let start = i;
            let end = (start + 1..lines.len()).find(|&j| lines[j].starts_with("```")).unwrap();
            if matches!(lang.trim(), "sh" | "bash" | "shell") {
                let before = lines[..start].iter().rev().find(|l| !l.trim().is_empty());
                blocks.push(Block {
                    file: file.clone(),
                    line: start + 1,
                    text: lines[start + 1..end].join("\n"),
                    illustrative: before.is_some_and(|l| l.starts_with(ILLUSTRATIVE)),
                });
            }
            i = end + 1;
        }
    }
    blocks
}

/// Lines with `\`-continuations joined.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn is_curl(command: &str) -> bool {
    command.trim_start().starts_with("curl ")
}

/// The documented body: `…` is any value, `,…` ends an object with more fields.
fn documented_body(text: &str) -> Value {
    let json = text.replace(",…}", "}").replace("\"…\"", "…").replace('…', "\"…\"");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("documented body {text}: {e}"))
}

/// `curl … # 200 X-Cache: HIT {"id":7,…}` split into the command and what it promises: a
/// status, then optionally one header and a body.
fn parse_curl(command: &str, where_: &str) -> Curl {
    let (command, comment) = command
        .rsplit_once(" # ")
        .unwrap_or_else(|| panic!("{where_}: `{command}` says no `# STATUS`"));
    let comment = comment.trim();
    let (status, rest) = comment.split_once(' ').unwrap_or((comment, ""));
    let status = status.parse().unwrap_or_else(|_| panic!("{where_}: `# {comment}` is no status"));
    let rest = rest.trim();
    let (header, body) = match rest.find(['{', '[']) {
        Some(0) => ("", rest),
        Some(i) => (rest[..i].trim(), &rest[i..]),
        None => (rest, ""),
    };
    let header = (!header.is_empty()).then(|| {
        let (name, value) = header
            .split_once(": ")
            .unwrap_or_else(|| panic!("{where_}: `{header}` is no `Name: value`"));
        (name.to_owned(), value.to_owned())
    });
    let body = (!body.is_empty()).then(|| documented_body(body));
    Curl { command: command.trim_end().to_owned(), status, header, body }
}

/// Whether `actual` holds everything `documented` promises.
fn holds(documented: &Value, actual: &Value) -> bool {
    match (documented, actual) {
        (Value::String(s), _) if s == "…" => !actual.is_null(),
        (Value::Object(want), Value::Object(got)) => {
            want.iter().all(|(k, v)| got.get(k).is_some_and(|g| holds(v, g)))
        }
        (Value::Array(want), Value::Array(got)) => {
            want.len() <= got.len() && want.iter().zip(got).all(|(w, g)| holds(w, g))
        }
        _ => documented == actual,
    }
}

/// `THE CODE` in quotes: the `code` field of the newest earlier answer that has one.
fn fill_placeholders(command: &str, answers: &[Value]) -> String {
    let mut out = command.to_owned();
    while let Some(start) = out.find("THE ") {
        let len = out[start + 4..]
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(out.len() - start - 4);
        let field = out[start + 4..start + 4 + len].to_ascii_lowercase();
        let value = answers
            .iter()
            .rev()
            .find_map(|a| a[&field].as_str())
            .unwrap_or_else(|| panic!("no earlier answer has `{field}` for `{command}`"));
        out.replace_range(start..start + 4 + len, value);
    }
    out
}

/// `curl --version` says 7.82 or later, the first with `--json`.
fn curl_has_json() -> bool {
    let Ok(out) = Command::new("curl").arg("--version").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1).unwrap_or_default();
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    parts.len() >= 2 && (parts[0], parts[1]) >= (7, 82)
}

fn run(shell: &str, dir: &Path) -> std::process::Output {
    Command::new("sh").arg("-c").arg(shell).current_dir(dir).output().expect("sh runs")
}

#[test]
fn every_curl_example_says_what_it_answers_or_is_marked_illustrative() {
    let mut examples = 0;
    for block in sh_blocks().iter().filter(|b| !b.illustrative) {
        let where_ = format!("{}:{}", block.file, block.line);
        for command in commands(&block.text).iter().filter(|c| is_curl(c)) {
            parse_curl(command, &where_);
            examples += 1;
        }
    }
    // The README's first hour alone has four; a parser that finds none is broken.
    assert!(examples >= 4, "found {examples} curl examples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_answers_as_documented() {
    let test = "docs_examples::every_curl_example_answers_as_documented";
    let Some(spin) = spin_or_skip(test) else { return };
    if !curl_has_json() {
        println!("skipped {test}: no curl 7.82+ (for --json) on PATH");
        return;
    }
    let blocks = sh_blocks();
    let readme: Vec<&Block> = blocks.iter().filter(|b| b.file == "README.md").collect();

    // The `.env` recipe, run as written in a scratch directory (not the checkout's `.env`).
    let dir = tempfile::tempdir().unwrap();
    let recipe =
        readme.iter().find(|b| b.text.contains("cat > .env")).expect("the README writes a .env");
    let recipe: Vec<&str> =
        recipe.text.lines().filter(|l| !l.trim_start().starts_with("spin up")).collect();
    let out = run(&recipe.join("\n"), dir.path());
    assert!(out.status.success(), "the .env recipe fails: {out:?}");
    let env_text = std::fs::read_to_string(dir.path().join(".env")).unwrap();

    // The README's Redis: a local plain redis-server (its port is the test's).
    let redis = RedisServer::plain();
    build();
    let mut up = SpinUp::new(&spin, SPIN_TOML, &runtime_config_for(&redis))
        .variable("redis_port", redis.port().to_string());
    for line in env_text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = line.split_once('=').expect("NAME=value");
        up = up.env(name, value);
    }
    let app = up.start().await.expect("spin up starts the app");
    let address = app.addr().to_string();

    // Every later block runs after the README's `set -a; . ./.env` line, in that directory.
    let setup = readme
        .iter()
        .flat_map(|b| b.text.lines())
        .find(|l| l.starts_with("set -a;"))
        .expect("the README loads .env into the shell")
        .replace(README_ADDRESS, &address);
    let body_file = dir.path().join("body");
    let headers_file = dir.path().join("headers");
    let capture = format!(
        "curl() {{ command curl -sS -o '{}' -D '{}' -w '%{{http_code}}' \"$@\"; }}",
        body_file.display(),
        headers_file.display()
    );

    let mut ran = 0;
    for block in blocks.iter().filter(|b| !b.illustrative) {
        let where_ = format!("{}:{}", block.file, block.line);
        let mut prelude = vec![setup.clone(), capture.clone()];
        let mut answers: Vec<Value> = Vec::new();
        for command in commands(&block.text) {
            let command = command.replace(README_ADDRESS, &address);
            if !is_curl(&command) {
                prelude.push(command);
                continue;
            }
            let curl = parse_curl(&command, &where_);
            let line = fill_placeholders(&curl.command, &answers);
            let out = run(&format!("{}\n{line}", prelude.join("\n")), dir.path());
            let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let body = std::fs::read_to_string(&body_file).unwrap_or_default();
            assert!(out.status.success(), "{where_}: `{line}` failed: {out:?}");
            assert_eq!(status, curl.status.to_string(), "{where_}: `{}`: {body}", curl.command);
            let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let Some((name, value)) = &curl.header {
                let headers = std::fs::read_to_string(&headers_file).unwrap_or_default();
                let found = headers.lines().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                });
                assert_eq!(found.as_deref(), Some(value.as_str()), "{where_}: `{line}`\n{headers}");
            }
            if let Some(documented) = &curl.body {
                assert!(holds(documented, &json), "{where_}: `{}` answered {body}", curl.command);
            }
            answers.push(json);
            ran += 1;
        }
    }
    assert!(ran >= 4, "ran {ran} curl examples");
    println!("ran {ran} curl examples under {}", spin.display());
}

#[test]
fn documented_bodies_match_only_what_they_promise() {
    let doc = documented_body(r#"{"redis":"ok","latency_ms":…}"#);
    assert!(holds(&doc, &serde_json::json!({"redis": "ok", "latency_ms": 1.2, "x": 1})));
    assert!(!holds(&doc, &serde_json::json!({"redis": "down", "latency_ms": 1.2})));
    assert!(!holds(&doc, &serde_json::json!({"redis": "ok"})));
    let curl = parse_curl(r#"curl $H/x -H "$O" --json '{"a":1}'    # 202 {"code":…,…}"#, "t");
    assert_eq!(curl.status, 202);
    assert!(holds(curl.body.as_ref().unwrap(), &serde_json::json!({"code": "123456", "t": 1})));
    let curl = parse_curl("curl $H/p # 200 X-Cache: HIT {\"id\":7,…}", "t");
    assert_eq!(curl.header, Some(("X-Cache".to_owned(), "HIT".to_owned())));
    assert!(holds(curl.body.as_ref().unwrap(), &serde_json::json!({"id": 7, "name": "n"})));
    assert!(!holds(curl.body.as_ref().unwrap(), &serde_json::json!({"id": 8})));
    let answers = [serde_json::json!({"code": "042917"})];
    assert_eq!(
        fill_placeholders(r#"--json '{"code":"THE CODE"}'"#, &answers),
        r#"--json '{"code":"042917"}'"#
    );
}
