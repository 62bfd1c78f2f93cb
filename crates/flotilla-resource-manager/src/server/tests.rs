//! Real resource managers (their peer loop included) over an in-memory network whose links
//! can be cut: a partitioned resource manager converges again once the partition heals.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use flotilla_proto::cluster::{NodeAnnouncement, NodeRole, NodeState, ReportedState};
use flotilla_proto::CallError;

use super::*;
use crate::state::StateConfig;

/// Delivers pushes straight to the target resource manager unless the link is cut.
#[derive(Debug, Default)]
struct Network {
    managers: RwLock<BTreeMap<String, Arc<ResourceManager>>>,
    /// Cut links, both directions: (a, b) with a < b.
    cut: Mutex<HashSet<(String, String)>>,
}

impl Network {
    fn link_cut(&self, a: &str, b: &str) -> bool {
        let key = if a < b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) };
        self.cut.lock().contains(&key)
    }

    fn isolate(&self, node: &str, others: &[&str]) {
        for other in others {
            let key = if node < *other {
                (node.to_string(), other.to_string())
            } else {
                (other.to_string(), node.to_string())
            };
            self.cut.lock().insert(key);
        }
    }

    fn heal(&self) {
        self.cut.lock().clear();
    }
}

#[derive(Debug)]
struct Link {
    network: Arc<Network>,
    from: String,
}

impl PeerTransport for Link {
    fn push<'a>(
        &'a self,
        peer_id: &'a str,
        _peer_uri: &'a str,
        sync: &'a PeerSync,
    ) -> Pin<Box<dyn Future<Output = Result<PeerSyncAck, CallError>> + Send + 'a>> {
        Box::pin(async move {
            let unreachable = |cause: String| CallError::Unreachable { base: peer_id.to_string(), cause };
            if self.network.link_cut(&self.from, peer_id) {
                return Err(unreachable(format!("link {} -> {peer_id} is cut", self.from)));
            }
            let target =
                self.network.managers.read().get(peer_id).cloned().ok_or_else(|| unreachable("no such peer".into()))?;
            Ok(target.handle_peer_sync(sync.clone()))
        })
    }
}

fn announcement(node_id: &str, role: NodeRole) -> NodeAnnouncement {
    crate::state::tests::announcement(node_id, "i1", 1, role)
}

fn states(manager: &ResourceManager) -> BTreeMap<String, NodeState> {
    manager.view().nodes.into_iter().map(|n| (n.node.node_id, n.state)).collect()
}

