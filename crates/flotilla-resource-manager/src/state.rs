//! The soft state one resource manager holds: node records, query summaries, what each
//! coordinator's delta reports have reached, and what each peer has acknowledged.
//!
//! It is a plain data structure driven with explicit times, so the merge rules can be
//! tested (and simulated over a lossy network) without sockets or clocks. Merge rules:
//! - a node record is replaced by a later incarnation, updated by a higher sequence number
//!   of the same incarnation, and otherwise left alone (duplicates and reordering are
//!   harmless);
//! - a query summary is updated only by a higher version;
//! - every change gets a local version number, and a peer is sent the records whose local
//!   version is above what it acknowledged, so a push that is lost is repeated and a peer
//!   cut off for a while receives everything it missed once the link heals.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flotilla_proto::cluster::{
    ClusterView, CoordinatorReport, Heartbeat, MemoryTotals, NodeRecord, NodeRole, NodeState, NodeView, PeerSync,
    PeerSyncAck, QuerySummary, ReportedState, ResourceGroupUsage, SyncedNode, WorkerLoad,
};

/// Timeouts and bounds of the state.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// No heartbeat for this long: the node is dead.
    pub node_timeout: Duration,
    /// No heartbeat for this long: the node's record is dropped.
    pub node_expiry: Duration,
    /// Finished queries kept for the view.
    pub query_history: usize,
    /// Most records in one peer push; the rest go in the next ones.
    pub max_sync_records: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_secs(5),
            node_expiry: Duration::from_secs(600),
            query_history: 1000,
            max_sync_records: 20_000,
        }
    }
}

#[derive(Debug)]
struct NodeEntry {
    record: NodeRecord,
    last_heard: Instant,
    local_version: u64,
}

#[derive(Debug)]
struct QueryEntry {
    summary: QuerySummary,
    local_version: u64,
}

/// What a coordinator's delta reports have brought here.
#[derive(Debug)]
struct ReportCursor {
    instance: String,
    applied_version: u64,
}

/// What a peer has acknowledged.
#[derive(Debug, Clone)]
struct PeerCursor {
    instance: String,
    version: u64,
}

/// Another live resource manager.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node_id: String,
    /// Its process (a restarted peer is sent everything).
    pub instance: String,
    pub uri: String,
}

/// Why a heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("node {node} is in environment '{theirs}', this cluster is '{ours}'")]
    WrongEnvironment { node: String, theirs: String, ours: String },
}

/// The outcome of merging a node record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// Not known before, or a new incarnation.
    Replaced,
    /// A newer heartbeat of the known incarnation.
    Advanced,
    /// Older or the same as what is known.
    Stale,
}

/// One resource manager's view of the cluster.
#[derive(Debug)]
pub struct ClusterState {
    node_id: String,
    instance: String,
    environment: String,
    config: StateConfig,
    version: u64,
    nodes: HashMap<String, NodeEntry>,
    queries: HashMap<String, QueryEntry>,
    reports: HashMap<String, ReportCursor>,
    peers: HashMap<String, PeerCursor>,
    /// The loans a peer that leads admission sent last: (its id, the loans, when).
    leader_loans: Option<(String, Vec<flotilla_proto::warehouses::Loan>, Instant)>,
    /// When this state began (the resource manager started).
    started: Instant,
    /// A peer that knew every live node has sent all it knows.
    synced: bool,
    /// Counts changes of who is in the cluster and in what state (a node joined, restarted,
    /// or reported another state): a view built before such a change is not served again.
    membership: u64,
}

/// How long a leader's loans are served after its last push.
const LEADER_LOANS_EXPIRY: Duration = Duration::from_secs(5);

impl ClusterState {
    pub fn new(node_id: &str, instance: &str, environment: &str, config: StateConfig) -> Self {
        Self {
            node_id: node_id.to_string(),
            instance: instance.to_string(),
            environment: environment.to_string(),
            config,
            version: 0,
            nodes: HashMap::new(),
            queries: HashMap::new(),
            reports: HashMap::new(),
            peers: HashMap::new(),
            leader_loans: None,
            started: Instant::now(),
            synced: false,
            membership: 0,
        }
    }

    /// Changes so far of the cluster's members and their states (see the field).
    pub fn membership(&self) -> u64 {
        self.membership
    }

