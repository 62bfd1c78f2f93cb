//! A started node, and the parts of starting one that every role shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::{InternalAuth, NodeConfig};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::{HeartbeatSource, Heartbeater};
use crate::http_client::InternalClient;
use crate::node::LocalNode;

/// How long internal calls may take before they count as failed.
pub const INTERNAL_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The work a node has in hand that a drain waits for (a worker's running tasks).
pub type InFlight = Arc<dyn Fn() -> usize + Send + Sync>;

/// A started node; [`RunningNode::shutdown`] stops everything it started,
/// [`RunningNode::drain`] lets its work in hand finish first.
pub struct RunningNode {
    pub local: Arc<LocalNode>,
    pub address: SocketAddr,
    pub shutdown: CancellationToken,
    pub tasks: Vec<JoinHandle<()>>,
    /// What a drain waits for; `None`: nothing (the node stops at once).
    pub in_flight: Option<InFlight>,
    /// Sends a heartbeat at once, so the cluster sees the node's state change.
    pub heartbeat_now: Arc<Notify>,
    /// `shutdown.grace-period` and `discovery.heartbeat-interval`.
    pub grace_period: Duration,
    pub heartbeat_interval: Duration,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode").field("node", &self.local.node_id).field("address", &self.address).finish()
    }
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

    /// A graceful stop (SIGTERM, `PUT /v1/info/state` `"SHUTTING_DOWN"`), as Trino's
    /// workers do it: the node reports `SHUTTING_DOWN` at once (an immediate heartbeat), so
    /// coordinators place nothing new here; it keeps serving while they may not have seen
    /// that yet ([`notice_period`]: work placed meanwhile is waited for too), then until its
    /// work in hand is done, for at most `shutdown.grace-period` in all, then shuts down.
    pub async fn drain(self) {
        let Some(in_flight) = self.in_flight.clone() else { return self.shutdown().await };
        self.local.begin_shutdown();
        self.heartbeat_now.notify_one();
        let started = tokio::time::Instant::now();
        let notice = notice_period(self.heartbeat_interval).min(self.grace_period);
        loop {
            let busy = in_flight();
            let elapsed = started.elapsed();
            if busy == 0 && elapsed >= notice {
                break;
            }
            if elapsed >= self.grace_period {
                tracing::warn!(busy, grace = ?self.grace_period, "grace period over; stopping with work in hand");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(took = ?started.elapsed(), "drained");
        self.shutdown().await;
    }
}

/// How long after a node reports `SHUTTING_DOWN` coordinators may still place work on it:
/// its heartbeat reaches the resource managers at once, a coordinator's view is refreshed
/// about once a heartbeat interval, and a query planned just before may still start its
/// tasks; three intervals and a second cover that.
fn notice_period(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval * 3 + Duration::from_secs(1)
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
