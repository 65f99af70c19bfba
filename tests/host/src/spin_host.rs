//! Host side of `fermyon:spin/redis@2.0.0` and `fermyon:spin/variables@2.0.0` (the key-value
//! interfaces are in [`crate::key_value`]), behaving as
//! Spin 3.6.3 does (`crates/factor-outbound-redis/src/host.rs`, `crates/factor-variables`):
//! - `open` checks `allowed_outbound_hosts` (refusal is `invalid-address`), then makes a new
//!   multiplexed connection with the same `redis` crate version and native-tls; nothing is
//!   pooled. Each open is counted, so tests can hold components to one per request.
//! - Errors: unparsable address is `invalid-address`, more than 1024 connections in one
//!   instance is `too-many-connections`, `sadd` on a wrong type is `type-error`, everything
//!   else is `other(message)`.
//! - `execute` flattens the reply (nested arrays included) into nil/status/int64/binary.

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, FromRedisValue, Value};
use wasmtime::component::Resource;

use crate::instance::InstanceState;

wasmtime::component::bindgen!({
    path: "wit",
    world: "fermyon:spin/host",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/redis.connection": RedisConnection,
        "fermyon:spin/key-value.store": crate::key_value::KeyValueHandle,
        "wasi:keyvalue/store.bucket": crate::key_value::KeyValueHandle,
        "wasi:keyvalue/atomics.cas": crate::key_value::CasHandle,
    },
    trappable_error_type: {
        "fermyon:spin/redis.error" => redis_iface::Error,
        "fermyon:spin/variables.error" => variables_iface::Error,
    },
});

pub(crate) use fermyon::spin::key_value as key_value_iface;
pub(crate) use fermyon::spin::redis as redis_iface;
pub(crate) use fermyon::spin::variables as variables_iface;
use redis_iface::{Error, RedisParameter, RedisResult};
pub(crate) use wasi::keyvalue::atomics as wasi_kv_atomics;
pub(crate) use wasi::keyvalue::store as wasi_kv_store;

/// The resource behind a guest's `connection`.
pub struct RedisConnection(MultiplexedConnection);

/// Spin keeps at most this many connections in one instance's table.
const MAX_CONNECTIONS: usize = 1024;
/// Spin's limit on a buffered reply.
const MAX_HOST_BUFFERED_BYTES: usize = 128 << 20;

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

impl InstanceState {
    fn conn(&mut self, r: &Resource<RedisConnection>) -> Result<&mut MultiplexedConnection, Error> {
        self.table
            .get_mut(r)
            .map(|c| &mut c.0)
            .map_err(|_| Error::Other("could not find connection for resource".into()))
    }
}

impl redis_iface::Host for InstanceState {
    fn convert_error(&mut self, error: Error) -> wasmtime::Result<Error> {
        Ok(error)
    }
}

impl redis_iface::HostConnection for InstanceState {
    async fn open(&mut self, address: String) -> Result<Resource<RedisConnection>, Error> {
        if !self.allowed_hosts()?.allows_url(&address) {
            return Err(Error::InvalidAddress);
        }
        let client = redis::Client::open(address.as_str()).map_err(|_| Error::InvalidAddress)?;
        self.stats.redis_connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let conn = client.get_multiplexed_async_connection().await.map_err(other)?;
        if self.open_redis_connections >= MAX_CONNECTIONS {
            return Err(Error::TooManyConnections);
        }
        self.open_redis_connections += 1;
        self.table.push(RedisConnection(conn)).map_err(|_| Error::TooManyConnections)
    }

    async fn publish(
        &mut self,
        r: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        let () = self.conn(&r)?.publish(&channel, &payload).await.map_err(other)?;
        Ok(())
    }

    async fn get(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        let value: Option<Vec<u8>> = self.conn(&r)?.get(&key).await.map_err(other)?;
        if value.as_ref().map_or(0, |v| v.len()) > MAX_HOST_BUFFERED_BYTES {
            return Err(Error::Other(format!(
                "query result exceeds limit of {MAX_HOST_BUFFERED_BYTES} bytes"
            )));
        }
        Ok(value)
    }

    async fn set(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let () = self.conn(&r)?.set(&key, &value).await.map_err(other)?;
        Ok(())
    }

