//! The cluster's control messages: what a node tells the resource managers about itself
//! (announcement + heartbeat), what resource managers exchange with each other (peer sync),
//! and the cluster view they serve.
//!
//! All of it is JSON over HTTP, behind the internal shared-secret check. Ordering never
//! relies on clocks agreeing: a node's records are ordered by its incarnation (start time,
//! then a random instance id) and a per-incarnation sequence number; ages travel as
//! relative durations.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// The internal paths, served by every resource manager.
pub const HEARTBEAT_PATH: &str = "/v1/resource-manager/heartbeat";
pub const PEER_SYNC_PATH: &str = "/v1/resource-manager/sync";
pub const CLUSTER_VIEW_PATH: &str = "/v1/resource-manager/view";

/// What a node does. A process may run several roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    Coordinator,
    Worker,
    ResourceManager,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Coordinator => "coordinator",
            NodeRole::Worker => "worker",
            NodeRole::ResourceManager => "resource-manager",
        }
    }
}

/// The state a node reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportedState {
    Active,
    /// Shutting down: gets no new work; its record goes when its heartbeats stop.
    ShuttingDown,
}

/// A node's state as the resource managers judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Active,
    ShuttingDown,
    /// No heartbeat for longer than the failure timeout.
    Dead,
}

impl NodeState {
    /// The spelling of `system.runtime.nodes.state` (Trino's).
    pub fn trino_name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::ShuttingDown => "shutting_down",
            NodeState::Dead => "inactive",
        }
    }

    pub fn is_live(self) -> bool {
        self != NodeState::Dead
    }
}

/// Who a node is; repeated in every heartbeat (it is small), so a resource manager that
/// restarted knows the node again from its next heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAnnouncement {
    pub node_id: String,
    /// Random per process start: tells a restarted node from its previous life.
    pub instance: String,
    /// Milliseconds since the epoch when the process started.
    pub start_time_ms: i64,
    pub roles: Vec<NodeRole>,
    /// Base URL of the node's HTTP server.
    pub http_uri: String,
    /// Where the node serves data (Arrow Flight), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_uri: Option<String>,
    /// A coordinator's five-character id, the suffix of every query id it creates: how
    /// any node finds the owner of a query from its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_id: Option<String>,
    pub version: String,
    pub environment: String,
    pub warehouse: String,
    pub worker_group: String,
}

impl NodeAnnouncement {
    pub fn has_role(&self, role: NodeRole) -> bool {
        self.roles.contains(&role)
    }

    /// Orders incarnations of the same node id: a later start wins, ties broken by the
    /// instance id so every resource manager picks the same one.
    pub fn incarnation_cmp(&self, other: &NodeAnnouncement) -> Ordering {
        self.start_time_ms.cmp(&other.start_time_ms).then_with(|| self.instance.cmp(&other.instance))
    }
}

/// A worker's load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerLoad {
    pub memory_pool_bytes: u64,
    pub memory_reserved_bytes: u64,
    pub memory_free_bytes: u64,
    /// CPU used by the worker process, as a fraction of the whole machine (0..1).
    pub process_cpu_load: f64,
    /// CPU used on the machine, as a fraction (0..1).
    pub system_cpu_load: f64,
    pub processors: u32,
    pub running_tasks: u32,
    /// Tasks, memory and input read per query on this worker (queries with tasks or
    /// memory here).
    #[serde(default)]
    pub query_memory: Vec<QueryMemory>,
    /// How long reservations have been waiting on this node's full pool without a break
    /// (0: none waits). The low-memory killer acts on nodes blocked this way.
    #[serde(default)]
    pub memory_blocked_ms: u64,
}

/// One query on one worker: what its owning coordinator shows while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryMemory {
    pub query_id: String,
    pub reserved_bytes: u64,
    #[serde(default)]
    pub tasks: u32,
    /// Rows and bytes its scans have read on this worker so far.
    #[serde(default)]
    pub processed_rows: u64,
    #[serde(default)]
    pub processed_bytes: u64,
    /// Its reservations now waiting for memory on this worker's full pool.
    #[serde(default)]
    pub blocked: u32,
}

