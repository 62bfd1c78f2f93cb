//! The admission leader: grants coordinators leases of running and queue slots per
//! resource group, so a group's limits hold for the whole cluster.
//!
//! # Who decides
//! One resource manager at a time: the live resource manager with the smallest node id
//! (each one judges from its own membership; peers share it within a heartbeat). A resource
//! manager that sees a live peer with a smaller id answers lease requests with `409` and
//! that peer's id; coordinators ask resource managers in node-id order.
//!
//! # Why nothing is over-admitted
//! - A coordinator starts a query of group G only while its lease for G's leaf group is
//!   unexpired and it runs fewer queries of that leaf than the lease's running slots; it
//!   queues one only into a free queue slot. Between renewals it admits locally: no round
//!   trip on the hot path.
//! - The leader grants a coordinator slots only out of what is free at every level of the
//!   group's path: each limit minus what every other coordinator holds there (its unexpired
//!   grant, or once that expired, the running and queued counts it last reported, from its
//!   requests or, for a coordinator that has not asked this leader yet, from its heartbeats
//!   in the cluster view).
//! - Before each request a coordinator lowers its own lease to what it is running and
//!   queuing, so a grant lost on the way can only make the leader count too much, never too
//!   little. Requests are sequential per coordinator; an older `seq` is refused.
//! - Leases are durations: the coordinator counts from when it sent the request, the leader
//!   from when it decided, so the coordinator's lease always ends first (no clock needs to
//!   agree with another).
//! - A resource manager that becomes leader (at start, or when the previous leader died)
//!   grants no new slot until one lease duration has passed both since it became leader and
//!   since every live peer acknowledged a push from it (a push carries its own record, so
//!   from then on that peer knows a smaller id is alive and refuses lease requests): every
//!   lease another resource manager granted has expired by then. (This covers a restarted
//!   leader coming back while a peer leads.) The running counts it still needs arrive with
//!   the requests and heartbeats.
//!
//! What is not covered: a coordinator cut off from every resource manager for longer than
//! `resource-manager.node-status-timeout` is counted as dead, and queries it still runs are
//! no longer counted; and a network split where different coordinators reach different
//! resource managers that cannot see each other elects two leaders. Both need consensus
//! across the network split, which soft-state resource managers do not have.
//!
//! # Order
//! Free slots go to the waiting queries in the policy order of the group where the limit
//! binds: a coordinator is granted a slot only after the demands that rank before its own
//! (older for `fair`, higher `query_priority` for `query_priority`, fewer running per unit
//! of weight for `weighted`/`weighted_fair`) are served, as far as the leader has heard of
//! them in the last two lease durations. Within one coordinator, queries start in that order
//! too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flotilla_proto::admission::{
    GroupDemand, GroupLease, GroupLimits, GroupState, LeaseGrant, LeaseRequest, SchedulingPolicy,
};
use flotilla_proto::cluster::ResourceGroupUsage;

/// How long a lease holds.
pub const LEASE_DURATION: Duration = Duration::from_secs(3);

/// A demand older than this no longer reserves slots for itself.
const DEMAND_MEMORY: Duration = Duration::from_secs(6);

/// What one coordinator holds in one leaf group.
#[derive(Debug, Clone)]
struct Held {
    running_slots: u32,
    queue_slots: u32,
    demand: GroupDemand,
}

#[derive(Debug)]
struct CoordinatorLeases {
    instance: String,
    seq: u64,
    /// When the leases granted last expire (leader's clock).
    expires: Instant,
    /// When the demands were last reported.
    updated: Instant,
    groups: HashMap<String, Held>,
}

impl CoordinatorLeases {
    /// (running, queued) this coordinator counts for in `leaf`, now.
    fn occupancy(&self, leaf: &str, now: Instant) -> Option<(u32, u32)> {
        let held = self.groups.get(leaf)?;
        if now < self.expires {
            Some((held.running_slots.max(held.demand.running), held.queue_slots.max(held.demand.queued)))
        } else {
            Some((held.demand.running, held.demand.queued))
        }
    }
}

