//! Which coordinator takes a new query: the healthy coordinators of the view, in the order a
//! [`RoutingPolicy`] gives, with the ones that just failed moved to the end.
//!
//! Health is the view (live, `ACTIVE` coordinators) plus what this gateway saw itself: a
//! coordinator that refused a connection, or answered that it is shutting down, is tried
//! last until a heartbeat newer than that failure shows it well.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use flotilla_node::ViewSnapshot;
use flotilla_proto::cluster::{NodeRole, NodeState};
use parking_lot::Mutex;

/// How the gateway spreads new queries (`gateway.routing-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingPolicy {
    /// Each coordinator in turn.
    RoundRobin,
    /// Fewest queued + running queries, from the view plus what this gateway routed since.
    LeastLoaded,
    /// Rendezvous hashing of `X-Trino-User`: one user's queries stay on one coordinator,
    /// and when coordinators come and go only the users of those coordinators move.
    UserHash,
}

impl RoutingPolicy {
    pub const NAMES: &'static str = "round-robin, least-loaded, user-hash";

    pub fn as_str(self) -> &'static str {
        match self {
            RoutingPolicy::RoundRobin => "round-robin",
            RoutingPolicy::LeastLoaded => "least-loaded",
            RoutingPolicy::UserHash => "user-hash",
        }
    }
}

impl fmt::Display for RoutingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RoutingPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "round-robin" => Ok(RoutingPolicy::RoundRobin),
            "least-loaded" => Ok(RoutingPolicy::LeastLoaded),
            "user-hash" => Ok(RoutingPolicy::UserHash),
            other => Err(format!("unknown routing policy '{other}' (expected one of {})", Self::NAMES)),
        }
    }
}

/// A coordinator a new query may go to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub node_id: String,
    pub url: String,
    /// Queued + running queries: the view's count plus what was routed here since.
    pub load: usize,
    /// Failed recently and not heard from since: tried last.
    pub suspect: bool,
}

/// How long a routing decision counts as load before the view is assumed to include it.
const ROUTED_MEMORY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    turn: usize,
    /// Coordinators that refused a connection or were shutting down, and when.
    suspects: HashMap<String, Instant>,
    /// New queries sent, newest last.
    routed: VecDeque<(Instant, String)>,
}

/// Orders the coordinators for each new query.
#[derive(Debug)]
pub struct Router {
    policy: RoutingPolicy,
    state: Mutex<State>,
}

/// A stable 64-bit hash (the same in every gateway process), for rendezvous hashing.
fn score(user: &str, node_id: &str) -> u64 {
    let mut key = Vec::with_capacity(user.len() + node_id.len() + 1);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(node_id.as_bytes());
    twox_hash::XxHash64::oneshot(0, &key)
}

impl Router {
    pub fn new(policy: RoutingPolicy) -> Self {
        Self { policy, state: Mutex::new(State::default()) }
    }

    pub fn policy(&self) -> RoutingPolicy {
        self.policy
    }

    /// The coordinators to try for a new query of `user`, best first.
    pub fn order(&self, snapshot: Option<&ViewSnapshot>, user: &str, now: Instant) -> Vec<Target> {
        let mut targets = self.targets(snapshot, now);
        if !targets.is_empty() {
            let mut state = self.state.lock();
            let turn = state.turn % targets.len();
            state.turn = state.turn.wrapping_add(1);
            targets.rotate_left(turn);
        }
        match self.policy {
            RoutingPolicy::RoundRobin => {}
            // Stable: equal loads keep the round-robin rotation.
            RoutingPolicy::LeastLoaded => targets.sort_by_key(|t| t.load),
            RoutingPolicy::UserHash => targets.sort_by_key(|t| std::cmp::Reverse(score(user, &t.node_id))),
        }
        // Suspects last, each group in policy order.
        targets.sort_by_key(|t| t.suspect);
        targets
    }

