//! The documentation is checked against what it documents:
//!
//! - docs/configuration.md lists every variable of spin.toml's `[variables]` table exactly
//!   once, nothing else, with the manifest's default, secrecy and the components that map
//!   it, so the reference cannot drift from the manifest in either direction;
//! - README.md stays short enough to read in five minutes (under 12 KiB);
//! - every relative link in README.md and docs/*.md reaches an existing file, and every
//!   `#anchor` one of that file's headings, so moving text between files cannot leave a
//!   reader at a dead end.
//!
//! No Spin, Redis or build is needed: these tests read files only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fails listing every problem at once, so one run shows all that needs fixing.
fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------------------
// Variables: spin.toml against docs/configuration.md
// ---------------------------------------------------------------------------------------

/// A variable as spin.toml declares it.
#[derive(Debug)]
struct Declared {
    /// `None` for a variable without a default (`required = true`).
    default: Option<String>,
    secret: bool,
    /// The components whose `[component.NAME.variables]` map it.
    components: BTreeSet<String>,
}

fn declared_variables() -> BTreeMap<String, Declared> {
    let manifest: toml::Table = toml::from_str(&read(&root().join("spin.toml"))).unwrap();
    let variables = manifest["variables"].as_table().expect("spin.toml has [variables]");
    let components = manifest["component"].as_table().expect("spin.toml has components");
    let mut declared = BTreeMap::new();
    for (name, spec) in variables {
        let spec = spec.as_table().unwrap_or_else(|| panic!("variable {name} is not a table"));
        let default = spec.get("default").map(|d| {
            d.as_str().unwrap_or_else(|| panic!("default of {name} is not a string")).to_owned()
        });
        let secret = spec.get("secret").and_then(toml::Value::as_bool).unwrap_or(false);
        let components = components
            .iter()
            .filter(|(_, component)| {
                // A component maps an application variable by templating it: `{{ name }}`.
                component.get("variables").and_then(toml::Value::as_table).is_some_and(|v| {
                    v.values()
                        .filter_map(toml::Value::as_str)
                        .any(|s| templates(s).contains(&name.as_str()))
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        declared.insert(name.clone(), Declared { default, secret, components });
    }
    declared
}

/// The variable names a Spin template refers to: `{{ a }}-{{b}}` gives `a` and `b`.
fn templates(value: &str) -> Vec<&str> {
    value
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}").map(|(inner, _)| inner.trim()))
        .collect()
}

/// One row of a variables table: `| `name` | default | components | meaning |`.
#[derive(Debug)]
struct Documented {
    line: usize,
    default: String,
    components: BTreeSet<String>,
}

/// The cells of a Markdown table row (`\|` is a literal bar inside a cell).
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push(chars.next().unwrap())
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The `name` of a cell that is exactly one code span holding a variable name.
fn variable_name(cell: &str) -> Option<&str> {
    let name = cell.strip_prefix('`')?.strip_suffix('`')?;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

/// The text of every code span of a cell, e.g. "`cache`, `cache-admin`".
fn code_spans(cell: &str) -> BTreeSet<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Table rows of configuration.md whose first cell is a variable name. Each name must appear
/// in one row only: two rows could disagree.
fn documented_variables(text: &str, problems: &mut Vec<String>) -> BTreeMap<String, Documented> {
    let mut documented = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let row = cells(line);
        let Some(name) = variable_name(&row[0]) else { continue };
        let line = i + 1;
        if row.len() != 4 {
            problems.push(format!(
                "line {line}: `{name}` has {} cells, not Variable | Default | Components | Meaning",
                row.len()
            ));
            continue;
        }
        if row[3].is_empty() {
            problems.push(format!("line {line}: `{name}` has no meaning"));
        }
        let entry = Documented { line, default: row[1].clone(), components: code_spans(&row[2]) };
        if let Some(first) = documented.insert(name.to_owned(), entry) {
            problems.push(format!(
                "line {line}: `{name}` is documented again (first at line {})",
                first.line
            ));
        }
    }
    documented
}

/// How a default cell must read: `value`, "empty" for "", "required" without a default,
/// with " (secret)" for a secret.
fn expected_default(declared: &Declared) -> String {
    let value = match declared.default.as_deref() {
        None => "required".to_owned(),
        Some("") => "empty".to_owned(),
        Some(value) => format!("`{value}`"),
    };
    if declared.secret {
        format!("{value} (secret)")
    } else {
        value
    }
}

fn configuration_problems(
    declared: &BTreeMap<String, Declared>,
    documented: &BTreeMap<String, Documented>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, declared) in declared {
        let Some(row) = documented.get(name) else {
            problems.push(format!("`{name}` is in spin.toml but not documented"));
            continue;
        };
        let expected = expected_default(declared);
        if row.default != expected {
            problems.push(format!(
                "line {}: `{name}` default reads \"{}\", spin.toml says \"{expected}\"",
                row.line, row.default
            ));
        }
        if row.components != declared.components {
            problems.push(format!(
                "line {}: `{name}` components read {:?}, spin.toml maps it in {:?}",
                row.line, row.components, declared.components
            ));
        }
    }
    for (name, row) in documented {
        if !declared.contains_key(name) {
            problems
                .push(format!("line {}: `{name}` is documented but not in spin.toml", row.line));
        }
    }
    problems
}

#[test]
fn every_spin_toml_variable_is_documented_as_declared_and_nothing_else() {
    let declared = declared_variables();
    // Guards the parser: spin.toml has dozens of variables, most mapped by some component.
    assert!(declared.len() >= 40, "only {} variables read from spin.toml", declared.len());
    assert!(declared["redis_host"].components.contains("health"), "{:?}", declared["redis_host"]);

    let mut problems = Vec::new();
    let documented =
        documented_variables(&read(&root().join("docs/configuration.md")), &mut problems);
    problems.extend(configuration_problems(&declared, &documented));
    assert_no_problems("docs/configuration.md against spin.toml [variables]", &problems);
}

#[test]
fn the_configuration_check_notices_each_kind_of_drift() {
    let declared = declared_variables();
    let good = read(&root().join("docs/configuration.md"));
    let check = |text: &str| {
        let mut problems = Vec::new();
        let documented = documented_variables(text, &mut problems);
        problems.extend(configuration_problems(&declared, &documented));
        problems
    };
    // Relative to the real file, so this test says only whether the check works; whether the
    // file is right is the test above.
    let baseline = check(&good).len();

    let row = good.lines().find(|l| l.starts_with("| `redis_port` |")).expect("a redis_port row");
    let extra = "| `redis_timeout_ms` | `500` | `health` | Not a variable of spin.toml. |";
    let drifted = [
        ("a missing variable", good.replace(&format!("{row}\n"), "")),
        ("an unknown variable", format!("{good}\n{extra}\n")),
        ("a duplicate row", format!("{good}\n{row}\n")),
        ("a wrong default", good.replace(row, &row.replace("`6379`", "`6380`"))),
        (
            "a lost secret mark",
            good.replace("| `otp_pepper` | empty (secret) |", "| `otp_pepper` | empty |"),
        ),
        ("a missing component", good.replace(row, &row.replace("`health`, ", ""))),
        ("a missing cell", good.replace(row, &row.replacen(" | ", " ", 1))),
    ];
    for (what, text) in drifted {
        assert!(check(&text).len() > baseline, "{what} went unnoticed");
    }
}

// ---------------------------------------------------------------------------------------
// README size and links
// ---------------------------------------------------------------------------------------

/// The README is the five-minute overview; reference text belongs in docs/.
const README_MAX_BYTES: u64 = 12 * 1024;

#[test]
fn readme_is_under_12_kib() {
    let size = std::fs::metadata(root().join("README.md")).unwrap().len();
    assert!(size < README_MAX_BYTES, "README.md is {size} bytes; move reference text into docs/");
}

/// README.md and every docs/*.md.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines of a Markdown text outside fenced code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// A line without its code spans, which may hold `](`-like text that is not a link. The
/// span becomes `x` so that link text made only of code (`[`/path`](doc.md)`) is not empty.
fn without_code_spans(line: &str) -> String {
    line.split('`').enumerate().map(|(i, part)| if i % 2 == 0 { part } else { "x" }).collect()
}

/// Link targets of one line: inline `[text](target "title")` and reference definitions
/// `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    if let Some(rest) = line.trim_start().strip_prefix('[') {
        if let Some((_, target)) = rest.split_once("]:") {
            targets.extend(target.split_whitespace().next().map(str::to_owned));
        }
    }
    let mut rest = line.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        targets.extend(rest[..end].split_whitespace().next().map(str::to_owned));
        rest = &rest[end..];
    }
    targets
}

