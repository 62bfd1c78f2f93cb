//! Where a distributed statement's tasks run.
//!
//! A query runs in one warehouse (session property `warehouse`). From the resource
//! managers' view the scheduler takes that warehouse's live workers (state active, a data
//! URI announced; draining and dead workers get nothing), groups them by worker group, and
//! picks the least-loaded group: fewest running tasks per worker, then least memory in use.
//! Loads are the view's, corrected by what this coordinator has placed since each worker's
//! last heartbeat in the view, so a burst of queries does not pile onto the group that
//! looked idle a second ago. Each stage's tasks are then spread over the group's workers,
//! least-loaded first. A warehouse without a live worker fails the query with
//! `NO_NODES_AVAILABLE`. When the chosen group is this coordinator alone
//! (`node-scheduler.include-coordinator` and no other worker: a one-process cluster), the
//! statement runs in-process, without a network hop.
//!
//! The view can lag a dead worker by up to `resource-manager.node-status-timeout`; a task
//! placed on it fails the query with `REMOTE_HOST_GONE` naming it ([`Scheduler::name_workers`]),
//! and the next query no longer sees it once the view has caught up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::ipc::CompressionType;
use datafusion::common::Result as DfResult;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion_distributed::{
    ChannelResolver, DistributedExt, RouteTasksEvent, RouteTasksEventResponse, RouteTasksHandler, WorkerResolver,
};
use flotilla_node::{ClusterViewClient, ViewSnapshot};
use flotilla_proto::cluster::{NodeRole, NodeState, NodeView};
use flotilla_proto::warehouses::{route, shared_groups, WarehouseDefinition};
use flotilla_proto::{ErrorCode, FlotillaError};
use flotilla_protocol::ClientSession;
use flotilla_sql::session::ExchangeCodec;
use flotilla_sql::{Distributor, SqlSession};
use flotilla_worker::flight::FlightChannels;
use flotilla_worker::{MAX_MEMORY_PER_NODE_HEADER, QUERY_ID_HEADER};
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use url::Url;

/// Most tasks a stage gets, at least: `datafusion-distributed` runs a stage whose producer
/// and consumer both have one task in the coordinator, so a worker group of one worker still
/// gets two tasks per large stage (both on that worker) and does the query's work itself.
const MIN_TASKS_PER_STAGE: usize = 2;

/// How long a worker found gone is remembered (past the view's node expiry it is gone
/// from the view anyway).
const SUSPECT_MEMORY: Duration = Duration::from_secs(15 * 60);

/// How long a placement is remembered to correct the view (well past a heartbeat).
const PLACEMENT_MEMORY: Duration = Duration::from_secs(30);

/// One task placed on a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlacement {
    /// Order in which the stage was routed (the first routed stage is 0).
    pub stage: usize,
    pub task: usize,
    pub node_id: String,
}

/// What the workers' heartbeats say about one running query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteProgress {
    pub rows: u64,
    pub bytes: u64,
    /// Workers holding tasks of the query.
    pub workers: u32,
    /// Memory the query reserves on the workers (in a query's status: the most seen).
    pub reserved_bytes: u64,
}

#[derive(Debug)]
struct Placed {
    at: Instant,
    node_id: String,
}

/// A worker as the scheduler sees it.
#[derive(Debug, Clone)]
struct Candidate {
    node_id: String,
    url: Url,
    group: String,
    running_tasks: f64,
    memory_fraction: f64,
}

#[derive(Debug, Default)]
struct State {
    recent: VecDeque<Placed>,
    /// Workers a query found unreachable, and when: skipped until they heartbeat again.
    suspects: HashMap<String, Instant>,
    /// Placements per query, for its stats and the tests.
    queries: HashMap<String, Vec<TaskPlacement>>,
}

/// Chooses workers for this coordinator's distributed statements.
#[derive(Debug)]
pub struct Scheduler {
    view: Arc<ClusterViewClient>,
    channels: Arc<FlightChannels>,
    /// This node's id when it is also a worker (`node-scheduler.include-coordinator`).
    own_worker: Option<String>,
    state: Mutex<State>,
}

