//! The coordinator role: takes clients' statements over Trino's REST protocol, runs them
//! with the SQL engine, and streams results back page by page.
//!
//! ```text
//!  client ──POST /v1/statement──▶ http::statement ──▶ QueryManager::create ──▶ execution task
//!     ▲                                                  (QueryRegistry)          │ pages
//!     └──GET nextUri ◀── ResultCursor (idempotent tokens) ◀── bounded channel ◀───┘
//! ```
//!
//! Entry points: [`Coordinator::start`] binds and serves, returning a [`RunningCoordinator`]
//! whose `shutdown` stops every background task it started. Settings are in [`config`].

pub mod config;
mod execution;
pub mod http;
mod manager;
mod query;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flotilla_proto::{CoordinatorId, QueryIdGenerator};
use flotilla_sql::catalog::Catalogs;
use flotilla_sql::Engine;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, CoordinatorConfig, SETTINGS};
pub use manager::{LocalRuntime, NodeIdentity, QueryManager, QueryRegistry};

/// One coordinator's shared state.
#[derive(Debug)]
pub struct Coordinator {
    pub id: CoordinatorId,
    pub manager: Arc<QueryManager>,
    pub identity: Arc<Mutex<NodeIdentity>>,
    shutting_down: AtomicBool,
}

impl Coordinator {
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Binds `address` (port 0 picks a free one) and starts serving.
    pub async fn start(
        config: CoordinatorConfig,
        catalogs: Catalogs,
        address: SocketAddr,
    ) -> std::io::Result<RunningCoordinator> {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let id = CoordinatorId::random();
        let identity = Arc::new(Mutex::new(NodeIdentity {
            node_id: config.node_id.clone().unwrap_or_else(|| format!("coordinator-{id}")),
            environment: config.environment.clone(),
            http_uri: format!("http://{local}"),
            started: std::time::Instant::now(),
        }));
        let registry = Arc::new(QueryRegistry::default());
        let runtime = Arc::new(LocalRuntime { registry: registry.clone(), identity: identity.clone() });
        let engine = Engine::new(&catalogs, runtime);
        let manager = Arc::new(QueryManager::new(engine, QueryIdGenerator::new(id.clone()), registry, config));
        let coordinator =
            Arc::new(Coordinator { id, manager: manager.clone(), identity, shutting_down: AtomicBool::new(false) });

        let shutdown = CancellationToken::new();
        let sweeper = tokio::spawn(manager.sweep_loop(shutdown.clone()));
        let app = http::router(coordinator.clone());
        let server_shutdown = shutdown.clone();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "coordinator http server failed");
            }
        });
        tracing::info!(address = %local, coordinator = %coordinator.id, "coordinator started");
        Ok(RunningCoordinator { coordinator, address: local, shutdown, tasks: vec![sweeper, server] })
    }
}

/// A started coordinator; dropping it without [`RunningCoordinator::shutdown`] leaves its
/// tasks running until the runtime ends.
#[derive(Debug)]
pub struct RunningCoordinator {
    pub coordinator: Arc<Coordinator>,
    pub address: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningCoordinator {
    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops accepting queries, fails the running ones and waits for the server to stop.
    pub async fn shutdown(self) {
        self.coordinator.shutting_down.store(true, Ordering::Relaxed);
        self.coordinator.manager.fail_all("Coordinator is shutting down");
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Resolves when the coordinator has been asked to shut down (for a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
