use std::collections::{BTreeMap, VecDeque};

use flotilla_proto::cluster::{NodeAnnouncement, QueryIdentity, QueryProgress, QueryUpdate, ReportedState, WorkerLoad};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A node announcement for tests (shared with the server tests).
pub(crate) fn announcement(node_id: &str, instance: &str, start: i64, role: NodeRole) -> NodeAnnouncement {
    NodeAnnouncement {
        node_id: node_id.into(),
        instance: instance.into(),
        start_time_ms: start,
        roles: vec![role],
        http_uri: format!("http://{node_id}"),
        data_uri: None,
        coordinator_id: None,
        version: "test".into(),
        environment: "test".into(),
        warehouse: "default".into(),
        worker_group: "default".into(),
    }
}

fn heartbeat(node: &NodeAnnouncement, seq: u64, running_tasks: u32) -> Heartbeat {
    Heartbeat {
        node: node.clone(),
        seq,
        state: ReportedState::Active,
        worker: Some(WorkerLoad { running_tasks, ..Default::default() }),
        coordinator: None,
    }
}

fn config() -> StateConfig {
    StateConfig {
        node_timeout: Duration::from_secs(5),
        node_expiry: Duration::from_secs(60),
        query_history: 3,
        max_sync_records: 1000,
    }
}

fn state(name: &str) -> ClusterState {
    ClusterState::new(name, &format!("{name}-i1"), "test", config())
}

fn tasks_of(state: &ClusterState, node: &str, now: Instant) -> (NodeState, u32) {
    let view = state.view(now, 0);
    let node = view.nodes.iter().find(|n| n.node.node_id == node).unwrap();
    (node.state, node.worker.as_ref().map(|w| w.running_tasks).unwrap_or(0))
}

#[test]
fn duplicate_and_reordered_heartbeats_never_move_a_node_backwards() {
    let mut rm = state("rm1");
    let t0 = Instant::now();
    let w1 = announcement("w1", "a", 100, NodeRole::Worker);
    rm.apply_heartbeat(heartbeat(&w1, 2, 20), t0).unwrap();
    rm.apply_heartbeat(heartbeat(&w1, 1, 10), t0).unwrap();
    rm.apply_heartbeat(heartbeat(&w1, 2, 99), t0).unwrap();
    assert_eq!(tasks_of(&rm, "w1", t0), (NodeState::Active, 20));

    // A restart (later start time) replaces the record even with a lower sequence number;
    // the old life's late heartbeats are then ignored.
    let w1_again = announcement("w1", "b", 200, NodeRole::Worker);
    rm.apply_heartbeat(heartbeat(&w1_again, 1, 5), t0).unwrap();
    rm.apply_heartbeat(heartbeat(&w1, 3, 30), t0).unwrap();
    assert_eq!(tasks_of(&rm, "w1", t0), (NodeState::Active, 5));
    assert_eq!(rm.view(t0, 0).nodes[0].node.instance, "b");
}

#[test]
fn silent_nodes_die_after_the_timeout_and_go_after_the_expiry() {
    let mut rm = state("rm1");
    let t0 = Instant::now();
    rm.apply_heartbeat(heartbeat(&announcement("w1", "a", 1, NodeRole::Worker), 1, 0), t0).unwrap();
    assert_eq!(tasks_of(&rm, "w1", t0 + Duration::from_secs(4)).0, NodeState::Active);
    assert_eq!(tasks_of(&rm, "w1", t0 + Duration::from_secs(6)).0, NodeState::Dead);
    rm.sweep(t0 + Duration::from_secs(30));
    assert_eq!(rm.node_count(), 1);
    rm.sweep(t0 + Duration::from_secs(61));
    assert_eq!(rm.node_count(), 0);
}

#[test]
fn other_environments_are_refused() {
    let mut rm = state("rm1");
    let mut node = announcement("w1", "a", 1, NodeRole::Worker);
    node.environment = "prod".into();
    let error = rm.apply_heartbeat(heartbeat(&node, 1, 0), Instant::now()).unwrap_err();
    assert!(error.to_string().contains("prod"));
}

