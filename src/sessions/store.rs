//! The sessions' Redis operations: one Lua script, one round trip, one hash slot each.

use serde::Deserialize;

use crate::args;
use crate::lua_script;
use crate::platform::fast_path::FastPath;
use crate::platform::json::UniqueMap;
use crate::platform::redis::{Redis, RedisError, Reply};
use crate::platform::script::{Script, CLOCK};

use super::id::SessionId;
use super::keys::{index_key, session_key_prefix, UserRef};
use super::settings::Settings;

/// Every session operation, in one script: the helpers travel once, Redis caches one SHA.
/// The first argument names the operation (see dispatch.lua).
static SESSION: Script = lua_script!(
    CLOCK,
    include_str!("prelude.lua"),
    include_str!("create.lua"),
    include_str!("get.lua"),
    include_str!("patch.lua"),
    include_str!("rotate.lua"),
    include_str!("logout.lua"),
    include_str!("list.lua"),
    include_str!("revoke_all.lua"),
    include_str!("dispatch.lua"),
);

/// A session as Redis holds it (see prelude.lua), read by a script or through the fast path.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub user_id: String,
    /// Top-level data entries: name and JSON text, as the client sent it.
    pub data: Vec<(String, String)>,
    pub created_ms: i64,
    pub seen_ms: i64,
    pub absolute_ms: i64,
    pub expiry_ms: i64,
    pub now_ms: i64,
    /// Data names the backend set: read-only to the session holder.
    pub server_keys: Vec<String>,
}

impl SessionView {
    /// A stored session value, as of `now_ms`; `None` if it is not one. Both read paths
    /// answer from this same text, so they give the same body.
    pub fn parse(value: &[u8], now_ms: i64) -> Option<Self> {
        let stored: StoredSession = serde_json::from_slice(value).ok()?;
        Some(Self {
            user_id: stored.uid,
            data: stored.data.0,
            created_ms: stored.created,
            seen_ms: stored.seen,
            absolute_ms: stored.abs,
            expiry_ms: stored.exp,
            now_ms,
            server_keys: stored
                .srv
                .map(|m| m.0.into_iter().map(|(k, _)| k).collect())
                .unwrap_or_default(),
        })
    }
}

/// The stored value as the scripts write it (cjson; see prelude.lua). Members the Rust side
/// does not read (`ua`, `dsize`) are ignored.
#[derive(Deserialize)]
struct StoredSession {
    uid: String,
    /// Top-level data: name -> the JSON text the client sent.
    data: UniqueMap<String>,
    created: i64,
    seen: i64,
    abs: i64,
    exp: i64,
    /// Server-owned data names (name -> true); absent when there are none.
    #[serde(default)]
    srv: Option<UniqueMap<bool>>,
}

/// One entry of a user's session list.
#[derive(Debug, Clone)]
pub struct ListedSession {
    pub current: bool,
    pub created_ms: i64,
    pub seen_ms: i64,
    pub expiry_ms: i64,
    pub user_agent: String,
    /// The per-session handle the backend revokes it by.
    pub handle: String,
}

/// A session moved to a fresh id.
pub struct Rotation {
    pub id: SessionId,
    /// The handle it was created with (rotation keeps it).
    pub handle: String,
    pub expiry_ms: i64,
    pub now_ms: i64,
}

/// What a script said about the caller's session.
pub enum Outcome<T> {
    Found(T),
    /// Missing, expired or never issued.
    NoSession,
    /// The merged data would be this many bytes, over the cap.
    DataTooLarge(i64),
    /// The patch names a key the backend set (read-only to the session holder).
    ServerOwned(String),
    /// The id was rotated away: during the grace it may read the session, nothing else.
    Rotated,
}

/// One top-level data entry: name and JSON text; `None` deletes it (a JSON `null` in PATCH).
pub type DataEntry = (String, Option<String>);

/// Bytes a data entry counts against the cap: name plus JSON text, as the scripts count.
pub fn data_size<'a>(entries: impl IntoIterator<Item = &'a DataEntry>) -> usize {
    entries
        .into_iter()
        .map(|(name, value)| value.as_ref().map_or(0, |v| name.len() + v.len()))
        .sum()
}

