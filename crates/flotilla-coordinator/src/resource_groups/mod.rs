//! Resource groups: which group a query belongs to ([`config`]), and admitting it so the
//! group's limits hold for the whole cluster.
//!
//! With `resource-groups.configuration-manager=file`, every query is placed in a group by
//! the selectors and then waits (state `QUEUED`) until this coordinator holds a running slot
//! for its group under a lease from the admission leader (see
//! `flotilla_resource_manager::admission` for the protocol and its guarantees). Between
//! lease renewals the coordinator admits locally: a slot freed by a query that ends goes to
//! the next waiting query of the group at once. Without a lease it admits nothing. Without a
//! configuration every query runs at once in `global`.

pub mod config;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flotilla_node::{ClusterViewClient, InternalClient, LocalNode};
use flotilla_proto::admission::{
    GroupDemand, GroupLease, GroupLimits, GroupState, LeaseGrant, LeaseRefusal, LeaseRequest, LEASE_PATH,
};
use flotilla_proto::{CallError, ErrorCode, FlotillaError, QueryId};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{QueryContext, ResourceGroupsConfig, Selected};

/// The group every query runs in without a configuration.
pub const DEFAULT_GROUP: &str = "global";

/// Start of the admission path of a warehouse's limits (no resource group path has a `:`).
pub const WAREHOUSE_PATH_PREFIX: &str = "warehouse:";

/// A warehouse's limits (`maxConcurrentQueries`, `maxQueued` in its definition) as a group
/// of its own that every query of the warehouse is admitted to as well, through the same
/// leases, so they hold across the cluster; `None` when it has none.
pub fn warehouse_group(definition: &flotilla_proto::warehouses::WarehouseDefinition) -> Option<Selected> {
    /// What stands for "no limit" (the leader's arithmetic saturates).
    const UNLIMITED: u32 = 1 << 30;
    if !definition.limited() {
        return None;
    }
    let path = format!("{WAREHOUSE_PATH_PREFIX}{}", definition.name);
    let limits = GroupLimits {
        path: path.clone(),
        hard_concurrency_limit: definition.max_concurrent_queries.unwrap_or(UNLIMITED),
        soft_concurrency_limit: None,
        max_queued: definition.max_queued.unwrap_or(UNLIMITED),
        soft_memory_limit_bytes: None,
        scheduling_weight: 1,
        scheduling_policy: flotilla_proto::admission::SchedulingPolicy::Fair,
    };
    Some(Selected { path, chain: vec![limits] })
}

/// How often leases are renewed while queries wait, and while they run.
const WAITING_RENEWAL: Duration = Duration::from_millis(200);
const RUNNING_RENEWAL: Duration = Duration::from_secs(1);
/// A lease ends this much earlier here than its duration says (timer slack).
const LEASE_MARGIN: Duration = Duration::from_millis(100);
/// How often the configuration file is checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// A query waiting for a slot.
#[derive(Debug)]
struct Waiting {
    id: QueryId,
    created_ms: i64,
    priority: i64,
    /// The first lease request that counted it (a queue-full answer to that or a later
    /// request rejects it).
    asked: Option<u64>,
    admit: oneshot::Sender<Result<(), FlotillaError>>,
}

#[derive(Debug, Default)]
struct Lease {
    running_slots: u32,
    queue_slots: u32,
    expires: Option<Instant>,
}

impl Lease {
    fn valid(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now < at)
    }
}

#[derive(Debug)]
struct Leaf {
    chain: Vec<GroupLimits>,
    running: u32,
    /// Holding queue slots, in admission order.
    queued: VecDeque<Waiting>,
    /// Holding nothing yet.
    pending: VecDeque<Waiting>,
    lease: Lease,
}

impl Leaf {
    fn idle(&self) -> bool {
        self.running == 0 && self.queued.is_empty() && self.pending.is_empty()
    }

    fn demand(&self) -> GroupDemand {
        let waiting = self.queued.iter().chain(&self.pending);
        GroupDemand {
            groups: self.chain.clone(),
            running: self.running,
            queued: self.queued.len() as u32,
            pending: self.pending.len() as u32,
            oldest_waiting_ms: waiting.clone().map(|w| w.created_ms).min(),
            top_priority: waiting.map(|w| w.priority).max().unwrap_or(0),
        }
    }

