//! The worker role: joins the cluster and reports its load; executes plan fragments and
//! exchanges data over Arrow Flight once distributed execution lands (its own issue).
//!
//! ```text
//!   WorkerLoadSource ── memory pool, CPU, running tasks ──▶ Heartbeater ──▶ resource managers
//!   HTTP: /v1/info, /v1/info/state, /v1/status
//! ```
//!
//! Today a worker is a member of the cluster that the resource managers track and
//! coordinators list (`/v1/node`, `system.runtime.nodes`), with its warehouse and worker
//! group labels; no task is placed on it yet, so its task count and reservations are zero.
//!
//! Entry point: [`start`].

mod config;
mod load;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Json;
use flotilla_proto::cluster::NodeRole;
use flotilla_proto::{InternalAuth, NodeConfig};
use flotilla_resource_manager::{heartbeater, info_routes, require_secret, serve_http, LocalNode, RunningNode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{WorkerConfig, SETTINGS};
pub use load::WorkerLoadSource;

/// Starts a worker on `address` (port 0 picks a free one).
pub async fn start(node_config: NodeConfig, config: WorkerConfig, address: SocketAddr) -> std::io::Result<RunningNode> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    if node_config.discovery_uris.is_empty() {
        return Err(invalid("a worker needs discovery.uri: the resource managers to join".into()));
    }
    let secret = require_secret(&node_config)?;
    let listener = TcpListener::bind(address).await?;
    let local_address = listener.local_addr()?;
    let local = LocalNode::new(&node_config, vec![NodeRole::Worker], format!("http://{local_address}"), "worker");
    let auth = Arc::new(InternalAuth::new(secret, &local.node_id).map_err(invalid)?);
    let load = Arc::new(WorkerLoadSource::new(local.clone(), config.memory_pool_bytes()));
    let status_load = load.clone();
    let router = info_routes(local.clone()).route(
        "/v1/status",
        get(move || {
            let load = status_load.clone();
            async move { Json(load.status()) }
        }),
    );
    let shutdown = CancellationToken::new();
    let server = serve_http(listener, router, shutdown.clone());
    let agent = heartbeater(&local, auth, node_config.discovery_uris.clone(), load, &node_config);
    agent.beat_once().await;
    let beating = agent.spawn(shutdown.clone());
    tracing::info!(
        address = %local_address,
        node = %local.node_id,
        warehouse = %local.warehouse,
        worker_group = %local.worker_group,
        "worker started"
    );
    Ok(RunningNode { local, address: local_address, shutdown, tasks: vec![beating, server] })
}
