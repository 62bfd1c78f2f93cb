//! Starting the resource manager role (on the runtime every node shares, `flotilla-node`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Json;
use flotilla_proto::cluster::NodeRole;
use flotilla_proto::{InternalAuth, NodeConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use flotilla_node::{
    counted, heartbeater, info_routes, require_secret, serve_http, LocalNode, NodeAccess, RunningNode,
};

use crate::config::ResourceManagerConfig;
use crate::server::ResourceManager;

/// Runs the resource manager role on `address`.
pub async fn start_resource_manager(
    node_config: NodeConfig,
    config: ResourceManagerConfig,
    address: SocketAddr,
) -> std::io::Result<RunningNode> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    config.validate(node_config.heartbeat_interval).map_err(|e| invalid(e.to_string()))?;
    let secret = require_secret(&node_config)?;
    let listener = TcpListener::bind(address).await?;
    let local_address = listener.local_addr()?;
    let url = node_config.announced_url(local_address);
    let local =
        LocalNode::new(&node_config, vec![NodeRole::ResourceManager], url.clone(), None, None, "resource-manager");
    let auth = Arc::new(InternalAuth::new(secret, &local.node_id).map_err(invalid)?);
    let access = Arc::new(NodeAccess::from_config(auth.clone(), &node_config, false).map_err(invalid)?);
    let manager = ResourceManager::for_node(&local, config, auth.clone());
    let status_node = local.clone();
    let router = manager
        .router()
        .merge(info_routes(local.clone(), access))
        .route("/v1/status", get(move || async move { Json(status_node.status()) }));
    let router = counted(router, &local);
    manager.register_metrics(&local.metrics);
    let shutdown = CancellationToken::new();
    let server = serve_http(listener, router, shutdown.clone());
    let background = manager.spawn_background(shutdown.clone());
    // A resource manager announces itself like any node: to its peers, and to itself.
    let mut seeds = node_config.discovery_uris.clone();
    seeds.push(url);
    let agent = heartbeater(&local, auth, seeds, Arc::new(()), &node_config);
    agent.beat_once().await;
    let beating = agent.spawn(shutdown.clone());
    tracing::info!(address = %local_address, node = %local.node_id, "resource manager started");
    Ok(RunningNode {
        local,
        address: local_address,
        shutdown,
        tasks: vec![beating, background, server],
        // A resource manager holds no work to finish: it stops at once.
        in_flight: None,
        heartbeat_now: agent.waker(),
        grace_period: node_config.shutdown_grace_period,
        heartbeat_interval: node_config.heartbeat_interval,
    })
}
