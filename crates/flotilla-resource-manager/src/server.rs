//! The resource manager's internal HTTP API (heartbeat, peer sync, cluster view), all of it
//! behind the shared-secret check, and its background loop (peer pushes, sweeping).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flotilla_proto::admission::{GroupState, LeaseGrant, LeaseRefusal, LeaseRequest, LEASE_PATH};
use flotilla_proto::adoption::{
    AdoptAnswer, AdoptRequest, ForgetQueries, QueryRegistration, ADOPT_PATH, FORGET_PATH, REGISTRATION_PATH,
};
use flotilla_proto::cluster::{
    ClusterView, Heartbeat, HeartbeatAck, PeerSync, PeerSyncAck, CLUSTER_VIEW_PATH, HEARTBEAT_PATH, PEER_SYNC_PATH,
};
use flotilla_proto::{InternalAuth, INTERNAL_BEARER_HEADER};
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admission::{LeaseAuthority, LeaseError};
use crate::config::ResourceManagerConfig;
use crate::jobs::JobBoard;
use crate::lending::Lending;
use crate::memory_killer::LowMemoryKiller;
use crate::peer::{HttpPeerTransport, PeerTransport};
use crate::registry::{RegistrationError, Registry};
use crate::state::{ClusterState, HeartbeatError};
use crate::warehouses::WarehouseFile;
use flotilla_node::LocalNode;
use flotilla_node::{InternalClient, INTERNAL_CALL_TIMEOUT};
use flotilla_proto::jobs::{JobAnswer, JobClaim, JobDone, JOB_CLAIM_PATH, JOB_DONE_PATH};
use flotilla_proto::warehouses::with_loans;

/// Peer pushes can carry many records; heartbeats and view requests stay small.
const PEER_SYNC_BODY_LIMIT: usize = 64 << 20;
/// A registration carries a query's full SQL text (at most `query.max-length` characters,
/// a million by default, of up to four bytes each) and its session headers.
const REGISTRATION_BODY_LIMIT: usize = 16 << 20;
/// How long a claimant waits before asking a new admission leader again.
const ADOPT_RETRY_AFTER: Duration = Duration::from_millis(500);

/// One resource manager.
#[derive(Debug)]
pub struct ResourceManager {
    state: Mutex<ClusterState>,
    auth: Arc<InternalAuth>,
    config: ResourceManagerConfig,
    transport: Arc<dyn PeerTransport>,
    /// The live resource managers, refreshed by the background loop (not per heartbeat:
    /// that would cost a scan of every node per heartbeat).
    resource_managers: RwLock<Arc<Vec<String>>>,
    /// The last serialized view: every coordinator fetches the view about once a second,
    /// so with many coordinators one serialization serves several of them.
    serialized_view: Mutex<Option<(Instant, u64, bytes::Bytes)>>,
    /// Resource group leases, when this resource manager is the admission leader.
    admission: Mutex<LeaseAuthority>,
    /// The cluster's low-memory killer, acting when this one is the admission leader.
    killer: Mutex<LowMemoryKiller>,
    /// Queries registered for adoption (lock order: `registry`, then `state`).
    registry: Mutex<Registry>,
    /// `warehouse.config-file`, served in the view.
    warehouses: Option<WarehouseFile>,
    /// Worker groups lent between warehouses, when this one is the admission leader.
    lending: Mutex<Lending>,
    /// Background jobs claimed, when this one is the admission leader.
    jobs: Mutex<JobBoard>,
    counters: Counters,
}

/// What the resource manager counts for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    heartbeats: prometheus_client::metrics::counter::Counter,
    refused_heartbeats: prometheus_client::metrics::counter::Counter,
    leases:
        prometheus_client::metrics::family::Family<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>,
}

/// Whether this resource manager decides as the admission leader now.
enum Leading {
    Ready,
    /// Another one leads.
    No {
        leader: String,
        uri: String,
    },
    /// It leads, but too recently.
    NotYet,
}

