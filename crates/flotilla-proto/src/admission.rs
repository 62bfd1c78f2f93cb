//! Cluster-wide admission: what a coordinator asks the admission leader (one resource
//! manager) for, and what it is granted.
//!
//! A coordinator holds, per leaf resource group, a lease of running slots and queue slots;
//! it starts a query only while it has a free running slot under an unexpired lease, so the
//! cluster never runs more of a group than its `hardConcurrencyLimit`, and queues only into
//! a queue slot, so it never queues more than `maxQueued`. The protocol and its guarantees
//! are described in `flotilla-resource-manager/src/admission.rs`.

use serde::{Deserialize, Serialize};

/// Served by every resource manager; only the admission leader grants.
pub const LEASE_PATH: &str = "/v1/resource-manager/leases";

/// Every byte but the unreserved ones is escaped in a path segment built from a value a
/// client chose (a `/`, `\\`, `..` or `%` in it cannot change which endpoint is called).
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The path of one resource group's cluster-wide state (`group`: its dotted path, a value
/// a client chose), encoded as one path segment; `None` for a path with an empty group
/// name (which no group has), so `.` and `..`, dot segments to every URL parser even when
/// escaped, never become one.
pub fn group_state_path(group: &str) -> Option<String> {
    if group.split('.').any(str::is_empty) {
        return None;
    }
    let segment = percent_encoding::utf8_percent_encode(group, SEGMENT);
    Some(format!("{LEASE_PATH}/groups/{segment}"))
}

/// A group's limits as the coordinator's resource group configuration has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupLimits {
    /// Dotted path, e.g. `global.adhoc.alice`.
    pub path: String,
    pub hard_concurrency_limit: u32,
    /// Past this many running queries the group yields to siblings below theirs
    /// (`softConcurrencyLimit`; the hard limit when not set).
    #[serde(default)]
    pub soft_concurrency_limit: Option<u32>,
    pub max_queued: u32,
    /// `softMemoryLimit` in bytes, resolved against the cluster's memory when given in %;
    /// no new query of the group starts while its unfinished queries' reported peak memory
    /// adds up to more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_memory_limit_bytes: Option<u64>,
    /// Share of the parent's slots when several subgroups wait (`schedulingWeight`).
    #[serde(default = "one")]
    pub scheduling_weight: u32,
    /// The policy the group uses to order its subgroups (`schedulingPolicy`).
    #[serde(default)]
    pub scheduling_policy: SchedulingPolicy,
}

fn one() -> u32 {
    1
}

/// Trino's `schedulingPolicy` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulingPolicy {
    /// First in, first out.
    #[default]
    Fair,
    /// Subgroups in proportion to their `schedulingWeight`.
    Weighted,
    /// The subgroup with the fewest running queries per unit of weight first.
    WeightedFair,
    /// The highest `query_priority` first, then first in, first out.
    QueryPriority,
}

/// One leaf group's state on the asking coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDemand {
    /// The leaf group, then its ancestors up to the root: every group whose limits the
    /// query counts against.
    pub groups: Vec<GroupLimits>,
    /// Queries running now: they hold running slots whatever is granted.
    pub running: u32,
    /// Queries holding queue slots.
    pub queued: u32,
    /// New queries that hold neither yet.
    pub pending: u32,
    /// Creation time (ms since the epoch) of the oldest query waiting (queued or pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_waiting_ms: Option<i64>,
    /// The highest `query_priority` among the waiting queries.
    #[serde(default)]
    pub top_priority: i64,
}

impl GroupDemand {
    pub fn leaf(&self) -> &str {
        self.groups.first().map(|g| g.path.as_str()).unwrap_or_default()
    }

    pub fn waiting(&self) -> u32 {
        self.queued + self.pending
    }
}

/// A coordinator's request: its whole state for every group it has queries in or holds
/// slots of. Sent one at a time, with an increasing `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRequest {
    pub coordinator: String,
    /// The coordinator process (a restarted coordinator starts over).
    pub instance: String,
    pub seq: u64,
    pub demands: Vec<GroupDemand>,
}

/// What one leaf group's lease allows until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupLease {
    pub path: String,
    /// Queries of the group that may run at once on this coordinator.
    pub running_slots: u32,
    /// Queries of the group that may wait in this coordinator's queue.
    pub queue_slots: u32,
    /// The group's queue is full across the cluster: pending queries that got neither kind
    /// of slot fail with `QUERY_QUEUE_FULL`.
    pub queue_full: bool,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseGrant {
    pub leader: String,
    pub seq: u64,
    /// How long the leases hold, counted by the coordinator from when it sent the request.
    pub duration_ms: u64,
    pub leases: Vec<GroupLease>,
}

/// Why a lease request got no grant: the body of the leader's `409 Conflict`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum LeaseRefusal {
    /// This resource manager is not the admission leader; `uri` is.
    NotLeader { leader: String, uri: String },
    /// The request is older than one already answered for this coordinator.
    Stale { seq: u64, answered: u64 },
}

impl std::fmt::Display for LeaseRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseRefusal::NotLeader { leader, uri } => write!(f, "not the admission leader ({leader} at {uri} is)"),
            LeaseRefusal::Stale { seq, answered } => write!(f, "request {seq} is stale ({answered} was answered)"),
        }
    }
}

/// Cluster-wide numbers of one group, as the leader knows them
/// (`/v1/resourceGroupState/{path}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupState {
    pub path: String,
    pub running: u32,
    pub queued: u32,
    pub hard_concurrency_limit: u32,
    pub max_queued: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths_stay_one_segment() {
        assert_eq!(group_state_path("global.adhoc").unwrap(), format!("{LEASE_PATH}/groups/global.adhoc"));
        for empty in ["..", ".", "", "a..b", ".a", "a.", "a/../../view"] {
            assert_eq!(group_state_path(empty), None, "{empty}");
        }
        for hostile in ["\\\\view", "a/x/view", "a/b", "a%2Fb", "a?x=1#y", "é", "%2e%2e"] {
            let path = group_state_path(hostile).unwrap();
            let segment = path.strip_prefix(&format!("{LEASE_PATH}/groups/")).unwrap();
            assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)), "{hostile}: {path}");
            assert!(segment != "." && segment != "..", "{hostile}: {path}");
            let url = url::Url::parse(&format!("http://rm{path}")).unwrap();
            assert_eq!(url.path(), path, "{hostile}: the URL parser changed it");
        }
    }
}