    /// Whether this resource manager knows every live node: every live node heartbeats it
    /// within `node_timeout` of its start (else the node is dead anyway), and a complete
    /// push from a peer brings them all sooner.
    pub fn is_complete(&self, now: Instant) -> bool {
        self.synced || now.saturating_duration_since(self.started) >= self.config.node_timeout
    }

    /// The loans the admission leader (a peer) sent, while it leads and recently sent them.
    pub fn leader_loans(&self, now: Instant) -> Vec<flotilla_proto::warehouses::Loan> {
        let Some((from, loans, at)) = &self.leader_loans else { return Vec::new() };
        let leads = self.admission_leader(now).is_some_and(|(leader, _)| &leader == from);
        match leads && now.duration_since(*at) < LEADER_LOANS_EXPIRY {
            true => loans.clone(),
            false => Vec::new(),
        }
    }

    /// Queued queries per warehouse, from the live coordinators' reports.
    pub fn queued_by_warehouse(&self) -> std::collections::BTreeMap<String, u32> {
        let mut queued = std::collections::BTreeMap::new();
        for entry in self.queries.values().filter(|q| q.summary.progress.state == "QUEUED") {
            *queued.entry(entry.summary.identity.warehouse.clone()).or_insert(0) += 1;
        }
        queued
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn merge_node(&mut self, record: NodeRecord, heard_at: Instant) -> Merge {
        let outcome = match self.nodes.get(&record.node.node_id) {
            None => Merge::Replaced,
            Some(existing) => match record.node.incarnation_cmp(&existing.record.node) {
                std::cmp::Ordering::Greater => Merge::Replaced,
                std::cmp::Ordering::Less => Merge::Stale,
                std::cmp::Ordering::Equal if record.seq > existing.record.seq => Merge::Advanced,
                std::cmp::Ordering::Equal => Merge::Stale,
            },
        };
        let node_id = record.node.node_id.clone();
        match outcome {
            Merge::Stale => {
                // The same heartbeat relayed by a peer may still say the node was heard
                // more recently than we knew.
                if let Some(existing) = self.nodes.get_mut(&node_id) {
                    if existing.record.node.instance == record.node.instance && heard_at > existing.last_heard {
                        existing.last_heard = heard_at;
                    }
                }
            }
            Merge::Replaced => {
                self.membership += 1;
                if self.nodes.contains_key(&node_id) {
                    // A restarted coordinator's unfinished queries died with its old life.
                    self.forget_active_queries_of(&node_id);
                    self.reports.remove(&node_id);
                }
                let local_version = self.bump();
                self.nodes.insert(node_id, NodeEntry { record, last_heard: heard_at, local_version });
            }
            Merge::Advanced => {
                let local_version = self.bump();
                if let Some(existing) = self.nodes.get_mut(&node_id) {
                    if existing.record.state != record.state {
                        self.membership += 1;
                    }
                    existing.record = record;
                    existing.last_heard = existing.last_heard.max(heard_at);
                    existing.local_version = local_version;
                }
            }
        }
        outcome
    }

    fn forget_active_queries_of(&mut self, coordinator: &str) {
        self.queries.retain(|_, q| q.summary.coordinator != coordinator || q.summary.progress.is_done());
    }

    fn merge_query(&mut self, summary: QuerySummary) {
        let newer = self
            .queries
            .get(&summary.identity.query_id)
            .is_none_or(|q| (summary.epoch, summary.version) > (q.summary.epoch, q.summary.version));
        if newer {
            let local_version = self.bump();
            self.queries.insert(summary.identity.query_id.clone(), QueryEntry { summary, local_version });
        }
    }

    /// Applies a heartbeat received from the node itself. Returns the coordinator report
    /// version now acknowledged (`None`: send a full report), or `Some(0)` for other nodes.
    pub fn apply_heartbeat(&mut self, heartbeat: Heartbeat, now: Instant) -> Result<Option<u64>, HeartbeatError> {
        if heartbeat.node.environment != self.environment {
            return Err(HeartbeatError::WrongEnvironment {
                node: heartbeat.node.node_id,
                theirs: heartbeat.node.environment,
                ours: self.environment.clone(),
            });
        }
        let node_id = heartbeat.node.node_id.clone();
        let instance = heartbeat.node.instance.clone();
        let report = heartbeat.coordinator;
        let record = NodeRecord {
            node: heartbeat.node,
            seq: heartbeat.seq,
            state: heartbeat.state,
            worker: heartbeat.worker,
            // Coordinators report their groups in every heartbeat; other nodes have none.
            resource_groups: report.as_ref().map(|r| r.resource_groups.clone()).unwrap_or_default(),
        };
        let merge = self.merge_node(record, now);
        let Some(report) = report else {
            return Ok(Some(0));
        };
        let cursor = self
            .reports
            .entry(node_id.clone())
            .or_insert_with(|| ReportCursor { instance: instance.clone(), applied_version: 0 });
        if cursor.instance != instance {
            if merge == Merge::Stale {
                // A report from an older incarnation than the one known: ignore it.
                return Ok(None);
            }
            *cursor = ReportCursor { instance, applied_version: 0 };
        }
        if merge == Merge::Stale {
            return Ok(Some(cursor.applied_version));
        }
        if report.base_version > cursor.applied_version {
            // The delta builds on reports that never arrived here (or were forgotten).
            return Ok(None);
        }
        let applied = cursor.applied_version.max(report.version);
        cursor.applied_version = applied;
        self.apply_report(&node_id, report);
        Ok(Some(applied))
    }

    fn apply_report(&mut self, coordinator: &str, report: CoordinatorReport) {
        for mut summary in report.new_queries {
            summary.coordinator = coordinator.to_string();
            self.merge_query(summary);
        }
        for update in report.updates {
            let Some(entry) = self.queries.get(&update.query_id) else {
                continue;
            };
            // Only the query's current owner moves it on (an adopted query's earlier owner
            // counted its versions on its own).
            if entry.summary.coordinator != coordinator || update.version <= entry.summary.version {
                continue;
            }
            let local_version = self.bump();
            if let Some(entry) = self.queries.get_mut(&update.query_id) {
                entry.summary.progress = update.progress;
                entry.summary.version = update.version;
                entry.local_version = local_version;
            }
        }
    }

    /// Merges records pushed by a peer.
    pub fn apply_peer_sync(&mut self, sync: PeerSync, now: Instant) -> PeerSyncAck {
        if let Some(loans) = sync.loans {
            self.leader_loans = Some((sync.from.clone(), loans, now));
        }
        self.synced |= sync.complete;
        for synced in sync.nodes {
            let age = Duration::from_millis(synced.age_ms);
            if age >= self.config.node_expiry || synced.record.node.environment != self.environment {
                continue;
            }
            let heard_at = now.checked_sub(age).unwrap_or(now);
            self.merge_node(synced.record, heard_at);
        }
        for summary in sync.queries {
            self.merge_query(summary);
        }
        PeerSyncAck { resource_manager: self.node_id.clone(), instance: self.instance.clone() }
    }

    /// The push for a peer: the records changed since it last acknowledged, the local
    /// version to record once it acknowledges, and the version the push starts from.
    /// `None` when there is nothing new.
    pub fn prepare_sync(&self, peer: &str, peer_instance: &str, now: Instant) -> Option<(PeerSync, u64, u64)> {
        let since = match self.peers.get(peer) {
            Some(cursor) if cursor.instance == peer_instance => cursor.version,
            _ => 0,
        };
        if since >= self.version {
            return None;
        }
        // Oldest changes first, so a push cut at the size limit leaves a clean cursor.
        let mut changed: Vec<(u64, Option<&NodeEntry>, Option<&QueryEntry>)> = self
            .nodes
            .values()
            .filter(|n| n.local_version > since)
            .map(|n| (n.local_version, Some(n), None))
            .chain(self.queries.values().filter(|q| q.local_version > since).map(|q| (q.local_version, None, Some(q))))
            .collect();
        changed.sort_by_key(|(version, _, _)| *version);
        let truncated = changed.len() > self.config.max_sync_records;
        changed.truncate(self.config.max_sync_records);
        let upto = if truncated { changed.last().map(|(v, _, _)| *v).unwrap_or(since) } else { self.version };
        let mut sync = PeerSync {
            from: self.node_id.clone(),
            from_instance: self.instance.clone(),
            nodes: vec![],
            queries: vec![],
            loans: None,
            // From the start and whole: the peer then has all this one has.
            complete: since == 0 && !truncated && self.is_complete(now),
        };
        for (_, node, query) in changed {
            if let Some(node) = node {
                let age_ms = now.saturating_duration_since(node.last_heard).as_millis() as u64;
                sync.nodes.push(SyncedNode { record: node.record.clone(), age_ms });
            }
            if let Some(query) = query {
                sync.queries.push(query.summary.clone());
            }
        }
        Some((sync, upto, since))
    }

    /// The local version a peer has acknowledged (0 for a peer or instance not known).
    pub fn acknowledged(&self, peer: &str, peer_instance: &str) -> u64 {
        match self.peers.get(peer) {
            Some(cursor) if cursor.instance == peer_instance => cursor.version,
            _ => 0,
        }
    }

    /// Records a peer's acknowledgement of a push that covered `since..upto`. A peer that
    /// answers with a new instance restarted: unless the push was complete, it is sent
    /// everything next time.
    pub fn sync_acknowledged(&mut self, peer: &str, ack: &PeerSyncAck, upto: u64, since: u64) {
        let cursor =
            self.peers.entry(peer.to_string()).or_insert(PeerCursor { instance: ack.instance.clone(), version: 0 });
        if cursor.instance != ack.instance {
            cursor.instance = ack.instance.clone();
            cursor.version = 0;
            if since != 0 {
                return;
            }
        }
        cursor.version = cursor.version.max(upto);
    }

    fn node_state(&self, entry: &NodeEntry, now: Instant) -> NodeState {
        if now.saturating_duration_since(entry.last_heard) > self.config.node_timeout {
            return NodeState::Dead;
        }
        match entry.record.state {
            ReportedState::Active => NodeState::Active,
            ReportedState::ShuttingDown => NodeState::ShuttingDown,
        }
    }

    /// Live resource managers other than this one, by node id.
    pub fn live_peers(&self, now: Instant) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self
            .nodes
            .values()
            .filter(|n| n.record.node.has_role(NodeRole::ResourceManager) && n.record.node.node_id != self.node_id)
            .filter(|n| self.node_state(n, now).is_live())
            .map(|n| Peer {
                node_id: n.record.node.node_id.clone(),
                instance: n.record.node.instance.clone(),
                uri: n.record.node.http_uri.clone(),
            })
            .collect();
        peers.sort();
        peers
    }

