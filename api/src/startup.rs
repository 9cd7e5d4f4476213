//! Building the application from its configuration and serving it until shutdown.

use crate::app::{AppState, Inner};
use crate::config::ApiConfig;
use crate::identity::Identity;
use crate::limits::RateLimits;
use crate::lookup::CouponCache;
use crate::routes;
use crate::serve::{self, Limits};
use crate::waiters::Waiters;
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
    limits: Limits,
    /// `METRICS_ADDR`'s listener and router, when `/metrics` is served apart.
    metrics: Option<(TcpListener, axum::Router)>,
    /// Its live streams end when shutdown starts: they would never end by themselves.
    live: Arc<crate::live::Hub>,
    /// The status long-polls, told to answer at once on shutdown.
    waiters: Arc<Waiters>,
}

impl Application {
    pub async fn build(config: &ApiConfig) -> Result<Self, StartError> {
        let identity = Identity::from_config(&config.identity).map_err(|err| StartError::Setup {
            what: "identity (AUTH_JWT_*)",
            source: Box::new(err),
        })?;
        match &identity {
            Identity::Trusted => tracing::warn!(
                identity = %identity.describe(),
                "no JWT key is configured: run behind a gateway that authenticates users"
            ),
            Identity::Verified(_) => tracing::info!(identity = %identity.describe(), "verifying user tokens"),
        }
        let Connections { db, redis, layout } = shared::startup::connect(&config.common, Mysql::Lazily).await?;
        // First: what is recorded before the recorder is installed is lost.
        let metrics = shared::metrics::install();
        shared::metrics::count_errors_from_zero("api");
        let live = Arc::new(crate::live::Hub::new(config.live_max_watchers as usize));
        // WAIT holds its connection until the replicas answer: batches that
        // wait get a connection of their own, with room for WAIT's timeout.
        let admission_redis = match config.durable() {
            Some(durable) => {
                let timeout = config.common.redis.timeout() + durable.timeout;
                shared::startup::redis_connection(&config.common, timeout).await?
            }
            None => redis.clone(),
        };
        let pubsub = shared::redis_conn::pubsub_clients(&config.common.redis)?;
        let waiters = Waiters::new(config.status_max_waiters);
        let state = AppState(Arc::new(Inner {
            redis,
            db,
            layout,
            retention: config.common.redis.retention(),
            cache: CouponCache::new(layout),
            identity,
            limits: RateLimits::from_config(&config.limits),
            admission: crate::admission::Admission::new(admission_redis, config.durable()),
            admin_token: config.admin_token.clone().filter(|t| !t.is_empty()),
            metrics,
            metrics_apart: config.metrics_addr.is_some(),
            rebuilds: Default::default(),
            live: live.clone(),
            live_heartbeat: config.live_heartbeat(),
            waiters: waiters.clone(),
        }));
        tokio::spawn(crate::waiters::listen(pubsub, layout, waiters.clone()));
        let listener = bind(&config.listen_addr).await?;
        let metrics = match &config.metrics_addr {
            Some(addr) => Some((bind(addr).await?, routes::metrics_router(state.clone()))),
            None => None,
        };
        Ok(Self {
            listener,
            router: routes::router(state, config.request_timeout()),
            limits: Limits {
                max_connections: config.max_connections as usize,
                header_read_timeout: config.header_read_timeout(),
            },
            metrics,
            live,
            waiters,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served apart, if it is.
    pub fn metrics_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.metrics.as_ref().map(|(listener, _)| listener.local_addr())
    }

    /// Serves until `shutdown` completes, then stops accepting and waits for
    /// in-flight requests to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        };
        let metrics = self.metrics.map(|(listener, router)| {
            tokio::spawn(serve::serve(
                listener,
                router,
                self.limits,
                until_stopped(stopped.clone()),
            ))
        });
        let (live, waiters) = (self.live, self.waiters);
        tokio::spawn(async move {
            shutdown.await;
            // Neither a live stream nor a long-poll ends by itself soon.
            live.shut_down();
            waiters.stop();
            let _ = stop.send(true);
        });
        serve::serve(self.listener, self.router, self.limits, until_stopped(stopped)).await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        Ok(())
    }
}

async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    let addr = normalise(addr);
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// `:8080` means every interface, as the contract allows.
fn normalise(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    }
}
