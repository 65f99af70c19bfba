//! Spin's Redis-backed key-value store, as Spin 3.6.3 runs it (`crates/key-value-redis`,
//! `crates/factor-key-value`):
//! - a store is defined by the runtime config (`[key_value_store.LABEL] type = "redis"`,
//!   `url = "redis[s]://..."`); a component may open only the labels in its
//!   `key_value_stores`, and the app does not start if one of those is undefined;
//! - one reconnecting connection (redis-rs `ConnectionManager`) per label, made on the first
//!   open and kept for the app's life; every open sends a `PING` on it (errors ignored);
//! - while Redis is unreachable, the first open and every call made during a reconnect WAIT
//!   for the manager's retries instead of failing: redis-rs's defaults (backon exponential,
//!   min 1 s, factor 100, max 60 s, 6 retries, jitter) make that 1-2 s, then 60-120 s per
//!   attempt, 5-10 minutes in all. Spin 3.6.3 behaves the same; tests of outages must allow
//!   for it;
//! - raw keys; `get`/`set`/`delete`/`exists`/`get-keys` are `GET`/`SET`/`DEL`/`EXISTS`/
//!   `KEYS *`, `increment` is `INCRBY`; every Redis failure is `other("{error:?}")`;
//! - `type = "spin"` without a `path` (`crates/key-value-spin`): an in-memory SQLite database
//!   for the life of the process, shared by every instance; `increment` keeps the value as
//!   8 little-endian bytes (a value of another length is an error here; Spin panics);
//! - `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue/{store,atomics}@0.2.0-draft2`.
//!   Compare-and-swap (a `WATCH` transaction on a connection of its own in Spin) answers
//!   `other`: no component here uses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::OnceCell;
use wasmtime::component::Resource;

use crate::instance::InstanceState;
use crate::spin_host::{key_value_iface as spin_kv, wasi_kv_atomics, wasi_kv_store};

/// Spin's limit on stores open at once in one instance.
const STORE_TABLE_CAPACITY: usize = 256;
/// Spin's limit on a buffered value.
const MAX_HOST_BUFFERED_BYTES: usize = 128 << 20;

/// One runtime-config store: its URL and, once opened, its app-lifetime connection.
pub(crate) struct RedisStore {
    url: String,
    connection: OnceCell<ConnectionManager>,
    /// Connections this store has made (the manager's own reconnects aside).
    pub(crate) connections: AtomicUsize,
}

impl RedisStore {
    /// Spin parses the URL when the app starts: a bad one stops `spin up`.
    pub(crate) fn new(url: &str) -> Result<Self> {
        redis::parse_redis_url(url).context("Invalid Redis URL")?;
        Ok(Self {
            url: url.to_owned(),
            connection: OnceCell::new(),
            connections: AtomicUsize::new(0),
        })
    }

    async fn connect(&self) -> Result<ConnectionManager, String> {
        let conn = self
            .connection
            .get_or_try_init(|| async {
                self.connections.fetch_add(1, Ordering::SeqCst);
                redis::Client::open(self.url.as_str())?.get_connection_manager().await
            })
            .await
            .map_err(|e| format!("{e:?}"))?;
        let mut conn = conn.clone();
        // Spin's `after_open`: a PING whose failure is ignored (the manager reconnects).
        let _: redis::RedisResult<()> = conn.ping().await;
        Ok(conn)
    }
}