pub struct Store<'a> {
    redis: &'a Redis,
    settings: &'a Settings,
}

fn unexpected(what: &str) -> RedisError {
    RedisError::UnexpectedReply(format!("session script returned {what}"))
}

impl<'a> Store<'a> {
    pub fn new(redis: &'a Redis, settings: &'a Settings) -> Self {
        Self { redis, settings }
    }

    fn prefix_for(&self, tag: &str) -> String {
        session_key_prefix(&self.redis.settings().key_prefix, tag)
    }

    fn session_key(&self, id: &SessionId) -> (String, String) {
        let digest = id.digest();
        (format!("{}{digest}", self.prefix_for(id.tag())), digest)
    }

    /// Creates a session; returns its id, expiry and Redis time (ms).
    pub fn create(
        &self,
        user_id: &str,
        user_agent: &str,
        server: &[DataEntry],
        data: &[DataEntry],
    ) -> Result<(SessionId, i64, i64), RedisError> {
        let user = UserRef::of(user_id);
        let id = SessionId::generate(&user.tag);
        let (key, member) = self.session_key(&id);
        let index = index_key(&self.redis.settings().key_prefix, &user);
        let mut params = args![
            "create",
            self.settings.idle_ms,
            self.settings.absolute_ms,
            self.settings.max_per_user,
            self.prefix_for(&user.tag),
            member,
            user_id,
            user_agent,
            data_size(server.iter().chain(data)) as u64,
            server.iter().filter(|(_, v)| v.is_some()).count() as u64,
        ];
        for (name, value) in server.iter().chain(data) {
            if let Some(value) = value {
                params.extend(args![name, value]);
            }
        }
        let reply = self.redis.eval(&SESSION, &[&key, &index], params)?;
        match reply.int(0)? {
            1 => Ok((id, reply.int(1)?, reply.int(2)?)),
            3 => Err(unexpected("a key collision for a fresh 256-bit id")),
            _ => Err(unexpected("an unknown status")),
        }
    }

    /// Reads the session through the pooled store (one `GET`, no outbound connection) when
    /// that read can answer for sure: `Some(Found)` while the idle deadline is still at least
    /// the slide threshold away (or cannot move, being the absolute one), `Some(NoSession)`
    /// when the key is missing (Redis deletes expired keys and every ending deletes the key,
    /// so a missing key is the same answer the read script would give, and a forged id costs
    /// no connection). `None` means: read through [`Store::get`], which slides the deadline;
    /// so does a value this cannot read or a store error.
    ///
    /// The component's clock only decides when to slide: the key's own expiry, set to the same
    /// deadline by Redis, is what ends a session, so a live answer here is never stale. A
    /// clock behind Redis's by d slides d late, one ahead slides d early; both harmless while
    /// d stays far below the threshold (NTP keeps it to milliseconds).
    pub fn fast_get(&self, fast: &FastPath, id: &SessionId) -> Option<Outcome<SessionView>> {
        let value = match fast.get(&self.session_key(id).0) {
            Ok(Some(value)) => value,
            Ok(None) => return Some(Outcome::NoSession),
            Err(e) => {
                crate::platform::log::warn(
                    "fast_path_failed",
                    format_args!("fast path failed, using outbound Redis: {e}"),
                );
                return None;
            }
        };
        let view = SessionView::parse(&value, crate::platform::clock::unix_now_ms())?;
        let remaining = view.expiry_ms - view.now_ms;
        let slide_due =
            view.expiry_ms < view.absolute_ms && remaining < self.settings.slide_threshold_ms;
        (remaining > 0 && !slide_due).then_some(Outcome::Found(view))
    }

    /// Reads the session and slides its idle timeout.
    pub fn get(&self, id: &SessionId) -> Result<Outcome<SessionView>, RedisError> {
        let (key, member) = self.session_key(id);
        let reply =
            self.redis.eval(&SESSION, &[&key], args!["get", self.settings.idle_ms, member])?;
        view_outcome(&reply)
    }