/// The rest of the cluster, as the resource manager's state has it.
#[derive(Debug, Default, Clone)]
pub struct ClusterUsage {
    /// Live coordinators (node id, instance) and their reported per-group counts.
    pub coordinators: Vec<(String, String, Vec<ResourceGroupUsage>)>,
    /// The peak memory of the unfinished queries of each leaf group, as their coordinators
    /// last reported it (the view carries peaks, not current reservations: conservative).
    pub group_memory: HashMap<String, u64>,
    /// The other live resource managers (node ids).
    pub peers: Vec<String>,
}

/// Why a request got no grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseError {
    /// A request older than one already answered.
    Stale { seq: u64, answered: u64 },
}

/// The leader's bookkeeping.
#[derive(Debug, Default)]
pub struct LeaseAuthority {
    coordinators: HashMap<String, CoordinatorLeases>,
    /// Since when this resource manager has been the leader without a break.
    leader_since: Option<Instant>,
    /// When each peer first acknowledged a push from this leader (so it knows this leader
    /// is alive and refuses lease requests from then on).
    acknowledged: HashMap<String, Instant>,
    /// The latest limits reported for each group.
    limits: HashMap<String, GroupLimits>,
}

fn under(leaf: &str, group: &str) -> bool {
    leaf == group || (leaf.len() > group.len() && leaf.starts_with(group) && leaf.as_bytes()[group.len()] == b'.')
}

/// The direct subgroup of `group` on the way to `leaf` (or the leaf itself).
fn child_of<'a>(group: &str, leaf: &'a str) -> &'a str {
    match leaf.get(group.len() + 1..).and_then(|rest| rest.find('.')) {
        Some(dot) => &leaf[..group.len() + 1 + dot],
        None => leaf,
    }
}

impl LeaseAuthority {
    /// Records whether this resource manager is the leader now.
    pub fn observe_leadership(&mut self, leader: bool, now: Instant) {
        match (leader, self.leader_since) {
            (true, None) => {
                tracing::info!("this resource manager is now the admission leader");
                self.leader_since = Some(now);
                self.acknowledged.clear();
            }
            (false, Some(_)) => {
                tracing::info!("this resource manager is no longer the admission leader");
                self.leader_since = None;
                self.coordinators.clear();
            }
            _ => {}
        }
    }

    /// Whether it has led for a full lease duration (every earlier leader's lease is over).
    /// A peer has acknowledged a push (which carries this resource manager's own record).
    pub fn peer_acknowledged(&mut self, peer: &str, now: Instant) {
        if self.leader_since.is_some() {
            self.acknowledged.entry(peer.to_string()).or_insert(now);
        }
    }

    /// Whether every lease another resource manager may have granted has expired: this one
    /// has led for a lease duration, and so long has passed since each live peer learnt
    /// that it is alive (a peer that was leader stops granting then).
    pub(crate) fn warmed_up(&self, peers: &[String], now: Instant) -> bool {
        let settled = |since: Instant| now.duration_since(since) >= LEASE_DURATION;
        self.leader_since.is_some_and(settled)
            && peers.iter().all(|peer| self.acknowledged.get(peer).is_some_and(|at| settled(*at)))
    }

    /// (running, queued) every coordinator but `except` counts for in groups under `group`.
    fn others(&self, group: &str, except: &str, usage: &ClusterUsage, now: Instant) -> (u32, u32) {
        let (mut running, mut queued) = (0, 0);
        for (id, leases) in &self.coordinators {
            if id == except {
                continue;
            }
            for leaf in leases.groups.keys().filter(|leaf| under(leaf, group)) {
                if let Some((r, q)) = leases.occupancy(leaf, now) {
                    running += r;
                    queued += q;
                }
            }
        }
        // Coordinators that have not asked this leader, or whose lease expired: what their
        // heartbeats say (the larger of the two when both exist).
        for (id, instance, groups) in &usage.coordinators {
            if id == except {
                continue;
            }
            let leases = self.coordinators.get(id).filter(|l| &l.instance == instance);
            for reported in groups.iter().filter(|g| under(&g.resource_group, group)) {
                let counted = leases.and_then(|l| l.occupancy(&reported.resource_group, now)).unwrap_or((0, 0));
                if leases.is_some_and(|l| now < l.expires) {
                    continue;
                }
                running += reported.running.saturating_sub(counted.0);
                queued += reported.queued.saturating_sub(counted.1);
            }
        }
        (running, queued)
    }

