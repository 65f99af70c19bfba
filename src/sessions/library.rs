//! Sessions as a library: [`Sessions`] creates, reads, updates, rotates, ends, lists and
//! revokes sessions with the same settings, script and keys as `/api/sessions`, whose routes
//! are thin users of it: a session created here is read by `GET /api/sessions/current` with
//! the same cookie, and back.

use std::time::Duration;

use serde_json::value::RawValue;

use crate::platform::fast_path::{self, FastPath};
use crate::platform::redis::{Redis, RedisError};
use crate::{Config, Error};

use super::cookie;
use super::data::{bounded, data_entries};
use super::id::SessionId;
use super::settings::Settings;
use super::store::{self, data_size, DataEntry, Outcome, SessionView, Store};

/// A per-session handle: the first 16 characters of the session's digest.
const HANDLE_LEN: usize = 16;
/// Longest user id, in bytes.
pub(crate) const MAX_USER_ID_LEN: usize = 256;
/// Longest user agent kept for the session list, in bytes (longer ones are cut).
const MAX_USER_AGENT_LEN: usize = 256;

/// Server-side sessions to OWASP's standard: 256-bit ids (only their SHA-256 in Redis), idle
/// and absolute timeouts, rotation, per-user caps, `HttpOnly` cookies.
///
/// ```no_run
/// use spin_redis_patterns::sessions::{NewSession, Sessions};
/// use spin_redis_patterns::{Config, Redis};
///
/// # fn main() -> Result<(), spin_redis_patterns::Error> {
/// let config = Config::spin();
/// let redis = Redis::from_config(&config)?;
/// let sessions = Sessions::new(&config)?;
/// // After a successful login:
/// let created = sessions.create(&redis, "user-42", &NewSession::default())?;
/// let set_cookie = sessions.set_cookie(&created.id); // send as `Set-Cookie`
/// # let _ = set_cookie;
/// // On a later request, from its `Cookie` header(s):
/// if let Some(session) = sessions.current(&redis, &["__Host-session=..."])? {
///     println!("{} has {:?} left", session.user_id, session.expires_in);
///     sessions.update(&redis, &session.id, r#"{"theme":"dark"}"#)?; // `null` removes
///     sessions.end(&redis, &session.id)?; // logout
/// }
/// // The backend, after a password change: end every session of the user.
/// let ended = sessions.revoke(&redis, "user-42", None)?;
/// # let _ = ended;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Sessions {
    settings: Settings,
    pooled: bool,
}

/// What a new session starts with.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewSession<'a> {
    /// A JSON object the holder may change (`PATCH /api/sessions/current`).
    pub data: Option<&'a str>,
    /// A JSON object only the backend may change (roles, "MFA done").
    pub server_data: Option<&'a str>,
    /// The user agent, shown in the session list (cut to 256 bytes).
    pub user_agent: &'a str,
}

/// A session that was created or rotated.
#[derive(Clone, PartialEq, Eq)]
pub struct Created {
    /// The session id: the cookie value. A secret: never log it.
    pub id: String,
    /// The handle the backend lists and revokes it by ([`Sessions::revoke`]). A rotation
    /// keeps it: it is the handle the session was created with.
    pub handle: String,
    /// Until the idle timeout ends it (unless used).
    pub expires_in: Duration,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("handle", &self.handle)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A live session.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The id it was read by (the cookie value). A secret: never log it.
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// Top-level data entries: name and JSON text, holder's and backend's alike.
    pub data: Vec<(String, String)>,
    /// The data names the backend set (read-only to the holder).
    pub server_keys: Vec<String>,
    /// When it was created and last used (Unix ms, Redis time).
    pub created_ms: i64,
    /// When it was last used (Unix ms, Redis time).
    pub seen_ms: i64,
    /// Until the idle timeout ends it (unless used).
    pub expires_in: Duration,
    /// Until the absolute timeout ends it, however active.
    pub absolute_expires_in: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("data", &self.data)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// One data entry's JSON text.
    pub fn data(&self, name: &str) -> Option<&str> {
        self.data.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One of a user's live sessions, as [`Sessions::list`] gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    /// The session the list was asked with.
    pub current: bool,
    /// The handle the backend revokes it by.
    pub handle: String,
    /// The user agent it was created with.
    pub user_agent: String,
    /// Created, last used and idle deadline (Unix ms, Redis time).
    pub created_ms: i64,
    /// Last used (Unix ms).
    pub seen_ms: i64,
    /// Idle deadline (Unix ms).
    pub expiry_ms: i64,
    /// Until the idle deadline, as of the list (Redis time).
    pub expires_in: Duration,
}

fn until(at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms - now_ms).unwrap_or(0))
}