fn summary(query_id: &str, state: &str, version: u64, end: Option<i64>) -> QuerySummary {
    QuerySummary {
        identity: QueryIdentity {
            query_id: query_id.into(),
            user: "alice".into(),
            source: None,
            resource_group: "global".into(),
            warehouse: "default".into(),
            query: "select 1".into(),
            create_time_ms: 1,
        },
        progress: QueryProgress {
            state: state.into(),
            start_time_ms: None,
            end_time_ms: end,
            cpu_time_ms: 0,
            peak_memory_bytes: 0,
            progress_percentage: None,
            error_code: None,
        },
        coordinator: String::new(),
        version,
        epoch: 0,
    }
}

fn coordinator_heartbeat(node: &NodeAnnouncement, seq: u64, report: CoordinatorReport) -> Heartbeat {
    Heartbeat { node: node.clone(), seq, state: ReportedState::Active, worker: None, coordinator: Some(report) }
}

#[test]
fn coordinator_deltas_apply_only_on_a_known_base() {
    let mut rm = state("rm1");
    let now = Instant::now();
    let c1 = announcement("c1", "a", 1, NodeRole::Coordinator);
    let full = CoordinatorReport {
        base_version: 0,
        version: 2,
        new_queries: vec![summary("q1", "RUNNING", 2, None)],
        updates: vec![],
        resource_groups: vec![ResourceGroupUsage { resource_group: "global".into(), queued: 0, running: 1 }],
    };
    assert_eq!(rm.apply_heartbeat(coordinator_heartbeat(&c1, 1, full), now).unwrap(), Some(2));
    assert_eq!(rm.view(now, 0).resource_groups[0].running, 1);

    // A delta from a base this RM never acknowledged asks for a full report.
    let gap = CoordinatorReport { base_version: 5, version: 6, ..Default::default() };
    assert_eq!(rm.apply_heartbeat(coordinator_heartbeat(&c1, 2, gap), now).unwrap(), None);

    let delta = CoordinatorReport {
        base_version: 2,
        version: 3,
        updates: vec![QueryUpdate {
            query_id: "q1".into(),
            version: 3,
            progress: summary("q1", "FINISHED", 3, Some(10)).progress,
        }],
        ..Default::default()
    };
    assert_eq!(rm.apply_heartbeat(coordinator_heartbeat(&c1, 3, delta.clone()), now).unwrap(), Some(3));
    // The same heartbeat again is harmless.
    assert_eq!(rm.apply_heartbeat(coordinator_heartbeat(&c1, 3, delta), now).unwrap(), Some(3));
    let view = rm.view(now, 0);
    assert_eq!(view.queries.len(), 1);
    assert_eq!(view.queries[0].progress.state, "FINISHED");
    assert_eq!(view.queries[0].coordinator, "c1");
    assert!(view.resource_groups.is_empty(), "group counts are replaced by each report");
}

#[test]
fn a_restarted_coordinator_starts_a_new_report_and_drops_its_old_active_queries() {
    let mut rm = state("rm1");
    let now = Instant::now();
    let old = announcement("c1", "a", 1, NodeRole::Coordinator);
    let report = CoordinatorReport {
        base_version: 0,
        version: 2,
        new_queries: vec![summary("q1", "RUNNING", 1, None), summary("q2", "FINISHED", 2, Some(5))],
        ..Default::default()
    };
    rm.apply_heartbeat(coordinator_heartbeat(&old, 9, report), now).unwrap();
    let new = announcement("c1", "b", 2, NodeRole::Coordinator);
    let delta = CoordinatorReport { base_version: 2, version: 3, ..Default::default() };
    assert_eq!(rm.apply_heartbeat(coordinator_heartbeat(&new, 1, delta), now).unwrap(), None);
    let ids: Vec<String> = rm.view(now, 0).queries.into_iter().map(|q| q.identity.query_id).collect();
    assert_eq!(ids, vec!["q2".to_string()]);
}

