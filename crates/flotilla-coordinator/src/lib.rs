//! The coordinator role: takes clients' statements over Trino's REST protocol, runs them
//! with the SQL engine, and streams results back page by page.
//!
//! ```text
//!  client ──POST /v1/statement──▶ http::statement ──▶ QueryManager::create ──▶ execution task
//!     ▲                                                  (QueryRegistry)          │ pages
//!     └──GET nextUri ◀── ResultCursor (idempotent tokens) ◀── bounded channel ◀───┘
//! ```
//!
//! As a member of the cluster it heartbeats the resource managers ([`QueryReporter`]: its
//! queries as deltas, its resource-group counts) and serves `/v1/node`, `/v1/cluster` and
//! `system.runtime.nodes` from their view, cached by a `ClusterViewClient`
//! ([`ClusterRuntime`]). Without `discovery.uri` it runs an embedded resource manager.
//!
//! Queries that read worker-readable tables run across workers: the engine plans them with
//! `datafusion-distributed`, the [`Scheduler`] picks the warehouse's least-loaded worker
//! group and places every task, the coordinator runs the head stage and streams it to the
//! client. With `node-scheduler.include-coordinator` the coordinator is also a worker (its
//! own data plane, announced like any worker's).
//!
//! Any coordinator serves any request: a poll, cancel or `/v1/query/{id}` for a query of
//! another coordinator is relayed to its owner, found by the query id's suffix in the view
//! (`http::route_to_owner`, with `flotilla_node`'s relaying). A follow-up of a query whose
//! owner died is adopted: run again here under its id ([`adoption`]). With resource groups
//! configured, a query waits `QUEUED` until [`resource_groups::Admission`] holds a slot for
//! its group under a lease from the admission leader, so the limits hold cluster-wide.
//! SIGTERM or `PUT /v1/info/state` drains: [`RunningCoordinator::drain`].
//!
//! Entry points: [`Coordinator::start`] binds and serves, returning a [`RunningCoordinator`]
//! whose `shutdown` stops every background task it started. Settings are in [`config`].

pub mod adoption;
mod cluster;
pub mod config;
pub mod events;
mod execution;
pub mod http;
pub mod limits;
mod maintenance;
mod manager;
mod query;
pub mod resource_groups;
pub mod scheduler;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_node::authentication::Security;
use flotilla_node::{
    heartbeater, serve_http, ClusterViewClient, InternalClient, LocalNode, NodeAccess, INTERNAL_CALL_TIMEOUT,
};
use flotilla_proto::cluster::NodeRole;
use flotilla_proto::{CoordinatorId, InternalAuth, NodeConfig, QueryIdGenerator};
use flotilla_resource_manager::ResourceManager;
use flotilla_sql::catalog::Catalogs;
use flotilla_sql::Engine;
use flotilla_worker::flight::FlightChannels;
use flotilla_worker::{DataPlane, WorkerLoadSource};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cluster::{ClusterRuntime, QueryReporter};
pub use config::{CoordinatorConfig, SETTINGS};
pub use manager::{QueryManager, QueryRegistry};
pub use scheduler::{Scheduler, SchedulerDistributor, TaskPlacement};

/// One coordinator's shared state.
#[derive(Debug)]
pub struct Coordinator {
    pub id: CoordinatorId,
    pub manager: Arc<QueryManager>,
    pub local: Arc<LocalNode>,
    /// The resource managers' view, cached.
    pub view: Arc<ClusterViewClient>,
    /// Relays requests about other coordinators' queries to their owners.
    pub forwarder: flotilla_node::Forwarder,
    /// Registers this coordinator's queries, and adopts those of dead coordinators.
    pub registrar: Arc<adoption::Registrar>,
    /// The web UI's sessions.
    pub ui: Arc<ui::UiAuth>,
    /// Who may kill queries and drain this node.
    pub access: Arc<NodeAccess>,
    /// Client authentication (`http-server.authentication.type`), if configured.
    pub security: Option<Arc<Security>>,
    /// `http-server.process-forwarded`.
    process_forwarded: bool,
}

impl Coordinator {
    pub fn shutting_down(&self) -> bool {
        self.local.shutting_down()
    }

    /// This coordinator's own `host:port`, for a request that names no host.
    pub fn own_host(&self) -> &str {
        self.local.http_uri.trim_start_matches("http://")
    }

