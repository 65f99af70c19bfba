//! Session data from request bodies: top-level entries kept as the JSON text sent.

use serde_json::value::RawValue;

use super::settings::Settings;
use super::store::DataEntry;
use crate::platform::json::UniqueMap;
use crate::platform::ApiError;

/// Longest top-level data key, in bytes.
pub const MAX_DATA_KEY_LEN: usize = 128;
/// Room in a request body beyond the data cap (user id, user agent, JSON punctuation).
const BODY_OVERHEAD: usize = 4096;

/// The body's limit: the data cap plus room for the rest.
pub(crate) fn body_limit(settings: &Settings) -> usize {
    settings.max_data_bytes + BODY_OVERHEAD
}

/// Top-level data entries from a JSON object, each value kept as the JSON text the client
/// sent (numbers never re-parsed, so they round-trip exactly); `None` for null.
pub(crate) fn data_entries(raw: &RawValue) -> Result<Vec<DataEntry>, ApiError> {
    let object: UniqueMap<Box<RawValue>> = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::new(422, "invalid_data", "data must be a JSON object"))?;
    object
        .0
        .into_iter()
        .map(|(name, value)| {
            if name.is_empty()
                || name.len() > MAX_DATA_KEY_LEN
                || name.chars().any(char::is_control)
            {
                return Err(ApiError::new(
                    422,
                    "invalid_data_key",
                    format!(
                        "data keys must be 1-{MAX_DATA_KEY_LEN} bytes without control characters"
                    ),
                ));
            }
            let text = (value.get() != "null").then(|| value.get().to_owned());
            Ok((name, text))
        })
        .collect()
}

/// Cuts text to at most `max` bytes at a character boundary, dropping control characters.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}
