//! The worker role: executes plan fragments with DataFusion, serves their output over Arrow
//! Flight, and heartbeats its load and labels to the resource managers.
//!
//! ```text
//!   coordinator ──plan (gRPC, authenticated)──▶ DataPlane: datafusion-distributed Worker
//!   other workers ◀──Arrow Flight batches──────┘      │ one memory pool, TaskTracker
//!   WorkerLoadSource ── pool, CPU, tasks, memory per query ──▶ Heartbeater ──▶ resource managers
//!   HTTP: /v1/info, /v1/info/state, /v1/status
//! ```
//!
//! The data plane ([`DataPlane`]) is `datafusion-distributed`'s worker service behind our
//! internal authentication ([`flight`]); a coordinator with
//! `node-scheduler.include-coordinator=true` runs the same data plane in its own process.
//!
//! ## Why `datafusion-distributed`
//!
//! Distributed execution is built on `datafusion-distributed` 4.0 (datafusion-contrib), not
//! on a stage scheduler of our own over `datafusion-proto` + `arrow-flight`: it already cuts
//! DataFusion physical plans into stages (shuffle, broadcast, coalesce), encodes them, and
//! streams batches between tasks over Arrow Flight, with the same DataFusion and Arrow
//! versions as ours. What we need from a production engine goes through its extension
//! points, with nothing forked:
//!
//! - **which worker runs each task**: `WorkerResolver` + route-tasks handler, fed from the
//!   cluster view (the coordinator's `scheduler`);
//! - **authentication**: a `ChannelResolver` that signs every call, and a tonic interceptor
//!   on the worker that checks it ([`flight`]);
//! - **timeouts and dead workers**: our channels set connect timeouts and HTTP/2
//!   keep-alives, and name the worker in transport errors;
//! - **cancellation**: dropping a query's stream closes its coordinator channels and task
//!   streams; the worker drops the task (checked by the tests through [`TaskTracker`]);
//! - **per-task metrics**: each task pushes its metrics to the coordinator when it ends,
//!   over the task's coordinator channel (no polling);
//! - **our operators and sources**: a user codec and task-count / scale-up handlers
//!   (`flotilla_sql::distributed`), so the `tpch` catalog splits across tasks.
//!
//! What it lacks: live per-task progress while a task runs (metrics arrive at the end), and
//! retries of failed tasks; a failed worker fails the query.
//!
//! Entry point: [`start`].

mod config;
pub mod execution;
pub mod filters;
pub mod flight;
mod load;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Json;
use datafusion::execution::object_store::ObjectStoreRegistry;
use flotilla_node::{
    counted, heartbeater, info_routes, require_secret, serve_http, LocalNode, NodeAccess, RunningNode,
};
use flotilla_proto::cluster::NodeRole;
use flotilla_proto::{InternalAuth, NodeConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{WorkerConfig, SETTINGS};
pub use execution::{DataPlane, TaskTracker, MAX_MEMORY_PER_NODE_HEADER, QUERY_ID_HEADER};
pub use load::WorkerLoadSource;

/// Starts a worker on `address` (port 0 picks a free one); `object_stores`: where the
/// catalogs' files are (`Catalogs::object_stores`).
pub async fn start(
    node_config: NodeConfig,
    config: WorkerConfig,
    object_stores: Arc<dyn ObjectStoreRegistry>,
    address: SocketAddr,
) -> std::io::Result<RunningNode> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    if node_config.discovery_uris.is_empty() {
        return Err(invalid("a worker needs discovery.uri: the resource managers to join".into()));
    }
    let secret = require_secret(&node_config)?;
    let listener = TcpListener::bind(address).await?;
    let local_address = listener.local_addr()?;
    let node_id = node_config.node_id.clone().unwrap_or_else(|| format!("worker-{}", flotilla_proto::random_hex(6)));
    let auth = Arc::new(InternalAuth::new(secret, &node_id).map_err(invalid)?);
    let shutdown = CancellationToken::new();
    let data_address = SocketAddr::new(address.ip(), config.data_port);
    let (plane, data_server) =
        DataPlane::start(data_address, &config, object_stores, auth.clone(), shutdown.clone()).await?;
    let node_config = NodeConfig { node_id: Some(node_id), ..node_config };
    let local = LocalNode::new(
        &node_config,
        vec![NodeRole::Worker],
        node_config.announced_url(local_address),
        Some(node_config.announced_url(plane.address)),
        None,
        "worker",
    );
    let load = Arc::new(WorkerLoadSource::new(local.clone(), &plane));
    let status_load = load.clone();
    let access = Arc::new(NodeAccess::from_config(auth.clone(), &node_config, false).map_err(invalid)?);
    let router = info_routes(local.clone(), access).route(
        "/v1/status",
        get(move || {
            let load = status_load.clone();
            async move { Json(load.status()) }
        }),
    );
    let router = counted(router, &local);
    load.register_metrics(&local.metrics);
    let server = serve_http(listener, router, shutdown.clone());
    let agent = heartbeater(&local, auth, node_config.discovery_uris.clone(), load, &node_config);
    agent.beat_once().await;
    let beating = agent.spawn(shutdown.clone());
    tracing::info!(
        address = %local_address,
        data = %plane.url,
        node = %local.node_id,
        warehouse = %local.warehouse,
        worker_group = %local.worker_group,
        "worker started"
    );
    let tracker = plane.tracker.clone();
    Ok(RunningNode {
        local,
        address: local_address,
        shutdown,
        tasks: vec![beating, server, data_server],
        in_flight: Some(Arc::new(move || tracker.running_tasks())),
        heartbeat_now: agent.waker(),
        grace_period: node_config.shutdown_grace_period,
        heartbeat_interval: node_config.heartbeat_interval,
    })
}