    /// Whether a request's `X-Forwarded-*` headers are believed: with
    /// `http-server.process-forwarded`, or when another node of the cluster relayed it (and
    /// signed it).
    pub fn trusts_forwarded(&self, headers: &axum::http::HeaderMap) -> bool {
        self.process_forwarded || self.access.is_internal(headers)
    }

    /// The base URI a request's client used, for the URIs handed back to it.
    pub fn client_uris(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<flotilla_protocol::uris::QueryUris, flotilla_protocol::uris::InvalidHeader> {
        flotilla_protocol::uris::QueryUris::from_headers(headers, self.own_host(), self.trusts_forwarded(headers))
    }

    /// Whether the request's client connected over TLS (here, or to the gateway or proxy
    /// that relayed it, as its trusted `X-Forwarded-Proto` says).
    pub fn client_is_secure(&self, headers: &axum::http::HeaderMap) -> bool {
        self.client_uris(headers).is_ok_and(|uris| uris.base().starts_with("https://"))
    }

    /// Binds `address` (port 0 picks a free one) and starts serving.
    ///
    /// With `discovery.uri` set, the coordinator joins those resource managers; without it,
    /// it runs an embedded resource manager on its own port (a one-process cluster), so the
    /// cluster view always comes from the same mechanism.
    pub async fn start(
        config: CoordinatorConfig,
        catalogs: Catalogs,
        address: SocketAddr,
    ) -> std::io::Result<RunningCoordinator> {
        let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        let embedded = config.node.discovery_uris.is_empty();
        let secret = match (&config.node.shared_secret, embedded) {
            (Some(secret), _) => secret.clone(),
            (None, true) => InternalAuth::generate_secret(),
            (None, false) => flotilla_node::require_secret(&config.node)?.to_string(),
        };
        let listener = TcpListener::bind(address).await?;
        let local_address = listener.local_addr()?;
        let url = config.node.announced_url(local_address);
        let id = CoordinatorId::random();
        let node_id = config.node.node_id.clone().unwrap_or_else(|| format!("coordinator-{id}"));
        let auth = Arc::new(InternalAuth::new(&secret, &node_id).map_err(invalid)?);
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut roles = vec![NodeRole::Coordinator];
        if embedded {
            roles.push(NodeRole::ResourceManager);
        }
        // With include-coordinator, this node is also a worker: the same data plane as
        // `flotilla worker`, in this process.
        let plane = if config.include_coordinator {
            let data_address = SocketAddr::new(address.ip(), config.worker.data_port);
            let stores = catalogs.object_stores();
            let (plane, server) =
                DataPlane::start(data_address, &config.worker, stores, auth.clone(), shutdown.clone()).await?;
            tasks.push(server);
            roles.push(NodeRole::Worker);
            Some(plane)
        } else {
            None
        };
        let node_config = NodeConfig { node_id: Some(node_id), ..config.node.clone() };
        let data_uri = plane.as_ref().map(|p| config.node.announced_url(p.address));
        let local = LocalNode::new(&node_config, roles, url.clone(), data_uri, Some(id.to_string()), "coordinator");
        let client = InternalClient::new(auth.clone(), INTERNAL_CALL_TIMEOUT);
        let seeds = if embedded { vec![url.clone()] } else { config.node.discovery_uris.clone() };
        let view = ClusterViewClient::new(seeds.clone(), client.clone(), config.node.heartbeat_interval);

        let registry = Arc::new(QueryRegistry::default());
        let forwarder = flotilla_node::Forwarder::new(auth.clone());
        let authenticates = !config.node.security.authentication.is_empty();
        let access = Arc::new(NodeAccess::from_config(auth.clone(), &config.node, authenticates).map_err(invalid)?);
        let security = Security::from_config(&config.node.security, auth.clone(), access.access_control().cloned())
            .map_err(invalid)?;
        let runtime = Arc::new(ClusterRuntime {
            local: local.clone(),
            registry: registry.clone(),
            view: view.clone(),
            forwarder: forwarder.clone(),
            access: access.clone(),
        });
        let channels = FlightChannels::new(auth.clone());
        let own_worker = plane.as_ref().map(|_| local.node_id.clone());
        let scheduler = Scheduler::new(view.clone(), channels, own_worker);
        let files_catalogs = catalogs.writable();
        let engine = Engine::new(&catalogs, runtime)
            .with_distributor(Arc::new(SchedulerDistributor(scheduler.clone())))
            .with_access_control(access.access_control().cloned());
        let node_config = config.node.clone();
        let embedded_config = config.resource_manager.clone();
        if embedded {
            embedded_config.validate(node_config.heartbeat_interval).map_err(|e| invalid(e.to_string()))?;
        }
        let groups_file = config.resource_groups().map_err(|e| invalid(e.to_string()))?;
        config.events.validate().map_err(|e| invalid(e.to_string()))?;
        let events_config = config.events.clone();
        let registrar = Arc::new(adoption::Registrar::new(local.clone(), view.clone(), client.clone()));
        let admission =
            resource_groups::Admission::new(groups_file, local.clone(), view.clone(), client).map_err(invalid)?;
        tasks.push(admission.spawn(shutdown.clone()));
        // Every coordinator of the cluster must sign UI sessions alike: the configured
        // secret, else one derived from the cluster's shared secret.
        let ui_secret = config.web_ui_secret.clone().unwrap_or_else(|| format!("flotilla-web-ui:{secret}"));
        let ui_auth = Arc::new(ui::UiAuth::new(&ui_secret, security.as_ref().is_some_and(|s| s.has_passwords())));
        let process_forwarded = config.node.process_forwarded;
        let manager = Arc::new(QueryManager::new(
            engine,
            scheduler.clone(),
            admission.clone(),
            registrar.clone(),
            QueryIdGenerator::new(id.clone()),
            registry.clone(),
            config,
        ));
        manager.register_metrics(&local.metrics, view.clone());
        if let Some((listener, task)) = events::EventListener::start(&events_config, shutdown.clone()) {
            manager.set_event_listener(listener, local.clone());
            tasks.push(task);
        }
        let coordinator = Arc::new(Coordinator {
            id,
            manager: manager.clone(),
            local: local.clone(),
            view: view.clone(),
            forwarder: forwarder.clone(),
            registrar: registrar.clone(),
            ui: ui_auth,
            access,
            security,
            process_forwarded,
        });

        tasks.push(tokio::spawn(manager.clone().sweep_loop(shutdown.clone())));
        let maintenance = maintenance::Maintenance::new(
            manager.clone(),
            files_catalogs,
            view.clone(),
            InternalClient::new(auth.clone(), INTERNAL_CALL_TIMEOUT),
            local.clone(),
        );
        tasks.extend(maintenance.map(|m| m.spawn(shutdown.clone())));
        tasks.push(tokio::spawn(registrar.forget_loop(shutdown.clone())));
        let mut app = http::router(coordinator.clone());
        if embedded {
            let resource_manager = ResourceManager::for_node(&local, embedded_config, auth.clone());
            resource_manager.register_metrics(&local.metrics);
            app = app.merge(resource_manager.router());
            tasks.push(resource_manager.spawn_background(shutdown.clone()));
        }
        let https = flotilla_node::tls::start_https(&node_config, address.ip(), app.clone(), shutdown.clone()).await?;
        let https_address = https.map(|(address, task)| {
            tasks.push(task);
            address
        });
        tasks.push(serve_http(listener, app, shutdown.clone()));

        let worker_load = plane.as_ref().map(|plane| Arc::new(WorkerLoadSource::new(local.clone(), plane)));
        if let Some(load) = &worker_load {
            load.register_metrics(&local.metrics);
        }
        let reporter = Arc::new(QueryReporter::new(local.clone(), registry.clone(), admission, worker_load));
        let agent = heartbeater(&local, auth, seeds, reporter, &node_config);
        let heartbeat_now = agent.waker();
        registry.notify_changes(heartbeat_now.clone());
        // A view before joining: once the resource managers list this coordinator, gateways
        // route clients here, and without a view the scheduler knows no worker (the query
        // fails with NO_NODES_AVAILABLE) and no resource manager to register queries with.
        // Then join, and fetch again so the first `/v1/node` already lists this node. A
        // resource manager that does not answer yet is no reason not to start.
        let first = view.refresh().await;
        let viewed = match agent.beat_once().await {
            0 => first,
            _ => view.refresh().await,
        };
        if let Err(error) = viewed {
            tracing::warn!(%error, "no cluster view yet; starting anyway");
        }
        tasks.push(agent.spawn(shutdown.clone()));
        tasks.push(view.spawn(shutdown.clone()));
        tracing::info!(address = %local_address, coordinator = %coordinator.id, embedded_resource_manager = embedded, "coordinator started");
        Ok(RunningCoordinator { coordinator, address: local_address, https_address, shutdown, tasks, heartbeat_now })
    }
}

/// A started coordinator; dropping it without [`RunningCoordinator::shutdown`] leaves its
/// tasks running until the runtime ends.
#[derive(Debug)]
pub struct RunningCoordinator {
    pub coordinator: Arc<Coordinator>,
    pub address: SocketAddr,
    /// Where it serves clients over HTTPS, when `http-server.https.enabled`.
    pub https_address: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Sends a heartbeat now (so a state change reaches the resource managers at once).
    heartbeat_now: Arc<tokio::sync::Notify>,
}

impl RunningCoordinator {
    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops accepting queries, fails the running ones and waits for the server to stop.
    pub async fn shutdown(self) {
        self.coordinator.manager.fail_all("Coordinator is shutting down");
        self.stop().await;
    }