    /// Takes the next waiting query in the group's order (queue first, it waited longer).
    fn next_waiting(&mut self) -> Option<Waiting> {
        let by_priority = self
            .chain
            .iter()
            .any(|g| g.scheduling_policy == flotilla_proto::admission::SchedulingPolicy::QueryPriority);
        for list in [&mut self.queued, &mut self.pending] {
            if list.is_empty() {
                continue;
            }
            let index = if by_priority {
                // Highest priority; the earliest of equals.
                let best = list.iter().map(|w| w.priority).max().unwrap_or(0);
                list.iter().position(|w| w.priority == best).unwrap_or(0)
            } else {
                0
            };
            return list.remove(index);
        }
        None
    }

    /// Starts what the lease allows, queues what it allows, and rejects pending queries the
    /// leader said the cluster's queue has no room for.
    fn pump(&mut self, now: Instant, queue_full_upto: Option<u64>) {
        if self.lease.valid(now) {
            while self.running < self.lease.running_slots {
                let Some(waiting) = self.next_waiting() else { break };
                if waiting.admit.send(Ok(())).is_ok() {
                    self.running += 1;
                }
            }
            while (self.queued.len() as u32) < self.lease.queue_slots {
                let Some(waiting) = self.pending.pop_front() else { break };
                self.queued.push_back(waiting);
            }
        }
        if let Some(seq) = queue_full_upto {
            let (reject, keep): (VecDeque<Waiting>, VecDeque<Waiting>) =
                std::mem::take(&mut self.pending).into_iter().partition(|w| w.asked.is_some_and(|asked| asked <= seq));
            self.pending = keep;
            let path = self.chain.first().map(|g| g.path.clone()).unwrap_or_default();
            for waiting in reject {
                let _ = waiting.admit.send(Err(FlotillaError::new(
                    ErrorCode::QueryQueueFull,
                    format!("Too many queued queries for \"{path}\""),
                )));
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    leaves: HashMap<String, Leaf>,
    /// The leader told about an empty demand since the last query ended.
    released: bool,
    last_error: Option<String>,
}

/// The configuration as loaded, with where it came from (for reloads).
#[derive(Debug)]
struct Loaded {
    config: Arc<ResourceGroupsConfig>,
    path: PathBuf,
    modified: Option<SystemTime>,
}

/// A query waiting in [`Admission::admit`]; dropped before it took its answer, it leaves
/// the waiting lists, or gives back the slot it was granted meanwhile.
struct Waiter {
    admission: Arc<Admission>,
    path: String,
    id: QueryId,
    admitted: Option<oneshot::Receiver<Result<(), FlotillaError>>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut admitted) = self.admitted.take() else { return };
        if self.admission.withdraw(&self.path, &self.id) {
            return;
        }
        // Answered already: answers are sent under the lock `withdraw` took, so it is here.
        if let Ok(Ok(())) = admitted.try_recv() {
            self.admission.release(&self.path);
        }
    }
}

/// This coordinator's admission: group selection and the lease client.
#[derive(Debug)]
pub struct Admission {
    loaded: Option<RwLock<Loaded>>,
    local: Arc<LocalNode>,
    view: Arc<ClusterViewClient>,
    client: InternalClient,
    state: Mutex<State>,
    wake: Notify,
}

/// A running slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    admission: Option<Arc<Admission>>,
    path: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.release(&self.path);
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Admission {
    /// `config_file`: the file-based configuration, or `None` for no admission control.
    pub fn new(
        config_file: Option<PathBuf>,
        local: Arc<LocalNode>,
        view: Arc<ClusterViewClient>,
        client: InternalClient,
    ) -> Result<Arc<Self>, String> {
        let loaded = match config_file {
            Some(path) => {
                let config = config::load(&path)?;
                Some(RwLock::new(Loaded { config: Arc::new(config), modified: modified(&path), path }))
            }
            None => None,
        };
        Ok(Arc::new(Self { loaded, local, view, client, state: Mutex::new(State::default()), wake: Notify::new() }))
    }

    pub fn enabled(&self) -> bool {
        self.loaded.is_some()
    }

    /// The group of a query, or `QUERY_REJECTED` when no selector matches.
    pub fn select(&self, query: &QueryContext) -> Result<Selected, FlotillaError> {
        let Some(loaded) = &self.loaded else {
            // No limits: nothing is admitted against a chain, so none is built.
            return Ok(Selected { path: DEFAULT_GROUP.to_string(), chain: Vec::new() });
        };
        let memory = self.view.snapshot().map_or(0, |s| s.view.memory.pool_bytes);
        let config = loaded.read().config.clone();
        config
            .select(query, memory)
            .ok_or_else(|| FlotillaError::new(ErrorCode::QueryRejected, "Query did not match any selection rule"))
    }

    /// Waits until `id` may run in `selected`'s group (or fails with `QUERY_QUEUE_FULL`);
    /// the permit holds the running slot until dropped. Cancelling `cancel` gives up.
    pub async fn admit(
        self: &Arc<Self>,
        id: &QueryId,
        selected: &Selected,
        created_ms: i64,
        priority: i64,
        cancel: &CancellationToken,
    ) -> Result<Option<Permit>, FlotillaError> {
        // No limits (no configuration): nothing to wait for.
        if selected.chain.is_empty() {
            return Ok(None);
        }
        let (admit, admitted) = oneshot::channel();
        {
            let mut state = self.state.lock();
            let leaf = state.leaves.entry(selected.path.clone()).or_insert_with(|| Leaf {
                chain: selected.chain.clone(),
                running: 0,
                queued: VecDeque::new(),
                pending: VecDeque::new(),
                lease: Lease::default(),
            });
            // A reloaded configuration's limits apply from the next query on.
            leaf.chain = selected.chain.clone();
            leaf.pending.push_back(Waiting { id: id.clone(), created_ms, priority, asked: None, admit });
            leaf.pump(Instant::now(), None);
            state.released = false;
        }
        self.wake.notify_one();
        // Whoever stops waiting (a cancel, or this future dropped) leaves the queue; a slot
        // granted meanwhile is given back.
        let mut waiter =
            Waiter { admission: self.clone(), path: selected.path.clone(), id: id.clone(), admitted: Some(admitted) };
        let outcome = tokio::select! {
            outcome = waiter.admitted.as_mut().expect("set above") => outcome,
            _ = cancel.cancelled() => {
                drop(waiter);
                return Err(FlotillaError::new(ErrorCode::UserCanceled, "Query was canceled while queued"));
            }
        };
        waiter.admitted = None;
        match outcome {
            Ok(Ok(())) => Ok(Some(Permit { admission: Some(self.clone()), path: selected.path.clone() })),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(FlotillaError::internal("admission ended without an answer")),
        }
    }

    /// Takes a query that gave up out of its group's waiting lists; false when it was not
    /// waiting any more (already admitted or rejected).
    fn withdraw(&self, path: &str, id: &QueryId) -> bool {
        let mut state = self.state.lock();
        let Some(leaf) = state.leaves.get_mut(path) else { return false };
        let before = leaf.queued.len() + leaf.pending.len();
        leaf.queued.retain(|w| &w.id != id);
        leaf.pending.retain(|w| &w.id != id);
        let removed = leaf.queued.len() + leaf.pending.len() < before;
        leaf.pump(Instant::now(), None);
        drop(state);
        self.wake.notify_one();
        removed
    }

    fn release(&self, path: &str) {
        let mut state = self.state.lock();
        if let Some(leaf) = state.leaves.get_mut(path) {
            leaf.running = leaf.running.saturating_sub(1);
            // The slot stays with this coordinator until the next renewal: reuse it now.
            leaf.pump(Instant::now(), None);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Queued (waiting, with or without a queue slot) and running counts per leaf group,
    /// for the heartbeat.
    pub fn usage(&self) -> Vec<(String, u32, u32)> {
        let state = self.state.lock();
        state
            .leaves
            .iter()
            .map(|(path, leaf)| (path.clone(), (leaf.queued.len() + leaf.pending.len()) as u32, leaf.running))
            .collect()
    }

    /// A group's cluster-wide numbers, from the admission leader.
    pub async fn cluster_state(&self, path: &str) -> Result<GroupState, CallError> {
        let Some(group_path) = flotilla_proto::admission::group_state_path(path) else {
            return Err(CallError::NotSent(format!("'{path}' is not a resource group path")));
        };
        let mut errors = Vec::new();
        for (_, uri) in self.resource_managers() {
            match self.client.get::<GroupState>(&uri, &group_path).await {
                // The first (smallest id) that answers is the leader, or knows as much.
                Ok(state) => return Ok(state),
                Err(error) => errors.push(error),
            }
        }
        Err(CallError::all_failed(errors, "no resource manager in the cluster view"))
    }

    /// Why the last lease request failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().last_error.clone()
    }

    /// The resource managers in the order to ask them: by node id (the leader is the live
    /// one with the smallest).
    fn resource_managers(&self) -> Vec<(String, String)> {
        self.view.resource_managers()
    }

    /// One lease round: lower the leases to what is held, ask the leader, apply its answer.
    async fn renew(&self) {
        let (request, sent) = {
            let mut state = self.state.lock();
            state.leaves.retain(|_, leaf| !leaf.idle() || leaf.lease.running_slots > 0 || leaf.lease.queue_slots > 0);
            if state.leaves.values().all(Leaf::idle) && state.released {
                return;
            }
            state.seq += 1;
            let seq = state.seq;
            let mut demands = Vec::new();
            for leaf in state.leaves.values_mut() {
                leaf.lease.running_slots = leaf.running;
                leaf.lease.queue_slots = leaf.queued.len() as u32;
                for waiting in leaf.pending.iter_mut() {
                    waiting.asked.get_or_insert(seq);
                }
                if !leaf.idle() {
                    demands.push(leaf.demand());
                }
            }
            let request = LeaseRequest {
                coordinator: self.local.node_id.clone(),
                instance: self.local.instance.clone(),
                seq,
                demands,
            };
            (request, Instant::now())
        };
        let idle = request.demands.is_empty();
        match self.ask_leader(&request).await {
            Ok(grant) => {
                let expires = sent + Duration::from_millis(grant.duration_ms).saturating_sub(LEASE_MARGIN);
                let mut state = self.state.lock();
                state.last_error = None;
                state.released = idle;
                apply(&mut state, &grant, expires);
            }
            Err(error) => {
                let error = error.to_string();
                let mut state = self.state.lock();
                if state.last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(%error, "no resource group lease; queries of limited groups wait");
                }
                state.last_error = Some(error);
            }
        }
    }

    /// Asks the resource managers in order (the smallest id first) until the leader grants
    /// a lease; a refusal that names the leader sends the request there next.
    async fn ask_leader(&self, request: &LeaseRequest) -> Result<LeaseGrant, CallError> {
        let managers = self.resource_managers();
        let mut errors = Vec::new();
        let mut redirected: Option<String> = None;
        let mut order: Vec<String> = managers.iter().map(|(_, uri)| uri.clone()).collect();
        let mut index = 0;
        while index < order.len() && index < managers.len() + 2 {
            let uri = order[index].clone();
            index += 1;
            match self.client.post::<_, LeaseGrant>(&uri, LEASE_PATH, request).await {
                Ok(grant) => return Ok(grant),
                Err(error) => {
                    if let Some(LeaseRefusal::NotLeader { uri: leader, .. }) = error.refusal(409) {
                        if redirected.as_deref() != Some(leader.as_str()) {
                            redirected = Some(leader.clone());
                            order.insert(index, leader);
                        }
                    }
                    errors.push(error);
                }
            }
        }
        Err(CallError::all_failed(errors, "no resource manager in the cluster view"))
    }

    /// Renews leases while queries wait or run (of resource groups, and of warehouses with
    /// limits); reloads the configuration file when it changes (an invalid new version is
    /// logged and the old one kept).
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let admission = self.clone();
        tokio::spawn(async move {
            let mut last_reload_check = Instant::now();
            loop {
                let interval = {
                    let state = admission.state.lock();
                    if state.leaves.values().any(|l| !l.queued.is_empty() || !l.pending.is_empty()) {
                        WAITING_RENEWAL
                    } else {
                        RUNNING_RENEWAL
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = admission.wake.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
                admission.renew().await;
                if last_reload_check.elapsed() >= RELOAD_CHECK {
                    last_reload_check = Instant::now();
                    admission.reload();
                }
            }
        })
    }

    fn reload(&self) {
        let Some(loaded) = &self.loaded else { return };
        let (path, known) = {
            let loaded = loaded.read();
            (loaded.path.clone(), loaded.modified)
        };
        let now = modified(&path);
        if now == known {
            return;
        }
        match config::load(&path) {
            Ok(config) => {
                tracing::info!(path = %path.display(), "resource group configuration reloaded");
                let mut loaded = loaded.write();
                loaded.config = Arc::new(config);
                loaded.modified = now;
            }
            Err(error) => {
                tracing::error!(%error, "the changed resource group configuration is invalid; keeping the previous one");
                loaded.write().modified = now;
            }
        }
    }
}

fn apply(state: &mut State, grant: &LeaseGrant, expires: Instant) {
    let now = Instant::now();
    let by_path: HashMap<&str, &GroupLease> = grant.leases.iter().map(|l| (l.path.as_str(), l)).collect();
    for (path, leaf) in state.leaves.iter_mut() {
        let full = match by_path.get(path.as_str()) {
            Some(lease) => {
                leaf.lease = Lease {
                    running_slots: lease.running_slots,
                    queue_slots: lease.queue_slots,
                    expires: Some(expires),
                };
                lease.queue_full.then_some(grant.seq)
            }
            None => {
                // Not asked for (it had nothing then): holds what runs, as lowered.
                leaf.lease.expires = Some(expires);
                None
            }
        };
        leaf.pump(now, full);
    }
}

#[cfg(test)]
mod tests {
    use flotilla_proto::admission::SchedulingPolicy;

    use super::*;

    fn leaf(policy: SchedulingPolicy) -> Leaf {
        Leaf {
            chain: vec![GroupLimits {
                path: "global".into(),
                hard_concurrency_limit: 2,
                soft_concurrency_limit: None,
                max_queued: 5,
                soft_memory_limit_bytes: None,
                scheduling_weight: 1,
                scheduling_policy: policy,
            }],
            running: 0,
            queued: VecDeque::new(),
            pending: VecDeque::new(),
            lease: Lease::default(),
        }
    }

    fn wait(leaf: &mut Leaf, n: u64, priority: i64) -> oneshot::Receiver<Result<(), FlotillaError>> {
        let (admit, admitted) = oneshot::channel();
        let id: QueryId = format!("20260101_000000_{n:05}_abcde").parse().unwrap();
        leaf.pending.push_back(Waiting { id, created_ms: n as i64, priority, asked: Some(1), admit });
        admitted
    }

    #[test]
    fn a_lease_admits_up_to_its_slots_and_queues_the_rest() {
        let mut leaf = leaf(SchedulingPolicy::Fair);
        let mut waiting: Vec<_> = (0..4).map(|n| wait(&mut leaf, n, 1)).collect();
        let now = Instant::now();
        leaf.pump(now, None);
        assert_eq!(leaf.running, 0, "no lease, no start");
        leaf.lease = Lease { running_slots: 2, queue_slots: 1, expires: Some(now + Duration::from_secs(1)) };
        leaf.pump(now, None);
        assert_eq!((leaf.running, leaf.queued.len(), leaf.pending.len()), (2, 1, 1));
        assert!(matches!(waiting[0].try_recv(), Ok(Ok(()))));
        assert!(matches!(waiting[1].try_recv(), Ok(Ok(()))));
        assert!(waiting[2].try_recv().is_err());
        // The cluster's queue is full: the pending one is rejected.
        leaf.pump(now, Some(1));
        match waiting[3].try_recv() {
            Ok(Err(error)) => assert_eq!(error.code, ErrorCode::QueryQueueFull),
            other => panic!("{other:?}"),
        }
        // An expired lease starts nothing even with a free slot.
        leaf.running = 1;
        leaf.lease.expires = Some(now);
        leaf.pump(now, None);
        assert_eq!(leaf.running, 1);
    }

    #[tokio::test]
    async fn a_changed_configuration_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("flotilla-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("resource-groups.json");
        let groups = |name: &str| {
            format!(
                r#"{{"rootGroups": [{{"name": "{name}", "softMemoryLimit": "1GB", "hardConcurrencyLimit": 1, "maxQueued": 1}}],
                    "selectors": [{{"group": "{name}"}}]}}"#
            )
        };
        std::fs::write(&file, groups("first")).unwrap();
        let open = |file: &std::path::Path| {
            let node = flotilla_proto::NodeConfig::default();
            let local = LocalNode::new(
                &node,
                vec![flotilla_proto::cluster::NodeRole::Coordinator],
                "http://x".into(),
                None,
                None,
                "c",
            );
            let secret = "0123456789abcdef0123456789abcdef";
            let client = InternalClient::new(
                Arc::new(flotilla_proto::InternalAuth::new(secret, "c").unwrap()),
                Duration::from_secs(1),
            );
            let view = ClusterViewClient::new(Vec::new(), client.clone(), Duration::from_secs(1));
            Admission::new(Some(file.to_path_buf()), local, view, client)
        };
        let admission = open(&file).unwrap();
        let context = QueryContext { user: "u", query_type: "SELECT", ..Default::default() };
        assert_eq!(admission.select(&context).unwrap().path, "first");
        // Modification times have a coarse grain on some file systems.
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(&file, groups("second")).unwrap();
        admission.reload();
        assert_eq!(admission.select(&context).unwrap().path, "second");
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(&file, "{ broken").unwrap();
        admission.reload();
        assert_eq!(admission.select(&context).unwrap().path, "second", "the previous configuration stays");
        assert!(open(&file).is_err(), "a broken file fails start-up");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn query_priority_starts_the_highest_first() {
        let mut leaf = leaf(SchedulingPolicy::QueryPriority);
        let mut low = wait(&mut leaf, 0, 1);
        let mut high = wait(&mut leaf, 1, 9);
        let now = Instant::now();
        leaf.lease = Lease { running_slots: 1, queue_slots: 5, expires: Some(now + Duration::from_secs(1)) };
        leaf.pump(now, None);
        assert!(matches!(high.try_recv(), Ok(Ok(()))));
        assert!(low.try_recv().is_err());
    }
}