    /// Whether the node `node_id` is alive in the incarnation `instance`.
    pub fn is_live(&self, node_id: &str, instance: &str, now: Instant) -> bool {
        self.nodes.get(node_id).is_some_and(|n| n.record.node.instance == instance && self.node_state(n, now).is_live())
    }

    /// The last reported load of every live worker (node id, load).
    pub fn worker_loads(&self, now: Instant) -> Vec<(String, WorkerLoad)> {
        self.nodes
            .values()
            .filter(|n| self.node_state(n, now).is_live())
            .filter_map(|n| Some((n.record.node.node_id.clone(), n.record.worker.clone()?)))
            .collect()
    }

    /// HTTP URIs of the live resource managers, this one included when it is known.
    pub fn live_resource_managers(&self, now: Instant) -> Vec<String> {
        let mut uris: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.record.node.has_role(NodeRole::ResourceManager) && self.node_state(n, now).is_live())
            .map(|n| n.record.node.http_uri.clone())
            .collect();
        uris.sort();
        uris
    }

    /// Drops nodes silent for longer than the expiry, the unfinished queries of
    /// coordinators no longer known, and the oldest finished queries past the history bound.
    pub fn sweep(&mut self, now: Instant) {
        let expiry = self.config.node_expiry;
        let expired: Vec<String> = self
            .nodes
            .values()
            .filter(|n| now.saturating_duration_since(n.last_heard) > expiry)
            .map(|n| n.record.node.node_id.clone())
            .collect();
        for node_id in &expired {
            self.nodes.remove(node_id);
            self.reports.remove(node_id);
            self.peers.remove(node_id);
        }
        let nodes = &self.nodes;
        self.queries.retain(|_, q| q.summary.progress.is_done() || nodes.contains_key(&q.summary.coordinator));
        let mut finished: Vec<(i64, String)> = self
            .queries
            .values()
            .filter(|q| q.summary.progress.is_done())
            .map(|q| (q.summary.progress.end_time_ms.unwrap_or(0), q.summary.identity.query_id.clone()))
            .collect();
        if finished.len() > self.config.query_history {
            finished.sort();
            let excess = finished.len() - self.config.query_history;
            for (_, query_id) in finished.into_iter().take(excess) {
                self.queries.remove(&query_id);
            }
        }
    }

    /// The view served to coordinators.
    /// Every node as the view lists it, by node id (without the queries the view carries).
    pub fn node_views(&self, now: Instant) -> Vec<NodeView> {
        let mut nodes: Vec<NodeView> = self
            .nodes
            .values()
            .map(|entry| NodeView {
                node: entry.record.node.clone(),
                state: self.node_state(entry, now),
                last_heartbeat_age_ms: now.saturating_duration_since(entry.last_heard).as_millis() as u64,
                seq: entry.record.seq,
                worker: entry.record.worker.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.node_id.cmp(&b.node.node_id));
        nodes
    }

    pub fn view(&self, now: Instant, generated_at_ms: i64) -> ClusterView {
        let nodes = self.node_views(now);

        let live_coordinators: Vec<&NodeEntry> = self
            .nodes
            .values()
            .filter(|n| n.record.node.has_role(NodeRole::Coordinator) && self.node_state(n, now).is_live())
            .collect();
        let mut groups: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
        for coordinator in &live_coordinators {
            for usage in &coordinator.record.resource_groups {
                let entry = groups.entry(usage.resource_group.clone()).or_default();
                entry.0 += usage.queued;
                entry.1 += usage.running;
            }
        }
        let resource_groups = groups
            .into_iter()
            .map(|(resource_group, (queued, running))| ResourceGroupUsage { resource_group, queued, running })
            .collect();

        let mut memory = MemoryTotals::default();
        for node in nodes.iter().filter(|n| n.state.is_live()) {
            if let Some(load) = &node.worker {
                memory.pool_bytes += load.memory_pool_bytes;
                memory.reserved_bytes += load.memory_reserved_bytes;
                memory.free_bytes += load.memory_free_bytes;
            }
        }

        let live: std::collections::HashSet<&str> =
            live_coordinators.iter().map(|c| c.record.node.node_id.as_str()).collect();
        let mut queries: Vec<QuerySummary> = self
            .queries
            .values()
            .filter(|q| q.summary.progress.is_done() || live.contains(q.summary.coordinator.as_str()))
            .map(|q| q.summary.clone())
            .collect();
        queries.sort_by(|a, b| {
            a.identity
                .create_time_ms
                .cmp(&b.identity.create_time_ms)
                .then(a.identity.query_id.cmp(&b.identity.query_id))
        });

        ClusterView {
            resource_manager: self.node_id.clone(),
            instance: self.instance.clone(),
            generated_at_ms,
            nodes,
            queries,
            resource_groups,
            memory,
            warehouses: Vec::new(),
            routing_rules: Vec::new(),
            loans: Vec::new(),
            complete: self.is_complete(now),
        }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The admission leader when it is another resource manager: the live one with the
    /// smallest node id, if smaller than this one's (node id, http uri); `None`: this one
    /// leads.
    pub fn admission_leader(&self, now: Instant) -> Option<(String, String)> {
        self.live_peers(now)
            .into_iter()
            .map(|peer| (peer.node_id, peer.uri))
            .filter(|(id, _)| id.as_str() < self.node_id.as_str())
            .min()
    }

    /// What admission needs of the cluster: every live coordinator's reported per-group
    /// counts, the peak memory of each group's unfinished queries, and the live peers.
    pub fn admission_usage(&self, now: Instant) -> crate::admission::ClusterUsage {
        let coordinators = self
            .nodes
            .values()
            .filter(|n| n.record.node.has_role(NodeRole::Coordinator) && self.node_state(n, now).is_live())
            .map(|n| (n.record.node.node_id.clone(), n.record.node.instance.clone(), n.record.resource_groups.clone()))
            .collect();
        let mut group_memory: HashMap<String, u64> = HashMap::new();
        for query in self.queries.values().filter(|q| !q.summary.progress.is_done()) {
            *group_memory.entry(query.summary.identity.resource_group.clone()).or_default() +=
                query.summary.progress.peak_memory_bytes;
        }
        let peers = self.live_peers(now).into_iter().map(|peer| peer.node_id).collect();
        crate::admission::ClusterUsage { coordinators, group_memory, peers }
    }
}

#[cfg(test)]
pub(crate) mod tests;
