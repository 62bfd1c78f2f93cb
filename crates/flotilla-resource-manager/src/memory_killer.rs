//! The cluster's low-memory killer: when workers' memory pools have been full, with
//! reservations waiting on them, for `query.low-memory-killer.delay`, it kills one query for
//! the whole cluster, chosen by `query.low-memory-killer.policy`, with
//! `CLUSTER_OUT_OF_MEMORY`.
//!
//! ## One decider
//!
//! Presto's multi-coordinator mode runs a killer in every coordinator, each over its own
//! queries: one memory squeeze kills one query per coordinator, and a coordinator with only
//! small queries kills a small one. Here coordinators never decide. The decider is the
//! **admission leader**: the live resource manager with the smallest node id, the same one
//! that grants resource-group leases ([`crate::admission`]). It sees every worker's pool,
//! how long reservations have waited there, and every query's memory on every worker, from
//! the heartbeats.
//!
//! - **Another resource manager** does not decide while it sees a live resource manager
//!   with a smaller id. When the leader dies, the next one takes over once its heartbeats
//!   stop (`resource-manager.node-status-timeout`), and then waits one whole `delay` as the
//!   leader before its first kill, so a kill the dead leader had sent has time to free its
//!   memory and unblock the workers; if it had not been delivered, the new leader kills once
//!   the delay has passed. Two leaders at once need two resource managers that each see the
//!   other dead for longer than the delay: a network partition.
//! - **Delivery**: the verdict travels in the leader's heartbeat answers (every node
//!   heartbeats every resource manager about once a second): the owning coordinator fails
//!   the query, every worker fails the query's waiting reservations so its memory is freed
//!   at once. The leader repeats it until no worker reports memory for the query (or
//!   [`KILL_SETTLE`] passed), and kills nothing else meanwhile, as Trino waits for a killed
//!   query's memory before choosing another.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use flotilla_proto::cluster::{MemoryKill, WorkerLoad};

/// How long a kill is announced while its memory stays reserved, before another query may
/// be chosen.
pub const KILL_SETTLE: Duration = Duration::from_secs(30);

/// `query.low-memory-killer.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KillerPolicy {
    None,
    /// The query with the largest reservation across the cluster.
    TotalReservation,
    /// The query with the largest reservation on the blocked workers (Trino's default).
    #[default]
    TotalReservationOnBlockedNodes,
}

impl FromStr for KillerPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "none" => Ok(Self::None),
            "total-reservation" => Ok(Self::TotalReservation),
            "total-reservation-on-blocked-nodes" => Ok(Self::TotalReservationOnBlockedNodes),
            _ => Err("expected none, total-reservation or total-reservation-on-blocked-nodes".into()),
        }
    }
}

impl fmt::Display for KillerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::TotalReservation => "total-reservation",
            Self::TotalReservationOnBlockedNodes => "total-reservation-on-blocked-nodes",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillerConfig {
    pub policy: KillerPolicy,
    /// `query.low-memory-killer.delay`.
    pub delay: Duration,
}

impl Default for KillerConfig {
    fn default() -> Self {
        Self { policy: KillerPolicy::default(), delay: Duration::from_secs(300) }
    }
}

#[derive(Debug)]
struct Pending {
    kill: MemoryKill,
    at: Instant,
}

/// The killer's state on one resource manager (it acts only while that one leads).
#[derive(Debug, Default)]
pub struct LowMemoryKiller {
    config: KillerConfig,
    /// Since when this resource manager has been the leader without a break.
    leader_since: Option<Instant>,
    pending: Option<Pending>,
}

impl LowMemoryKiller {
    pub fn new(config: KillerConfig) -> Self {
        Self { config, leader_since: None, pending: None }
    }