/// The largest job claim or report accepted.
const JOB_BODY_LIMIT: usize = 16 * 1024;

/// How long a serialized view is served again before it is rebuilt.
const VIEW_REUSE: Duration = Duration::from_millis(200);

fn epoch_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl ResourceManager {
    pub fn new(
        node_id: &str,
        instance: &str,
        environment: &str,
        config: ResourceManagerConfig,
        auth: Arc<InternalAuth>,
        transport: Arc<dyn PeerTransport>,
    ) -> Arc<Self> {
        let state = ClusterState::new(node_id, instance, environment, config.state.clone());
        Arc::new(Self {
            state: Mutex::new(state),
            auth,
            transport,
            resource_managers: RwLock::new(Arc::new(Vec::new())),
            serialized_view: Mutex::new(None),
            admission: Mutex::new(LeaseAuthority::default()),
            killer: Mutex::new(LowMemoryKiller::new(config.low_memory_killer)),
            registry: Mutex::new(Registry::default()),
            warehouses: config.warehouses_file.as_deref().map(WarehouseFile::open),
            lending: Mutex::new(Lending::default()),
            jobs: Mutex::new(JobBoard::default()),
            counters: Counters::default(),
            config,
        })
    }

    /// The resource manager of `local` (its identity), pushing to peers over signed HTTP.
    pub fn for_node(local: &LocalNode, config: ResourceManagerConfig, auth: Arc<InternalAuth>) -> Arc<Self> {
        let transport = HttpPeerTransport::new(InternalClient::new(auth.clone(), INTERNAL_CALL_TIMEOUT));
        Self::new(&local.node_id, &local.instance, &local.environment, config, auth, Arc::new(transport))
    }

    /// The internal routes; every one requires a valid internal token.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(HEARTBEAT_PATH, post(heartbeat))
            .route(PEER_SYNC_PATH, post(peer_sync).layer(DefaultBodyLimit::max(PEER_SYNC_BODY_LIMIT)))
            .route(CLUSTER_VIEW_PATH, get(view))
            .route(LEASE_PATH, post(leases))
            .route(&format!("{LEASE_PATH}/groups/{{path}}"), get(group_state))
            .route(REGISTRATION_PATH, post(register).layer(DefaultBodyLimit::max(REGISTRATION_BODY_LIMIT)))
            .route(&format!("{REGISTRATION_PATH}/{{query_id}}"), get(registration))
            .route(FORGET_PATH, post(forget))
            .route(ADOPT_PATH, post(adopt).layer(DefaultBodyLimit::max(REGISTRATION_BODY_LIMIT)))
            .route(JOB_CLAIM_PATH, post(claim_job).layer(DefaultBodyLimit::max(JOB_BODY_LIMIT)))
            .route(JOB_DONE_PATH, post(job_done).layer(DefaultBodyLimit::max(JOB_BODY_LIMIT)))
            .route_layer(middleware::from_fn_with_state(self.auth.clone(), require_internal_auth))
            .with_state(self.clone())
    }

    /// The current view.
    pub fn view(&self) -> ClusterView {
        let now = Instant::now();
        let (mut view, leader) = {
            let state = self.state.lock();
            (state.view(now, epoch_ms()), state.admission_leader(now).is_none())
        };
        if let Some(file) = &self.warehouses {
            let definitions = file.current();
            view.loans = match leader {
                true => self.lending.lock().loans(now),
                false => self.state.lock().leader_loans(now),
            };
            view.warehouses = with_loans(&definitions.warehouses, &view.loans);
            view.routing_rules = definitions.routing_rules.clone();
        }
        view
    }

    /// One lending round of the admission leader (see [`crate::lending`]); its loans, to
    /// send to the peers.
    fn lend(&self, leader: bool, now: Instant) -> Option<Vec<flotilla_proto::warehouses::Loan>> {
        if !self.config.lending.enabled {
            return None;
        }
        let file = self.warehouses.as_ref()?;
        let definitions = file.current();
        let (nodes, queued) = {
            let state = self.state.lock();
            (state.node_views(now), state.queued_by_warehouse())
        };
        let mut lending = self.lending.lock();
        for event in lending.tick(&self.config.lending, leader, &definitions.warehouses, &nodes, &queued, now) {
            tracing::info!(%event, "worker group lending");
        }
        leader.then(|| lending.loans(now))
    }

    /// The view as JSON, reused for [`VIEW_REUSE`] while the cluster's members and their
    /// states stay the same: a coordinator's figures of the nodes' load may be that much
    /// older than the age it counts from its fetch, but a node that has just joined is in
    /// the next view (a coordinator fetches one right after it joins, to schedule on).
    fn serialized_view(&self) -> Result<bytes::Bytes, serde_json::Error> {
        let membership = self.state.lock().membership();
        let mut cached = self.serialized_view.lock();
        if let Some((built, of, body)) = cached.as_ref() {
            if built.elapsed() < VIEW_REUSE && *of == membership {
                return Ok(body.clone());
            }
        }
        let body = bytes::Bytes::from(serde_json::to_vec(&self.view())?);
        *cached = Some((Instant::now(), membership, body.clone()));
        Ok(body)
    }

    /// Registers the resource manager's metrics in its node's registry (once).
    pub fn register_metrics(self: &Arc<Self>, metrics: &flotilla_node::NodeMetrics) {
        use prometheus_client::metrics::gauge::Gauge;
        metrics.register("resource_manager_heartbeats", "Heartbeats applied", self.counters.heartbeats.clone());
        metrics.register(
            "resource_manager_refused_heartbeats",
            "Heartbeats refused (another environment, malformed)",
            self.counters.refused_heartbeats.clone(),
        );
        metrics.register(
            "resource_manager_lease_requests",
            "Admission lease requests, by outcome (granted, not_leader, stale)",
            self.counters.leases.clone(),
        );
        let nodes = prometheus_client::metrics::family::Family::<Vec<(String, String)>, Gauge>::default();
        let loans: Gauge = Gauge::default();
        metrics.register("resource_manager_nodes", "Nodes in the view, by state", nodes.clone());
        metrics.register("resource_manager_loans", "Worker groups lent now", loans.clone());
        let manager = self.clone();
        metrics.on_scrape(move || {
            let now = Instant::now();
            nodes.clear();
            for node in manager.state.lock().node_views(now) {
                let state = format!("{:?}", node.state).to_lowercase();
                nodes.get_or_create(&vec![("state".to_string(), state)]).inc();
            }
            loans.set(manager.lending.lock().loans(now).len() as i64);
        });
    }

    /// Applies a heartbeat as the HTTP handler does.
    pub fn handle_heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatAck, HeartbeatError> {
        let mut state = self.state.lock();
        let applied = state.apply_heartbeat(heartbeat, Instant::now());
        match &applied {
            Ok(_) => self.counters.heartbeats.inc(),
            Err(_) => self.counters.refused_heartbeats.inc(),
        };
        let acknowledged_version = applied?;
        Ok(HeartbeatAck {
            resource_manager: state.node_id().to_string(),
            acknowledged_version,
            resource_managers: self.resource_managers.read().as_ref().clone(),
            memory_kills: self.killer.lock().announced(),
        })
    }

    /// Answers a coordinator's lease request when this resource manager is the admission
    /// leader; otherwise says who is (`Err((leader id, uri))`).
    pub fn handle_lease_request(&self, request: LeaseRequest) -> Result<LeaseGrant, LeaseRefusal> {
        let now = Instant::now();
        let (usage, leader, node_id) = {
            let state = self.state.lock();
            (state.admission_usage(now), state.admission_leader(now), state.node_id().to_string())
        };
        let mut admission = self.admission.lock();
        admission.observe_leadership(leader.is_none(), now);
        let outcome = |name: &str| vec![("outcome".to_string(), name.to_string())];
        if let Some((id, uri)) = leader {
            self.counters.leases.get_or_create(&outcome("not_leader")).inc();
            return Err(LeaseRefusal::NotLeader { leader: id, uri });
        }
        let granted = admission.grant(request, &usage, &node_id, now).map_err(|error| match error {
            LeaseError::Stale { seq, answered } => LeaseRefusal::Stale { seq, answered },
        });
        self.counters.leases.get_or_create(&outcome(if granted.is_ok() { "granted" } else { "stale" })).inc();
        granted
    }

    /// A group's cluster-wide numbers as this resource manager counts them.
    pub fn group_state(&self, path: &str) -> GroupState {
        let now = Instant::now();
        let usage = self.state.lock().admission_usage(now);
        self.admission.lock().group_state(path, &usage, now)
    }

    /// Keeps a query's registration (see [`Registry::register`]).
    pub fn register(&self, registration: QueryRegistration) -> Result<(), RegistrationError> {
        self.registry.lock().register(registration)
    }

    /// A registered query, if this resource manager has it.
    pub fn registration(&self, query_id: &str) -> Option<QueryRegistration> {
        self.registry.lock().get(query_id).cloned()
    }

    /// Drops an owner's registrations of finished queries.
    pub fn forget(&self, forget: &ForgetQueries) {
        self.registry.lock().forget(&forget.owner, &forget.query_ids);
    }

    /// Whether this resource manager may decide what only the admission leader decides:
    /// it leads, has led long enough (every grant an earlier leader made has expired, and
    /// every live peer knows it leads), and knows every live node.
    fn leading(&self) -> Leading {
        let now = Instant::now();
        let (leader, peers, complete) = {
            let state = self.state.lock();
            let peers = state.live_peers(now).into_iter().map(|p| p.node_id).collect::<Vec<_>>();
            (state.admission_leader(now), peers, state.is_complete(now))
        };
        let mut admission = self.admission.lock();
        admission.observe_leadership(leader.is_none(), now);
        match leader {
            Some((leader, uri)) => Leading::No { leader, uri },
            // It judges who is alive: only once it knows every live node.
            None if complete && admission.warmed_up(&peers, now) => Leading::Ready,
            None => Leading::NotYet,
        }
    }

    /// Decides a claim on a query whose owner the claimant found gone, when this resource
    /// manager is the admission leader (and has led long enough to know every adoption an
    /// earlier leader granted: their claimants registered the outcome everywhere within
    /// that time). The registered owner is gone when the view has it dead, not at all, or
    /// as another instance, or when its address refuses connections (a killed process is
    /// seen that way at once, long before its heartbeats are missed).
    pub async fn handle_adopt(&self, request: AdoptRequest) -> AdoptAnswer {
        match self.leading() {
            Leading::Ready => {}
            Leading::No { leader, uri } => return AdoptAnswer::NotLeader { leader, uri },
            Leading::NotYet => return AdoptAnswer::NotReady { retry_after_ms: ADOPT_RETRY_AFTER.as_millis() as u64 },
        }
        let current = self.registration(&request.registration.query_id).unwrap_or_else(|| request.registration.clone());
        let live = |owner: &str, instance: &str| self.state.lock().is_live(owner, instance, Instant::now());
        // Probed outside every lock; judged again below for an owner that changed meanwhile.
        let probed_gone = !live(&current.owner, &current.owner_instance)
            || flotilla_node::relay::refuses_connections(&current.owner_uri).await;
        let answer = self.registry.lock().adopt(&request, |owner| {
            if owner.owner == current.owner && owner.owner_instance == current.owner_instance {
                probed_gone
            } else {
                !live(&owner.owner, &owner.owner_instance)
            }
        });
        match &answer {
            AdoptAnswer::Granted { epoch } => tracing::info!(
                query_id = %request.registration.query_id,
                from = %current.owner,
                to = %request.adopter,
                epoch,
                "query adopted"
            ),
            other => tracing::debug!(query_id = %request.registration.query_id, %other, "adoption refused"),
        }
        answer
    }

    /// Decides a claim on a background job, when this resource manager is the admission
    /// leader and has led long enough that every claim an earlier leader granted expired.
    pub fn handle_job_claim(&self, claim: &JobClaim) -> Result<JobAnswer, String> {
        match self.leading() {
            Leading::Ready => self.jobs.lock().claim(claim, Instant::now()),
            Leading::No { leader, uri } => {
                self.jobs.lock().clear();
                Ok(JobAnswer::NotLeader { leader, uri })
            }
            Leading::NotYet => Ok(JobAnswer::NotReady),
        }
    }

    /// Records a job done (only its holder's report counts).
    pub fn handle_job_done(&self, done: &JobDone) -> bool {
        self.jobs.lock().done(done, Instant::now())
    }

    /// Merges a peer's push as the HTTP handler does.
    pub fn handle_peer_sync(&self, sync: PeerSync) -> PeerSyncAck {
        self.state.lock().apply_peer_sync(sync, Instant::now())
    }

    /// Starts peer sync and sweeping; they stop when `shutdown` fires.
    pub fn spawn_background(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(manager.config.peer_sync_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                manager.tick().await;
            }
        })
    }

    /// One round: sweep, refresh the resource manager list, push changes to every peer.
    pub async fn tick(&self) {
        let now = Instant::now();
        let peers = {
            let mut state = self.state.lock();
            state.sweep(now);
            *self.resource_managers.write() = Arc::new(state.live_resource_managers(now));
            let usage = state.admission_usage(now);
            let leader = state.admission_leader(now).is_none();
            let mut admission = self.admission.lock();
            admission.observe_leadership(leader, now);
            admission.sweep(&usage, now);
            self.killer.lock().tick(leader, &state.worker_loads(now), state.node_id(), now);
            (state.live_peers(now), leader)
        };
        let (peers, leader) = peers;
        let loans = self.lend(leader, now);
        self.registry.lock().sweep(|owner, instance| self.state.lock().is_live(owner, instance, now), now);
        let pushes = peers.into_iter().filter_map(|peer| {
            let prepared = self.state.lock().prepare_sync(&peer.node_id, &peer.instance, now);
            // The leader's loans go with every push, even one with nothing else.
            let (sync, upto, since) = match (prepared, &loans) {
                (Some((mut sync, upto, since)), loans) => {
                    sync.loans = loans.clone();
                    (sync, upto, since)
                }
                (None, Some(loans)) => {
                    let state = self.state.lock();
                    let sync = PeerSync {
                        from: state.node_id().to_string(),
                        from_instance: state.instance().to_string(),
                        nodes: Vec::new(),
                        queries: Vec::new(),
                        loans: Some(loans.clone()),
                        complete: false,
                    };
                    let version = state.acknowledged(&peer.node_id, &peer.instance);
                    (sync, version, version)
                }
                (None, None) => return None,
            };
            Some(async move {
                let peer_id = peer.node_id;
                let result = self.transport.push(&peer_id, &peer.uri, &sync).await;
                (peer_id, upto, since, result)
            })
        });
        for (peer_id, upto, since, result) in futures::future::join_all(pushes).await {
            match result {
                Ok(ack) => {
                    self.state.lock().sync_acknowledged(&peer_id, &ack, upto, since);
                    self.admission.lock().peer_acknowledged(&peer_id, Instant::now());
                }
                Err(error) => tracing::debug!(peer = %peer_id, %error, "peer push failed; it will be repeated"),
            }
        }
    }
}

