//! The one strict JSON reader for request bodies and JSON-valued variables, plus the small
//! helpers for JSON written by hand ([`quote`], [`text_response`]).
//!
//! Why not `serde_json`'s deserializer: it (or `miniserde`) adds about 13-14 KB to a
//! component's `.wasm`, which pushes OTP, rate limiting and sessions over their 300 KB budget.
//! Responses are still written with `serde_json`.
//!
//! What it accepts is RFC 8259 and nothing more: one value, optional surrounding whitespace,
//! no trailing text, nesting no deeper than the caller's limit, no duplicate object names,
//! strings decoded (escapes, `\u` surrogate pairs; lone surrogates and raw control characters
//! refused), input that must be UTF-8. Numbers are kept as their validated text, never
//! converted, so callers parse what they accept and nothing is rounded; each object member
//! also keeps the raw source text of its value, for storing it exactly as it was sent.

use std::collections::BinaryHeap;

use spin_sdk::http::{Request, Response};

use crate::error::ApiError;

/// A checked JSON value, kept as its source text (without surrounding whitespace) and read
/// on demand: the accessors decode it, [`Json::raw`] gives it back exactly as it was sent.
/// Keeping text instead of building a tree keeps the code small (a few KB of `.wasm` less).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Json<'a> {
    raw: &'a str,
}

/// One `"name": value` of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: String,
    pub value: Json<'a>,
}

impl<'a> Json<'a> {
    /// Checks `text` as one JSON document. `max_depth` bounds nesting: 0 allows only scalars
    /// and empty containers at the top; each array or object level adds one.
    pub fn parse(text: &'a [u8], max_depth: usize) -> Result<Self, String> {
        let text = std::str::from_utf8(text)
            .map_err(|e| format!("the text is not UTF-8 at byte {}", e.valid_up_to()))?;
        let mut reader = Reader { text, at: 0, max_depth };
        reader.space();
        let start = reader.at;
        reader.value(0)?;
        let raw = &text[start..reader.at];
        reader.space();
        if reader.at != text.len() {
            return Err(reader.error("unexpected text after the JSON value"));
        }
        Ok(Json { raw })
    }

    /// The value's source text, exactly as sent (numbers unrounded, escapes as written).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// A reader positioned on this (already checked) value.
    fn reader(&self) -> Reader<'a> {
        Reader { text: self.raw, at: 0, max_depth: usize::MAX }
    }

    /// The members in document order (names are unique), if this is an object.
    pub fn members(&self) -> Option<Vec<Member<'a>>> {
        self.raw.starts_with('{').then(|| self.reader().container(0).unwrap_or_default())
    }

    /// The items in order, if this is an array.
    pub fn items(&self) -> Option<Vec<Json<'a>>> {
        let entries =
            self.raw.starts_with('[').then(|| self.reader().container(0).unwrap_or_default())?;
        Some(entries.into_iter().map(|m| m.value).collect())
    }

    /// The value of the member named `name`, if this is an object that has it.
    /// (Each call reads the object again: for several fields, take [`Json::members`] once
    /// and use [`field`].)
    pub fn get(&self, name: &str) -> Option<Json<'a>> {
        field(&self.members()?, name)
    }

    /// The decoded text, if this is a string.
    pub fn as_str(&self) -> Option<String> {
        self.raw.starts_with('"').then(|| self.reader().string().unwrap_or_default())
    }

    /// The number's text (e.g. `-2.5e3`), if this is a number.
    pub fn as_number(&self) -> Option<&'a str> {
        matches!(self.raw.as_bytes().first(), Some(b'-' | b'0'..=b'9')).then_some(self.raw)
    }

    /// A non-negative integer written without sign, fraction or exponent, if it fits a u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_number()?.parse().ok()
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.raw {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.raw == "null"
    }

    /// Short description for error messages (never echoes long text).
    pub fn describe(&self) -> String {
        match self.raw.as_bytes()[0] {
            b'[' => "an array".into(),
            b'{' => "an object".into(),
            b'"' if self.raw.len() > 34 => "a long string".into(),
            b'"' => self.raw.to_owned(),
            _ if self.raw.len() > 32 => "a long number".into(),
            _ => self.raw.to_owned(),
        }
    }
}