    /// Queries waiting elsewhere that rank before `demand` under `group`'s policy: the
    /// slots they are owed first.
    fn owed_before(
        &self,
        group: &GroupLimits,
        demand: &GroupDemand,
        except: &str,
        usage: &ClusterUsage,
        now: Instant,
    ) -> u32 {
        let mine = self.rank(group, demand, except, usage, now);
        let mut owed = 0;
        for (id, leases) in &self.coordinators {
            if id == except || now.duration_since(leases.updated) > DEMAND_MEMORY {
                continue;
            }
            for held in leases.groups.values() {
                if held.demand.waiting() == 0 || !under(held.demand.leaf(), &group.path) {
                    continue;
                }
                if self.rank(group, &held.demand, id, usage, now) < mine {
                    owed += held.demand.waiting();
                }
            }
        }
        owed
    }

    /// Running queries of `group` across the cluster, `owner`'s included.
    fn running_in(&self, group: &str, owner: &str, usage: &ClusterUsage, now: Instant) -> u32 {
        let (others, _) = self.others(group, owner, usage, now);
        let own: u32 = self.coordinators.get(owner).map_or(0, |l| {
            l.groups
                .keys()
                .filter(|leaf| under(leaf, group))
                .filter_map(|leaf| l.occupancy(leaf, now))
                .map(|o| o.0)
                .sum()
        });
        others + own
    }

    /// A sort key under `group`: smaller is served first. A subgroup at or past its
    /// `softConcurrencyLimit` yields to those below theirs; then the group's policy.
    fn rank(
        &self,
        group: &GroupLimits,
        demand: &GroupDemand,
        owner: &str,
        usage: &ClusterUsage,
        now: Instant,
    ) -> (bool, i128, i64) {
        let oldest = demand.oldest_waiting_ms.unwrap_or(i64::MAX);
        let child = child_of(&group.path, demand.leaf());
        let child_limits = self.limits.get(child);
        let running = self.running_in(child, owner, usage, now);
        let over_soft = child_limits.and_then(|l| l.soft_concurrency_limit).is_some_and(|soft| running >= soft);
        let key = match group.scheduling_policy {
            SchedulingPolicy::Fair => 0,
            SchedulingPolicy::QueryPriority => -(demand.top_priority as i128),
            SchedulingPolicy::Weighted | SchedulingPolicy::WeightedFair => {
                let weight = child_limits.map_or(1, |l| l.scheduling_weight.max(1)) as i128;
                // Running per unit of weight, in thousandths.
                running as i128 * 1000 / weight
            }
        };
        (over_soft, key, oldest)
    }