/// Refuses internal calls without a valid token, and logs them.
async fn require_internal_auth(State(auth): State<Arc<InternalAuth>>, request: Request<Body>, next: Next) -> Response {
    let header = request.headers().get(INTERNAL_BEARER_HEADER).and_then(|v| v.to_str().ok());
    match auth.verify(header) {
        Ok(_caller) => next.run(request).await,
        Err(error) => {
            tracing::warn!(path = %request.uri().path(), %error, "refused internal request");
            (StatusCode::UNAUTHORIZED, format!("{error}\n")).into_response()
        }
    }
}

async fn heartbeat(State(manager): State<Arc<ResourceManager>>, Json(heartbeat): Json<Heartbeat>) -> Response {
    match manager.handle_heartbeat(heartbeat) {
        Ok(ack) => Json(ack).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

async fn peer_sync(State(manager): State<Arc<ResourceManager>>, Json(sync): Json<PeerSync>) -> Response {
    // Merging a large push is CPU work: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || manager.handle_peer_sync(sync)).await;
    match result {
        Ok(ack) => Json(ack).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("peer sync failed: {error}")).into_response(),
    }
}

async fn view(State(manager): State<Arc<ResourceManager>>) -> Response {
    let result = tokio::task::spawn_blocking(move || manager.serialized_view()).await;
    match result {
        Ok(Ok(body)) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(error)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("view not serializable: {error}")).into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("view failed: {error}")).into_response(),
    }
}

