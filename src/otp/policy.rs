//! Per-purpose policy (`otp_purpose_policies`): which format a purpose issues, how long its
//! codes are and live, and which channels may carry them. The caller can no longer choose:
//! a password-reset link cannot be downgraded to a 6-digit code by asking for one.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::input::Format;
use crate::platform::json::{Object, UniqueMap};
use crate::platform::settings::ConfigError;

/// What a purpose issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormatRule {
    Fixed(Format),
    /// The caller's `format` decides (opt-in per purpose with `"format": "any"`).
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub name: String,
    pub format: FormatRule,
    /// Digits of a code.
    pub length: usize,
    pub code_ttl_ms: u64,
    pub link_ttl_ms: u64,
    /// Channels allowed; empty: any.
    pub channels: Vec<String>,
}

impl Policy {
    /// The format to issue for a request asking for `asked` (None: the purpose's own).
    pub(crate) fn format_for(&self, asked: Option<Format>) -> Result<Format, String> {
        match (self.format, asked) {
            (FormatRule::Fixed(f), None) => Ok(f),
            (FormatRule::Fixed(f), Some(a)) if a == f => Ok(f),
            (FormatRule::Fixed(f), Some(_)) => {
                Err(format!("purpose {:?} issues only format {:?}", self.name, f.as_str()))
            }
            (FormatRule::Any, asked) => Ok(asked.unwrap_or(Format::Code)),
        }
    }

    pub(crate) fn ttl_ms(&self, format: Format) -> u64 {
        match format {
            Format::Code => self.code_ttl_ms,
            Format::Link => self.link_ttl_ms,
        }
    }

    pub(crate) fn allows_channel(&self, channel: &str) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|c| c == channel)
    }

    /// Whether digit codes can be issued for this purpose (they are what can be guessed).
    pub(crate) fn issues_codes(&self) -> bool {
        self.format != FormatRule::Fixed(Format::Link)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyText {
    format: Option<String>,
    length: Option<u64>,
    ttl_seconds: Option<u64>,
    channels: Option<Vec<String>>,
}

/// The policies of `purposes` from the JSON object `text` (purpose -> policy); purposes it
/// does not name issue digit codes of the default length and lifetimes, on any channel.
pub(crate) fn parse(
    variable: &'static str,
    text: &str,
    purposes: &[String],
    defaults: &Policy,
) -> Result<Vec<Policy>, ConfigError> {
    let bad = |m: String| ConfigError::new(variable, m);
    // One object, each policy an object, no purpose named twice (a map would keep the last).
    let map: BTreeMap<String, PolicyText> = if text.is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_str::<UniqueMap<Object<PolicyText>>>(text)
            .map_err(|e| bad(format!("is not a JSON object of policies: {e}")))?
            .0
            .into_iter()
            .map(|(name, Object(policy))| (name, policy))
            .collect()
    };
    if let Some(name) = map.keys().find(|n| !purposes.contains(n)) {
        return Err(bad(format!("names {name:?}, which is not in otp_purposes")));
    }
    purposes
        .iter()
        .map(|name| {
            let mut policy = Policy { name: name.clone(), ..defaults.clone() };
            let Some(p) = map.get(name) else { return Ok(policy) };
            policy.format = match p.format.as_deref() {
                None | Some("code") => FormatRule::Fixed(Format::Code),
                Some("link") => FormatRule::Fixed(Format::Link),
                Some("any") => FormatRule::Any,
                Some(other) => {
                    return Err(bad(format!("{name}: format {other:?} is not code, link or any")))
                }
            };
            if let Some(length) = p.length {
                if !(6..=10).contains(&length) {
                    return Err(bad(format!("{name}: length must be 6 to 10 digits")));
                }
                policy.length = length as usize;
            }
            if let Some(ttl) = p.ttl_seconds {
                if !(1..=86_400).contains(&ttl) {
                    return Err(bad(format!("{name}: ttl_seconds must be 1 to 86400")));
                }
                policy.code_ttl_ms = ttl * 1000;
                policy.link_ttl_ms = ttl * 1000;
            }
            if let Some(channels) = &p.channels {
                if channels.iter().any(|c| super::input::parse_channel(Some(c)).is_err()) {
                    return Err(bad(format!("{name}: channels must be names like \"email\"")));
                }
                policy.channels = channels.clone();
            }
            Ok(policy)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Policy {
        Policy {
            name: String::new(),
            format: FormatRule::Fixed(Format::Code),
            length: 6,
            code_ttl_ms: 300_000,
            link_ttl_ms: 900_000,
            channels: Vec::new(),
        }
    }

    #[test]
    fn a_link_purpose_cannot_be_downgraded() {
        let purposes = ["login".to_owned(), "reset_password".to_owned()];
        let p = parse(
            "v",
            r#"{"reset_password": {"format": "link", "channels": ["email"]}, "login": {"length": 8}}"#,
            &purposes,
            &defaults(),
        )
        .unwrap();
        assert_eq!(p[0].length, 8);
        assert_eq!(p[0].format_for(None), Ok(Format::Code));
        assert!(p[0].format_for(Some(Format::Link)).is_err());
        assert_eq!(p[1].format_for(None), Ok(Format::Link));
        assert!(p[1].format_for(Some(Format::Code)).is_err());
        assert!(p[1].allows_channel("email") && !p[1].allows_channel("sms"));
        assert!(!p[1].issues_codes());
        for bad in [
            r#"{"admin": {}}"#,
            r#"{"login": {"length": 5}}"#,
            r#"{"login": {"format": "pdf"}}"#,
            r#"{"login": {"colour": "red"}}"#,
            "[]",
            // An array of the field values in order; a purpose named twice.
            r#"{"login": ["code", 8]}"#,
            r#"{"login": {"length": 8}, "login": {"length": 4}}"#,
        ] {
            assert!(parse("v", bad, &purposes, &defaults()).is_err(), "{bad}");
        }
    }
}
