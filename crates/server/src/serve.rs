//! Running the server: open the store, load the state, listen, follow other nodes' changes,
//! and shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::geo::Geo;
use crate::http::RouteSpec;
use crate::state::AppState;
use crate::store::{Backend, Store};

pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    pub routes: Vec<RouteSpec>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    follower: Option<JoinHandle<()>>,
    /// Due work and the outbox (`governance::worker`).
    worker: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        if let Some(w) = self.worker.take() {
            w.abort();
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Runs until `signal` resolves.
    pub async fn wait(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        signal.await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Opens the store named by the config (creating the data folder for SQLite).
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create the data folder {}: {e}", config.data_dir.display())
        })?;
    }
    Store::open(&url).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Starts serving on the configured address (port 0: any free port).
pub async fn start(
    store: Store,
    config: Config,
    clock: Arc<dyn Clock>,
    geo: Option<Geo>,
) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let mut config = config;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{addr}"));
    }
    let state = AppState::load(store, config, clock, geo).await?;
    let (router, routes) = crate::http::app(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let follower = Some(tokio::spawn(follow_changes(state.clone())));
    let senders = crate::governance::worker::Senders::from_config(&state.config)?;
    let worker = Some(tokio::spawn(crate::governance::worker::run(state.clone(), senders)));
    Ok(Running { addr, state, routes, stop: Some(stop), task, follower, worker })
}

/// Keeps this node's memory in step with changes other nodes commit: PostgreSQL notifies at
/// once; a slow poll covers a dropped notification connection (and is all SQLite needs, where
/// every writer is this process).
async fn follow_changes(state: AppState) {
    if state.store.backend() != Backend::Postgres {
        return;
    }
    let mut retry = Duration::from_millis(100);
    loop {
        match sqlx::postgres::PgListener::connect(state.store.url()).await {
            Ok(mut listener) => match listener.listen("gatehouse_changes").await {
                Err(e) => tracing::warn!("LISTEN failed: {e}"),
                Ok(()) => {
                    retry = Duration::from_millis(100);
                    loop {
                        // Catch up first: on (re)connecting, anything committed before LISTEN
                        // took effect was never notified.
                        if let Err(e) = state.sync().await {
                            tracing::warn!("cannot apply changes: {e}");
                        }
                        // `try_recv` answers `None` when the connection dropped and was
                        // re-established (listening again): notifications in between are lost,
                        // and the sync at the top of the loop covers them.
                        match tokio::time::timeout(Duration::from_secs(5), listener.try_recv())
                            .await
                        {
                            Ok(Ok(_)) | Err(_) => {} // a notification, a lost one, or the quiet poll
                            Ok(Err(e)) => {
                                tracing::warn!("change notifications lost: {e}; reconnecting");
                                break;
                            }
                        }
                    }
                }
            },
            Err(e) => tracing::warn!("cannot open the notification connection: {e}"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(5));
    }
}
