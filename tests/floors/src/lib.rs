//! The floors of the benchmark and the end-to-end suite: what a route costs before it does any
//! work of its own, under the same Spin, answered through the same [`serve`] as every
//! component (so the response write is not part of the difference).
//!
//! - `/noop`: nothing (the platform's ceiling: one instance per request);
//! - `/kv`: one `GET` through Spin's pooled Redis store `redis` (open, whose `PING` Spin
//!   sends, and the `GET`): the floor of every pooled route;
//! - `/kv+variables`: the pooled floor after 32 variable reads (what a cache hit reads);
//! - `/kv+breaker`: the pooled floor with the breaker's store operations around its two
//!   pooled calls (one `list_keys`, a `set` and a `delete` per call);
//! - `/outbound`: one outbound Redis open and `GET` at the address in variable `redis_url`:
//!   the floor of every route on outbound Redis (a TCP, TLS and AUTH handshake per request).

use spin_redis_patterns::platform::breaker::Breaker;
use spin_redis_patterns::platform::{serve, ApiError, Response};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;
use spin_sdk::redis::Connection;

const KEY: &str = "srp:floor";

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, |req| {
        let unavailable = |e: String| ApiError::new(503, "redis_unavailable", e);
        let value = match req.path_info() {
            "/noop" => None,
            "/kv" => {
                let store = Store::open("redis").map_err(|e| unavailable(e.to_string()))?;
                store.get(KEY).map_err(|e| unavailable(e.to_string()))?
            }
            "/kv+variables" => {
                for _ in 0..32 {
                    let _ = spin_sdk::variables::get("redis_url");
                }
                let store = Store::open("redis").map_err(|e| unavailable(e.to_string()))?;
                store.get(KEY).map_err(|e| unavailable(e.to_string()))?
            }
            "/kv+breaker" => {
                let breaker = Breaker::open_with(250)
                    .ok_or_else(|| ApiError::internal("no breaker store"))?;
                let store = breaker
                    .guard("redis", || Store::open("redis"))
                    .map_err(|e| unavailable(e.to_string()))?;
                breaker.guard("redis", || store.get(KEY)).map_err(|e| unavailable(e.to_string()))?
            }
            "/outbound" => {
                let url = spin_sdk::variables::get("redis_url")
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let conn = Connection::open(&url).map_err(|e| unavailable(e.to_string()))?;
                conn.get(KEY).map_err(|e| unavailable(e.to_string()))?
            }
            _ => return Err(ApiError::not_found("no such floor")),
        };
        Ok(Response::new(200).with_body(value.unwrap_or_else(|| b"floor".to_vec())))
    })
}