    /// Merges top-level data entries (a `None` value deletes) and slides the idle timeout.
    pub fn patch(
        &self,
        id: &SessionId,
        entries: &[DataEntry],
    ) -> Result<Outcome<SessionView>, RedisError> {
        let (key, member) = self.session_key(id);
        let mut params =
            args!["patch", self.settings.idle_ms, member, self.settings.max_data_bytes as u64];
        for (name, value) in entries {
            params.extend(args![name, value.as_deref().unwrap_or("")]);
        }
        let reply = self.redis.eval(&SESSION, &[&key], params)?;
        view_outcome(&reply)
    }

    /// Moves the session to a fresh id and ends the old one.
    pub fn rotate(&self, id: &SessionId) -> Result<Outcome<Rotation>, RedisError> {
        let (old_key, old_member) = self.session_key(id);
        let new_id = SessionId::generate(id.tag());
        let (new_key, new_member) = self.session_key(&new_id);
        let reply = self.redis.eval(
            &SESSION,
            &[&old_key, &new_key],
            args![
                "rotate",
                self.settings.idle_ms,
                old_member,
                new_member,
                self.settings.rotation_grace_ms
            ],
        )?;
        match reply.int(0)? {
            0 => Ok(Outcome::NoSession),
            1 => Ok(Outcome::Found(Rotation {
                id: new_id,
                expiry_ms: reply.int(1)?,
                now_ms: reply.int(2)?,
                handle: reply.string(3)?.to_owned(),
            })),
            3 => Err(unexpected("a key collision for a fresh 256-bit id")),
            5 => Ok(Outcome::Rotated),
            _ => Err(unexpected("an unknown status")),
        }
    }

    /// Ends the session: `Found(false)` when there was none; `Rotated` (nothing ended) for a
    /// rotated-away id.
    pub fn logout(&self, id: &SessionId) -> Result<Outcome<bool>, RedisError> {
        let (key, member) = self.session_key(id);
        match self.redis.eval(&SESSION, &[&key], args!["logout", member])?.int(0)? {
            5 => Ok(Outcome::Rotated),
            status => Ok(Outcome::Found(status == 1)),
        }
    }

    /// The caller's user's live sessions, and Redis time (ms).
    pub fn list(&self, id: &SessionId) -> Result<Outcome<(Vec<ListedSession>, i64)>, RedisError> {
        let (key, member) = self.session_key(id);
        let reply = self.redis.eval(
            &SESSION,
            &[&key],
            args!["list", self.settings.idle_ms, member, self.prefix_for(id.tag())],
        )?;
        match reply.int(0)? {
            0 => return Ok(Outcome::NoSession),
            5 => return Ok(Outcome::Rotated),
            _ => {}
        }
        let count = usize::try_from(reply.int(1)?).map_err(|_| unexpected("a negative count"))?;
        let mut sessions = Vec::with_capacity(count);
        let mut now = 0;
        for i in 0..count {
            let at = 2 + i * 6;
            let session = ListedSession {
                current: reply.int(at)? == 1,
                created_ms: reply.int(at + 1)?,
                seen_ms: reply.int(at + 2)?,
                expiry_ms: reply.int(at + 3)?,
                user_agent: String::from_utf8_lossy(reply.opt_bytes(at + 4)?.unwrap_or_default())
                    .into_owned(),
                handle: reply.string(at + 5)?.to_owned(),
            };
            if session.current {
                now = session.seen_ms;
            }
            sessions.push(session);
        }
        Ok(Outcome::Found((sessions, now)))
    }

    /// Ends every session of the caller's user; the number ended.
    pub fn revoke_all(&self, id: &SessionId) -> Result<Outcome<i64>, RedisError> {
        let (key, member) = self.session_key(id);
        let reply = self.redis.eval(
            &SESSION,
            &[&key],
            args!["revoke_all", member, self.prefix_for(id.tag())],
        )?;
        match reply.int(0)? {
            0 => Ok(Outcome::NoSession),
            5 => Ok(Outcome::Rotated),
            _ => Ok(Outcome::Found(reply.int(1)?)),
        }
    }