fn rotated() -> Error {
    Error::Conflict {
        code: "session_rotated",
        message: "this session id was replaced by a rotation: it can only read the session, for \
                  a few seconds; send the new id"
            .into(),
        retry_after_ms: None,
    }
}

fn invalid_user_id() -> Error {
    Error::invalid(
        422,
        "invalid_user_id",
        format!("user_id must be a string of 1-{MAX_USER_ID_LEN} bytes without control characters"),
    )
}

/// A user id as sessions take it: 1-256 bytes without control characters (422
/// `invalid_user_id`). `None` is a user id that was not a string at all.
pub(crate) fn check_user_id(user_id: Option<&str>) -> Result<&str, Error> {
    match user_id {
        Some(u)
            if !u.is_empty() && u.len() <= MAX_USER_ID_LEN && !u.chars().any(char::is_control) =>
        {
            Ok(u)
        }
        _ => Err(invalid_user_id()),
    }
}

/// A handle as [`Sessions::list`] gives them (422 `invalid_handle`), so anything else is
/// refused before Redis is asked.
pub(crate) fn check_handle(handle: &str) -> Result<&str, Error> {
    if handle.len() == HANDLE_LEN
        && handle.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(handle)
    } else {
        Err(Error::invalid(422, "invalid_handle", "handle must be a session handle from the list"))
    }
}

/// Data entries from a JSON object's text (422 `invalid_data` when it is not one,
/// `invalid_data_key` for a bad name).
fn entries_of(text: &str) -> Result<Vec<DataEntry>, Error> {
    let raw: Box<RawValue> = serde_json::from_str(text)
        .map_err(|_| Error::invalid(422, "invalid_data", "data must be a JSON object"))?;
    data_entries(&raw).map_err(Error::from_api)
}

impl Sessions {
    /// Settings from the `sessions_*` variables; the pooled read path when
    /// `redis_fast_path` is on.
    pub fn new(config: &Config) -> Result<Self, Error> {
        let variables = config.variables();
        Ok(Self {
            settings: Settings::from_variables(&variables)?,
            pooled: variables.flag(fast_path::VARIABLE)?,
        })
    }

    /// The component's settings (the HTTP routes). Reads may use the pooled store: whether
    /// they do is `FastPath::open`'s reading of `redis_fast_path`, as in the component.
    pub(crate) fn from_settings(settings: Settings) -> Self {
        Self { settings, pooled: true }
    }

    /// The settings the routes render with (cookie, caps, CSRF origin).
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    fn store<'a>(&'a self, redis: &'a Redis) -> Store<'a> {
        Store::new(redis, &self.settings)
    }

    /// Creates a session for `user_id` (1-256 bytes, no control characters). Data over
    /// `sessions_max_data_bytes` is refused (422 `data_too_large`); a user over
    /// `sessions_max_per_user` loses the session closest to expiring.
    pub fn create(&self, redis: &Redis, user_id: &str, new: &NewSession) -> Result<Created, Error> {
        check_user_id(Some(user_id))?;
        let entries = |text: Option<&str>| text.map_or(Ok(Vec::new()), entries_of);
        let (data, server) = (entries(new.data)?, entries(new.server_data)?);
        self.create_entries(redis, user_id, new.user_agent, &server, &data)
    }

    /// Creates a session from checked entries: the HTTP route's body and [`Sessions::create`].
    pub(crate) fn create_entries(
        &self,
        redis: &Redis,
        user_id: &str,
        user_agent: &str,
        server: &[DataEntry],
        data: &[DataEntry],
    ) -> Result<Created, Error> {
        if let Some((name, _)) = server.iter().find(|(n, _)| data.iter().any(|(d, _)| d == n)) {
            return Err(Error::invalid(
                422,
                "invalid_data_key",
                format!("{name:?} is in both data and server_data"),
            ));
        }
        let size = data_size(server.iter().chain(data));
        if size > self.settings.max_data_bytes {
            return Err(self.too_large(size as i64));
        }
        let user_agent = bounded(user_agent, MAX_USER_AGENT_LEN);
        let (id, expiry, now) = self.store(redis).create(user_id, &user_agent, server, data)?;
        Ok(Created {
            handle: id.digest()[..HANDLE_LEN].to_owned(),
            id: id.as_str().to_owned(),
            expires_in: until(expiry, now),
        })
    }

    pub(crate) fn too_large(&self, size: i64) -> Error {
        Error::invalid(
            422,
            "data_too_large",
            format!(
                "the session data would be {size} bytes; the limit is {}",
                self.settings.max_data_bytes
            ),
        )
    }