    /// The live, active coordinators of the view by node id, with their load and health (for
    /// a request any coordinator answers: the least loaded healthy one first).
    pub fn targets(&self, snapshot: Option<&ViewSnapshot>, now: Instant) -> Vec<Target> {
        let Some(snapshot) = snapshot else { return Vec::new() };
        let mut state = self.state.lock();
        while state.routed.front().is_some_and(|(at, _)| now.duration_since(*at) > ROUTED_MEMORY) {
            state.routed.pop_front();
        }
        let view = &snapshot.view;
        let mut targets: Vec<Target> = view
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Active && n.node.has_role(NodeRole::Coordinator))
            .filter(|n| n.node.coordinator_id.is_some())
            .map(|n| {
                let reported_at = snapshot.reported_at(n);
                let newer = |at: Instant| reported_at.is_none_or(|t| at > t);
                let in_view = view
                    .queries
                    .iter()
                    .filter(|q| q.coordinator == n.node.node_id)
                    .filter(|q| matches!(q.progress.state.as_str(), "QUEUED" | "PLANNING" | "RUNNING"))
                    .count();
                let routed_since = state.routed.iter().filter(|(at, id)| *id == n.node.node_id && newer(*at)).count();
                Target {
                    node_id: n.node.node_id.clone(),
                    url: n.node.http_uri.clone(),
                    load: in_view + routed_since,
                    suspect: state.suspects.get(&n.node.node_id).is_some_and(|at| newer(*at)),
                }
            })
            .collect();
        targets.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        targets
    }

    /// `node_id` took a new query.
    pub fn routed(&self, node_id: &str, now: Instant) {
        self.state.lock().routed.push_back((now, node_id.to_string()));
    }

    /// `node_id` refused a connection or was shutting down.
    pub fn failed(&self, node_id: &str, now: Instant) {
        let mut state = self.state.lock();
        state.suspects.retain(|_, at| now.duration_since(*at) < ROUTED_MEMORY);
        state.suspects.insert(node_id.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_proto::cluster::{
        ClusterView, NodeAnnouncement, NodeView, QueryIdentity, QueryProgress, QuerySummary,
    };

    use super::*;

    fn coordinator(id: &str, age_ms: u64) -> NodeView {
        NodeView {
            node: NodeAnnouncement {
                node_id: id.into(),
                instance: "i".into(),
                start_time_ms: 0,
                roles: vec![NodeRole::Coordinator],
                http_uri: format!("http://{id}:8080"),
                data_uri: None,
                coordinator_id: Some(format!("{id:0>5}").chars().rev().take(5).collect()),
                version: "v".into(),
                environment: "e".into(),
                warehouse: "default".into(),
                worker_group: "default".into(),
            },
            state: NodeState::Active,
            last_heartbeat_age_ms: age_ms,
            seq: 1,
            worker: None,
        }
    }

    fn query(coordinator: &str, state: &str) -> QuerySummary {
        QuerySummary {
            identity: QueryIdentity {
                query_id: format!("q-{coordinator}-{state}"),
                user: "u".into(),
                source: None,
                resource_group: "global".into(),
                warehouse: "default".into(),
                query: "SELECT 1".into(),
                create_time_ms: 0,
            },
            progress: QueryProgress {
                state: state.into(),
                start_time_ms: None,
                end_time_ms: None,
                cpu_time_ms: 0,
                peak_memory_bytes: 0,
                progress_percentage: None,
                error_code: None,
            },
            coordinator: coordinator.into(),
            version: 1,
            epoch: 0,
        }
    }

    fn snapshot(nodes: Vec<NodeView>, queries: Vec<QuerySummary>) -> ViewSnapshot {
        let view = ClusterView {
            resource_manager: "rm".into(),
            instance: "i".into(),
            generated_at_ms: 0,
            nodes,
            queries,
            resource_groups: Vec::new(),
            memory: Default::default(),
            warehouses: Vec::new(),
            routing_rules: Vec::new(),
            loans: Vec::new(),
            complete: true,
        };
        ViewSnapshot { view: Arc::new(view), fetched: Instant::now() }
    }

    fn first(router: &Router, snapshot: &ViewSnapshot, user: &str) -> String {
        router.order(Some(snapshot), user, Instant::now())[0].node_id.clone()
    }

    #[test]
    fn round_robin_takes_turns() {
        let router = Router::new(RoutingPolicy::RoundRobin);
        let view = snapshot(vec![coordinator("c1", 0), coordinator("c2", 0), coordinator("c3", 0)], vec![]);
        let picks: Vec<String> = (0..6).map(|_| first(&router, &view, "u")).collect();
        assert_eq!(picks, ["c1", "c2", "c3", "c1", "c2", "c3"]);
    }

    #[test]
    fn least_loaded_counts_the_view_and_its_own_routing_since() {
        let router = Router::new(RoutingPolicy::LeastLoaded);
        let view = snapshot(
            vec![coordinator("c1", 0), coordinator("c2", 0)],
            vec![query("c1", "RUNNING"), query("c1", "QUEUED"), query("c2", "FINISHED")],
        );
        assert_eq!(first(&router, &view, "u"), "c2");
        // Two queries routed to c2 after its last heartbeat: now c2 has 2, c1 has 2, then 3.
        let now = Instant::now() + Duration::from_millis(1);
        router.routed("c2", now);
        router.routed("c2", now);
        router.routed("c2", now);
        assert_eq!(router.order(Some(&view), "u", now)[0].node_id, "c1");
    }

    #[test]
    fn user_hash_keeps_users_in_place_and_moves_only_the_removed_coordinators_users() {
        let router = Router::new(RoutingPolicy::UserHash);
        let three = snapshot(vec![coordinator("c1", 0), coordinator("c2", 0), coordinator("c3", 0)], vec![]);
        let users: Vec<String> = (0..30).map(|i| format!("user{i}")).collect();
        let before: Vec<String> = users.iter().map(|u| first(&router, &three, u)).collect();
        for _ in 0..3 {
            let again: Vec<String> = users.iter().map(|u| first(&router, &three, u)).collect();
            assert_eq!(again, before, "a user's coordinator does not change between queries");
        }
        for c in ["c1", "c2", "c3"] {
            assert!(before.iter().any(|p| p == c), "30 users spread over all three coordinators");
        }
        let two = snapshot(vec![coordinator("c1", 0), coordinator("c3", 0)], vec![]);
        for (user, was) in users.iter().zip(&before) {
            let now = first(&router, &two, user);
            if was != "c2" {
                assert_eq!(&now, was, "{user} was not on the removed coordinator and stays");
            }
        }
    }

    #[test]
    fn a_coordinator_that_failed_goes_last_until_it_heartbeats_again() {
        let router = Router::new(RoutingPolicy::UserHash);
        let view = snapshot(vec![coordinator("c1", 0), coordinator("c2", 0)], vec![]);
        let favourite = first(&router, &view, "alice");
        router.failed(&favourite, Instant::now() + Duration::from_millis(1));
        let order = router.order(Some(&view), "alice", Instant::now());
        assert_ne!(order[0].node_id, favourite);
        assert!(order[1].suspect && order[1].node_id == favourite, "still tried, last");
        // A later view with a heartbeat newer than the failure clears it.
        std::thread::sleep(Duration::from_millis(5));
        let fresh = snapshot(vec![coordinator("c1", 0), coordinator("c2", 0)], vec![]);
        assert_eq!(first(&router, &fresh, "alice"), favourite);
    }

    #[test]
    fn only_active_coordinators_are_targets() {
        let router = Router::new(RoutingPolicy::RoundRobin);
        let mut draining = coordinator("c2", 0);
        draining.state = NodeState::ShuttingDown;
        let mut dead = coordinator("c3", 0);
        dead.state = NodeState::Dead;
        let mut worker = coordinator("w1", 0);
        worker.node.roles = vec![NodeRole::Worker];
        let view = snapshot(vec![coordinator("c1", 0), draining, dead, worker], vec![]);
        let order = router.order(Some(&view), "u", Instant::now());
        assert_eq!(order.iter().map(|t| t.node_id.as_str()).collect::<Vec<_>>(), ["c1"]);
        assert!(router.order(None, "u", Instant::now()).is_empty());
        assert!("round-robin".parse::<RoutingPolicy>().is_ok());
        assert!("random".parse::<RoutingPolicy>().unwrap_err().contains("user-hash"));
    }
}
