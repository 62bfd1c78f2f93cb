//! Starting a node: the parts every role shares (listener, HTTP server, identity, internal
//! auth, heartbeat loop) and the resource manager role itself.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Json;
use flotilla_proto::cluster::NodeRole;
use flotilla_proto::{InternalAuth, NodeConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::{HeartbeatSource, Heartbeater};
use crate::config::ResourceManagerConfig;
use crate::http_client::InternalClient;
use crate::http_server::serve_http;
use crate::node::{info_routes, LocalNode, NodeAccess};
use crate::server::{ResourceManager, INTERNAL_CALL_TIMEOUT};

/// A started node; [`RunningNode::shutdown`] stops everything it started.
#[derive(Debug)]
pub struct RunningNode {
    pub local: Arc<LocalNode>,
    pub address: SocketAddr,
    pub shutdown: CancellationToken,
    pub tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Says goodbye to the resource managers and waits for every task to stop.
    pub async fn shutdown(self) {
        self.local.begin_shutdown();
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The shared secret, or why a cluster node cannot run without one.
pub fn require_secret(config: &NodeConfig) -> std::io::Result<&str> {
    config.shared_secret.as_deref().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "internal-communication.shared-secret must be set: every internal call is authenticated with it",
        )
    })
}

/// Builds the signed client and heartbeat loop of a node.
pub fn heartbeater(
    local: &Arc<LocalNode>,
    auth: Arc<InternalAuth>,
    seeds: Vec<String>,
    source: Arc<dyn HeartbeatSource>,
    config: &NodeConfig,
) -> Arc<Heartbeater> {
    // A heartbeat that takes longer than the interval is late anyway, and a resource manager
    // that does not answer must not hold up the next round to the others.
    let timeout = config.heartbeat_interval.clamp(std::time::Duration::from_millis(200), INTERNAL_CALL_TIMEOUT);
    let client = InternalClient::new(auth, timeout);
    Heartbeater::new(local.clone(), seeds, client, source, config.heartbeat_interval)
}

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
    let url = format!("http://{local_address}");
    let local =
        LocalNode::new(&node_config, vec![NodeRole::ResourceManager], url.clone(), None, None, "resource-manager");
    let auth = Arc::new(InternalAuth::new(secret, &local.node_id).map_err(invalid)?);
    let manager = ResourceManager::for_node(&local, config, auth.clone());
    let status_node = local.clone();
    let router = manager
        .router()
        .merge(info_routes(local.clone(), Arc::new(NodeAccess::new(auth.clone(), node_config.admin_users.clone()))))
        .route("/v1/status", get(move || async move { Json(status_node.status()) }));
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
    Ok(RunningNode { local, address: local_address, shutdown, tasks: vec![beating, background, server] })
}
