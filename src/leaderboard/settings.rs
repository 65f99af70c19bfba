//! The component's settings, from Spin variables.

use crate::platform::auth::MIN_TOKEN_LEN;
use crate::platform::settings::{ConfigError, Secret, Variables};

use super::boards::Boards;

/// The Spin variables this component reads (besides the Redis ones).
pub mod vars {
    /// The boards: a JSON object of name -> spec.
    pub const BOARDS: &str = "leaderboard_boards";
    /// The bearer token of writes.
    pub const API_TOKEN: &str = "leaderboard_api_token";
    /// The bearer token of reads (empty: public).
    pub const READ_TOKEN: &str = "leaderboard_read_token";
    /// Most entries per page.
    pub const MAX_PAGE_SIZE: &str = "leaderboard_max_page_size";
}

/// The component's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The declared boards.
    pub boards: Boards,
    /// Bearer token for submissions and removals; empty switches writes off.
    pub api_token: Secret,
    /// Bearer token for reads; empty makes reads public.
    pub read_token: Secret,
    /// Most entries a top-N read returns, and most neighbours on each side of a member.
    pub max_page_size: u64,
}

impl Settings {
    /// Reads the component's Spin variables.
    pub fn from_spin_variables() -> Result<Self, ConfigError> {
        Self::from_variables(&Variables::spin())
    }

    /// Reads any source of variables.
    pub fn from_variables(variables: &Variables) -> Result<Self, ConfigError> {
        let boards = Boards::parse(&variables.text(vars::BOARDS)?)
            .map_err(|e| ConfigError::new(vars::BOARDS, e))?;
        Ok(Self {
            boards,
            api_token: variables.secret(vars::API_TOKEN, MIN_TOKEN_LEN)?,
            read_token: variables.secret(vars::READ_TOKEN, MIN_TOKEN_LEN)?,
            max_page_size: variables.whole_setting(vars::MAX_PAGE_SIZE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(boards: &'static str, page: &'static str) -> Variables<'static> {
        Variables::from_fn(move |name| {
            Ok(match name {
                vars::BOARDS => boards,
                vars::MAX_PAGE_SIZE => page,
                _ => "",
            }
            .to_owned())
        })
    }

    #[test]
    fn reads_and_checks_every_variable() {
        let s = Settings::from_variables(&vars(r#"{"a": {"mode": "best"}}"#, "50")).unwrap();
        assert_eq!((s.max_page_size, s.api_token.is_empty()), (50, true));
        let err = Settings::from_variables(&vars(r#"{"a": {}}"#, "50")).unwrap_err();
        assert_eq!(err.variable, vars::BOARDS);
        let err = Settings::from_variables(&vars(r#"{"a": {"mode": "best"}}"#, "0")).unwrap_err();
        assert_eq!(err.variable, vars::MAX_PAGE_SIZE);
    }
}