    /// The session id in `Cookie` header values (HTTP/2 sends one per cookie), if any
    /// well-formed one; nothing is asked of Redis.
    pub fn id_from_cookies(&self, cookie_headers: &[&str]) -> Option<String> {
        let headers: Vec<String> = cookie_headers.iter().map(|h| (*h).to_owned()).collect();
        cookie::values(&headers, &self.settings.cookie.name)
            .into_iter()
            .find_map(SessionId::parse)
            .map(|id| id.as_str().to_owned())
    }

    /// The session the request's `Cookie` header values carry, its idle timeout slid;
    /// `None` without a well-formed cookie or when it ended.
    pub fn current(
        &self,
        redis: &Redis,
        cookie_headers: &[&str],
    ) -> Result<Option<Session>, Error> {
        match self.id_from_cookies(cookie_headers) {
            Some(id) => self.get(redis, &id),
            None => Ok(None),
        }
    }

    /// The session `id` names, its idle timeout slid; `None` when malformed or ended. With
    /// the fast path on, most reads are one `GET` on the pooled store, as in the component.
    pub fn get(&self, redis: &Redis, id: &str) -> Result<Option<Session>, Error> {
        let Some(parsed) = SessionId::parse(id) else { return Ok(None) };
        let store = self.store(redis);
        let fast = if self.pooled { FastPath::open().map_err(RedisError::from)? } else { None };
        let outcome = match fast.and_then(|fast| store.fast_get(&fast, &parsed)) {
            Some(outcome) => outcome,
            None => store.get(&parsed)?,
        };
        Ok(match outcome {
            Outcome::Found(view) => Some(session(id, view)),
            _ => None,
        })
    }

    /// Merges `patch`, a JSON object, into the session's data as the holder may (JSON merge
    /// patch, RFC 7396, at the top level: each name replaces its value whole, `null` removes
    /// it) and slides the idle timeout: what `PATCH /api/sessions/current` does. Atomic in
    /// Redis, so concurrent patches of different names all survive. `None` when the session
    /// ended (or `id` is malformed).
    ///
    /// Refused, with nothing written: 422 `invalid_data` (not a JSON object),
    /// `invalid_data_key` (a name that is empty, over 128 bytes or has control characters),
    /// `data_too_large` (the merged data over `sessions_max_data_bytes`); 403
    /// `server_owned_key` (a name the backend set: [`Sessions::set_server_data`]); and
    /// [`Error::Conflict`] `session_rotated` for an id rotated away (it may only read).
    pub fn update(&self, redis: &Redis, id: &str, patch: &str) -> Result<Option<Session>, Error> {
        self.update_entries(redis, id, &entries_of(patch)?)
    }

    /// [`Sessions::update`] with checked entries (the HTTP route's body).
    pub(crate) fn update_entries(
        &self,
        redis: &Redis,
        id: &str,
        entries: &[DataEntry],
    ) -> Result<Option<Session>, Error> {
        let Some(parsed) = SessionId::parse(id) else { return Ok(None) };
        match self.store(redis).patch(&parsed, entries)? {
            Outcome::Found(view) => Ok(Some(session(id, view))),
            Outcome::NoSession => Ok(None),
            Outcome::Rotated => Err(rotated()),
            Outcome::DataTooLarge(size) => Err(self.too_large(size)),
            Outcome::ServerOwned(name) => Err(Error::invalid(
                403,
                "server_owned_key",
                format!("{name:?} was set by the app's backend and cannot be changed here"),
            )),
        }
    }

    /// Moves the session to a fresh id (after a login or a privilege change) and returns it,
    /// with the handle it always had; the old id may still read it for
    /// `sessions_rotation_grace_seconds`. `None` when the session ended;
    /// [`Error::Conflict`] `session_rotated` for an id rotated away already.
    pub fn rotate(&self, redis: &Redis, id: &str) -> Result<Option<Created>, Error> {
        let Some(parsed) = SessionId::parse(id) else { return Ok(None) };
        match self.store(redis).rotate(&parsed)? {
            Outcome::Found(rotation) => Ok(Some(Created {
                id: rotation.id.as_str().to_owned(),
                handle: rotation.handle,
                expires_in: until(rotation.expiry_ms, rotation.now_ms),
            })),
            Outcome::Rotated => Err(rotated()),
            _ => Ok(None),
        }
    }

    /// Ends the session (logout); true when there was one to end. [`Error::Conflict`]
    /// `session_rotated` for an id rotated away, which ends nothing: it must not log the new
    /// id out.
    pub fn end(&self, redis: &Redis, id: &str) -> Result<bool, Error> {
        let Some(parsed) = SessionId::parse(id) else { return Ok(false) };
        match self.store(redis).logout(&parsed)? {
            Outcome::Found(ended) => Ok(ended),
            Outcome::Rotated => Err(rotated()),
            _ => Ok(false),
        }
    }

