//! The sessions' Redis operations: one Lua script, one round trip, one hash slot each.

use crate::args;
use crate::redis::{Redis, RedisError, Reply, Script};

use super::id::{index_key, session_key_prefix, SessionId, UserRef};
use super::settings::Settings;

/// Every session operation, in one script: the helpers travel once, Redis caches one SHA.
/// The first argument names the operation (see dispatch.lua).
static SESSION: Script = Script::new(concat!(
    include_str!("prelude.lua"),
    include_str!("create.lua"),
    include_str!("get.lua"),
    include_str!("patch.lua"),
    include_str!("rotate.lua"),
    include_str!("logout.lua"),
    include_str!("list.lua"),
    include_str!("revoke_all.lua"),
    include_str!("dispatch.lua"),
));

/// Prefix of the hash fields holding data keys.
const DATA_FIELD: &str = "d:";

/// A session as a script returns it.
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
}

/// One entry of a user's session list.
#[derive(Debug, Clone)]
pub struct ListedSession {
    pub current: bool,
    pub created_ms: i64,
    pub seen_ms: i64,
    pub expiry_ms: i64,
    pub user_agent: String,
}

/// What a script said about the caller's session.
pub enum Outcome<T> {
    Found(T),
    /// Missing, expired or never issued.
    NoSession,
    /// The merged data would be this many bytes, over the cap.
    DataTooLarge(i64),
}

/// One top-level data entry: name and JSON text; `None` deletes it (a JSON `null` in PATCH).
pub type DataEntry = (String, Option<String>);

/// Bytes a data entry counts against the cap: name plus JSON text, as the scripts count.
pub fn data_size<'a>(entries: impl IntoIterator<Item = &'a DataEntry>) -> usize {
    entries.into_iter().map(|(name, value)| value.as_ref().map_or(0, |v| name.len() + v.len())).sum()
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
            data_size(data) as u64,
        ];
        for (name, value) in data {
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

    /// Reads the session and slides its idle timeout.
    pub fn get(&self, id: &SessionId) -> Result<Outcome<SessionView>, RedisError> {
        let (key, member) = self.session_key(id);
        let reply = self.redis.eval(&SESSION, &[&key], args!["get", self.settings.idle_ms, member])?;
        view_outcome(&reply)
    }

    /// Merges top-level data entries (a `None` value deletes) and slides the idle timeout.
    pub fn patch(&self, id: &SessionId, entries: &[DataEntry]) -> Result<Outcome<SessionView>, RedisError> {
        let (key, member) = self.session_key(id);
        let mut params = args!["patch", self.settings.idle_ms, member, self.settings.max_data_bytes as u64];
        for (name, value) in entries {
            params.extend(args![name, value.as_deref().unwrap_or("")]);
        }
        let reply = self.redis.eval(&SESSION, &[&key], params)?;
        view_outcome(&reply)
    }

    /// Moves the session to a fresh id and ends the old one.
    pub fn rotate(&self, id: &SessionId) -> Result<Outcome<(SessionId, i64, i64)>, RedisError> {
        let (old_key, old_member) = self.session_key(id);
        let new_id = SessionId::generate(id.tag());
        let (new_key, new_member) = self.session_key(&new_id);
        let reply = self.redis.eval(
            &SESSION,
            &[&old_key, &new_key],
            args!["rotate", self.settings.idle_ms, old_member, new_member],
        )?;
        match reply.int(0)? {
            0 => Ok(Outcome::NoSession),
            1 => Ok(Outcome::Found((new_id, reply.int(1)?, reply.int(2)?))),
            3 => Err(unexpected("a key collision for a fresh 256-bit id")),
            _ => Err(unexpected("an unknown status")),
        }
    }

    /// Ends the session; `false` when there was none.
    pub fn logout(&self, id: &SessionId) -> Result<bool, RedisError> {
        let (key, member) = self.session_key(id);
        Ok(self.redis.eval(&SESSION, &[&key], args!["logout", member])?.int(0)? == 1)
    }

    /// The caller's user's live sessions, and Redis time (ms).
    pub fn list(&self, id: &SessionId) -> Result<Outcome<(Vec<ListedSession>, i64)>, RedisError> {
        let (key, member) = self.session_key(id);
        let reply = self.redis.eval(
            &SESSION,
            &[&key],
            args!["list", self.settings.idle_ms, member, self.prefix_for(id.tag())],
        )?;
        if reply.int(0)? == 0 {
            return Ok(Outcome::NoSession);
        }
        let count = usize::try_from(reply.int(1)?).map_err(|_| unexpected("a negative count"))?;
        let mut sessions = Vec::with_capacity(count);
        let mut now = 0;
        for i in 0..count {
            let at = 2 + i * 5;
            let session = ListedSession {
                current: reply.int(at)? == 1,
                created_ms: reply.int(at + 1)?,
                seen_ms: reply.int(at + 2)?,
                expiry_ms: reply.int(at + 3)?,
                user_agent: String::from_utf8_lossy(reply.opt_bytes(at + 4)?.unwrap_or_default())
                    .into_owned(),
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
        let reply =
            self.redis.eval(&SESSION, &[&key], args!["revoke_all", member, self.prefix_for(id.tag())])?;
        match reply.int(0)? {
            0 => Ok(Outcome::NoSession),
            _ => Ok(Outcome::Found(reply.int(1)?)),
        }
    }
}

/// Reads `{0}`, `{2, size}` or `{1, expiry, now, field, value, ...}`.
fn view_outcome(reply: &Reply) -> Result<Outcome<SessionView>, RedisError> {
    match reply.int(0)? {
        0 => return Ok(Outcome::NoSession),
        2 => return Ok(Outcome::DataTooLarge(reply.int(1)?)),
        1 => {}
        _ => return Err(unexpected("an unknown status")),
    }
    let mut view = SessionView {
        user_id: String::new(),
        data: Vec::new(),
        created_ms: 0,
        seen_ms: 0,
        absolute_ms: 0,
        expiry_ms: reply.int(1)?,
        now_ms: reply.int(2)?,
    };
    let mut i = 3;
    while i + 1 < reply.len() {
        let field = reply.string(i)?;
        match field {
            "uid" => view.user_id = reply.string(i + 1)?.to_owned(),
            "created" => view.created_ms = reply.int(i + 1)?,
            "seen" => view.seen_ms = reply.int(i + 1)?,
            "abs" => view.absolute_ms = reply.int(i + 1)?,
            _ => {
                if let Some(name) = field.strip_prefix(DATA_FIELD) {
                    view.data.push((name.to_owned(), reply.string(i + 1)?.to_owned()));
                }
            }
        }
        i += 2;
    }
    Ok(Outcome::Found(view))
}
