//! One component instance's state: WASI, WASI HTTP, and the Spin interfaces. Like Spin, the
//! host makes a fresh instance for every request.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::body::HyperOutgoingBody;
use wasmtime_wasi_http::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::{HttpError, HttpResult, WasiHttpCtx, WasiHttpView};

use crate::allowed_hosts::{service_chaining_target, AllowedHosts};
use crate::spin_host::redis_iface::Error as RedisError;
use crate::AppInner;

/// Counters shared by every instance that serves one incoming request (chained ones too).
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Outbound Redis connections the request tried to open.
    pub redis_connections: AtomicUsize,
}

pub struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) app: Arc<AppInner>,
    pub(crate) component: String,
    pub(crate) stats: Arc<RequestStats>,
    pub(crate) open_redis_connections: usize,
    pub(crate) open_key_value_stores: usize,
}

impl InstanceState {
    /// The component's resolved `allowed_outbound_hosts`; a template that failed to resolve
    /// fails the call, as in Spin.
    pub(crate) fn allowed_hosts(&self) -> Result<&AllowedHosts, RedisError> {
        self.app.allowed_hosts[&self.component].as_ref().map_err(|e| RedisError::Other(e.clone()))
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn ctx(&mut self) -> &mut WasiHttpCtx {
        &mut self.http
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Outbound HTTP: only to allowed hosts (else `HttpRequestDenied`, as Spin answers);
    /// `http://COMPONENT.spin.internal` runs that component in-process (service chaining).
    fn send_request(
        &mut self,
        request: hyper::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let url = request.uri().to_string();
        let allowed = self.app.allowed_hosts[&self.component]
            .as_ref()
            .map(|a| a.allows_url(&url))
            .unwrap_or(false);
        if !allowed {
            return Err(HttpError::from(ErrorCode::HttpRequestDenied));
        }
        let target = request.uri().host().and_then(service_chaining_target).map(str::to_owned);
        match target {
            Some(component) => {
                let app = self.app.clone();
                let stats = self.stats.clone();
                let handle = wasmtime_wasi::runtime::spawn(async move {
                    Ok(app.serve_chained(&component, request, stats).await)
                });
                Ok(HostFutureIncomingResponse::pending(handle))
            }
            None => Ok(wasmtime_wasi_http::types::default_send_request(request, config)),
        }
    }
}