/// The value of the member named `name` among `members`.
pub fn field<'a>(members: &[Member<'a>], name: &str) -> Option<Json<'a>> {
    members.iter().find(|m| m.name == name).map(|m| m.value)
}

/// `text` as a JSON string literal, quoted and escaped by `serde_json`.
pub fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// Whether a `Content-Type` value names JSON (`application/json` or any `+json` type).
pub fn is_json_media_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim().as_bytes();
    let suffix = &media[media.len().saturating_sub(5)..];
    media.eq_ignore_ascii_case(b"application/json") || suffix.eq_ignore_ascii_case(b"+json")
}

/// A response whose body is JSON text written by hand (cheaper in `.wasm` than `json!`, and
/// the only way to splice in stored JSON text unchanged); never cached.
pub fn text_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(body)
        .build()
}

/// A request body as JSON: 415 when the content type says it is not JSON (a missing content
/// type is accepted), 413 above `max_bytes`, 400 `invalid_json` when empty or malformed.
pub fn request_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
    max_bytes: usize,
    max_depth: usize,
) -> Result<Json<'a>, ApiError> {
    if content_type.is_some_and(|ct| !is_json_media_type(ct)) {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    if body.len() > max_bytes {
        return Err(ApiError::new(
            413,
            "body_too_large",
            format!("the body is larger than {max_bytes} bytes"),
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("invalid_json", "the request body is empty"));
    }
    Json::parse(body, max_depth).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })
}

/// [`request_body`] for a Spin SDK request.
pub fn sdk_request_body(
    req: &Request,
    max_bytes: usize,
    max_depth: usize,
) -> Result<Json<'_>, ApiError> {
    let content_type = req.header("content-type").and_then(|v| v.as_str());
    request_body(content_type, req.body(), max_bytes, max_depth)
}

