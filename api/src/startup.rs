//! Building the application from its configuration and serving it until shutdown.

use crate::app::{AppState, Inner};
use crate::config::ApiConfig;
use crate::lookup::CouponCache;
use crate::routes;
use crate::script::IssueScript;
use shared::startup::{Connections, Mysql};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the API could not start (shared with the consumer).
pub use shared::startup::StartError;

/// A bound, ready-to-serve API. Binding happens in [`Application::build`] so
/// callers (tests) can listen on port 0 and read the real port.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
}

impl Application {
    pub async fn build(config: &ApiConfig) -> Result<Self, StartError> {
        let Connections { db, redis, layout } = shared::startup::connect(&config.common, Mysql::Lazily).await?;
        let state = AppState(Arc::new(Inner {
            redis,
            db,
            layout,
            retention: config.common.redis.retention(),
            cache: CouponCache::new(layout),
            script: IssueScript::default(),
            admin_token: config.admin_token.clone().filter(|t| !t.is_empty()),
            metrics: shared::metrics::install(),
            rebuilds: Default::default(),
        }));
        let addr = normalise(&config.listen_addr);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self {
            listener,
            router: routes::router(state, config.request_timeout()),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and waits for
    /// in-flight requests to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// `:8080` means every interface, as the contract allows.
fn normalise(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    }
}