    async fn incr(&mut self, r: Resource<RedisConnection>, key: String) -> Result<i64, Error> {
        self.conn(&r)?.incr(&key, 1).await.map_err(other)
    }

    async fn del(&mut self, r: Resource<RedisConnection>, keys: Vec<String>) -> Result<u32, Error> {
        self.conn(&r)?.del(&keys).await.map_err(other)
    }

    async fn sadd(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        self.conn(&r)?.sadd(&key, &values).await.map_err(|e| {
            if e.kind() == redis::ErrorKind::TypeError {
                Error::TypeError
            } else {
                Error::Other(e.to_string())
            }
        })
    }

    async fn smembers(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
    ) -> Result<Vec<String>, Error> {
        self.conn(&r)?.smembers(&key).await.map_err(other)
    }

    async fn srem(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        self.conn(&r)?.srem(&key, &values).await.map_err(other)
    }

    async fn execute(
        &mut self,
        r: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Result<Vec<RedisResult>, Error> {
        let conn = self.conn(&r)?;
        let mut cmd = redis::cmd(&command);
        for a in &arguments {
            match a {
                RedisParameter::Int64(v) => cmd.arg(v),
                RedisParameter::Binary(v) => cmd.arg(v),
            };
        }
        let Flattened(results) = cmd.query_async(conn).await.map_err(other)?;
        let size: usize = results
            .iter()
            .map(|r| match r {
                RedisResult::Binary(b) => b.len(),
                RedisResult::Status(s) => s.len(),
                _ => 0,
            })
            .sum();
        if size > MAX_HOST_BUFFERED_BYTES {
            return Err(Error::Other(format!(
                "query result exceeds limit of {MAX_HOST_BUFFERED_BYTES} bytes"
            )));
        }
        Ok(results)
    }

    async fn drop(&mut self, r: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        self.open_redis_connections = self.open_redis_connections.saturating_sub(1);
        Ok(())
    }
}

/// A reply flattened the way Spin flattens it.
struct Flattened(Vec<RedisResult>);

impl FromRedisValue for Flattened {
    fn from_redis_value(value: &Value) -> redis::RedisResult<Self> {
        fn unsupported(what: &str) -> redis::RedisError {
            redis::RedisError::from((
                redis::ErrorKind::TypeError,
                "Could not convert Redis response",
                format!("Redis {what} is not supported"),
            ))
        }
        fn push(out: &mut Vec<RedisResult>, value: &Value) -> redis::RedisResult<()> {
            match value {
                Value::Nil => out.push(RedisResult::Nil),
                Value::Int(v) => out.push(RedisResult::Int64(*v)),
                Value::BulkString(b) => out.push(RedisResult::Binary(b.clone())),
                Value::SimpleString(s) => out.push(RedisResult::Status(s.clone())),
                Value::Okay => out.push(RedisResult::Status("OK".into())),
                Value::Array(items) | Value::Set(items) => {
                    for item in items {
                        push(out, item)?;
                    }
                }
                Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
                Value::Boolean(b) => out.push(RedisResult::Int64(i64::from(*b))),
                Value::BigNumber(n) => out.push(RedisResult::Binary(n.to_string().into_bytes())),
                Value::Map(_) => return Err(unsupported("Map type")),
                Value::Attribute { .. } => return Err(unsupported("Attribute type")),
                Value::VerbatimString { .. } => {
                    return Err(unsupported("string with format attribute"))
                }
                Value::Push { .. } => return Err(unsupported("Pub/Sub types")),
                Value::ServerError(e) => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::ResponseError,
                        "Server error",
                        format!("{e:?}"),
                    )))
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        push(&mut out, value)?;
        Ok(Flattened(out))
    }
}

impl variables_iface::Host for InstanceState {
    async fn get(&mut self, name: String) -> Result<String, variables_iface::Error> {
        use crate::variables::VariableError as E;
        self.app.variables.get(&self.component, &name).map_err(|e| match e {
            E::InvalidName(m) => variables_iface::Error::InvalidName(m),
            E::Undefined(m) => variables_iface::Error::Undefined(m),
            E::Provider(m) => variables_iface::Error::Provider(m),
        })
    }

    fn convert_error(
        &mut self,
        error: variables_iface::Error,
    ) -> wasmtime::Result<variables_iface::Error> {
        Ok(error)
    }
}