    /// The backend ends a user's sessions: all, or the one listed with `handle`.
    pub fn revoke_user(&self, user_id: &str, handle: Option<&str>) -> Result<i64, RedisError> {
        let user = UserRef::of(user_id);
        let index = index_key(&self.redis.settings().key_prefix, &user);
        let reply = self.redis.eval(
            &SESSION,
            &[&index],
            args!["revoke_user", self.prefix_for(&user.tag), handle.unwrap_or("")],
        )?;
        reply.int(1)
    }

    /// The backend sets server-owned data (a `None` value deletes) of the session listed with
    /// `handle`, without sliding it.
    pub fn server_patch(
        &self,
        user_id: &str,
        handle: &str,
        entries: &[DataEntry],
    ) -> Result<Outcome<()>, RedisError> {
        let user = UserRef::of(user_id);
        let index = index_key(&self.redis.settings().key_prefix, &user);
        let mut params = args![
            "server_patch",
            handle,
            self.prefix_for(&user.tag),
            self.settings.max_data_bytes as u64
        ];
        for (name, value) in entries {
            params.extend(args![name, value.as_deref().unwrap_or("")]);
        }
        let reply = self.redis.eval(&SESSION, &[&index], params)?;
        match reply.int(0)? {
            1 => Ok(Outcome::Found(())),
            2 => Ok(Outcome::DataTooLarge(reply.int(1)?)),
            _ => Ok(Outcome::NoSession),
        }
    }
}

/// Reads `{0}`, `{2, size}` or `{1, session JSON, now}`.
fn view_outcome(reply: &Reply) -> Result<Outcome<SessionView>, RedisError> {
    match reply.int(0)? {
        0 => Ok(Outcome::NoSession),
        2 => Ok(Outcome::DataTooLarge(reply.int(1)?)),
        4 => Ok(Outcome::ServerOwned(reply.string(1)?.to_owned())),
        5 => Ok(Outcome::Rotated),
        1 => SessionView::parse(reply.bytes(1)?, reply.int(2)?)
            .map(Outcome::Found)
            .ok_or_else(|| unexpected("a session it cannot read")),
        _ => Err(unexpected("an unknown status")),
    }
}

#[cfg(test)]
mod tests {
    use super::SessionView;

    #[test]
    fn reads_the_value_the_scripts_write() {
        // As Redis's cjson writes it: any member order, `/` escaped, data values as JSON text.
        let value = br#"{"idx":"srp:sess:{ab}:u:U","exp":1795424676760,"abs":1795424726731,"data":{"s":"\"a\/b\\u00e9\"","big":"12345678901234567890123"},"dsize":29,"seen":1795424666760,"uid":"alice","ua":"UA\/1","created":1795424666731}"#;
        let view = SessionView::parse(value, 7).unwrap();
        assert_eq!(view.user_id, "alice");
        assert_eq!(
            view.data,
            vec![
                ("s".to_owned(), r#""a/b\u00e9""#.to_owned()),
                ("big".to_owned(), "12345678901234567890123".to_owned())
            ]
        );
        assert_eq!(
            (view.created_ms, view.seen_ms, view.expiry_ms, view.absolute_ms, view.now_ms),
            (1795424666731, 1795424666760, 1795424676760, 1795424726731, 7)
        );
        let empty_data = br#"{"uid":"u","data":{},"created":1,"seen":2,"exp":3,"abs":4}"#;
        assert!(SessionView::parse(empty_data, 0).unwrap().data.is_empty());
    }

    #[test]
    fn refuses_anything_else() {
        for value in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"uid":"u","data":{"x":1},"created":1,"seen":2,"exp":3,"abs":4}"#,
            br#"{"uid":"u","data":{},"created":1.5,"seen":2,"exp":3,"abs":4}"#,
            br#"{"uid":"u","data":{},"created":1,"seen":2,"exp":3}"#,
            br#"{"uid":7,"data":{},"created":1,"seen":2,"exp":3,"abs":4}"#,
        ] {
            assert!(SessionView::parse(value, 0).is_none(), "{}", String::from_utf8_lossy(value));
        }
    }
}
