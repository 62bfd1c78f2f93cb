//! Elastic lending of worker groups between warehouses (ByConity lends by hand; here the
//! admission leader does it): while a read warehouse stays busy — queries queued, or more
//! running tasks per worker than `warehouse.lending-busy-tasks-per-worker` — for
//! `warehouse.lending-busy-time`, and a physical group of another warehouse has stayed idle
//! (no running task on its workers, nothing queued in its warehouse) for
//! `warehouse.lending-idle-time`, the leader lends that group to the busy warehouse: the
//! borrower gets a shared group `lent.W.G` referencing it in the cluster view, so its queries
//! are placed there too (the owner's queries still are as well). A loan ends, once it has
//! lasted `warehouse.lending-min-time`, when the owner gets busy or the borrower has been
//! calm for `warehouse.lending-busy-time`.
//!
//! Loans are soft state, like the rest of the view: the leader sends them to its peers with
//! every push, so every resource manager serves them; when the leader changes, the new one
//! starts without loans and lends again as the load says.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use flotilla_proto::cluster::{NodeRole, NodeView};
use flotilla_proto::warehouses::{GroupRef, Loan, WarehouseDefinition, WarehouseType};

/// `warehouse.lending-*`.
#[derive(Debug, Clone, PartialEq)]
pub struct LendingConfig {
    pub enabled: bool,
    pub busy_tasks_per_worker: f64,
    pub busy_time: Duration,
    pub idle_time: Duration,
    pub min_time: Duration,
}

impl Default for LendingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            busy_tasks_per_worker: 4.0,
            busy_time: Duration::from_secs(5),
            idle_time: Duration::from_secs(10),
            min_time: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
struct ActiveLoan {
    borrower: String,
    group: GroupRef,
    since: Instant,
}

/// What the leader remembers between rounds.
#[derive(Debug, Default)]
pub struct Lending {
    /// Per warehouse: since when it has been busy, or calm.
    busy_since: HashMap<String, Instant>,
    calm_since: HashMap<String, Instant>,
    /// Per physical group: since when it has been idle.
    idle_since: HashMap<(String, String), Instant>,
    loans: Vec<ActiveLoan>,
}

/// One warehouse's load as the view has it.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    workers: u32,
    tasks: u64,
    queued: u32,
}

impl Lending {
    /// The loans in force, with their ages.
    pub fn loans(&self, now: Instant) -> Vec<Loan> {
        self.loans
            .iter()
            .map(|l| Loan {
                borrower: l.borrower.clone(),
                group: l.group.clone(),
                lent_for_ms: now.saturating_duration_since(l.since).as_millis() as u64,
            })
            .collect()
    }