    /// Answers one coordinator's request.
    pub fn grant(
        &mut self,
        request: LeaseRequest,
        usage: &ClusterUsage,
        leader: &str,
        now: Instant,
    ) -> Result<LeaseGrant, LeaseError> {
        if let Some(known) = self.coordinators.get(&request.coordinator) {
            if known.instance == request.instance && request.seq <= known.seq {
                return Err(LeaseError::Stale { seq: request.seq, answered: known.seq });
            }
        }
        for demand in &request.demands {
            for limits in &demand.groups {
                self.limits.insert(limits.path.clone(), limits.clone());
            }
        }
        // This coordinator's own grants are rebuilt from its request: it holds no more
        // than it reports (it lowered its lease before asking).
        self.coordinators.insert(
            request.coordinator.clone(),
            CoordinatorLeases {
                instance: request.instance.clone(),
                seq: request.seq,
                expires: now + LEASE_DURATION,
                updated: now,
                groups: request
                    .demands
                    .iter()
                    .map(|d| {
                        let held = Held { running_slots: d.running, queue_slots: d.queued, demand: d.clone() };
                        (d.leaf().to_string(), held)
                    })
                    .collect(),
            },
        );
        let warmed_up = self.warmed_up(&usage.peers, now);
        let mut demands = request.demands.clone();
        demands.sort_by_key(|d| d.oldest_waiting_ms.unwrap_or(i64::MAX));
        let mut leases = Vec::with_capacity(demands.len());
        for demand in &demands {
            let lease = if warmed_up {
                self.decide(&request.coordinator, demand, usage, now)
            } else {
                // Just became leader: renew what is held, grant nothing new.
                GroupLease {
                    path: demand.leaf().to_string(),
                    running_slots: demand.running,
                    queue_slots: demand.queued,
                    queue_full: false,
                }
            };
            if let Some(held) =
                self.coordinators.get_mut(&request.coordinator).and_then(|c| c.groups.get_mut(demand.leaf()))
            {
                held.running_slots = lease.running_slots;
                held.queue_slots = lease.queue_slots;
            }
            leases.push(lease);
        }
        Ok(LeaseGrant {
            leader: leader.to_string(),
            seq: request.seq,
            duration_ms: LEASE_DURATION.as_millis() as u64,
            leases,
        })
    }

    fn decide(&self, coordinator: &str, demand: &GroupDemand, usage: &ClusterUsage, now: Instant) -> GroupLease {
        let leaf = demand.leaf();
        let wanted = demand.running + demand.waiting();
        let mut free_run = u32::MAX;
        let mut free_queue = u32::MAX;
        for group in &demand.groups {
            let limits = self.limits.get(&group.path).unwrap_or(group);
            let (running, queued) = self.others(&group.path, coordinator, usage, now);
            // This coordinator's other leaves under the same group, as granted so far.
            let (own_running, own_queued) = self
                .coordinators
                .get(coordinator)
                .map(|c| {
                    c.groups
                        .iter()
                        .filter(|(other, _)| other.as_str() != leaf && under(other, &group.path))
                        .fold((0, 0), |(r, q), (_, h)| (r + h.running_slots, q + h.queue_slots))
                })
                .unwrap_or((0, 0));
            let owed = self.owed_before(limits, demand, coordinator, usage, now);
            let mut run_here = limits.hard_concurrency_limit.saturating_sub(running + own_running + owed);
            if let Some(limit) = limits.soft_memory_limit_bytes {
                let reserved: u64 =
                    usage.group_memory.iter().filter(|(g, _)| under(g, &group.path)).map(|(_, bytes)| *bytes).sum();
                if reserved >= limit {
                    run_here = 0;
                }
            }
            free_run = free_run.min(run_here);
            free_queue = free_queue.min(limits.max_queued.saturating_sub(queued + own_queued));
        }
        // Never less than what already runs (it cannot be taken back), never more than wanted.
        let running_slots = wanted.min(free_run.max(demand.running));
        let starting = running_slots.saturating_sub(demand.running);
        let left = demand.waiting().saturating_sub(starting);
        let queue_slots = left.min(free_queue.max(demand.queued.min(left)));
        GroupLease { path: leaf.to_string(), running_slots, queue_slots, queue_full: left > queue_slots }
    }

    /// The cluster-wide numbers of `group`, as this leader counts them.
    pub fn group_state(&self, group: &str, usage: &ClusterUsage, now: Instant) -> GroupState {
        let (running, queued) = self.others(group, "", usage, now);
        let limits = self.limits.get(group);
        GroupState {
            path: group.to_string(),
            running,
            queued,
            hard_concurrency_limit: limits.map_or(0, |l| l.hard_concurrency_limit),
            max_queued: limits.map_or(0, |l| l.max_queued),
        }
    }

