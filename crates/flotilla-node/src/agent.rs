//! The heartbeat loop every node runs: about once a second (and soon after a coordinator's
//! query changes state) it sends its announcement, its load and, for coordinators, a delta
//! of its queries to every resource manager it knows.
//!
//! The resource managers it knows are the `discovery.uri` seeds plus the live list the
//! answers carry. A seed that answers as a resource manager already reached through the
//! learned list (a load balancer in front of them, or the same host under another name) is
//! skipped, and probed again every [`SEED_REPROBE_ROUNDS`] rounds; a seed that is down
//! keeps being tried, so a resource manager restarted with no peers of its own is found
//! again by the nodes configured with it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_proto::cluster::{
    CoordinatorReport, Heartbeat, HeartbeatAck, MemoryKill, NodeAnnouncement, ReportedState, WorkerLoad, HEARTBEAT_PATH,
};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http_client::InternalClient;
use crate::node::LocalNode;

/// How often a seed found redundant is heartbeated anyway, in rounds.
pub const SEED_REPROBE_ROUNDS: u64 = 10;

/// The shortest gap between two heartbeats when woken early.
const MIN_GAP: Duration = Duration::from_millis(100);

/// What a node reports in its heartbeats besides who it is and its state (which come
/// from its [`LocalNode`]). `()` reports nothing more (a resource manager).
pub trait HeartbeatSource: Send + Sync + 'static {
    fn worker_load(&self) -> Option<WorkerLoad> {
        None
    }

    /// A coordinator's reports for one round: for each base version (what one resource
    /// manager acknowledged; 0 asks for everything), the queries changed since. Called once
    /// per round, so the coordinator looks at its queries once however many resource
    /// managers there are. `None` for nodes that are not coordinators.
    fn coordinator_reports(&self, _base_versions: &[u64]) -> Option<Vec<CoordinatorReport>> {
        None
    }

    /// Queries the cluster's low-memory killer killed, as a resource manager's answer
    /// listed them (repeated until their memory is released).
    fn memory_kills(&self, _kills: &[MemoryKill]) {}
}

#[derive(Debug, Default)]
struct Targets {
    learned: BTreeSet<String>,
    /// The coordinator report version each resource manager acknowledged.
    acknowledged: HashMap<String, u64>,
    /// Which resource manager (node id) answered at each address in the last round.
    answered_as: HashMap<String, String>,
}

/// A node's heartbeat loop.
pub struct Heartbeater {
    local: Arc<LocalNode>,
    announcement: NodeAnnouncement,
    seeds: Vec<String>,
    client: InternalClient,
    source: Arc<dyn HeartbeatSource>,
    interval: Duration,
    wake: Arc<Notify>,
    seq: std::sync::atomic::AtomicU64,
    targets: Mutex<Targets>,
}

impl HeartbeatSource for () {}

impl std::fmt::Debug for Heartbeater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeater").field("node", &self.announcement.node_id).field("seeds", &self.seeds).finish()
    }
}

impl Heartbeater {
    pub fn new(
        local: Arc<LocalNode>,
        seeds: Vec<String>,
        client: InternalClient,
        source: Arc<dyn HeartbeatSource>,
        interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            announcement: local.announcement(),
            local,
            seeds,
            client,
            source,
            interval,
            wake: Arc::new(Notify::new()),
            seq: std::sync::atomic::AtomicU64::new(0),
            targets: Mutex::new(Targets::default()),
        })
    }

    /// Notified to send the next heartbeat soon (a query changed state).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The resource managers heartbeats go to now.
    pub fn targets(&self) -> Vec<String> {
        let round = self.seq.load(std::sync::atomic::Ordering::Relaxed);
        let targets = self.targets.lock();
        let reached_through_learned: BTreeSet<&String> =
            targets.learned.iter().filter_map(|uri| targets.answered_as.get(uri)).collect();
        let mut all: BTreeSet<String> = targets.learned.clone();
        for seed in &self.seeds {
            let redundant = targets
                .answered_as
                .get(seed)
                .is_some_and(|id| reached_through_learned.contains(id) && !targets.learned.contains(seed));
            if !redundant || round % SEED_REPROBE_ROUNDS == 0 {
                all.insert(seed.clone());
            }
        }
        all.into_iter().collect()
    }

    /// Sends one round of heartbeats with the node's current state; returns how many
    /// resource managers answered.
    pub async fn beat_once(&self) -> usize {
        self.beat(self.local.reported_state()).await
    }

    async fn beat(&self, state: ReportedState) -> usize {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let worker = self.source.worker_load();
        let targets = self.targets();
        let bases: Vec<u64> = {
            let known = self.targets.lock();
            targets.iter().map(|t| known.acknowledged.get(t).copied().unwrap_or(0)).collect()
        };
        let mut reports = self.source.coordinator_reports(&bases).map(Vec::into_iter);
        let sends = targets.iter().map(|target| {
            let heartbeat = Heartbeat {
                node: self.announcement.clone(),
                seq,
                state,
                worker: worker.clone(),
                coordinator: reports.as_mut().and_then(Iterator::next),
            };
            async move {
                let result: Result<HeartbeatAck, flotilla_proto::CallError> =
                    self.client.post(target, HEARTBEAT_PATH, &heartbeat).await;
                (target.clone(), result)
            }
        });
        let results = futures::future::join_all(sends).await;
        let mut answered = 0;
        let mut learned = BTreeSet::new();
        let mut targets = self.targets.lock();
        for (target, result) in results {
            match result {
                Ok(ack) => {
                    answered += 1;
                    if !ack.memory_kills.is_empty() {
                        self.source.memory_kills(&ack.memory_kills);
                    }
                    learned.extend(ack.resource_managers.iter().cloned());
                    targets.answered_as.insert(target.clone(), ack.resource_manager.clone());
                    targets.acknowledged.insert(target, ack.acknowledged_version.unwrap_or(0));
                }
                Err(error) => {
                    tracing::debug!(resource_manager = %target, %error, "heartbeat failed");
                    // Whatever it acknowledged may be lost with it: start over when it is back.
                    targets.acknowledged.remove(&target);
                    targets.answered_as.remove(&target);
                }
            }
        }
        if answered > 0 && !learned.is_empty() {
            targets.learned = learned;
        }
        answered
    }

    /// Heartbeats until `shutdown`, then sends a last one saying the node is shutting down.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let agent = self.clone();
        tokio::spawn(async move {
            let mut last_warning: Option<Instant> = None;
            loop {
                let started = Instant::now();
                let answered = agent.beat_once().await;
                if answered == 0 && last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(targets = ?agent.targets(), "no resource manager answered the heartbeat");
                    last_warning = Some(Instant::now());
                }
                let next = started + agent.interval;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(next.into()) => {}
                    _ = agent.wake.notified() => {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep_until((started + MIN_GAP).into()) => {}
                        }
                    }
                }
            }
            agent.beat(ReportedState::ShuttingDown).await;
        })
    }
}