    /// One round of the admission leader (`leader`; anyone else forgets its loans): updates
    /// what is busy and idle from the live nodes and the queued queries per warehouse, then
    /// ends and makes loans. Returns what changed, for the log.
    pub fn tick(
        &mut self,
        config: &LendingConfig,
        leader: bool,
        definitions: &[WarehouseDefinition],
        nodes: &[NodeView],
        queued: &BTreeMap<String, u32>,
        now: Instant,
    ) -> Vec<String> {
        let mut events = Vec::new();
        if !config.enabled || !leader {
            for loan in self.loans.drain(..) {
                events.push(format!("loan of {} to {} ended: not the admission leader", loan.group, loan.borrower));
            }
            self.busy_since.clear();
            self.calm_since.clear();
            self.idle_since.clear();
            return events;
        }
        // Loads: per physical group (its workers' labels), then per warehouse over every group
        // it runs on (its own, the shared ones of its definition, its loans).
        let mut groups: BTreeMap<(String, String), (u32, u64)> = BTreeMap::new();
        for node in nodes.iter().filter(|n| n.state.is_live() && n.node.has_role(NodeRole::Worker)) {
            let entry = groups.entry((node.node.warehouse.clone(), node.node.worker_group.clone())).or_default();
            entry.0 += 1;
            entry.1 += node.worker.as_ref().map_or(0, |w| w.running_tasks as u64);
        }
        let mut names: Vec<String> = definitions.iter().map(|w| w.name.clone()).collect();
        names.extend(groups.keys().map(|(w, _)| w.clone()));
        names.sort();
        names.dedup();
        let loads: BTreeMap<String, Load> = names
            .into_iter()
            .map(|name| {
                let mut load = Load { queued: queued.get(&name).copied().unwrap_or(0), ..Load::default() };
                for (group, (workers, tasks)) in &groups {
                    if serves(definitions, &self.loans, &name, group) {
                        load.workers += workers;
                        load.tasks += tasks;
                    }
                }
                (name, load)
            })
            .collect();
        let busy = |load: &Load| {
            load.queued > 0
                || (load.workers > 0 && load.tasks as f64 / load.workers as f64 >= config.busy_tasks_per_worker)
        };
        for (name, load) in &loads {
            if busy(load) {
                self.busy_since.entry(name.clone()).or_insert(now);
                self.calm_since.remove(name);
            } else {
                self.calm_since.entry(name.clone()).or_insert(now);
                self.busy_since.remove(name);
            }
        }
        for (group, (_, tasks)) in &groups {
            let owner_queued = queued.get(&group.0).copied().unwrap_or(0);
            if *tasks == 0 && owner_queued == 0 {
                self.idle_since.entry(group.clone()).or_insert(now);
            } else {
                self.idle_since.remove(group);
            }
        }
        self.idle_since.retain(|group, _| groups.contains_key(group));
        let held = |since: Option<&Instant>, time: Duration| since.is_some_and(|at| now.duration_since(*at) >= time);

        // Returns: after the minimum time, when the owner is busy or the borrower calm; at
        // once when the group or the borrower is gone.
        let mut kept = Vec::new();
        for loan in self.loans.drain(..) {
            let key = (loan.group.warehouse.clone(), loan.group.worker_group.clone());
            let exists = groups.contains_key(&key) && definitions.iter().any(|w| w.name == loan.borrower);
            let lasted = now.duration_since(loan.since) >= config.min_time;
            let owner_busy = self.busy_since.contains_key(&loan.group.warehouse);
            let borrower_calm = held(self.calm_since.get(&loan.borrower), config.busy_time);
            let reason = match () {
                _ if !exists => Some("the group or the borrower is gone"),
                _ if lasted && owner_busy => Some("its warehouse needs it"),
                _ if lasted && borrower_calm => Some("the borrower is no longer busy"),
                _ => None,
            };
            match reason {
                Some(reason) => events.push(format!(
                    "{} returned by {} after {:?}: {reason}",
                    loan.group,
                    loan.borrower,
                    now.duration_since(loan.since)
                )),
                None => kept.push(loan),
            }
        }
        self.loans = kept;

        // New loans: the busiest read warehouse that has stayed busy gets one idle group.
        let borrower = definitions
            .iter()
            .filter(|w| w.kind == WarehouseType::Read && held(self.busy_since.get(&w.name), config.busy_time))
            .max_by(|a, b| {
                let pressure = |name: &str| {
                    let load = loads.get(name).copied().unwrap_or_default();
                    (load.queued, load.tasks as f64 / load.workers.max(1) as f64)
                };
                pressure(&a.name).partial_cmp(&pressure(&b.name)).unwrap_or(std::cmp::Ordering::Equal)
            });
        if let Some(borrower) = borrower {
            let lendable = groups.keys().find(|group| {
                group.0 != borrower.name
                    && !serves(definitions, &self.loans, &borrower.name, group)
                    && !self.loans.iter().any(|l| l.group.warehouse == group.0 && l.group.worker_group == group.1)
                    && !self.busy_since.contains_key(&group.0)
                    && held(self.idle_since.get(*group), config.idle_time)
            });
            if let Some((warehouse, worker_group)) = lendable.cloned() {
                let group = GroupRef { warehouse, worker_group };
                events.push(format!("{group} lent to {}, which is busy", borrower.name));
                self.loans.push(ActiveLoan { borrower: borrower.name.clone(), group, since: now });
            }
        }
        events
    }
}

/// Whether `warehouse` runs queries on the physical `group`: its own, a shared group of its
/// definition, or a loan.
fn serves(
    definitions: &[WarehouseDefinition],
    loans: &[ActiveLoan],
    warehouse: &str,
    group: &(String, String),
) -> bool {
    let is = |from: &GroupRef| from.warehouse == group.0 && from.worker_group == group.1;
    group.0 == warehouse
        || definitions
            .iter()
            .filter(|w| w.name == warehouse)
            .flat_map(|w| &w.worker_groups)
            .any(|g| g.shared_from.as_ref().is_some_and(is))
        || loans.iter().any(|l| l.borrower == warehouse && is(&l.group))
}

#[cfg(test)]
mod tests {
    use flotilla_proto::cluster::{NodeAnnouncement, NodeState, WorkerLoad};

    use super::*;

    fn worker(id: &str, warehouse: &str, group: &str, tasks: u32) -> NodeView {
        NodeView {
            node: NodeAnnouncement {
                node_id: id.into(),
                instance: "i".into(),
                start_time_ms: 0,
                roles: vec![NodeRole::Worker],
                http_uri: format!("http://{id}:1"),
                data_uri: Some(format!("http://{id}:2")),
                coordinator_id: None,
                version: "test".into(),
                environment: "test".into(),
                warehouse: warehouse.into(),
                worker_group: group.into(),
            },
            state: NodeState::Active,
            last_heartbeat_age_ms: 0,
            seq: 1,
            worker: Some(WorkerLoad { running_tasks: tasks, ..WorkerLoad::default() }),
        }
    }