#[test]
fn an_adopters_reports_replace_the_dead_owners_whatever_their_versions() {
    let mut rm = state("rm1");
    let now = Instant::now();
    let c1 = announcement("c1", "a", 1, NodeRole::Coordinator);
    let c2 = announcement("c2", "a", 1, NodeRole::Coordinator);
    let report = CoordinatorReport {
        base_version: 0,
        version: 50,
        new_queries: vec![summary("q1", "RUNNING", 50, None)],
        ..Default::default()
    };
    rm.apply_heartbeat(coordinator_heartbeat(&c1, 1, report), now).unwrap();
    // c1 died; c2 adopted q1 (epoch 1) and counts its own, lower, versions.
    let mut adopted = summary("q1", "RUNNING", 3, None);
    adopted.epoch = 1;
    let report = CoordinatorReport { base_version: 0, version: 3, new_queries: vec![adopted], ..Default::default() };
    rm.apply_heartbeat(coordinator_heartbeat(&c2, 1, report), now).unwrap();
    let owner = |rm: &ClusterState| rm.view(now, 0).queries[0].coordinator.clone();
    assert_eq!(owner(&rm), "c2");
    // The adopter's updates apply; a late update of the old owner's changes nothing, nor
    // does its old summary relayed by a peer.
    let update = |version, state: &str| QueryUpdate {
        query_id: "q1".into(),
        version,
        progress: summary("q1", state, version, Some(9)).progress,
    };
    let delta =
        CoordinatorReport { base_version: 3, version: 4, updates: vec![update(4, "FINISHED")], ..Default::default() };
    rm.apply_heartbeat(coordinator_heartbeat(&c2, 2, delta), now).unwrap();
    let late =
        CoordinatorReport { base_version: 50, version: 60, updates: vec![update(60, "FAILED")], ..Default::default() };
    rm.apply_heartbeat(coordinator_heartbeat(&c1, 2, late), now).unwrap();
    let mut relayed = summary("q1", "FAILED", 99, None);
    relayed.coordinator = "c1".into();
    rm.merge_query(relayed);
    let view = rm.view(now, 0);
    assert_eq!((view.queries[0].coordinator.as_str(), view.queries[0].progress.state.as_str()), ("c2", "FINISHED"));
}

#[test]
fn finished_query_history_is_bounded() {
    let mut rm = state("rm1");
    let now = Instant::now();
    let c1 = announcement("c1", "a", 1, NodeRole::Coordinator);
    let new_queries = (0..5).map(|i| summary(&format!("q{i}"), "FINISHED", 1, Some(i))).collect();
    let report = CoordinatorReport { base_version: 0, version: 1, new_queries, ..Default::default() };
    rm.apply_heartbeat(coordinator_heartbeat(&c1, 1, report), now).unwrap();
    rm.sweep(now);
    let ids: Vec<String> = rm.view(now, 0).queries.into_iter().map(|q| q.identity.query_id).collect();
    assert_eq!(ids, vec!["q2", "q3", "q4"]);
}

#[test]
fn a_relayed_record_carries_its_age() {
    let mut rm1 = state("rm1");
    let mut rm2 = state("rm2");
    let t0 = Instant::now();
    rm1.apply_heartbeat(heartbeat(&announcement("w1", "a", 1, NodeRole::Worker), 1, 0), t0).unwrap();
    let (sync, upto, since) = rm1.prepare_sync("rm2", "rm2-i1", t0 + Duration::from_secs(4)).unwrap();
    let ack = rm2.apply_peer_sync(sync, t0 + Duration::from_secs(4));
    rm1.sync_acknowledged("rm2", &ack, upto, since);
    // rm2 heard about w1 at t0 + 4 s, but rm1 heard it at t0: dead at t0 + 6 s on both.
    assert_eq!(tasks_of(&rm2, "w1", t0 + Duration::from_secs(6)).0, NodeState::Dead);
    assert!(rm1.prepare_sync("rm2", "rm2-i1", t0).is_none(), "nothing new to push");
    // A restarted peer (new instance) gets everything again.
    assert!(rm1.prepare_sync("rm2", "rm2-i2", t0).is_some());
}