    /// One look at the workers (node id, last reported load): returns the query to kill,
    /// if one must die now. `leader`: whether this resource manager is the admission leader.
    pub fn tick(
        &mut self,
        leader: bool,
        workers: &[(String, WorkerLoad)],
        node_id: &str,
        now: Instant,
    ) -> Option<MemoryKill> {
        if !leader {
            self.leader_since = None;
            self.pending = None;
            return None;
        }
        let leader_since = *self.leader_since.get_or_insert(now);
        if let Some(pending) = &self.pending {
            let holds = workers.iter().any(|(_, load)| {
                load.query_memory.iter().any(|q| q.query_id == pending.kill.query_id && q.reserved_bytes > 0)
            });
            if holds && now.duration_since(pending.at) < KILL_SETTLE {
                return None;
            }
            self.pending = None;
        }
        let delay = self.config.delay;
        let blocked: Vec<&(String, WorkerLoad)> =
            workers.iter().filter(|(_, load)| Duration::from_millis(load.memory_blocked_ms) >= delay).collect();
        if blocked.is_empty() || self.config.policy == KillerPolicy::None || now.duration_since(leader_since) < delay {
            return None;
        }
        let counted: Vec<&(String, WorkerLoad)> = match self.config.policy {
            KillerPolicy::TotalReservation => workers.iter().collect(),
            _ => blocked.clone(),
        };
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, load) in &counted {
            for query in &load.query_memory {
                *totals.entry(query.query_id.as_str()).or_default() += query.reserved_bytes;
            }
        }
        // The largest; among equals the oldest id (ids start with their creation time).
        let (victim, bytes) = totals
            .into_iter()
            .filter(|(_, bytes)| *bytes > 0)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))?;
        let nodes: Vec<&str> = blocked.iter().map(|(id, _)| id.as_str()).collect();
        let kill = MemoryKill {
            query_id: victim.to_string(),
            message: format!(
                "Query killed because the cluster is out of memory. Please try again in a few minutes. (It held {} MB, the most by \
                 query.low-memory-killer.policy={}; workers blocked for {:?} or more: {}; decided by resource manager {node_id})",
                bytes >> 20,
                self.config.policy,
                delay,
                nodes.join(", "),
            ),
        };
        tracing::warn!(query = %kill.query_id, "low-memory killer: {}", kill.message);
        self.pending = Some(Pending { kill: kill.clone(), at: now });
        Some(kill)
    }

    /// The kill to repeat in heartbeat answers until its memory is released.
    pub fn announced(&self) -> Vec<MemoryKill> {
        self.pending.iter().map(|p| p.kill.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::cluster::QueryMemory;

    fn worker(id: &str, blocked_ms: u64, queries: &[(&str, u64)]) -> (String, WorkerLoad) {
        let query_memory = queries
            .iter()
            .map(|(query, bytes)| QueryMemory {
                query_id: query.to_string(),
                reserved_bytes: *bytes,
                ..Default::default()
            })
            .collect();
        (id.to_string(), WorkerLoad { memory_blocked_ms: blocked_ms, query_memory, ..Default::default() })
    }

    fn killer(policy: KillerPolicy) -> LowMemoryKiller {
        LowMemoryKiller::new(KillerConfig { policy, delay: Duration::from_secs(2) })
    }

    #[test]
    fn one_query_dies_after_the_delay_chosen_by_the_policy() {
        let workers = vec![worker("w1", 3000, &[("q_a", 100), ("q_b", 60)]), worker("w2", 0, &[("q_b", 500)])];
        let start = Instant::now();
        let mut on_blocked = killer(KillerPolicy::TotalReservationOnBlockedNodes);
        assert_eq!(on_blocked.tick(true, &workers, "rm", start), None, "a new leader waits one delay first");
        let kill = on_blocked.tick(true, &workers, "rm", start + Duration::from_secs(2)).unwrap();
        assert_eq!(kill.query_id, "q_a", "largest on the blocked worker");
        assert!(kill.message.starts_with("Query killed because the cluster is out of memory. Please try again"));
        assert_eq!(on_blocked.announced(), vec![kill.clone()]);
        // While the victim still holds memory, nobody else dies.
        assert_eq!(on_blocked.tick(true, &workers, "rm", start + Duration::from_secs(3)), None);
        // Released: the next squeeze may kill again.
        let freed = vec![worker("w1", 3000, &[("q_b", 60)]), worker("w2", 0, &[("q_b", 500)])];
        assert_eq!(on_blocked.tick(true, &freed, "rm", start + Duration::from_secs(4)).unwrap().query_id, "q_b");

        let mut total = killer(KillerPolicy::TotalReservation);
        total.tick(true, &workers, "rm", start);
        assert_eq!(total.tick(true, &workers, "rm", start + Duration::from_secs(2)).unwrap().query_id, "q_b");
    }

    #[test]
    fn nothing_dies_without_blocked_workers_with_policy_none_or_off_the_leader() {
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        let short = vec![worker("w1", 1999, &[("q_a", 100)])];
        let mut k = killer(KillerPolicy::TotalReservation);
        k.tick(true, &short, "rm", start);
        assert_eq!(k.tick(true, &short, "rm", later), None, "blocked for less than the delay");
        let blocked = vec![worker("w1", 5000, &[("q_a", 100)])];
        let mut none = killer(KillerPolicy::None);
        none.tick(true, &blocked, "rm", start);
        assert_eq!(none.tick(true, &blocked, "rm", later), None);
        let mut follower = killer(KillerPolicy::TotalReservation);
        assert_eq!(follower.tick(false, &blocked, "rm", start), None);
        assert_eq!(follower.tick(false, &blocked, "rm", later), None);
        // Becoming leader starts the wait over, and losing leadership forgets the kill.
        assert_eq!(follower.tick(true, &blocked, "rm", later), None);
        assert!(follower.tick(true, &blocked, "rm", later + Duration::from_secs(2)).is_some());
        follower.tick(false, &blocked, "rm", later + Duration::from_secs(3));
        assert!(follower.announced().is_empty());
    }

    #[test]
    fn a_kill_whose_memory_never_goes_is_given_up_after_a_while() {
        let start = Instant::now();
        let blocked = vec![worker("w1", 5000, &[("q_a", 100), ("q_b", 50)])];
        let mut k = killer(KillerPolicy::TotalReservation);
        k.tick(true, &blocked, "rm", start);
        assert_eq!(k.tick(true, &blocked, "rm", start + Duration::from_secs(2)).unwrap().query_id, "q_a");
        assert_eq!(k.tick(true, &blocked, "rm", start + Duration::from_secs(20)), None);
        assert!(k.tick(true, &blocked, "rm", start + Duration::from_secs(2) + KILL_SETTLE).is_some());
    }

    #[test]
    fn policies_parse_as_trino_names_them() {
        assert_eq!("total-reservation-on-blocked-nodes".parse(), Ok(KillerPolicy::TotalReservationOnBlockedNodes));
        assert_eq!("TOTAL_RESERVATION".parse(), Ok(KillerPolicy::TotalReservation));
        assert_eq!("none".parse(), Ok(KillerPolicy::None));
        assert!("biggest".parse::<KillerPolicy>().is_err());
    }
}