    /// Forgets coordinators whose leases expired and that the view no longer lists live.
    pub fn sweep(&mut self, usage: &ClusterUsage, now: Instant) {
        self.coordinators.retain(|id, leases| {
            now < leases.expires + DEMAND_MEMORY || usage.coordinators.iter().any(|(live, _, _)| live == id)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(path: &str, hard: u32, queued: u32) -> GroupLimits {
        GroupLimits {
            path: path.into(),
            hard_concurrency_limit: hard,
            soft_concurrency_limit: None,
            max_queued: queued,
            soft_memory_limit_bytes: None,
            scheduling_weight: 1,
            scheduling_policy: SchedulingPolicy::Fair,
        }
    }

    fn demand(groups: Vec<GroupLimits>, running: u32, queued: u32, pending: u32, oldest: i64) -> GroupDemand {
        GroupDemand { groups, running, queued, pending, oldest_waiting_ms: Some(oldest), top_priority: 0 }
    }

    fn request(coordinator: &str, seq: u64, demands: Vec<GroupDemand>) -> LeaseRequest {
        LeaseRequest { coordinator: coordinator.into(), instance: "i".into(), seq, demands }
    }

    /// A leader that has led for a full lease duration.
    fn leader(now: Instant) -> LeaseAuthority {
        let mut authority = LeaseAuthority::default();
        authority.observe_leadership(true, now - LEASE_DURATION);
        authority
    }

    #[test]
    fn slots_across_coordinators_never_exceed_the_limit() {
        let now = Instant::now();
        let mut authority = leader(now);
        let usage = ClusterUsage::default();
        let global = || vec![limits("global", 2, 100)];
        let a = authority.grant(request("a", 1, vec![demand(global(), 0, 0, 5, 10)]), &usage, "rm", now).unwrap();
        assert_eq!(a.leases[0].running_slots, 2);
        assert_eq!(a.leases[0].queue_slots, 3);
        let b = authority.grant(request("b", 1, vec![demand(global(), 0, 0, 5, 20)]), &usage, "rm", now).unwrap();
        assert_eq!(b.leases[0].running_slots, 0, "a holds both slots");
        assert_eq!(b.leases[0].queue_slots, 5);
        // a finishes one and asks again: its own waiting queries are older than b's (10 <
        // 20), so it keeps the slot.
        let a = authority.grant(request("a", 2, vec![demand(global(), 1, 3, 0, 10)]), &usage, "rm", now).unwrap();
        assert_eq!(a.leases[0].running_slots, 2);
        // Once a has nothing waiting and releases, b gets the slot.
        let a = authority.grant(request("a", 3, vec![demand(global(), 1, 0, 0, 0)]), &usage, "rm", now).unwrap();
        assert_eq!(a.leases[0].running_slots, 1);
        let b = authority.grant(request("b", 2, vec![demand(global(), 0, 5, 0, 20)]), &usage, "rm", now).unwrap();
        assert_eq!(b.leases[0].running_slots, 1);
    }

    #[test]
    fn the_oldest_waiting_query_gets_the_next_slot_whoever_holds_it() {
        let now = Instant::now();
        let mut authority = leader(now);
        let usage = ClusterUsage::default();
        let global = || vec![limits("global", 1, 100)];
        authority.grant(request("a", 1, vec![demand(global(), 1, 0, 0, 0)]), &usage, "rm", now).unwrap();
        // b waits since 5, c since 7: when a releases, c asking first still gets nothing.
        authority.grant(request("b", 1, vec![demand(global(), 0, 0, 1, 5)]), &usage, "rm", now).unwrap();
        authority.grant(request("a", 2, vec![]), &usage, "rm", now).unwrap();
        let c = authority.grant(request("c", 1, vec![demand(global(), 0, 0, 1, 7)]), &usage, "rm", now).unwrap();
        assert_eq!(c.leases[0].running_slots, 0);
        let b = authority.grant(request("b", 2, vec![demand(global(), 0, 1, 0, 5)]), &usage, "rm", now).unwrap();
        assert_eq!(b.leases[0].running_slots, 1);
    }

    #[test]
    fn limits_hold_at_every_level_of_the_path() {
        let now = Instant::now();
        let mut authority = leader(now);
        let usage = ClusterUsage::default();
        let path = |leaf: &str| vec![limits(leaf, 5, 10), limits("global", 3, 10)];
        let a =
            authority.grant(request("a", 1, vec![demand(path("global.x"), 0, 0, 4, 1)]), &usage, "rm", now).unwrap();
        assert_eq!(a.leases[0].running_slots, 3, "the parent's limit binds");
        let b =
            authority.grant(request("b", 1, vec![demand(path("global.y"), 0, 0, 4, 2)]), &usage, "rm", now).unwrap();
        assert_eq!(b.leases[0].running_slots, 0);
    }

    #[test]
    fn the_queue_fills_across_coordinators_and_then_rejects() {
        let now = Instant::now();
        let mut authority = leader(now);
        let usage = ClusterUsage::default();
        let global = || vec![limits("global", 1, 5)];
        let a = authority.grant(request("a", 1, vec![demand(global(), 0, 0, 4, 1)]), &usage, "rm", now).unwrap();
        assert_eq!((a.leases[0].running_slots, a.leases[0].queue_slots, a.leases[0].queue_full), (1, 3, false));
        let b = authority.grant(request("b", 1, vec![demand(global(), 0, 0, 3, 2)]), &usage, "rm", now).unwrap();
        assert_eq!((b.leases[0].running_slots, b.leases[0].queue_slots, b.leases[0].queue_full), (0, 2, true));
    }

    #[test]
    fn a_new_leader_renews_but_grants_nothing_new_for_one_lease_duration() {
        let now = Instant::now();
        let mut authority = LeaseAuthority::default();
        authority.observe_leadership(true, now);
        let usage = ClusterUsage::default();
        let global = || vec![limits("global", 10, 10)];
        let a = authority.grant(request("a", 1, vec![demand(global(), 2, 1, 3, 1)]), &usage, "rm", now).unwrap();
        assert_eq!((a.leases[0].running_slots, a.leases[0].queue_slots, a.leases[0].queue_full), (2, 1, false));
        let later = now + LEASE_DURATION;
        let a = authority.grant(request("a", 2, vec![demand(global(), 2, 1, 3, 1)]), &usage, "rm", later).unwrap();
        assert_eq!(a.leases[0].running_slots, 6);
    }

    #[test]
    fn expired_leases_still_count_what_runs_and_heartbeats_count_the_rest() {
        let now = Instant::now();
        let mut authority = leader(now);
        let global = || vec![limits("global", 3, 10)];
        let none = ClusterUsage::default();
        authority.grant(request("a", 1, vec![demand(global(), 1, 0, 0, 0)]), &none, "rm", now).unwrap();
        // a's lease expires; it still runs 1. c never asked this leader but its heartbeats
        // say it runs 1.
        let later = now + LEASE_DURATION * 2;
        let usage = ClusterUsage {
            coordinators: vec![(
                "c".into(),
                "i".into(),
                vec![ResourceGroupUsage { resource_group: "global".into(), queued: 0, running: 1 }],
            )],
            group_memory: HashMap::new(),
            peers: Vec::new(),
        };
        let b = authority.grant(request("b", 1, vec![demand(global(), 0, 0, 5, 5)]), &usage, "rm", later).unwrap();
        assert_eq!(b.leases[0].running_slots, 1);
        assert!(authority.grant(request("b", 1, vec![]), &usage, "rm", later).is_err(), "an old seq is refused");
    }

    #[test]
    fn soft_memory_limit_stops_new_starts() {
        let now = Instant::now();
        let mut authority = leader(now);
        let mut group = limits("global", 10, 10);
        group.soft_memory_limit_bytes = Some(1000);
        let usage = ClusterUsage {
            coordinators: Vec::new(),
            group_memory: HashMap::from([("global".into(), 2000)]),
            peers: Vec::new(),
        };
        let a = authority.grant(request("a", 1, vec![demand(vec![group], 1, 0, 2, 1)]), &usage, "rm", now).unwrap();
        assert_eq!((a.leases[0].running_slots, a.leases[0].queue_slots), (1, 2));
    }

    #[test]
    fn weighted_fair_serves_the_subgroup_with_the_fewest_running_per_weight() {
        let now = Instant::now();
        let mut authority = leader(now);
        let usage = ClusterUsage::default();
        let mut parent = limits("global", 3, 100);
        parent.scheduling_policy = SchedulingPolicy::WeightedFair;
        let mut light = limits("global.light", 10, 100);
        light.scheduling_weight = 1;
        let mut heavy = limits("global.heavy", 10, 100);
        heavy.scheduling_weight = 3;
        // Each subgroup runs one; light waits since 1, heavy since 2.
        authority
            .grant(request("a", 1, vec![demand(vec![light.clone(), parent.clone()], 1, 0, 1, 1)]), &usage, "rm", now)
            .unwrap();
        authority
            .grant(request("b", 1, vec![demand(vec![heavy.clone(), parent.clone()], 1, 0, 1, 2)]), &usage, "rm", now)
            .unwrap();
        // One slot left: heavy (1 running / weight 3) goes before light (1 / 1), though younger.
        let a = authority
            .grant(request("a", 2, vec![demand(vec![light, parent.clone()], 1, 0, 1, 1)]), &usage, "rm", now)
            .unwrap();
        assert_eq!(a.leases[0].running_slots, 1);
        let b =
            authority.grant(request("b", 2, vec![demand(vec![heavy, parent], 1, 0, 1, 2)]), &usage, "rm", now).unwrap();
        assert_eq!(b.leases[0].running_slots, 2);
    }

    #[test]
    fn a_subgroup_past_its_soft_limit_yields() {
        let now = Instant::now();
        let mut authority = leader(now);
        let usage = ClusterUsage::default();
        let parent = limits("global", 3, 100);
        let mut busy = limits("global.busy", 10, 100);
        busy.soft_concurrency_limit = Some(1);
        let idle = limits("global.idle", 10, 100);
        authority
            .grant(request("a", 1, vec![demand(vec![busy.clone(), parent.clone()], 2, 0, 1, 1)]), &usage, "rm", now)
            .unwrap();
        authority
            .grant(request("b", 1, vec![demand(vec![idle.clone(), parent.clone()], 0, 0, 1, 5)]), &usage, "rm", now)
            .unwrap();
        // busy waits longer but is past its soft limit: the free slot goes to idle.
        let a = authority
            .grant(request("a", 2, vec![demand(vec![busy, parent.clone()], 2, 0, 1, 1)]), &usage, "rm", now)
            .unwrap();
        assert_eq!(a.leases[0].running_slots, 2);
        let b =
            authority.grant(request("b", 2, vec![demand(vec![idle, parent], 0, 0, 1, 5)]), &usage, "rm", now).unwrap();
        assert_eq!(b.leases[0].running_slots, 1);
    }

    #[test]
    fn a_leader_waits_a_lease_duration_after_each_peer_learnt_of_it() {
        let now = Instant::now();
        let mut authority = leader(now);
        let usage = ClusterUsage { peers: vec!["rm2".into()], ..Default::default() };
        let global = || vec![limits("global", 10, 10)];
        // rm2 (a leader until it hears of this one) has not acknowledged us: nothing new.
        let a = authority.grant(request("a", 1, vec![demand(global(), 0, 0, 3, 1)]), &usage, "rm", now).unwrap();
        assert_eq!(a.leases[0].running_slots, 0);
        authority.peer_acknowledged("rm2", now);
        let a = authority.grant(request("a", 2, vec![demand(global(), 0, 0, 3, 1)]), &usage, "rm", now).unwrap();
        assert_eq!(a.leases[0].running_slots, 0, "rm2's leases may still run");
        let later = now + LEASE_DURATION;
        let a = authority.grant(request("a", 3, vec![demand(global(), 0, 0, 3, 1)]), &usage, "rm", later).unwrap();
        assert_eq!(a.leases[0].running_slots, 3);
    }

    #[test]
    fn paths_nest_by_dots() {
        assert!(under("global.adhoc", "global"));
        assert!(under("global", "global"));
        assert!(!under("globalx", "global"));
        assert_eq!(child_of("global", "global.adhoc.alice"), "global.adhoc");
        assert_eq!(child_of("global", "global.adhoc"), "global.adhoc");
    }
}