    #[test]
    fn an_idle_group_is_lent_to_a_busy_read_warehouse_and_returned() {
        let definitions = flotilla_proto::warehouses::parse(
            r#"{"warehouses": [
                {"name": "bi", "type": "read", "workerGroups": [{"name": "g1"}]},
                {"name": "etl", "type": "write", "workerGroups": [{"name": "g1"}]},
                {"name": "adhoc", "type": "read", "workerGroups": [{"name": "g1"}]}
            ]}"#,
        )
        .unwrap();
        let config = LendingConfig {
            enabled: true,
            busy_tasks_per_worker: 4.0,
            busy_time: Duration::from_secs(5),
            idle_time: Duration::from_secs(10),
            min_time: Duration::from_secs(30),
        };
        let mut lending = Lending::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let none = BTreeMap::new();
        let busy_bi = |etl_tasks: u32, adhoc_tasks: u32| {
            vec![
                worker("b", "bi", "g1", 8),
                worker("e", "etl", "g1", etl_tasks),
                worker("a", "adhoc", "g1", adhoc_tasks),
            ]
        };
        // Busy, but not for long enough; the idle groups not idle for long enough.
        assert!(lending.tick(&config, true, &definitions, &busy_bi(0, 3), &none, at(0)).is_empty());
        assert!(lending.tick(&config, true, &definitions, &busy_bi(0, 3), &none, at(6)).is_empty());
        // etl's group has been idle for 10 s: lent to bi (adhoc's group is working).
        let events = lending.tick(&config, true, &definitions, &busy_bi(0, 3), &none, at(10));
        assert_eq!(events, ["etl.g1 lent to bi, which is busy"]);
        let loans = lending.loans(at(11));
        assert_eq!(loans.len(), 1);
        assert_eq!((loans[0].borrower.as_str(), loans[0].group_name()), ("bi", "lent.etl.g1".to_string()));
        let shown = flotilla_proto::warehouses::with_loans(&definitions, &loans);
        assert!(shown[0].worker_groups.iter().any(|g| g.lent && g.name == "lent.etl.g1"));
        // bi's load now counts etl's worker too: (8 + 0) / 2 = 4 is still busy; nothing more
        // to lend (adhoc's group works), and etl getting busy does not end the loan before
        // the minimum time.
        let queued_etl = BTreeMap::from([("etl".to_string(), 3)]);
        assert!(lending.tick(&config, true, &definitions, &busy_bi(2, 3), &queued_etl, at(20)).is_empty());
        let events = lending.tick(&config, true, &definitions, &busy_bi(2, 3), &queued_etl, at(41));
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].starts_with("etl.g1 returned by bi") && events[0].ends_with("its warehouse needs it"));
        assert!(lending.loans(at(41)).is_empty());
        // Lent again once idle, returned when bi calms down (after the minimum time).
        lending.tick(&config, true, &definitions, &busy_bi(0, 3), &none, at(50));
        assert_eq!(lending.tick(&config, true, &definitions, &busy_bi(0, 3), &none, at(60)).len(), 1);
        let calm = vec![worker("b", "bi", "g1", 0), worker("e", "etl", "g1", 0), worker("a", "adhoc", "g1", 3)];
        assert!(lending.tick(&config, true, &definitions, &calm, &none, at(80)).is_empty());
        let events = lending.tick(&config, true, &definitions, &calm, &none, at(91));
        assert!(events[0].ends_with("the borrower is no longer busy"), "{events:?}");
        // A write warehouse never borrows; a follower forgets its loans.
        let busy_etl = vec![worker("b", "bi", "g1", 0), worker("e", "etl", "g1", 9), worker("a", "adhoc", "g1", 0)];
        for s in [100, 120, 140] {
            assert!(lending.tick(&config, true, &definitions, &busy_etl, &none, at(s)).is_empty());
        }
        lending.tick(&config, true, &definitions, &busy_bi(0, 0), &none, at(150));
        lending.tick(&config, true, &definitions, &busy_bi(0, 0), &none, at(160));
        assert_eq!(lending.loans(at(160)).len(), 1);
        let events = lending.tick(&config, false, &definitions, &busy_bi(0, 0), &none, at(161));
        assert!(events[0].contains("not the admission leader"));
        assert!(lending.loans(at(161)).is_empty());
    }
}