    /// Stops serving; queries still running are left to be adopted by another coordinator
    /// (their clients' next polls find this one gone).
    async fn stop(self) {
        self.coordinator.local.begin_shutdown();
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// A graceful shutdown (`PUT /v1/info/state` `"SHUTTING_DOWN"`, SIGTERM): reports
    /// `SHUTTING_DOWN` at once (new queries get 503, which the gateway answers by trying
    /// another coordinator), lets the running queries finish and their clients read every
    /// page, for at most `shutdown.grace-period`, then stops; a query still running then is
    /// adopted by another coordinator at its client's next poll.
    pub async fn drain(self) {
        let grace = self.coordinator.manager.config().node.shutdown_grace_period;
        self.coordinator.local.begin_shutdown();
        self.heartbeat_now.notify_one();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let in_flight = self.coordinator.manager.in_flight();
            if in_flight == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    in_flight,
                    ?grace,
                    "grace period over; another coordinator adopts the queries still running"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("drained");
        self.stop().await;
    }

    /// Resolves when the coordinator has been asked to shut down (for a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use flotilla_proto::cluster::{CLUSTER_VIEW_PATH, HEARTBEAT_PATH};

    use super::*;

    /// Gateways route clients to a coordinator as soon as a resource manager lists it, so a
    /// coordinator must hold a cluster view (its workers) before its first heartbeat: a
    /// query routed to it in between failed with NO_NODES_AVAILABLE.
    #[tokio::test]
    async fn a_coordinator_fetches_the_cluster_view_before_it_announces_itself() {
        let viewed = Arc::new(AtomicBool::new(false));
        let beats = Arc::new(AtomicUsize::new(0));
        let beats_before_a_view = Arc::new(AtomicUsize::new(0));
        let view = serde_json::json!({
            "resourceManager": "resource-manager-1", "instance": "i", "generatedAtMs": 0, "nodes": [],
            "queries": [], "resourceGroups": [], "complete": true,
            "memory": {"poolBytes": 0, "reservedBytes": 0, "freeBytes": 0},
        });
        let app = axum::Router::new()
            .route(
                CLUSTER_VIEW_PATH,
                axum::routing::get({
                    let viewed = viewed.clone();
                    move || async move {
                        viewed.store(true, Ordering::SeqCst);
                        axum::Json(view)
                    }
                }),
            )
            .route(
                HEARTBEAT_PATH,
                axum::routing::post({
                    let (viewed, beats, early) = (viewed.clone(), beats.clone(), beats_before_a_view.clone());
                    move || async move {
                        beats.fetch_add(1, Ordering::SeqCst);
                        if !viewed.load(Ordering::SeqCst) {
                            early.fetch_add(1, Ordering::SeqCst);
                        }
                        // Not an acknowledgement: the coordinator starts anyway.
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let resource_manager = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut config = CoordinatorConfig::default();
        config.node.discovery_uris = vec![resource_manager];
        config.node.shared_secret = Some("a-test-secret-long-enough-for-hmac".to_string());
        let address = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        let running = Coordinator::start(config, Catalogs::defaults(), address).await.unwrap();
        running.shutdown().await;
        server.abort();

        assert!(beats.load(Ordering::SeqCst) > 0, "the coordinator never sent a heartbeat");
        assert_eq!(beats_before_a_view.load(Ordering::SeqCst), 0, "a heartbeat went out before any cluster view");
    }
}