#[test]
fn a_new_resource_manager_knows_every_node_after_the_timeout_or_a_whole_push() {
    let t0 = Instant::now();
    let mut old = state("rm1");
    let worker = announcement("w1", "a", 1, NodeRole::Worker);
    old.apply_heartbeat(heartbeat(&worker, 1, 0), t0).unwrap();
    let settled = t0 + config().node_timeout + Duration::from_secs(1);
    assert!(!old.is_complete(t0), "just started: nodes may not have heartbeated it yet");
    assert!(!old.view(t0, 0).complete);
    assert!(old.is_complete(settled) && old.view(settled, 0).complete, "every live node heartbeats within the timeout");

    // A restarted peer gets a whole push from a complete one: complete at once.
    let mut fresh = state("rm2");
    let (sync, upto, since) = old.prepare_sync("rm2", "rm2-i1", settled).unwrap();
    assert!(sync.complete && since == 0);
    let ack = fresh.apply_peer_sync(sync, t0);
    assert!(fresh.is_complete(t0) && fresh.view(t0, 0).nodes.iter().any(|n| n.node.node_id == "w1"));
    old.sync_acknowledged("rm2", &ack, upto, since);

    // Pushes from a peer that does not know every node, or carrying only changes, or cut at
    // the size limit, do not make the receiver complete.
    let mut young = state("rm3");
    young.apply_heartbeat(heartbeat(&worker, 1, 0), t0).unwrap();
    let (from_young, _, since) = young.prepare_sync("rm4", "rm4-i1", t0).unwrap();
    assert!(since == 0 && !from_young.complete, "the sender does not know every node yet");
    old.apply_heartbeat(heartbeat(&announcement("w2", "b", 1, NodeRole::Worker), 1, 0), settled).unwrap();
    let (delta, _, since) = old.prepare_sync("rm2", "rm2-i1", settled).unwrap();
    assert!(since > 0 && !delta.complete, "only what changed since the last push");
    let mut cut = ClusterState::new("rm1", "rm1-i1", "test", StateConfig { max_sync_records: 1, ..config() });
    cut.apply_heartbeat(heartbeat(&worker, 1, 0), t0).unwrap();
    cut.apply_heartbeat(heartbeat(&announcement("w2", "b", 1, NodeRole::Worker), 1, 0), t0).unwrap();
    let (first, _, _) = cut.prepare_sync("rm5", "rm5-i1", settled).unwrap();
    assert!(!first.complete && first.nodes.len() == 1, "cut at the size limit");
    let mut receiver = state("rm5");
    receiver.apply_peer_sync(first, t0);
    receiver.apply_peer_sync(delta, t0);
    assert!(!receiver.is_complete(t0));
}

/// A simulated network of resource managers and nodes with message loss, delay, duplication
/// and a partition; after the network heals, every resource manager must hold the same
/// records for every node.
#[test]
fn resource_managers_converge_over_a_lossy_partitioned_network() {
    for seed in 0..20 {
        simulate(seed);
    }
}

enum Message {
    Heartbeat { to: usize, heartbeat: Heartbeat },
    Sync { from: usize, to: usize, sync: PeerSync, upto: u64, since: u64 },
    Ack { from: usize, to: usize, ack: PeerSyncAck, upto: u64, since: u64 },
}