impl Scheduler {
    /// The warehouse a query runs in when its session names none: `X-Trino-Routing-Group`,
    /// else the first routing rule of the view's definitions that matches (else the
    /// `warehouse` property's default). Set as the session's `warehouse` property, so the
    /// query is placed, listed and adopted by it.
    pub fn route(&self, session: &mut ClientSession, sql: &str) {
        if session.properties.contains_key("warehouse") {
            return;
        }
        let routed = match &session.routing_group {
            Some(group) => Some(group.clone()),
            None => self.view.snapshot().and_then(|snapshot| {
                let kind = flotilla_protocol::query_type(sql);
                route(
                    &snapshot.view.routing_rules,
                    &session.user,
                    session.source.as_deref(),
                    &session.client_tags,
                    kind,
                )
                .map(str::to_string)
            }),
        };
        if let Some(warehouse) = routed {
            session.properties.insert("warehouse".to_string(), warehouse);
        }
    }

    /// The definition of `warehouse` in the current view, if it has one.
    pub fn warehouse(&self, warehouse: &str) -> Option<WarehouseDefinition> {
        let snapshot = self.view.snapshot()?;
        snapshot.view.warehouses.iter().find(|w| w.name == warehouse).cloned()
    }

    pub fn new(view: Arc<ClusterViewClient>, channels: Arc<FlightChannels>, own_worker: Option<String>) -> Arc<Self> {
        Arc::new(Self { view, channels, own_worker, state: Mutex::new(State::default()) })
    }

    /// The least-loaded worker group of `warehouse` in the current view, its workers
    /// least-loaded first.
    fn pick_group(&self, warehouse: &str) -> Result<Vec<Candidate>, FlotillaError> {
        let snapshot = self.view.snapshot();
        pick_group(&mut self.state.lock(), snapshot.as_ref(), warehouse, Instant::now())
    }

    /// Records the tasks of one stage on `workers`, in order.
    fn record(&self, query_id: &str, workers: &[Candidate]) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let placements = state.queries.entry(query_id.to_string()).or_default();
        let stage = placements.last().map(|p| p.stage + 1).unwrap_or(0);
        for (task, worker) in workers.iter().enumerate() {
            placements.push(TaskPlacement { stage, task, node_id: worker.node_id.clone() });
        }
        state.recent.extend(workers.iter().map(|w| Placed { at: now, node_id: w.node_id.clone() }));
    }

    /// Where the tasks of `query_id` were placed.
    pub fn placements(&self, query_id: &str) -> Vec<TaskPlacement> {
        self.state.lock().queries.get(query_id).cloned().unwrap_or_default()
    }

    /// Forgets a finished query's placements.
    pub fn forget(&self, query_id: &str) {
        self.state.lock().queries.remove(query_id);
    }

    /// A running query's progress on the workers, from their last heartbeats in the view.
    pub fn remote_progress(&self, query_id: &str) -> RemoteProgress {
        let mut progress = RemoteProgress::default();
        let Some(snapshot) = self.view.snapshot() else { return progress };
        for node in snapshot.view.live_nodes() {
            let Some(load) = &node.worker else { continue };
            for query in load.query_memory.iter().filter(|q| q.query_id == query_id) {
                progress.reserved_bytes += query.reserved_bytes;
                progress.rows += query.processed_rows;
                progress.bytes += query.processed_bytes;
                progress.workers += 1;
            }
        }
        progress
    }

    /// Names the workers in an error's message by node id as well as URL; the worker a
    /// `REMOTE_HOST_GONE` error is about (its `remote_host`) is not given new tasks until a
    /// heartbeat newer than the failure shows it alive.
    pub fn name_workers(&self, mut error: FlotillaError) -> FlotillaError {
        let Some(snapshot) = self.view.snapshot() else { return error };
        let gone = match error.code {
            ErrorCode::RemoteHostGone => error.remote_host.as_deref().map(|host| host.trim_end_matches('/')),
            _ => None,
        };
        for node in &snapshot.view.nodes {
            let Some(uri) = node.node.data_uri.as_deref() else { continue };
            if gone == Some(uri.trim_end_matches('/')) {
                let mut state = self.state.lock();
                state.suspects.retain(|_, at| at.elapsed() < SUSPECT_MEMORY);
                state.suspects.insert(node.node.node_id.clone(), Instant::now());
            }
            for form in [format!("{uri}/"), uri.to_string()] {
                if error.message.contains(&form) {
                    error.message = error.message.replace(&form, &format!("{} ({uri})", node.node.node_id));
                    break;
                }
            }
        }
        error
    }
}