/// A name that appears twice among `members`. Sorting keeps this O(n log n): comparing each
/// name with all earlier ones would let a 1 MB body of tiny members cost minutes of CPU.
fn duplicate_name<'m>(members: &'m [Member]) -> Option<&'m str> {
    // `BinaryHeap`'s heapsort: O(n log n) always, and far less `.wasm` than `sort_unstable`.
    let names: BinaryHeap<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let sorted = names.into_sorted_vec();
    sorted.windows(2).find(|pair| pair[0] == pair[1]).map(|pair| pair[0])
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    #[cold]
    #[inline(never)]
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    #[inline(never)]
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.at += usize::from(hit);
        hit
    }

    #[inline(never)]
    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Checks a value at nesting level `depth`; the reader stands on its first byte.
    fn value(&mut self, depth: usize) -> Result<(), String> {
        if depth > self.max_depth {
            return Err(self.error("nested too deeply"));
        }
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[' | b'{') => self.container(depth).map(drop),
            Some(_) => {
                for word in ["null", "true", "false"] {
                    if self.text[self.at..].starts_with(word) {
                        self.at += word.len();
                        return Ok(());
                    }
                }
                Err(self.error("expected a value"))
            }
        }
    }

    /// The entries of an array or object whose `[` or `{` the reader stands on. Array items
    /// get empty names; object names must be unique. One loop serves both to keep code small.
    fn container(&mut self, depth: usize) -> Result<Vec<Member<'a>>, String> {
        let (is_object, close) =
            if self.peek() == Some(b'{') { (true, b'}') } else { (false, b']') };
        self.at += 1;
        let mut entries: Vec<Member<'a>> = Vec::new();
        self.space();
        if self.eat(close) {
            return Ok(entries);
        }
        loop {
            self.space();
            let mut name = String::new();
            if is_object {
                if self.peek() != Some(b'"') {
                    return Err(self.error("expected a string name"));
                }
                name = self.string()?;
                self.space();
                if !self.eat(b':') {
                    return Err(self.error("expected ':'"));
                }
                self.space();
            }
            let value = self.checked_value(depth + 1)?;
            entries.push(Member { name, value });
            self.space();
            if self.eat(close) {
                return match is_object.then(|| duplicate_name(&entries)).flatten() {
                    Some(name) => Err(self.error(&format!("duplicate name `{name}`"))),
                    None => Ok(entries),
                };
            }
            if !self.eat(b',') {
                return Err(self.error(if is_object {
                    "expected ',' or '}'"
                } else {
                    "expected ',' or ']'"
                }));
            }
        }
    }

    /// Checks a value and returns it as text.
    fn checked_value(&mut self, depth: usize) -> Result<Json<'a>, String> {
        let start = self.at;
        self.value(depth)?;
        Ok(Json { raw: &self.text[start..self.at] })
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), String> {
        self.eat(b'-');
        let int_start = self.at;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.text.as_bytes()[int_start] == b'0') {
            return Err(self.error("invalid number"));
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(self.error("invalid number"));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(())
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u32, String> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self.peek().and_then(|b| char::from(b).to_digit(16));
            value = value * 16 + digit.ok_or_else(|| self.error("invalid \\u escape"))?;
            self.at += 1;
        }
        Ok(value)
    }

    /// A string; the reader stands on its opening quote.
    fn string(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control character at once.
            let rest = &self.text[self.at..];
            let plain = rest
                .bytes()
                .position(|b| b == b'"' || b == b'\\' || b < b' ')
                .unwrap_or(rest.len());
            out.push_str(&rest[..plain]);
            self.at += plain;
            let Some(b) = self.peek() else { return Err(self.error("unterminated string")) };
            match b {
                b'"' => {
                    self.at += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.at += 1;
                    let escape = self.peek();
                    self.at += 1;
                    out.push(match escape {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => {
                            self.at -= 1;
                            return Err(self.error("invalid escape"));
                        }
                    });
                }
                _ => return Err(self.error("control character in string")),
            }
        }
    }

    /// The character of a `\uXXXX` escape (after the `u`), joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.text[self.at..].starts_with("\\u") {
                return Err(self.error("unpaired surrogate"));
            }
            self.at += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error("unpaired surrogate"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        // A lone low surrogate is not a char.
        char::from_u32(code).ok_or_else(|| self.error("unpaired surrogate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Json<'_>, String> {
        Json::parse(text.as_bytes(), 16)
    }

    #[test]
    fn parses_every_kind_of_value() {
        let v = parse(
            " {\"a\": [1, -2.5e3, 0, 0.5E+2, true, false, null, {}, [], \"s\"], \"b\": \"x\"} \n",
        )
        .unwrap();
        assert_eq!(
            v.raw(),
            "{\"a\": [1, -2.5e3, 0, 0.5E+2, true, false, null, {}, [], \"s\"], \"b\": \"x\"}"
        );
        let items = v.get("a").unwrap().items().unwrap();
        let raw: Vec<&str> = items.iter().map(Json::raw).collect();
        assert_eq!(
            raw,
            ["1", "-2.5e3", "0", "0.5E+2", "true", "false", "null", "{}", "[]", "\"s\""]
        );
        assert_eq!(items[1].as_number(), Some("-2.5e3"));
        assert_eq!(
            (items[4].as_bool(), items[5].as_bool(), items[6].as_bool()),
            (Some(true), Some(false), None)
        );
        assert!(items[6].is_null() && !items[0].is_null());
        assert_eq!(items[7].members(), Some(vec![]));
        assert_eq!(items[8].items(), Some(vec![]));
        assert_eq!(items[9].as_str().as_deref(), Some("s"));
        // Each accessor answers only for its own kind.
        assert_eq!(
            (items[9].as_number(), items[9].members(), items[9].items()),
            (None, None, None)
        );
        assert_eq!((items[0].as_str(), items[0].as_bool(), items[7].items()), (None, None, None));
        assert_eq!(v.get("b").and_then(|b| b.as_str()).as_deref(), Some("x"));
        assert_eq!(v.get("c"), None);
        assert_eq!(items[0].get("a"), None);
        assert_eq!(parse("\"top\"").unwrap().as_str().as_deref(), Some("top"));
        assert_eq!(parse(" 7 ").unwrap().as_u64(), Some(7));
    }

    #[test]
    fn decodes_escapes() {
        let v = parse(r#""q\" b\\ s\/ \b\f\n\r\t \u00e9 \u20AC \ud83d\ude00 \u0000""#).unwrap();
        assert_eq!(v.as_str().as_deref(), Some("q\" b\\ s/ \u{8}\u{c}\n\r\t é € 😀 \u{0}"));
        // Names are decoded too; UTF-8 passes through untouched.
        let v = parse(r#"{"d\u00e9j\u00e0": "vu", "ключ": "日本"}"#).unwrap();
        assert_eq!(v.get("déjà").and_then(|s| s.as_str()).as_deref(), Some("vu"));
        assert_eq!(v.get("ключ").and_then(|s| s.as_str()).as_deref(), Some("日本"));
    }

    #[test]
    fn rejects_bad_strings() {
        for bad in [
            r#""\ud800""#,        // lone high surrogate
            r#""\ud800x""#,       // high surrogate followed by text
            r#""\ud800\u0041""#,  // high surrogate followed by a non-surrogate
            r#""\udc00""#,        // lone low surrogate
            r#""\u12""#,          // short escape
            r#""\u+123""#,        // not four hex digits
            r#""\x""#,            // unknown escape
            "\"a\u{1}b\"",        // raw control character
            "\"tab\there\"",      // raw tab
            "\"unterminated",     // no closing quote
            "\"ends in escape\\", // escape at end of input
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "",
            " ",
            "{",
            "}",
            "[",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{a:1}",
            "{'a':1}",
            "{1:1}",
            "nul",
            "tru",
            "True",
            "NaN",
            "Infinity",
            "-",
            "01",
            "-01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x10",
            "[1]]",
            "{\"a\":1}x",
            "1 2",
            "/* c */ 1",
            "\u{feff}1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_duplicate_names_even_when_escaped_differently() {
        let e = parse(r#"{"a": 1, "b": 2, "\u0061": 3}"#).unwrap_err();
        assert!(e.contains("duplicate name `a`"), "{e}");
        // The same name in different objects is fine; nested objects are checked too.
        assert!(parse(r#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
        assert!(parse(r#"{"a": [{"x": 1, "y": 2, "x": 3}]}"#)
            .unwrap_err()
            .contains("duplicate name `x`"));
        assert!(parse(r#"{"b": 1, "a": 2, "c": 3, "a": 4, "d": 5}"#).is_err());
    }

    #[test]
    fn many_members_are_checked_for_duplicates_quickly() {
        // Comparing every name with every other would take minutes here (a 1 MB session body
        // holds this many); sorting takes moments. No timing is asserted: a regression shows
        // as a test that hangs.
        let members: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":0")).collect();
        let text = format!("{{{}}}", members.join(","));
        assert_eq!(Json::parse(text.as_bytes(), 1).unwrap().members().unwrap().len(), 100_000);
        let with_duplicate = format!("{{{},\"k77\":1}}", members.join(","));
        assert!(Json::parse(with_duplicate.as_bytes(), 1)
            .unwrap_err()
            .contains("duplicate name `k77`"));
    }

    #[test]
    fn limits_nesting() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        // The outermost container is level 0: a limit of 16 allows 17 brackets.
        assert!(Json::parse(nested(17).as_bytes(), 16).is_ok());
        let e = Json::parse(nested(18).as_bytes(), 16).unwrap_err();
        assert!(e.contains("nested too deeply"), "{e}");
        // Deep input far past the limit fails cleanly instead of exhausting the stack.
        assert!(Json::parse(nested(100_000).as_bytes(), 64).is_err());
        // Scalars count as a level too: each value's depth is the number of containers around it.
        assert!(Json::parse(b"{\"a\":{}}", 1).is_ok());
        assert!(Json::parse(b"{\"a\":{\"b\":1}}", 1).is_err());
        assert!(Json::parse(b"{\"a\":{\"b\":1}}", 2).is_ok());
        assert!(
            Json::parse(b"[1]", 0).is_err()
                && Json::parse(b"[]", 0).is_ok()
                && Json::parse(b"1", 0).is_ok()
        );
    }

    #[test]
    fn keeps_numbers_as_text() {
        let huge = format!("{}.{}e-400", "9".repeat(400), "1".repeat(50));
        assert_eq!(parse(&huge).unwrap().as_number(), Some(huge.as_str()));
        assert_eq!(parse("18446744073709551615").unwrap().as_u64(), Some(u64::MAX));
        assert_eq!(parse("18446744073709551616").unwrap().as_u64(), None);
        for not_u64 in ["-1", "1.0", "1e3", "\"1\"", "true"] {
            assert_eq!(parse(not_u64).unwrap().as_u64(), None, "{not_u64}");
        }
    }

    #[test]
    fn describes_values_briefly() {
        let describe = |text: &str| parse(text).unwrap().describe();
        assert_eq!(describe("null"), "null");
        assert_eq!(describe("false"), "false");
        assert_eq!(describe("-1.5"), "-1.5");
        assert_eq!(describe("\"5\""), "\"5\"");
        assert_eq!(describe("[1]"), "an array");
        assert_eq!(describe("{}"), "an object");
        let short = format!("\"{}\"", "x".repeat(32));
        assert_eq!(describe(&short), short);
        assert_eq!(describe(&format!("\"{}\"", "x".repeat(33))), "a long string");
        assert_eq!(describe(&"9".repeat(40)), "a long number");
    }

    #[test]
    fn keeps_the_raw_text_of_values() {
        let text = r#" { "a" : 1.50e+3 , "b":[true,{"c":null}], "d\u00e9" :"x\"y", "e":{} } "#;
        let members = parse(text).unwrap().members().unwrap();
        let raw: Vec<(&str, &str)> =
            members.iter().map(|m| (m.name.as_str(), m.value.raw())).collect();
        assert_eq!(
            raw,
            [("a", "1.50e+3"), ("b", r#"[true,{"c":null}]"#), ("dé", r#""x\"y""#), ("e", "{}")]
        );
        assert_eq!(members[2].value.as_str().as_deref(), Some("x\"y"));
        let inner = members[1].value.items().unwrap()[1].members().unwrap();
        assert_eq!((inner[0].name.as_str(), inner[0].value.raw()), ("c", "null"));
    }

    #[test]
    fn rejects_input_that_is_not_utf8() {
        let e = Json::parse(b"{\"a\":\"\xff\"}", 16).unwrap_err();
        assert!(e.contains("not UTF-8 at byte 6"), "{e}");
        assert!(Json::parse(b"\"\xc3\"", 16).is_err()); // truncated sequence
        assert!(Json::parse(b"\"\xed\xa0\x80\"", 16).is_err()); // UTF-8-encoded surrogate
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(parse("[1,]").unwrap_err(), "expected a value at byte 3");
        assert_eq!(
            parse("{\"a\":1} x").unwrap_err(),
            "unexpected text after the JSON value at byte 8"
        );
        assert_eq!(parse(r#""\q""#).unwrap_err(), "invalid escape at byte 2");
    }

    #[test]
    fn quotes_strings() {
        assert_eq!(quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
        let quoted = quote("\u{7f}\u{2028}😀\t");
        assert_eq!(parse(&quoted).unwrap().as_str().as_deref(), Some("\u{7f}\u{2028}😀\t"));
    }

    #[test]
    fn request_bodies_are_checked_before_parsing() {
        let status = |ct: Option<&str>, body: &str| {
            request_body(ct, body.as_bytes(), 8, 4).map(drop).map_err(|e| (e.status, e.code))
        };
        assert!(status(None, "{}").is_ok());
        assert!(status(Some("application/json; charset=utf-8"), "{}").is_ok());
        assert!(status(Some("application/problem+json"), "{}").is_ok());
        assert_eq!(status(Some("text/plain"), "{}").unwrap_err(), (415, "unsupported_media_type"));
        assert_eq!(status(None, "[1,2,3,4,5]").unwrap_err(), (413, "body_too_large"));
        assert_eq!(status(None, "").unwrap_err(), (400, "invalid_json"));
        assert_eq!(status(None, "{").unwrap_err(), (400, "invalid_json"));
        assert!(is_json_media_type(" Application/JSON ;charset=utf-8") && !is_json_media_type(""));
        assert!(!is_json_media_type("application/jsonp") && !is_json_media_type("text/json-ish"));
    }
}