/// Spin's in-memory store: one map per label, for the life of the app (the process).
pub(crate) type MemoryStore = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A store the runtime config defines.
pub(crate) enum Store {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl Store {
    /// Connections a Redis store has made; none for memory.
    pub(crate) fn connections(&self) -> usize {
        match self {
            Self::Redis(store) => store.connections.load(Ordering::SeqCst),
            Self::Memory(_) => 0,
        }
    }
}

/// The stores of one app, by label.
pub(crate) type Stores = HashMap<String, Store>;

/// The `[key_value_store.*]` tables of a runtime config.
pub(crate) fn stores_from_runtime_config(tables: &HashMap<String, toml::Table>) -> Result<Stores> {
    let mut stores = Stores::new();
    for (label, table) in tables {
        let kind = table.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        let store = match kind {
            "redis" => {
                let url = table
                    .get("url")
                    .and_then(|u| u.as_str())
                    .with_context(|| format!("key_value_store.{label}: missing url"))?;
                Store::Redis(RedisStore::new(url)?)
            }
            "spin" if table.get("path").is_none() => Store::Memory(MemoryStore::default()),
            _ => bail!(
                "key_value_store.{label}: the test host supports type = \"redis\" and \
                 type = \"spin\" without a path (in memory), not {kind:?} {table}"
            ),
        };
        stores.insert(label.clone(), store);
    }
    Ok(stores)
}

/// An open store in an instance's resource table.
pub enum KeyValueHandle {
    Redis(ConnectionManager),
    Memory(MemoryStore),
}

/// A compare-and-swap handle; never made (see the module note).
pub struct CasHandle;

#[derive(Debug)]
enum OpenError {
    AccessDenied,
    NoSuchStore,
    TableFull,
    Other(String),
}

impl InstanceState {
    async fn open_store(&mut self, label: &str) -> Result<KeyValueHandle, OpenError> {
        let allowed = self.app.manifest.components[&self.component]
            .key_value_stores
            .contains(&label.to_owned());
        if !allowed {
            return Err(OpenError::AccessDenied);
        }
        let handle = match self.app.key_value_stores.get(label).ok_or(OpenError::NoSuchStore)? {
            Store::Redis(store) => {
                KeyValueHandle::Redis(store.connect().await.map_err(OpenError::Other)?)
            }
            Store::Memory(map) => KeyValueHandle::Memory(map.clone()),
        };
        if self.open_key_value_stores >= STORE_TABLE_CAPACITY {
            return Err(OpenError::TableFull);
        }
        self.open_key_value_stores += 1;
        Ok(handle)
    }

    fn store_conn<T: 'static>(&mut self, r: &Resource<T>) -> wasmtime::Result<Conn> {
        let handle: Resource<KeyValueHandle> = Resource::new_borrow(r.rep());
        Ok(match self.table.get(&handle)? {
            KeyValueHandle::Redis(conn) => Conn::Redis(conn.clone()),
            KeyValueHandle::Memory(map) => Conn::Memory(map.clone()),
        })
    }

    fn close_store<T: 'static>(&mut self, r: Resource<T>) -> wasmtime::Result<()> {
        let handle: Resource<KeyValueHandle> = Resource::new_own(r.rep());
        self.table.delete(handle)?;
        self.open_key_value_stores = self.open_key_value_stores.saturating_sub(1);
        Ok(())
    }
}

/// An open store, cloned out of the resource table for one operation.
pub(crate) enum Conn {
    Redis(ConnectionManager),
    Memory(MemoryStore),
}

/// The store operations, shared by both interfaces; errors are Spin's `other` text.
mod ops {
    use super::*;

    fn other(e: redis::RedisError) -> String {
        format!("{e:?}")
    }

    fn memory(map: &MemoryStore) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn get(conn: Conn, key: &str) -> Result<Option<Vec<u8>>, String> {
        let value: Option<Vec<u8>> = match conn {
            Conn::Redis(mut conn) => conn.get(key).await.map_err(other)?,
            Conn::Memory(map) => memory(&map).get(key).cloned(),
        };
        if std::mem::size_of::<Option<Vec<u8>>>() + value.as_ref().map_or(0, |v| v.len())
            > MAX_HOST_BUFFERED_BYTES
        {
            return Err(format!("query result exceeds limit of {MAX_HOST_BUFFERED_BYTES} bytes"));
        }
        Ok(value)
    }

    pub async fn set(conn: Conn, key: &str, value: &[u8]) -> Result<(), String> {
        match conn {
            Conn::Redis(mut conn) => conn.set(key, value).await.map_err(other),
            Conn::Memory(map) => {
                memory(&map).insert(key.to_owned(), value.to_vec());
                Ok(())
            }
        }
    }

