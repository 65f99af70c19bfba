//! What clients send, checked before Redis is asked: member names, query parameters and
//! period names.

use crate::platform::{percent, ApiError};

use super::boards::Period;

/// Longest member name, in bytes.
pub const MAX_MEMBER_LEN: usize = 128;

/// Letters, digits and `_ - . : @`, 1 to 128 of them: safe in a URL path as is, never a
/// hash tag, and short, since every member is stored twice per board.
pub fn member(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_MEMBER_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            "invalid_member",
            format!(
                "member must be 1-{MAX_MEMBER_LEN} characters of letters, digits, '_', '-', '.', ':' and '@'"
            ),
        ))
    }
}

/// A query string's parameters, each at most once and each one of `known`.
pub struct Query(Vec<(&'static str, String)>);

impl Query {
    pub fn parse(query: &str, known: &[&'static str]) -> Result<Self, ApiError> {
        let mut params: Vec<(&'static str, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(name) = known.iter().find(|k| **k == name) else {
                return Err(invalid_query(format!(
                    "unknown parameter {name:?}; this route takes {}",
                    known.join(", ")
                )));
            };
            if params.iter().any(|(n, _)| n == name) {
                return Err(invalid_query(format!("parameter {name:?} is repeated")));
            }
            // The platform's one strict decoder: `%+f` or `%zz` is refused, not read leniently.
            let value = percent::decode_utf8(value, false).map_err(|e| {
                invalid_query(format!("parameter {name:?} is not valid percent-encoded UTF-8: {e}"))
            })?;
            params.push((name, value));
        }
        Ok(Self(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// A whole number from 0 to `max`, or `default` when absent.
    pub fn whole(&self, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => match text.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(invalid_query(format!(
                    "{name} must be a whole number from 0 to {max}, not {text:?}"
                ))),
            },
        }
    }

    /// The period a read is about: `current` (or absent), `previous`, or an id of the board's
    /// period shape. Returned as the scripts take it: '' for the current one.
    pub fn period(&self, period: Period) -> Result<String, ApiError> {
        match self.get("period") {
            None | Some("current") => Ok(String::new()),
            Some("previous") => Ok("previous".to_owned()),
            Some(id) if period.is_id(id) => Ok(id.to_owned()),
            Some(id) => Err(invalid_query(format!(
                "period {id:?} is not current, previous or a {} period id such as {}",
                period.kind(),
                example(period)
            ))),
        }
    }
}

fn example(period: Period) -> &'static str {
    match period {
        Period::All => "all",
        Period::Daily => "2026-11-28",
        Period::Weekly => "2026-W48",
        Period::Monthly => "2026-11",
        Period::Window(_) => "2026-11-28T06:00Z",
    }
}

fn invalid_query(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members() {
        assert!(member("player_1:eu@x.y-z").is_ok());
        for bad in ["", "a b", "a/b", "{a}", "é", "a%2F", &"x".repeat(129)] {
            assert_eq!(member(bad).unwrap_err().code, "invalid_member", "{bad}");
        }
    }

    #[test]
    fn queries() {
        let q = Query::parse("limit=5&period=2026-11-28T06%3A00Z", &["limit", "period"]).unwrap();
        assert_eq!(q.whole("limit", 10, 100).unwrap(), 5);
        assert_eq!(q.whole("offset", 7, 100).unwrap(), 7);
        assert_eq!(q.period(Period::Window(60_000)).unwrap(), "2026-11-28T06:00Z");
        assert!(q.period(Period::Daily).is_err());
        assert!(Query::parse("limit=1&limit=2", &["limit"]).is_err());
        assert!(Query::parse("x=1", &["limit"]).is_err());
        let q = Query::parse("limit=101", &["limit"]).unwrap();
        assert_eq!(q.whole("limit", 10, 100).unwrap_err().code, "invalid_query");
        for bad in ["limit=%+5", "limit=1%", "period=%zz", "period=%FF"] {
            assert_eq!(
                Query::parse(bad, &["limit", "period"]).err().unwrap().code,
                "invalid_query"
            );
        }
        let q = Query::parse("period=previous", &["period"]).unwrap();
        assert_eq!(q.period(Period::All).unwrap(), "previous");
    }
}