async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(state) if Instant::now() > deadline => panic!("{what} not reached within {within:?}: {state}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_partitioned_resource_manager_converges_after_the_partition_heals() {
    let network = Arc::new(Network::default());
    let auth = Arc::new(InternalAuth::new("a-test-secret-of-some-length", "rm").unwrap());
    let config = ResourceManagerConfig {
        state: StateConfig { node_timeout: Duration::from_millis(800), ..Default::default() },
        peer_sync_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let names = ["rm-a", "rm-b", "rm-c"];
    for name in names {
        let link = Arc::new(Link { network: network.clone(), from: name.to_string() });
        let manager = ResourceManager::new(name, "i1", "test", config.clone(), auth.clone(), link);
        network.managers.write().insert(name.to_string(), manager);
    }
    let shutdown = CancellationToken::new();
    let loops: Vec<JoinHandle<()>> =
        network.managers.read().values().map(|m| m.spawn_background(shutdown.clone())).collect();

    // Nodes heartbeat every 100 ms: each resource manager itself and its reachable peers;
    // worker i only resource manager i % 3 (as if configured with that one address).
    let workers = Arc::new(Mutex::new(vec!["w0".to_string(), "w1".to_string(), "w2".to_string()]));
    let beating = {
        let network = network.clone();
        let workers = workers.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut seq = 0;
            while !shutdown.is_cancelled() {
                seq += 1;
                let managers = network.managers.read().clone();
                for (from, _) in &managers {
                    for (to, manager) in &managers {
                        if from == to || !network.link_cut(from, to) {
                            let beat = Heartbeat {
                                node: announcement(from, NodeRole::ResourceManager),
                                seq,
                                state: ReportedState::Active,
                                worker: None,
                                coordinator: None,
                            };
                            manager.handle_heartbeat(beat).unwrap();
                        }
                    }
                }
                for (i, worker) in workers.lock().clone().iter().enumerate() {
                    let manager = &managers[names[i % 3]];
                    let beat = Heartbeat {
                        node: announcement(worker, NodeRole::Worker),
                        seq,
                        state: ReportedState::Active,
                        worker: Some(Default::default()),
                        coordinator: None,
                    };
                    manager.handle_heartbeat(beat).unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let managers = network.managers.read().clone();
    let all_active = |nodes: &[&str]| -> BTreeMap<String, NodeState> {
        nodes.iter().map(|n| (n.to_string(), NodeState::Active)).collect()
    };
    let converged = |expected: BTreeMap<String, NodeState>| {
        let managers = managers.clone();
        move || {
            let seen: Vec<_> = managers.values().map(|m| states(m)).collect();
            if seen.iter().all(|s| *s == expected) {
                Ok(())
            } else {
                Err(format!("{seen:#?}"))
            }
        }
    };
    wait_until(
        "first convergence",
        Duration::from_secs(5),
        converged(all_active(&["rm-a", "rm-b", "rm-c", "w0", "w1", "w2"])),
    )
    .await;

    // Cut rm-a off from its peers. Meanwhile one worker joins through rm-a (w3) and one
    // through rm-b (w4).
    network.isolate("rm-a", &["rm-b", "rm-c"]);
    workers.lock().extend(["w3".to_string(), "w4".to_string()]);
    let rm_b = managers["rm-b"].clone();
    wait_until("rm-b marks rm-a and its worker dead", Duration::from_secs(5), || {
        let seen = states(&rm_b);
        let ok = seen.get("rm-a") == Some(&NodeState::Dead)
            && seen.get("w0") == Some(&NodeState::Dead)
            && seen.get("w4") == Some(&NodeState::Active);
        if ok {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    let rm_a = managers["rm-a"].clone();
    assert_eq!(states(&rm_a).get("w4"), None, "nothing crosses the partition");
    assert_eq!(states(&rm_b).get("w3"), None, "nothing crosses the partition");

    // Healed: every resource manager holds every node as active again.
    network.heal();
    wait_until(
        "convergence after the partition",
        Duration::from_secs(5),
        converged(all_active(&["rm-a", "rm-b", "rm-c", "w0", "w1", "w2", "w3", "w4"])),
    )
    .await;

    shutdown.cancel();
    let _ = beating.await;
    for task in loops {
        let _ = task.await;
    }
}

/// The serialized view is reused for a moment, but never past a node joining or changing
/// state: a coordinator fetches the view right after joining and schedules on it.
#[tokio::test]
async fn a_node_that_joins_is_in_the_next_view_at_once() {
    let network = Arc::new(Network::default());
    let auth = Arc::new(InternalAuth::new("a-test-secret-of-some-length", "rm").unwrap());
    let link = Arc::new(Link { network, from: "rm".to_string() });
    let manager = ResourceManager::new("rm", "i1", "test", ResourceManagerConfig::default(), auth, link);
    let served = |manager: &ResourceManager| -> BTreeMap<String, NodeState> {
        let view: ClusterView = serde_json::from_slice(&manager.serialized_view().unwrap()).unwrap();
        view.nodes.into_iter().map(|n| (n.node.node_id, n.state)).collect()
    };
    let beat = |node: &NodeAnnouncement, seq: u64, state: ReportedState| Heartbeat {
        node: node.clone(),
        seq,
        state,
        worker: None,
        coordinator: None,
    };
    assert!(served(&manager).is_empty());
    let worker = announcement("worker-1", NodeRole::Worker);
    manager.handle_heartbeat(beat(&worker, 1, ReportedState::Active)).unwrap();
    assert_eq!(served(&manager).get("worker-1"), Some(&NodeState::Active), "a joined node in the next view");
    // A heartbeat that changes only load may be served a moment later; a new state at once.
    manager.handle_heartbeat(beat(&worker, 2, ReportedState::Active)).unwrap();
    manager.handle_heartbeat(beat(&worker, 3, ReportedState::ShuttingDown)).unwrap();
    assert_eq!(served(&manager).get("worker-1"), Some(&NodeState::ShuttingDown));
}