    pub async fn delete(conn: Conn, key: &str) -> Result<(), String> {
        match conn {
            Conn::Redis(mut conn) => conn.del(key).await.map_err(other),
            Conn::Memory(map) => {
                memory(&map).remove(key);
                Ok(())
            }
        }
    }

    pub async fn exists(conn: Conn, key: &str) -> Result<bool, String> {
        match conn {
            Conn::Redis(mut conn) => conn.exists(key).await.map_err(other),
            Conn::Memory(map) => Ok(memory(&map).contains_key(key)),
        }
    }

    pub async fn keys(conn: Conn) -> Result<Vec<String>, String> {
        match conn {
            Conn::Redis(mut conn) => conn.keys("*").await.map_err(other),
            Conn::Memory(map) => Ok(memory(&map).keys().cloned().collect()),
        }
    }

    pub async fn increment(conn: Conn, key: &str, delta: i64) -> Result<i64, String> {
        match conn {
            Conn::Redis(mut conn) => conn.incr(key, delta).await.map_err(other),
            Conn::Memory(map) => {
                let mut map = memory(&map);
                let current = match map.get(key) {
                    None => 0,
                    Some(v) => i64::from_le_bytes(
                        v.as_slice().try_into().map_err(|_| "incorrect length".to_owned())?,
                    ),
                };
                let value = current + delta;
                map.insert(key.to_owned(), value.to_le_bytes().to_vec());
                Ok(value)
            }
        }
    }
}

// --- fermyon:spin/key-value@2.0.0 -------------------------------------------------------

impl spin_kv::Host for InstanceState {}

impl spin_kv::HostStore for InstanceState {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<spin_kv::Store>, spin_kv::Error>> {
        Ok(match self.open_store(&label).await {
            Ok(handle) => {
                let r = self.table.push(handle)?;
                Ok(Resource::new_own(r.rep()))
            }
            Err(OpenError::AccessDenied) => Err(spin_kv::Error::AccessDenied),
            Err(OpenError::NoSuchStore) => Err(spin_kv::Error::NoSuchStore),
            Err(OpenError::TableFull) => Err(spin_kv::Error::StoreTableFull),
            Err(OpenError::Other(m)) => Err(spin_kv::Error::Other(m)),
        })
    }

    async fn get(
        &mut self,
        r: Resource<spin_kv::Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::get(conn, &key).await.map_err(spin_kv::Error::Other))
    }

    async fn set(
        &mut self,
        r: Resource<spin_kv::Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::set(conn, &key, &value).await.map_err(spin_kv::Error::Other))
    }

    async fn delete(
        &mut self,
        r: Resource<spin_kv::Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::delete(conn, &key).await.map_err(spin_kv::Error::Other))
    }

    async fn exists(
        &mut self,
        r: Resource<spin_kv::Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::exists(conn, &key).await.map_err(spin_kv::Error::Other))
    }

    async fn get_keys(
        &mut self,
        r: Resource<spin_kv::Store>,
    ) -> wasmtime::Result<Result<Vec<String>, spin_kv::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::keys(conn).await.map_err(spin_kv::Error::Other))
    }

    async fn drop(&mut self, r: Resource<spin_kv::Store>) -> wasmtime::Result<()> {
        self.close_store(r)
    }
}

// --- wasi:keyvalue/store@0.2.0-draft2 ---------------------------------------------------

impl wasi_kv_store::Host for InstanceState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<wasi_kv_store::Bucket>, wasi_kv_store::Error>> {
        use wasi_kv_store::Error as E;
        Ok(match self.open_store(&identifier).await {
            Ok(handle) => {
                let r = self.table.push(handle)?;
                Ok(Resource::new_own(r.rep()))
            }
            Err(OpenError::AccessDenied) => Err(E::AccessDenied),
            Err(OpenError::NoSuchStore) => Err(E::NoSuchStore),
            Err(OpenError::TableFull) => Err(E::Other("store table full".into())),
            Err(OpenError::Other(m)) => Err(E::Other(m)),
        })
    }
}