/// The parts of a query that never change: sent once per resource manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryIdentity {
    pub query_id: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub resource_group: String,
    pub warehouse: String,
    /// The SQL text, cut at [`QUERY_TEXT_LIMIT`] characters.
    pub query: String,
    pub create_time_ms: i64,
}

/// The longest SQL text a query summary carries, in characters.
pub const QUERY_TEXT_LIMIT: usize = 2000;

/// Cuts `sql` for a [`QueryIdentity`].
pub fn truncate_query_text(sql: &str) -> String {
    match sql.char_indices().nth(QUERY_TEXT_LIMIT) {
        Some((end, _)) => format!("{}...", &sql[..end]),
        None => sql.to_string(),
    }
}

/// The parts of a query that change while it runs: sent when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryProgress {
    /// Trino's query state name (QUEUED, PLANNING, RUNNING, FINISHED, FAILED).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time_ms: Option<i64>,
    pub cpu_time_ms: u64,
    pub peak_memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl QueryProgress {
    pub fn is_done(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "FAILED")
    }
}

/// A query as the cluster view lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuerySummary {
    #[serde(flatten)]
    pub identity: QueryIdentity,
    #[serde(flatten)]
    pub progress: QueryProgress,
    /// The owning coordinator's node id.
    pub coordinator: String,
    /// Orders updates of this query (the owner's change counter).
    pub version: u64,
    /// How many times the query was adopted: an adopter's summary replaces an earlier
    /// owner's, whatever their versions (each counts its own).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u32,
}

fn is_zero(epoch: &u32) -> bool {
    *epoch == 0
}

/// A change to a query the resource manager already knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryUpdate {
    pub query_id: String,
    pub version: u64,
    #[serde(flatten)]
    pub progress: QueryProgress,
}

/// Queued and running queries of one resource group on one coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupUsage {
    pub resource_group: String,
    pub queued: u32,
    pub running: u32,
}

/// What a coordinator reports about its queries: a delta against what this resource
/// manager acknowledged (`base_version`), up to `version`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorReport {
    /// The change counter the resource manager acknowledged before; 0 sends everything.
    pub base_version: u64,
    /// The coordinator's change counter when this report was made.
    pub version: u64,
    /// Queries the resource manager has not seen yet, in full.
    #[serde(default)]
    pub new_queries: Vec<QuerySummary>,
    /// Queries it has seen whose progress changed.
    #[serde(default)]
    pub updates: Vec<QueryUpdate>,
    /// Per resource group counts (always complete: they are small).
    #[serde(default)]
    pub resource_groups: Vec<ResourceGroupUsage>,
}

/// A node's periodic report to a resource manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub node: NodeAnnouncement,
    /// Increases with every heartbeat of this incarnation.
    pub seq: u64,
    pub state: ReportedState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerLoad>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorReport>,
}

/// A resource manager's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAck {
    /// The answering resource manager's node id (tells a load-balanced seed from an address
    /// the node already heartbeats).
    pub resource_manager: String,
    /// The coordinator report's version now acknowledged; `None` asks for a full report
    /// (the delta's base was not known here, for example because it restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_version: Option<u64>,
    /// HTTP URIs of the live resource managers, so nodes learn all of them.
    pub resource_managers: Vec<String>,
    /// Queries the cluster's low-memory killer (on the admission leader) has killed and
    /// whose memory is not released yet: their coordinator fails them, workers stop their
    /// waiting reservations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_kills: Vec<MemoryKill>,
}

/// A query killed by the low-memory killer, with the message it fails with
/// (`CLUSTER_OUT_OF_MEMORY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryKill {
    pub query_id: String,
    pub message: String,
}

impl MemoryKill {
    /// What the query fails with, on its coordinator and in its tasks' reservations.
    pub fn error(&self) -> crate::FlotillaError {
        crate::FlotillaError::new(crate::ErrorCode::ClusterOutOfMemory, self.message.clone())
    }
}

/// A node's record as resource managers hold and exchange it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub node: NodeAnnouncement,
    pub seq: u64,
    pub state: ReportedState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerLoad>,
    #[serde(default)]
    pub resource_groups: Vec<ResourceGroupUsage>,
}

/// A record in a peer sync, with how long ago its sender last heard from the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncedNode {
    #[serde(flatten)]
    pub record: NodeRecord,
    pub age_ms: u64,
}