async fn leases(State(manager): State<Arc<ResourceManager>>, Json(request): Json<LeaseRequest>) -> Response {
    match manager.handle_lease_request(request) {
        Ok(grant) => Json(grant).into_response(),
        Err(refusal) => (StatusCode::CONFLICT, Json(refusal)).into_response(),
    }
}

async fn group_state(State(manager): State<Arc<ResourceManager>>, Path(path): Path<String>) -> Json<GroupState> {
    Json(manager.group_state(&path))
}

async fn register(
    State(manager): State<Arc<ResourceManager>>,
    Json(registration): Json<QueryRegistration>,
) -> Response {
    match manager.register(registration) {
        Ok(()) => Json(serde_json::json!({})).into_response(),
        Err(error @ RegistrationError::Full { .. }) => {
            (StatusCode::INSUFFICIENT_STORAGE, error.to_string()).into_response()
        }
        Err(error @ RegistrationError::Invalid(_)) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

async fn registration(State(manager): State<Arc<ResourceManager>>, Path(query_id): Path<String>) -> Response {
    match manager.registration(&query_id) {
        Some(registration) => Json(registration).into_response(),
        None => {
            (StatusCode::NOT_FOUND, format!("no registration of query {}", query_id.escape_default())).into_response()
        }
    }
}

async fn forget(State(manager): State<Arc<ResourceManager>>, Json(forget): Json<ForgetQueries>) -> Response {
    manager.forget(&forget);
    Json(serde_json::json!({})).into_response()
}

async fn adopt(State(manager): State<Arc<ResourceManager>>, Json(request): Json<AdoptRequest>) -> Response {
    match manager.handle_adopt(request).await {
        answer @ AdoptAnswer::Granted { .. } => Json(answer).into_response(),
        answer => (StatusCode::CONFLICT, Json(answer)).into_response(),
    }
}

async fn claim_job(State(manager): State<Arc<ResourceManager>>, Json(claim): Json<JobClaim>) -> Response {
    match manager.handle_job_claim(&claim) {
        Ok(answer @ JobAnswer::Granted) => Json(answer).into_response(),
        Ok(answer) => (StatusCode::CONFLICT, Json(answer)).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    }
}

async fn job_done(State(manager): State<Arc<ResourceManager>>, Json(done): Json<JobDone>) -> Response {
    match manager.handle_job_done(&done) {
        true => Json(serde_json::json!({})).into_response(),
        false => (StatusCode::CONFLICT, "the job is not held by this coordinator\n").into_response(),
    }
}

#[cfg(test)]
mod tests;