/// The worker group a worker serves `warehouse` in: its own group when it belongs to the
/// warehouse (its labels), or a shared group of the warehouse's definition that references
/// the worker's physical group.
fn group_in(node: &NodeView, warehouse: &str, definitions: &[WarehouseDefinition]) -> Option<String> {
    if node.node.warehouse == warehouse {
        return Some(node.node.worker_group.clone());
    }
    shared_groups(definitions, warehouse)
        .find(|(_, from)| from.warehouse == node.node.warehouse && from.worker_group == node.node.worker_group)
        .map(|(name, _)| name.to_string())
}

/// The live workers of `warehouse` (its own, and those of the physical groups its shared
/// groups reference), with loads corrected by what was placed since their last heartbeat in
/// the view; workers found gone are left out until they heartbeat again.
fn candidates(state: &mut State, snapshot: &ViewSnapshot, warehouse: &str, now: Instant) -> Vec<Candidate> {
    while state.recent.front().is_some_and(|p| now.duration_since(p.at) > PLACEMENT_MEMORY) {
        state.recent.pop_front();
    }
    snapshot
        .view
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Active && n.node.has_role(NodeRole::Worker))
        .filter_map(|n| {
            let group = group_in(n, warehouse, &snapshot.view.warehouses)?;
            let url = Url::parse(n.node.data_uri.as_deref()?).ok()?;
            // When the worker's last heartbeat in the view was sent, by our clock.
            let reported_at = snapshot.reported_at(n);
            let newer = |at: Instant| reported_at.is_none_or(|t| at > t);
            if state.suspects.get(&n.node.node_id).is_some_and(|at| newer(*at)) {
                return None;
            }
            let since = state.recent.iter().filter(|p| p.node_id == n.node.node_id && newer(p.at)).count();
            Some(candidate(n, url, group, since))
        })
        .collect()
}

/// The least-loaded worker group of `warehouse` (fewest running tasks per worker, then
/// least memory in use), its workers least-loaded first; `NO_NODES_AVAILABLE` without one.
fn pick_group(
    state: &mut State,
    snapshot: Option<&ViewSnapshot>,
    warehouse: &str,
    now: Instant,
) -> Result<Vec<Candidate>, FlotillaError> {
    let mut groups: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for candidate in snapshot.map(|s| candidates(state, s, warehouse, now)).unwrap_or_default() {
        groups.entry(candidate.group.clone()).or_default().push(candidate);
    }
    let score = |workers: &Vec<Candidate>| {
        let n = workers.len() as f64;
        let tasks = workers.iter().map(|w| w.running_tasks).sum::<f64>() / n;
        let memory = workers.iter().map(|w| w.memory_fraction).sum::<f64>() / n;
        (tasks, memory)
    };
    let (_, mut workers) = groups
        .into_iter()
        .min_by(|(_, a), (_, b)| score(a).partial_cmp(&score(b)).unwrap_or(std::cmp::Ordering::Equal))
        .ok_or_else(|| {
            FlotillaError::new(
                ErrorCode::NoNodesAvailable,
                format!("No worker nodes available in warehouse '{warehouse}'"),
            )
        })?;
    workers.sort_by(load_order);
    Ok(workers)
}

fn candidate(node: &NodeView, url: Url, group: String, placed_since: usize) -> Candidate {
    let (tasks, memory) = match &node.worker {
        Some(load) if load.memory_pool_bytes > 0 => {
            (load.running_tasks as f64, load.memory_reserved_bytes as f64 / load.memory_pool_bytes as f64)
        }
        Some(load) => (load.running_tasks as f64, 0.0),
        None => (0.0, 0.0),
    };
    Candidate {
        node_id: node.node.node_id.clone(),
        url,
        group,
        running_tasks: tasks + placed_since as f64,
        memory_fraction: memory,
    }
}

