//! How a coordinator reads the cluster view: fetched about once a second from one healthy
//! resource manager (the last one that answered first, then the others in turn), cached,
//! and kept when none answers, with its age, so nothing waits on a resource manager.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_proto::cluster::{ClusterView, NodeRole, NodeView, CLUSTER_VIEW_PATH};
use flotilla_proto::CallError;
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http_client::InternalClient;

/// A view and when it was fetched.
#[derive(Debug, Clone)]
pub struct ViewSnapshot {
    pub view: Arc<ClusterView>,
    pub fetched: Instant,
}

impl ViewSnapshot {
    /// How old the view is: time since it was fetched.
    pub fn age(&self) -> Duration {
        self.fetched.elapsed()
    }

    /// When `node`'s last heartbeat in this view was sent, by this process's clock (the
    /// view carries ages, not times, so no two clocks need to agree).
    pub fn reported_at(&self, node: &NodeView) -> Option<Instant> {
        self.fetched.checked_sub(Duration::from_millis(node.last_heartbeat_age_ms))
    }
}

/// The coordinator's cached cluster view.
#[derive(Debug)]
pub struct ClusterViewClient {
    seeds: Vec<String>,
    client: InternalClient,
    interval: Duration,
    current: RwLock<Option<ViewSnapshot>>,
    /// The resource manager that answered last; asked first next time.
    preferred: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
}

impl ClusterViewClient {
    pub fn new(seeds: Vec<String>, client: InternalClient, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            seeds,
            client,
            interval,
            current: RwLock::new(None),
            preferred: Mutex::new(None),
            last_error: Mutex::new(None),
        })
    }

    /// The last good view, if one was ever fetched.
    pub fn snapshot(&self) -> Option<ViewSnapshot> {
        self.current.read().clone()
    }

    /// The live resource managers (node id, HTTP URI) in the order to ask them: by node id,
    /// so the admission leader (the live one with the smallest) comes first.
    pub fn resource_managers(&self) -> Vec<(String, String)> {
        let Some(snapshot) = self.snapshot() else { return Vec::new() };
        let mut managers: Vec<(String, String)> = snapshot
            .view
            .live_with_role(NodeRole::ResourceManager)
            .map(|n| (n.node.node_id.clone(), n.node.http_uri.clone()))
            .collect();
        managers.sort();
        managers
    }

    /// Why the last refresh failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// The order to ask resource managers in: the last one that answered, then those
    /// the last view lists as live, then the seeds.
    fn candidates(&self) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let preferred = self.preferred.lock().clone();
        let from_view: Vec<String> = self
            .snapshot()
            .map(|s| s.view.live_with_role(NodeRole::ResourceManager).map(|n| n.node.http_uri.clone()).collect())
            .unwrap_or_default();
        for uri in preferred.into_iter().chain(from_view).chain(self.seeds.iter().cloned()) {
            if seen.insert(uri.clone()) {
                order.push(uri);
            }
        }
        order
    }

    /// Fetches a fresh view, failing over through the resource managers.
    pub async fn refresh(&self) -> Result<(), CallError> {
        let mut errors = Vec::new();
        for uri in self.candidates() {
            match self.client.get::<ClusterView>(&uri, CLUSTER_VIEW_PATH).await {
                Ok(view) => {
                    *self.current.write() = Some(ViewSnapshot { view: Arc::new(view), fetched: Instant::now() });
                    *self.preferred.lock() = Some(uri);
                    *self.last_error.lock() = None;
                    return Ok(());
                }
                Err(error) => errors.push(error),
            }
        }
        let error = CallError::all_failed(errors, "no resource manager is known");
        *self.last_error.lock() = Some(error.to_string());
        Err(error)
    }

    /// Refreshes until `shutdown`.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let client = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(client.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned_at: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Err(error) = client.refresh().await {
                    if warned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                        let age = client.snapshot().map(|s| s.age());
                        tracing::warn!(%error, ?age, "no resource manager answered; serving the last good cluster view");
                        warned_at = Some(Instant::now());
                    }
                }
            }
        })
    }
}
