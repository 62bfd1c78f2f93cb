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

    /// Fetches a fresh view, failing over through the resource managers. A view that is
    /// not complete (its resource manager has just started and may lack nodes) is taken
    /// only when no resource manager has a complete one (then the one listing most nodes).
    pub async fn refresh(&self) -> Result<(), CallError> {
        let mut errors = Vec::new();
        let mut partial = None;
        for uri in self.candidates() {
            match self.client.get::<ClusterView>(&uri, CLUSTER_VIEW_PATH).await {
                Ok(view) if view.complete => {
                    self.take(view, uri);
                    return Ok(());
                }
                // Of partial views, the one that knows the most nodes.
                Ok(view) => {
                    if partial
                        .as_ref()
                        .is_none_or(|(known, _): &(ClusterView, String)| view.nodes.len() > known.nodes.len())
                    {
                        partial = Some((view, uri));
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        if let Some((view, uri)) = partial {
            self.take(view, uri);
            return Ok(());
        }
        let error = CallError::all_failed(errors, "no resource manager is known");
        *self.last_error.lock() = Some(error.to_string());
        Err(error)
    }

    fn take(&self, view: ClusterView, uri: String) {
        *self.current.write() = Some(ViewSnapshot { view: Arc::new(view), fetched: Instant::now() });
        *self.preferred.lock() = Some(uri);
        *self.last_error.lock() = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::InternalAuth;

    /// A resource manager stand-in on loopback serving `body` as its view.
    async fn serving(body: serde_json::Value) -> (String, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app =
            axum::Router::new().route(CLUSTER_VIEW_PATH, axum::routing::get(move || async move { axum::Json(body) }));
        (url, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
    }

    fn view(resource_manager: &str, complete: Option<bool>) -> serde_json::Value {
        view_of(resource_manager, complete, 0)
    }

    /// A view listing `nodes` workers.
    fn view_of(resource_manager: &str, complete: Option<bool>, nodes: usize) -> serde_json::Value {
        use flotilla_proto::cluster::{NodeAnnouncement, NodeState};
        let nodes: Vec<NodeView> = (0..nodes)
            .map(|i| NodeView {
                node: NodeAnnouncement {
                    node_id: format!("worker-{i}"),
                    instance: "i".into(),
                    start_time_ms: 0,
                    roles: vec![NodeRole::Worker],
                    http_uri: format!("http://worker-{i}"),
                    data_uri: None,
                    coordinator_id: None,
                    version: "test".into(),
                    environment: "test".into(),
                    warehouse: "default".into(),
                    worker_group: "default".into(),
                },
                state: NodeState::Active,
                last_heartbeat_age_ms: 0,
                seq: 1,
                worker: None,
            })
            .collect();
        let mut view = serde_json::json!({
            "resourceManager": resource_manager, "instance": "i", "generatedAtMs": 0, "nodes": nodes,
            "queries": [], "resourceGroups": [],
            "memory": {"poolBytes": 0, "reservedBytes": 0, "freeBytes": 0},
        });
        if let Some(complete) = complete {
            view["complete"] = complete.into();
        }
        view
    }

    fn client(seeds: Vec<String>) -> Arc<ClusterViewClient> {
        let auth = Arc::new(InternalAuth::new("a-test-secret-long-enough", "test").unwrap());
        ClusterViewClient::new(seeds, InternalClient::new(auth, Duration::from_secs(2)), Duration::from_secs(1))
    }

    fn answered(client: &ClusterViewClient) -> String {
        client.snapshot().expect("a view").view.resource_manager.clone()
    }

    #[tokio::test]
    async fn a_complete_view_is_taken_over_one_from_a_resource_manager_that_just_started() {
        let (young, young_server) = serving(view("young", Some(false))).await;
        let (settled, settled_server) = serving(view("settled", Some(true))).await;
        let (unsaid, unsaid_server) = serving(view("unsaid", None)).await;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);

        // Asked first, the young one's view is passed over for a complete one.
        let both = client(vec![young.clone(), settled.clone()]);
        both.refresh().await.unwrap();
        assert_eq!(answered(&both), "settled");
        both.refresh().await.unwrap();
        assert_eq!(answered(&both), "settled", "the one that answered is asked first next time");
        // A view that does not say is complete (resource managers that never said).
        let old = client(vec![young.clone(), unsaid]);
        old.refresh().await.unwrap();
        assert_eq!(answered(&old), "unsaid");
        // When no resource manager has a complete view, the partial one is better than none.
        let alone = client(vec![down, young.clone()]);
        alone.refresh().await.unwrap();
        assert_eq!(answered(&alone), "young");
        assert!(!alone.snapshot().unwrap().view.complete);
        // Of several partial views, the one listing the most nodes.
        let (knowing, knowing_server) = serving(view_of("knowing", Some(false), 2)).await;
        let starting = client(vec![young, knowing]);
        starting.refresh().await.unwrap();
        assert_eq!(answered(&starting), "knowing");
        for server in [young_server, settled_server, unsaid_server, knowing_server] {
            server.abort();
        }
    }
}