fn load_order(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    (a.running_tasks, a.memory_fraction)
        .partial_cmp(&(b.running_tasks, b.memory_fraction))
        .unwrap_or(std::cmp::Ordering::Equal)
        .then_with(|| a.node_id.cmp(&b.node_id))
}

/// The URLs of one statement's worker group.
#[derive(Debug, Clone)]
struct GroupUrls(Vec<Url>);

impl WorkerResolver for GroupUrls {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        Ok(self.0.clone())
    }
}

/// Routes each stage of one statement: tasks go to the group's workers least-loaded first,
/// counting the tasks of the statement's earlier stages.
struct StatementRouter {
    scheduler: Arc<Scheduler>,
    query_id: String,
    workers: Mutex<Vec<Candidate>>,
}

impl RouteTasksHandler for StatementRouter {
    fn handle(&self, event: RouteTasksEvent) -> Option<DfResult<RouteTasksEventResponse>> {
        let mut workers = self.workers.lock();
        let mut chosen = Vec::with_capacity(event.task_count);
        for _ in 0..event.task_count {
            workers.sort_by(load_order);
            let worker = workers.first_mut()?;
            worker.running_tasks += 1.0;
            chosen.push(worker.clone());
        }
        self.scheduler.record(&self.query_id, &chosen);
        Some(Ok(RouteTasksEventResponse::new(chosen.into_iter().map(|w| w.url).collect())))
    }
}

/// The scheduler as the engine's distributor.
#[derive(Debug, Clone)]
pub struct SchedulerDistributor(pub Arc<Scheduler>);

impl Distributor for SchedulerDistributor {
    fn distribute(
        &self,
        builder: SessionStateBuilder,
        session: &SqlSession,
    ) -> Result<Option<SessionStateBuilder>, FlotillaError> {
        let scheduler = &self.0;
        let warehouse = session.property("warehouse")?;
        let workers = scheduler.pick_group(&warehouse)?;
        if let [only] = workers.as_slice() {
            if scheduler.own_worker.as_ref() == Some(&only.node_id) {
                // A one-node group of this very process: run in-process, no network hop.
                return Ok(None);
            }
        }
        let query_id = session.query_id.clone().unwrap_or_else(|| "unknown".to_string());
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&query_id) {
            headers.insert(QUERY_ID_HEADER, value);
        }
        if let Some(limit) = session.data_size("query_max_memory_per_node")? {
            headers.insert(MAX_MEMORY_PER_NODE_HEADER, HeaderValue::from(limit));
        }
        let compression = exchange_compression(session.exchange_codec()?, &workers);
        let urls = GroupUrls(workers.iter().map(|w| w.url.clone()).collect());
        let task_limit = workers.len().max(MIN_TASKS_PER_STAGE);
        let split_size = session.data_size("max_split_size")?;
        builder
            .with_distributed_worker_resolver(urls)
            .with_distributed_channel_resolver(scheduler.channels.clone() as Arc<dyn ChannelResolver + Send + Sync>)
            .with_distributed_route_tasks_handler(StatementRouter {
                scheduler: scheduler.clone(),
                query_id,
                workers: Mutex::new(workers),
            })
            .with_distributed_passthrough_headers(headers)
            .and_then(|b| b.with_distributed_max_tasks_per_stage(task_limit))
            .and_then(|b| match split_size {
                Some(bytes) => b.with_distributed_file_scan_config_bytes_per_partition(bytes as usize),
                None => Ok(b),
            })
            .and_then(|b| b.with_distributed_metrics_collection(true))
            .and_then(|b| b.with_distributed_compression(compression))
            .map(Some)
            .map_err(|e| flotilla_sql::error::from_datafusion(&e))
    }
}

