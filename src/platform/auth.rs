//! Bearer-token authentication for the backend-facing routes, with one comparison.

use super::request::Request;
use super::response::ApiError;
use super::secrets::{constant_time_eq, sha256};
use super::settings::Secret;

/// Least length of every configured API token, as of the OTP pepper: a placeholder such as
/// `<random>` or `changeme` is refused at start.
pub const MIN_TOKEN_LEN: usize = 32;

/// True when `given` equals `expected`. Both are hashed first, so neither the content nor the
/// length of the configured token shows in the timing.
pub fn token_matches(given: &str, expected: &str) -> bool {
    constant_time_eq(&sha256(given.as_bytes()), &sha256(expected.as_bytes()))
}

/// Requires `Authorization: Bearer <expected>`. An empty `expected` means the routes it guards
/// are switched off: `disabled` says so (403 with a code naming the variable to set).
pub fn require_bearer(
    req: &Request,
    expected: &Secret,
    disabled: impl FnOnce() -> ApiError,
) -> Result<(), ApiError> {
    if expected.is_empty() {
        return Err(disabled());
    }
    match req.bearer_token() {
        Some(token) if token_matches(token, expected.expose()) => Ok(()),
        _ => Err(ApiError::unauthorized("a valid bearer token is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let expected = "0123456789abcdef0123456789abcdef";
        assert!(token_matches(expected, expected));
        assert!(!token_matches("0123456789abcdef0123456789abcde", expected));
        assert!(!token_matches("", expected));
    }
}
