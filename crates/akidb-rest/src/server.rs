//! Running the service: bind first, load the models in the background, serve until a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use akidb_embedding_core::{EmbeddingError, EmbeddingProvider};
use std::sync::{Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use crate::config::Config;
use crate::engine::providers::{self, LoadPlan};
use crate::http::state::AppState;
use crate::http::{metrics_router, router};
use crate::net::{self, ConnectionLimits, Lifecycle};

/// Why the service stopped other than by a shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A model could not be loaded or failed its calibration runs; the service does not run
    /// without it.
    #[error("cannot load the models: {0}")]
    Load(EmbeddingError),
    /// Serving connections failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener (and the metrics listener, when asked for) and the state its router will
/// serve; models come later, in [`Server::run`].
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    limits: ConnectionLimits,
    drain_delay: Duration,
}

impl Server {
    /// Opens the listening socket of `config.bind`, and of `config.metrics_bind` when set
    /// (port 0 picks a free port).
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let listen = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let listener = listen(config.bind).await?;
        let metrics_listener = match config.metrics_bind {
            Some(addr) => Some(listen(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state: AppState::new(config),
            limits: ConnectionLimits::from(config),
            drain_delay: config.drain_delay(),
        })
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the metrics listener, when `AKIDB_METRICS_BIND` asked for one.
    pub fn metrics_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.metrics_listener.as_ref().map(TcpListener::local_addr)
    }

    /// The state the router serves (for tests and embedding applications).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves requests at once (`/health` answers 503) while `loader` builds the providers;
    /// once they are loaded and calibrated (two runs whose vectors are checked), requests
    /// reach them. When
    /// `shutdown` completes the service drains: `/health` answers 503 and every answer
    /// carries `Connection: close` while requests are still served for the drain delay; then
    /// the listener closes, idle connections close, and in-flight requests finish within the
    /// shutdown timeout. The metrics listener, if any, keeps answering scrapes through the
    /// drain (they show it) and closes with the main listener, its connections under the same
    /// shutdown timeout. Stops at once with [`ServeError::Load`] when loading fails.
    pub async fn run<L, S>(self, loader: L, shutdown: S) -> Result<(), ServeError>
    where
        L: Future<Output = Result<Vec<Arc<dyn EmbeddingProvider>>, EmbeddingError>>
            + Send
            + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            metrics_listener,
            state,
            limits,
            drain_delay,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "listening; loading models");
        let lifecycle = Lifecycle {
            metrics: Arc::clone(state.metrics()),
            draining: state.draining_flag(),
        };
        // Completes when the main listener closes (or the server is gone).
        let (listener_closed, mut closed) = watch::channel(false);
        let metrics = match metrics_listener {
            Some(metrics_listener) => {
                let addr = metrics_listener.local_addr()?;
                tracing::info!(metrics_bind = %addr, "serving /metrics without the API key");
                Some(tokio::spawn(
                    net::serve(
                        metrics_listener,
                        metrics_router(state.clone()),
                        lifecycle.clone(),
                        limits,
                        async move {
                            let _ = closed.wait_for(|closed| *closed).await;
                        },
                    )
                    .instrument(tracing::info_span!("metrics_listener", metrics_bind = %addr)),
                ))
            }
            None => None,
        };
        // A failed load is recorded before the server is told to stop, so whichever way the
        // stop and the loader's own end interleave, the failure is what `run` returns.
        let load_failed = Arc::new(Notify::new());
        let failure: Arc<Mutex<Option<EmbeddingError>>> = Arc::default();
        let loading = tokio::spawn({
            let state = state.clone();
            let load_failed = Arc::clone(&load_failed);
            let failure = Arc::clone(&failure);
            async move {
                if let Err(error) = load_and_install(&state, loader).await {
                    tracing::error!(%error, "cannot load the models; stopping");
                    *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    load_failed.notify_one();
                }
            }
        });
        let stop = {
            let state = state.clone();
            async move {
                tokio::select! {
                    () = shutdown => drain(&state, drain_delay).await,
                    () = load_failed.notified() => {}
                }
                let _ = listener_closed.send(true);
            }
        };
        let trimmer = tokio::spawn(crate::memory::trim_when_idle(state.clone()));
        net::serve(listener, router(state.clone()), lifecycle, limits, stop).await;
        trimmer.abort();
        if let Some(metrics) = metrics {
            // Its shutdown started with the main listener's: bounded by the same timeout.
            let _ = metrics.await;
        }
        // A shutdown while models still load stops the loading.
        loading.abort();
        if let Err(join_error) = loading.await
            && join_error.is_panic()
        {
            return Err(ServeError::Load(EmbeddingError::model_load(
                "(loader)", join_error,
            )));
        }
        match failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(error) => Err(ServeError::Load(error)),
            None => Ok(()),
        }
    }
}

/// The first step of a shutdown: `/health` turns 503 so load balancers stop routing here,
/// and answers close their connections, while requests are still accepted and served for
/// `delay`; then the listener may close.
async fn drain(state: &AppState, delay: Duration) {
    state.start_draining();
    tracing::info!(
        drain_delay_ms = delay.as_millis() as u64,
        "shutting down: draining (/health answers 503, answers close their connections)"
    );
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
        tracing::info!("drain delay over: closing the listener");
    }
}

/// Awaits the providers and hands them to the state (which calibrates each: the start-up's
/// proof that every model serves).
async fn load_and_install<L>(state: &AppState, loader: L) -> Result<(), EmbeddingError>
where
    L: Future<Output = Result<Vec<Arc<dyn EmbeddingProvider>>, EmbeddingError>>,
{
    let started = Instant::now();
    let providers = loader.await?;
    state.install(providers).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        models = ?state.engine().map(|engine| engine.ids().join(", ")).unwrap_or_default(),
        "ready"
    );
    Ok(())
}

/// Runs the service `config` describes until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    config.warn_about_legacy_settings();
    let server = Server::bind(&config).await?;
    let plan = LoadPlan::from(&config).with_status(Arc::clone(server.state().load_status()));
    server.run(providers::load(plan), shutdown_signal()).await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