fn simulate(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let step = Duration::from_millis(100);
    let start = Instant::now();
    let mut rms: Vec<ClusterState> = (0..3).map(|i| state(&format!("rm{i}"))).collect();
    let rm_nodes: Vec<NodeAnnouncement> =
        (0..3).map(|i| announcement(&format!("rm{i}"), &format!("rm{i}-i1"), 1, NodeRole::ResourceManager)).collect();
    // Each worker reaches exactly one resource manager, as if configured with one address.
    let workers: Vec<NodeAnnouncement> =
        (0..9).map(|i| announcement(&format!("w{i}"), "a", 1, NodeRole::Worker)).collect();
    let mut in_flight: VecDeque<(Instant, Message)> = VecDeque::new();
    let mut seq = 0;
    let partition = (Duration::from_secs(3), Duration::from_secs(8));
    let heal_by = Duration::from_secs(16);
    let mut now = start;
    while now < start + heal_by {
        let elapsed = now - start;
        let partitioned =
            |a: usize, b: usize| elapsed >= partition.0 && elapsed < partition.1 && (a == 0 || b == 0) && a != b;
        let lossy = elapsed < Duration::from_secs(10);
        if (elapsed.as_millis() / 100) % 10 == 0 {
            seq += 1;
            for (i, worker) in workers.iter().enumerate() {
                let to = i % 3;
                in_flight.push_back((now, Message::Heartbeat { to, heartbeat: heartbeat(worker, seq, seq as u32) }));
            }
            for (i, rm) in rm_nodes.iter().enumerate() {
                for to in 0..3 {
                    let mut beat = heartbeat(rm, seq, 0);
                    beat.worker = None;
                    if to == i || !partitioned(i, to) {
                        in_flight.push_back((now, Message::Heartbeat { to, heartbeat: beat }));
                    }
                }
            }
        }
        if (elapsed.as_millis() / 100) % 5 == 0 {
            for from in 0..3 {
                for crate::state::Peer { node_id: peer, instance, .. } in rms[from].live_peers(now) {
                    let to: usize = peer[2..].parse().unwrap();
                    if let Some((sync, upto, since)) = rms[from].prepare_sync(&peer, &instance, now) {
                        in_flight.push_back((now, Message::Sync { from, to, sync, upto, since }));
                    }
                }
            }
        }
        // Deliver what is due, with loss, delay and duplication while the network is bad.
        let mut later = VecDeque::new();
        while let Some((sent, message)) = in_flight.pop_front() {
            let (from, to) = match &message {
                Message::Heartbeat { to, heartbeat } => {
                    let from = rm_index(heartbeat);
                    (if from == usize::MAX { *to } else { from }, *to)
                }
                Message::Sync { from, to, .. } | Message::Ack { from, to, .. } => (*from, *to),
            };
            if partitioned(from, to) || (lossy && rng.random_bool(0.2)) {
                continue;
            }
            if lossy && rng.random_bool(0.2) && now - sent < Duration::from_millis(700) {
                later.push_back((sent, message));
                continue;
            }
            let duplicate = lossy && rng.random_bool(0.1);
            for _ in 0..if duplicate { 2 } else { 1 } {
                match &message {
                    Message::Heartbeat { to, heartbeat } => {
                        rms[*to].apply_heartbeat(heartbeat.clone(), now).unwrap();
                    }
                    Message::Sync { from, to, sync, upto, since } => {
                        let ack = rms[*to].apply_peer_sync(sync.clone(), now);
                        later.push_back((now, Message::Ack { from: *to, to: *from, ack, upto: *upto, since: *since }));
                    }
                    Message::Ack { from, to, ack, upto, since } => {
                        let peer = format!("rm{from}");
                        rms[*to].sync_acknowledged(&peer, ack, *upto, *since);
                    }
                }
            }
        }
        in_flight = later;
        for rm in rms.iter_mut() {
            rm.sweep(now);
        }
        now += step;
    }
    let views: Vec<BTreeMap<String, (NodeState, u64)>> = rms
        .iter()
        .map(|rm| rm.view(now, 0).nodes.into_iter().map(|n| (n.node.node_id, (n.state, n.seq))).collect())
        .collect();
    assert_eq!(views[0].len(), 12, "seed {seed}: {:?}", views[0]);
    for view in &views {
        for (node, (state, _)) in view {
            assert_eq!(*state, NodeState::Active, "seed {seed}: {node} not active in {view:?}");
        }
    }
    assert_eq!(views[0], views[1], "seed {seed}");
    assert_eq!(views[1], views[2], "seed {seed}");
}

/// Which resource manager a heartbeat comes from, for partitioning (workers are outside it).
fn rm_index(heartbeat: &Heartbeat) -> usize {
    heartbeat.node.node_id.strip_prefix("rm").and_then(|i| i.parse().ok()).unwrap_or(usize::MAX)
}