/// Records one resource manager pushes to a peer: those changed since the last push the
/// peer acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSync {
    pub from: String,
    pub from_instance: String,
    #[serde(default)]
    pub nodes: Vec<SyncedNode>,
    #[serde(default)]
    pub queries: Vec<QuerySummary>,
    /// The admission leader's loans (sent by the leader on every push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loans: Option<Vec<crate::warehouses::Loan>>,
    /// The sender knows every live node ([`ClusterView::complete`]) and this push carries
    /// all it knows (a push from the start, not cut at the size limit): the receiver then
    /// knows them too.
    #[serde(default)]
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSyncAck {
    pub resource_manager: String,
    pub instance: String,
}

/// A node in the cluster view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    #[serde(flatten)]
    pub node: NodeAnnouncement,
    pub state: NodeState,
    /// Milliseconds since the last heartbeat reached the resource managers.
    pub last_heartbeat_age_ms: u64,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerLoad>,
}

/// Cluster-wide memory of the live workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryTotals {
    pub pool_bytes: u64,
    pub reserved_bytes: u64,
    pub free_bytes: u64,
}

/// The cluster as one resource manager sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// The resource manager that built this view.
    pub resource_manager: String,
    pub instance: String,
    /// Milliseconds since the epoch, by the resource manager's clock (informational).
    pub generated_at_ms: i64,
    pub nodes: Vec<NodeView>,
    /// Active queries of every live coordinator plus a bounded history of finished ones.
    pub queries: Vec<QuerySummary>,
    /// Per resource group usage, summed over the live coordinators.
    pub resource_groups: Vec<ResourceGroupUsage>,
    pub memory: MemoryTotals,
    /// The warehouse definitions (`warehouse.config-file`); none: every warehouse is the
    /// workers that announce it.
    #[serde(default)]
    pub warehouses: Vec<crate::warehouses::WarehouseDefinition>,
    /// Which warehouse a query that names none runs in (`warehouse.config-file`).
    #[serde(default)]
    pub routing_rules: Vec<crate::warehouses::RoutingRule>,
    /// Groups the admission leader lends now (also in `warehouses`, as `lent` shared groups).
    #[serde(default)]
    pub loans: Vec<crate::warehouses::Loan>,
    /// Whether the resource manager knows every live node: it has run for
    /// `resource-manager.node-status-timeout` (a live node heartbeats it within that), or
    /// a peer that knew them all sent it everything. A resource manager that has just
    /// started serves views without some nodes; view clients take a complete view when
    /// any resource manager has one.
    #[serde(default = "complete_when_unsaid")]
    pub complete: bool,
}

/// Views from resource managers that do not say are taken as complete, as they always were.
fn complete_when_unsaid() -> bool {
    true
}

impl ClusterView {
    pub fn live_nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.state.is_live())
    }

    pub fn live_with_role(&self, role: NodeRole) -> impl Iterator<Item = &NodeView> {
        self.live_nodes().filter(move |n| n.node.has_role(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_query_text_is_cut_on_a_character_boundary() {
        let sql = "é".repeat(QUERY_TEXT_LIMIT + 5);
        let cut = truncate_query_text(&sql);
        assert_eq!(cut.chars().count(), QUERY_TEXT_LIMIT + 3);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate_query_text("select 1"), "select 1");
    }

    #[test]
    fn heartbeat_round_trips_through_json() {
        let heartbeat = Heartbeat {
            node: NodeAnnouncement {
                node_id: "w1".into(),
                instance: "abc".into(),
                start_time_ms: 1,
                roles: vec![NodeRole::Worker],
                http_uri: "http://127.0.0.1:1".into(),
                data_uri: None,
                coordinator_id: None,
                version: "0.1.0".into(),
                environment: "test".into(),
                warehouse: "default".into(),
                worker_group: "default".into(),
            },
            seq: 7,
            state: ReportedState::Active,
            worker: Some(WorkerLoad { processors: 2, ..Default::default() }),
            coordinator: None,
        };
        let text = serde_json::to_string(&heartbeat).unwrap();
        assert!(text.contains("\"roles\":[\"worker\"]"), "{text}");
        assert_eq!(serde_json::from_str::<Heartbeat>(&text).unwrap(), heartbeat);
    }
}