impl wasi_kv_store::HostBucket for InstanceState {
    async fn get(
        &mut self,
        r: Resource<wasi_kv_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv_store::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::get(conn, &key).await.map_err(wasi_kv_store::Error::Other))
    }

    async fn set(
        &mut self,
        r: Resource<wasi_kv_store::Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_kv_store::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::set(conn, &key, &value).await.map_err(wasi_kv_store::Error::Other))
    }

    async fn delete(
        &mut self,
        r: Resource<wasi_kv_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_kv_store::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::delete(conn, &key).await.map_err(wasi_kv_store::Error::Other))
    }

    async fn exists(
        &mut self,
        r: Resource<wasi_kv_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_kv_store::Error>> {
        let conn = self.store_conn(&r)?;
        Ok(ops::exists(conn, &key).await.map_err(wasi_kv_store::Error::Other))
    }

    async fn list_keys(
        &mut self,
        r: Resource<wasi_kv_store::Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_kv_store::KeyResponse, wasi_kv_store::Error>> {
        if cursor.is_some() {
            return Ok(Err(wasi_kv_store::Error::Other("list_keys: cursor not supported".into())));
        }
        let conn = self.store_conn(&r)?;
        Ok(ops::keys(conn)
            .await
            .map(|keys| wasi_kv_store::KeyResponse { keys, cursor: None })
            .map_err(wasi_kv_store::Error::Other))
    }

    async fn drop(&mut self, r: Resource<wasi_kv_store::Bucket>) -> wasmtime::Result<()> {
        self.close_store(r)
    }
}

// --- wasi:keyvalue/atomics@0.2.0-draft2 -------------------------------------------------

const NO_CAS: &str = "compare-and-swap is not supported by the test host";

impl wasi_kv_atomics::Host for InstanceState {
    async fn increment(
        &mut self,
        bucket: Resource<wasi_kv_atomics::Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_kv_store::Error>> {
        let conn = self.store_conn(&bucket)?;
        Ok(ops::increment(conn, &key, delta).await.map_err(wasi_kv_store::Error::Other))
    }

    async fn swap(
        &mut self,
        _cas: Resource<wasi_kv_atomics::Cas>,
        _value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_kv_atomics::CasError>> {
        Ok(Err(wasi_kv_atomics::CasError::StoreError(wasi_kv_store::Error::Other(NO_CAS.into()))))
    }
}

impl wasi_kv_atomics::HostCas for InstanceState {
    async fn new(
        &mut self,
        _bucket: Resource<wasi_kv_atomics::Bucket>,
        _key: String,
    ) -> wasmtime::Result<Result<Resource<wasi_kv_atomics::Cas>, wasi_kv_store::Error>> {
        Ok(Err(wasi_kv_store::Error::Other(NO_CAS.into())))
    }

    async fn current(
        &mut self,
        _cas: Resource<wasi_kv_atomics::Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv_store::Error>> {
        Ok(Err(wasi_kv_store::Error::Other(NO_CAS.into())))
    }

    async fn drop(&mut self, _cas: Resource<wasi_kv_atomics::Cas>) -> wasmtime::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> (MemoryStore, impl Fn() -> Conn) {
        let map = MemoryStore::default();
        let shared = map.clone();
        (map, move || Conn::Memory(shared.clone()))
    }

    #[tokio::test]
    async fn the_in_memory_store_behaves_as_spins() {
        let (map, conn) = memory();
        assert_eq!(ops::get(conn(), "k").await, Ok(None));
        ops::set(conn(), "k", b"v").await.unwrap();
        assert_eq!(ops::get(conn(), "k").await, Ok(Some(b"v".to_vec())));
        assert_eq!(ops::exists(conn(), "k").await, Ok(true));
        ops::delete(conn(), "k").await.unwrap();
        assert_eq!(ops::exists(conn(), "k").await, Ok(false));
        // Spin keeps a counter as 8 little-endian bytes, and refuses any other value.
        assert_eq!(ops::increment(conn(), "n", 5).await, Ok(5));
        assert_eq!(ops::increment(conn(), "n", -2).await, Ok(3));
        assert_eq!(map.lock().unwrap()["n"], 3i64.to_le_bytes().to_vec());
        ops::set(conn(), "text", b"3").await.unwrap();
        assert!(ops::increment(conn(), "text", 1).await.is_err());
    }
}