/// GitHub's heading anchors (github-slugger): lower case, punctuation dropped (letters,
/// digits, `-` and `_` kept), spaces as `-`; a repeated slug gets `-1`, `-2`, ...
fn heading_anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .chars()
            .flat_map(char::to_lowercase)
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 { slug.clone() } else { format!("{slug}-{count}") });
        *count += 1;
    }
    anchors
}

/// What is wrong with the relative links of one Markdown file (empty when nothing is).
fn link_problems(file: &Path, text: &str) -> Vec<String> {
    let name = file.strip_prefix(root()).unwrap_or(file).display().to_string();
    let mut problems = Vec::new();
    for (line, content) in prose_lines(text) {
        for target in link_targets(content) {
            let external = target.contains("://") || target.starts_with("mailto:");
            if external {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = file.parent().unwrap().join(path);
            if !path.is_empty() && !resolved.exists() {
                problems.push(format!("{name}:{line}: {target}: no such file"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            // `#anchor` alone points into this same text.
            let target_text = if path.is_empty() { Some(text.to_owned()) } else { None };
            if path.is_empty() || resolved.extension().is_some_and(|e| e == "md") {
                let anchors = heading_anchors(&target_text.unwrap_or_else(|| read(&resolved)));
                if !anchors.contains(anchor) {
                    problems
                        .push(format!("{name}:{line}: {target}: no heading with anchor #{anchor}"));
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_in_readme_and_docs_resolves() {
    let files = markdown_files();
    assert!(files.len() >= 8, "README.md and the docs: {files:?}");
    let mut problems = Vec::new();
    let mut relative_links = 0;
    for file in &files {
        let text = read(file);
        relative_links += prose_lines(&text)
            .iter()
            .flat_map(|(_, line)| link_targets(line))
            .filter(|t| !t.contains("://"))
            .count();
        problems.extend(link_problems(file, &text));
    }
    // Guards the parser: the README's route table alone links every service doc.
    assert!(relative_links >= 30, "only {relative_links} relative links found");
    assert_no_problems("broken relative links", &problems);
}

#[test]
fn the_link_check_notices_missing_files_and_anchors() {
    let readme = root().join("README.md");
    let check = |text: &str| link_problems(&readme, text);
    assert!(check("[ok](docs/configuration.md#sessions) and [ok](#here)\n# Here\n").is_empty());
    assert_eq!(check("[gone](#not-here)\n# Here\n").len(), 1);
    assert_eq!(check("See [gone](docs/nope.md).").len(), 1);
    assert_eq!(check("See [`/x`](docs/health.md#no-such-heading).").len(), 1);
    assert_eq!(check("[ref]: docs/missing.md").len(), 1);
    // Code is not a link, and external links are not checked here.
    assert!(
        check("```\n[a](missing.md)\n```\n`[b](missing.md)` [c](https://example.com/x)").is_empty()
    );
    // Headings in GitHub's anchor form, duplicates numbered.
    let anchors = heading_anchors("## Check: `POST /api/ratelimit/check`\n# A\n# A\n");
    assert!(anchors.contains("check-post-apiratelimitcheck"), "{anchors:?}");
    assert!(anchors.contains("a") && anchors.contains("a-1"), "{anchors:?}");
}

/// The settings snapshot keeps non-secret variables in the process's in-memory store and
/// tells secrets by their names: every `secret = true` variable must be one by that rule.
#[test]
fn every_secret_variable_is_kept_out_of_the_settings_snapshot() {
    use spin_redis_patterns::platform::settings_snapshot::is_secret;
    let secrets: Vec<String> =
        declared_variables().into_iter().filter(|(_, d)| d.secret).map(|(n, _)| n).collect();
    assert!(secrets.len() >= 10, "{secrets:?}");
    let leaked: Vec<&String> = secrets.iter().filter(|n| !is_secret(n)).collect();
    assert!(leaked.is_empty(), "secret variables the snapshot would keep: {leaked:?}");
}

/// Whether `text` states `range` ("6-10") as a whole, not inside a longer number ("16-100").
fn states(text: &str, range: &str) -> bool {
    text.match_indices(range).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let mut after = text[at + range.len()..].chars();
        let (next, then) = (after.next(), after.next());
        let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
        // A full stop ends a sentence, unless a digit follows (`0.5`).
        let decimal_follows = next == Some('.') && digit(then);
        !digit(before) && before != Some('.') && !digit(next) && !decimal_follows
    })
}

/// Issue 33: each numeric setting's range in configuration.md, against the table the settings
/// readers take their bounds from (`platform::settings::RANGES`).
fn range_problems(text: &str) -> Vec<String> {
    use spin_redis_patterns::platform::settings::{Range, RANGES};
    let meanings: BTreeMap<String, String> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .filter_map(|l| {
            let row = cells(l);
            Some((variable_name(row.first()?)?.to_owned(), row.last()?.clone()))
        })
        .collect();
    let mut problems = Vec::new();
    for (name, range) in RANGES {
        let (low, high) = match range {
            Range::Whole(l, h) => (l.to_string(), h.to_string()),
            Range::Decimal(l, h) => (l.to_string(), h.to_string()),
        };
        match meanings.get(*name) {
            None => problems.push(format!("{name}: no row, but the code reads it ({low}-{high})")),
            Some(meaning)
                if !states(meaning, &format!("{low}-{high}"))
                    && !states(meaning, &format!("{low} to {high}")) =>
            {
                problems.push(format!(
                    "{name}: the row does not state the range the code reads, {low}-{high} \
                     (or \"{low} to {high}\")"
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

#[test]
fn configuration_md_states_every_range_the_code_reads() {
    use spin_redis_patterns::platform::settings::RANGES;
    assert!(RANGES.len() >= 40, "{}", RANGES.len());
    let text = read(&root().join("docs/configuration.md"));
    assert_no_problems("docs/configuration.md against settings::RANGES", &range_problems(&text));
}

#[test]
fn the_range_check_notices_drift() {
    let good = read(&root().join("docs/configuration.md"));
    assert!(range_problems(&good).is_empty());
    // The drift of issue 33: the docs said 4-10 where the code refuses anything under 6.
    let drifted = good.replace("Digits per code, 6-10", "Digits per code, 4-10");
    assert_ne!(drifted, good);
    let problems = range_problems(&drifted);
    assert!(problems.len() == 1 && problems[0].starts_with("otp_code_length:"), "{problems:?}");
    // A range inside a longer number does not count.
    assert!(states("1-1000", "1-1000") && !states("1-10000", "1-1000"));
    assert!(!states("11-1000", "1-1000") && states("(1-1000)", "1-1000"));
    assert!(states("up to 1-1000.", "1-1000") && !states("0 to 0.55", "0 to 0.5"));
}

/// Error codes named in `text`'s comment lines as `NNN code` (a status, then a snake_case
/// code), which no string literal of `sources` holds.
fn unknown_codes_in_comments(text: &str, sources: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('#')) {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            let status = pair[0].len() == 3 && pair[0].bytes().all(|b| b.is_ascii_digit());
            let code = pair[1].contains('_')
                && pair[1]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if status && code && !sources.contains(&format!("\"{}\"", pair[1])) {
                unknown.push(format!("{} {}", pair[0], pair[1]));
            }
        }
    }
    unknown
}

fn library_sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&read(&path));
            }
        }
    }
    let mut all = String::new();
    walk(&root().join("src"), &mut all);
    all
}

/// Issue 33: spin.toml's comments named `500 otp_misconfigured`, a code that no longer existed.
#[test]
fn every_error_code_named_in_spin_toml_comments_exists() {
    let sources = library_sources();
    let unknown = unknown_codes_in_comments(&read(&root().join("spin.toml")), &sources);
    assert!(
        unknown.is_empty(),
        "spin.toml comments name codes the code never answers: {unknown:?}"
    );
    assert_eq!(
        unknown_codes_in_comments("# answers 500 otp_misconfigured\n# 503 outbox_full", &sources),
        ["500 otp_misconfigured"]
    );
}