    /// Ends every session of the user whose session `id` is, that one included ("log out
    /// everywhere"); the number ended. `None` when that session ended; [`Error::Conflict`]
    /// `session_rotated` for an id rotated away.
    pub fn end_all(&self, redis: &Redis, id: &str) -> Result<Option<u64>, Error> {
        let Some(parsed) = SessionId::parse(id) else { return Ok(None) };
        match self.store(redis).revoke_all(&parsed)? {
            Outcome::Found(ended) => Ok(Some(count(ended))),
            Outcome::Rotated => Err(rotated()),
            _ => Ok(None),
        }
    }

    /// The live sessions of the user whose session `id` is, most recently used first (and
    /// that one's idle timeout slid); `None` when that session ended; [`Error::Conflict`]
    /// `session_rotated` for an id rotated away.
    pub fn list(&self, redis: &Redis, id: &str) -> Result<Option<Vec<ListedSession>>, Error> {
        let Some(parsed) = SessionId::parse(id) else { return Ok(None) };
        let (mut sessions, now) = match self.store(redis).list(&parsed)? {
            Outcome::Found(found) => found,
            Outcome::Rotated => return Err(rotated()),
            _ => return Ok(None),
        };
        sessions.sort_unstable_by_key(|s| std::cmp::Reverse((s.seen_ms, s.created_ms)));
        Ok(Some(sessions.into_iter().map(|s| listed(s, now)).collect()))
    }

    /// The backend ends sessions of `user_id` (after a password change, a ban): every one,
    /// or only the one listed with `handle`. The number ended (0 when there was none).
    /// Refused before Redis is asked: 422 `invalid_user_id`, or `invalid_handle` for
    /// anything that is not a handle [`Sessions::list`] could give.
    pub fn revoke(&self, redis: &Redis, user_id: &str, handle: Option<&str>) -> Result<u64, Error> {
        check_user_id(Some(user_id))?;
        let handle = handle.map(check_handle).transpose()?;
        Ok(count(self.store(redis).revoke_user(user_id, handle)?))
    }

    /// The backend merges `data`, a JSON object, into the server-owned data of `user_id`'s
    /// session listed with `handle` (roles, "MFA done"): read by the holder, never changed
    /// by them; a `null` value deletes the name, which the holder may then set. The idle
    /// timeout does not slide: this is not the holder's activity. False when the user has
    /// no live session with that handle.
    ///
    /// Refused, with nothing written: 422 `invalid_user_id`, `invalid_handle`,
    /// `invalid_data`, `invalid_data_key`, `data_too_large` (as in [`Sessions::update`]).
    pub fn set_server_data(
        &self,
        redis: &Redis,
        user_id: &str,
        handle: &str,
        data: &str,
    ) -> Result<bool, Error> {
        check_user_id(Some(user_id))?;
        check_handle(handle)?;
        self.set_server_entries(redis, user_id, handle, &entries_of(data)?)
    }

    /// [`Sessions::set_server_data`] with checked input (the HTTP route's body).
    pub(crate) fn set_server_entries(
        &self,
        redis: &Redis,
        user_id: &str,
        handle: &str,
        entries: &[DataEntry],
    ) -> Result<bool, Error> {
        match self.store(redis).server_patch(user_id, handle, entries)? {
            Outcome::Found(()) => Ok(true),
            Outcome::DataTooLarge(size) => Err(self.too_large(size)),
            _ => Ok(false),
        }
    }

    /// The `Set-Cookie` value that hands the browser session `id` (`HttpOnly`, the configured
    /// name, `Secure`, `SameSite`, path and domain; no `Max-Age`).
    pub fn set_cookie(&self, id: &str) -> String {
        self.settings.cookie.set(id)
    }

    /// The `Set-Cookie` value that deletes the session cookie.
    pub fn clear_cookie(&self) -> String {
        self.settings.cookie.clear()
    }
}

/// A count from a script (never negative).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn listed(s: store::ListedSession, now_ms: i64) -> ListedSession {
    ListedSession {
        expires_in: until(s.expiry_ms, now_ms),
        current: s.current,
        handle: s.handle,
        user_agent: s.user_agent,
        created_ms: s.created_ms,
        seen_ms: s.seen_ms,
        expiry_ms: s.expiry_ms,
    }
}

fn session(id: &str, view: SessionView) -> Session {
    Session {
        id: id.to_owned(),
        expires_in: until(view.expiry_ms, view.now_ms),
        absolute_expires_in: until(view.absolute_ms, view.now_ms),
        user_id: view.user_id,
        data: view.data,
        server_keys: view.server_keys,
        created_ms: view.created_ms,
        seen_ms: view.seen_ms,
    }
}