/// The IPC compression of a statement's exchanges for the session's
/// `exchange_compression_codec`: AUTO compresses (LZ4) only when the workers are on more
/// than one host, since between processes of one host compressing costs CPU and saves no
/// network (on loopback it was a fifth of a worker's CPU in TPC-H).
fn exchange_compression(codec: ExchangeCodec, workers: &[Candidate]) -> Option<CompressionType> {
    match codec {
        ExchangeCodec::None => None,
        ExchangeCodec::Lz4 => Some(CompressionType::LZ4_FRAME),
        ExchangeCodec::Zstd => Some(CompressionType::ZSTD),
        ExchangeCodec::Auto => {
            let first = workers.first().and_then(|w| w.url.host_str());
            let one_host = workers.iter().all(|w| w.url.host_str() == first);
            (!one_host).then_some(CompressionType::LZ4_FRAME)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::cluster::{ClusterView, MemoryTotals, NodeAnnouncement, WorkerLoad};

    fn worker(id: &str, warehouse: &str, group: &str, tasks: u32, age_ms: u64) -> NodeView {
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
            last_heartbeat_age_ms: age_ms,
            seq: 1,
            worker: Some(WorkerLoad { running_tasks: tasks, memory_pool_bytes: 100, ..Default::default() }),
        }
    }

    fn snapshot(nodes: Vec<NodeView>, fetched: Instant) -> ViewSnapshot {
        let view = ClusterView {
            resource_manager: "rm".into(),
            instance: "i".into(),
            generated_at_ms: 0,
            nodes,
            queries: Vec::new(),
            resource_groups: Vec::new(),
            memory: MemoryTotals::default(),
            warehouses: Vec::new(),
            routing_rules: Vec::new(),
            loans: Vec::new(),
            complete: true,
        };
        ViewSnapshot { view: Arc::new(view), fetched }
    }

    fn ids(workers: &[Candidate]) -> Vec<&str> {
        workers.iter().map(|w| w.node_id.as_str()).collect()
    }

    #[test]
    fn the_least_loaded_group_of_the_warehouse_wins() {
        let now = Instant::now();
        let view = snapshot(
            vec![
                worker("a1", "a", "g1", 4, 100),
                worker("a2", "a", "g1", 0, 100),
                worker("a3", "a", "g2", 1, 100),
                worker("a4", "a", "g2", 2, 100),
                worker("b1", "b", "g1", 0, 100),
            ],
            now,
        );
        let mut state = State::default();
        // g1 averages 2 tasks per worker, g2 1.5.
        let group = pick_group(&mut state, Some(&view), "a", now).unwrap();
        assert_eq!(ids(&group), ["a3", "a4"]);
        assert_eq!(ids(&pick_group(&mut state, Some(&view), "b", now).unwrap()), ["b1"]);
        let error = pick_group(&mut state, Some(&view), "c", now).unwrap_err();
        assert_eq!(error.code, ErrorCode::NoNodesAvailable);
        assert!(pick_group(&mut state, None, "a", now).is_err(), "no view, no workers");
    }

    #[test]
    fn a_shared_group_runs_on_the_workers_of_the_group_it_references() {
        let now = Instant::now();
        let mut view = snapshot(
            vec![worker("a1", "a", "g1", 3, 100), worker("b1", "b", "g1", 0, 100), worker("b2", "b", "g2", 5, 100)],
            now,
        );
        let definitions = flotilla_proto::warehouses::parse(
            r#"{"warehouses": [
                {"name": "a", "type": "read", "workerGroups": [{"name": "g1"}, {"name": "borrowed", "sharedFrom": "b.g1"}]},
                {"name": "b", "type": "read", "workerGroups": [{"name": "g1"}, {"name": "g2"}]}
            ]}"#,
        )
        .unwrap();
        Arc::get_mut(&mut view.view).unwrap().warehouses = definitions;
        let mut state = State::default();
        // a's own g1 is busy; its shared group (b's g1) is idle.
        let group = pick_group(&mut state, Some(&view), "a", now).unwrap();
        assert_eq!(ids(&group), ["b1"]);
        assert_eq!(group[0].group, "borrowed");
        // b still runs on its own groups, and never on a's.
        assert_eq!(ids(&pick_group(&mut state, Some(&view), "b", now).unwrap()), ["b1"]);
    }

    #[test]
    fn dead_draining_and_unlabelled_nodes_get_nothing() {
        let now = Instant::now();
        let mut dead = worker("dead", "a", "g", 0, 100);
        dead.state = NodeState::Dead;
        let mut draining = worker("draining", "a", "g", 0, 100);
        draining.state = NodeState::ShuttingDown;
        let mut no_data = worker("no-data", "a", "g", 0, 100);
        no_data.node.data_uri = None;
        let view = snapshot(vec![dead, draining, no_data, worker("ok", "a", "g", 9, 100)], now);
        assert_eq!(ids(&pick_group(&mut State::default(), Some(&view), "a", now).unwrap()), ["ok"]);
    }

    #[test]
    fn own_placements_since_the_last_heartbeat_count_as_load() {
        let fetched = Instant::now();
        // Both groups idle in a view whose heartbeats are 500 ms old.
        let view = snapshot(vec![worker("w1", "a", "g1", 0, 500), worker("w2", "a", "g2", 0, 500)], fetched);
        let mut state = State::default();
        let first = pick_group(&mut state, Some(&view), "a", fetched).unwrap();
        assert_eq!(ids(&first), ["w1"]);
        // A burst: tasks placed on g1 just now are not in the view yet, but count.
        state.recent.push_back(Placed { at: fetched, node_id: "w1".into() });
        let second = pick_group(&mut state, Some(&view), "a", fetched).unwrap();
        assert_eq!(ids(&second), ["w2"], "the second query goes to the other group");
        // Once a heartbeat newer than the placement is in the view, the view's count rules.
        let later = fetched + Duration::from_secs(2);
        let newer = snapshot(vec![worker("w1", "a", "g1", 0, 10), worker("w2", "a", "g2", 3, 10)], later);
        assert_eq!(ids(&pick_group(&mut state, Some(&newer), "a", later).unwrap()), ["w1"]);
    }

    #[test]
    fn a_worker_found_gone_is_skipped_until_it_heartbeats_again() {
        let now = Instant::now();
        let mut state = State::default();
        state.suspects.insert("w1".into(), now);
        let stale = snapshot(vec![worker("w1", "a", "g", 0, 3000), worker("w2", "a", "g", 5, 3000)], now);
        assert_eq!(ids(&pick_group(&mut state, Some(&stale), "a", now).unwrap()), ["w2"]);
        let later = now + Duration::from_secs(2);
        let alive = snapshot(vec![worker("w1", "a", "g", 0, 10), worker("w2", "a", "g", 5, 10)], later);
        assert_eq!(ids(&pick_group(&mut state, Some(&alive), "a", later).unwrap()), ["w1", "w2"]);
    }

    #[test]
    fn exchanges_are_compressed_only_across_hosts_unless_asked() {
        let on = |hosts: &[&str]| -> Vec<Candidate> {
            hosts
                .iter()
                .enumerate()
                .map(|(i, host)| Candidate {
                    node_id: format!("w{i}"),
                    url: Url::parse(&format!("http://{host}:{}", 9000 + i)).unwrap(),
                    group: "g".into(),
                    running_tasks: 0.0,
                    memory_fraction: 0.0,
                })
                .collect()
        };
        let auto = ExchangeCodec::Auto;
        assert_eq!(exchange_compression(auto, &on(&["127.0.0.1", "127.0.0.1"])), None);
        assert_eq!(exchange_compression(auto, &on(&["10.0.0.1", "10.0.0.2"])), Some(CompressionType::LZ4_FRAME));
        assert_eq!(exchange_compression(ExchangeCodec::None, &on(&["10.0.0.1", "10.0.0.2"])), None);
        assert_eq!(exchange_compression(ExchangeCodec::Lz4, &on(&["127.0.0.1"])), Some(CompressionType::LZ4_FRAME));
        assert_eq!(exchange_compression(ExchangeCodec::Zstd, &on(&["127.0.0.1"])), Some(CompressionType::ZSTD));
    }
}
