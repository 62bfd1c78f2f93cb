//! A started node, and the parts of starting one that every role shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::{InternalAuth, NodeConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::{HeartbeatSource, Heartbeater};
use crate::http_client::InternalClient;
use crate::node::LocalNode;

/// How long internal calls may take before they count as failed.
pub const INTERNAL_CALL_TIMEOUT: Duration = Duration::from_secs(2);

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
