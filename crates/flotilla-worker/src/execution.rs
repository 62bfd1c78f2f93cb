//! Where a worker runs its tasks: `datafusion-distributed`'s [`Worker`] with our session
//! (functions, operators, authenticated channels to the other workers), one memory pool
//! for the whole node, and a [`TaskTracker`] that knows which queries have tasks and memory
//! here.
//!
//! A task lives as long as the coordinator channel its coordinator opened for it (the plan
//! arrives on it; the task's metrics leave on it when it ends): a tower layer on the worker
//! service ([`TaskCountingLayer`]) counts these calls per query, from the request to the
//! moment the response stream is dropped, whether the query finished, was cancelled or the
//! coordinator went away. The task's memory reservations go through the query's
//! [`PeakMemoryPool`] over the node's pool, which charges them to the query, so the
//! heartbeat reports memory per query and a finished query provably holds no memory here.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionState;
use datafusion_distributed::{ChannelResolver, DistributedExt, Worker, WorkerQueryContext, WorkerSessionBuilder};
use flotilla_proto::cluster::QueryMemory;
use flotilla_proto::InternalAuth;
use flotilla_sql::{MemoryWaits, PeakMemoryPool, ScanCounters};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::InterceptorLayer;

use crate::filters::{ChannelPublisher, FilterExchangeService};
use crate::flight::{authenticate, FlightChannels};
use flotilla_sql::cross_stage_filters::{FilterExchange, FilterInbox, FilterPublisher};

/// The header that tells a worker which query a task belongs to (set by the coordinator
/// on every data-plane call of the query).
pub const QUERY_ID_HEADER: &str = "x-flotilla-query-id";

/// The header that lowers a query's `query.max-memory-per-node` (its session's
/// `query_max_memory_per_node`, in bytes).
pub const MAX_MEMORY_PER_NODE_HEADER: &str = "x-flotilla-max-memory-per-node";

#[derive(Debug)]
struct QueryUsage {
    tasks: usize,
    /// The node's pool as the query's tasks here reserve from it.
    memory: Arc<PeakMemoryPool>,
    /// Input the query's scans read here (its tasks' sessions count into it).
    scans: Arc<ScanCounters>,
}

/// Tasks and memory per query on this node.
#[derive(Debug)]
pub struct TaskTracker {
    /// The node's pool, shared by every query.
    pool: Arc<dyn MemoryPool>,
    /// `query.max-memory-per-node`.
    per_query: usize,
    /// Reservations waiting on the full pool (see `flotilla_sql::memory`).
    waits: Arc<MemoryWaits>,
    queries: Mutex<HashMap<String, QueryUsage>>,
}

/// Figures for one query on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTasks {
    pub query_id: String,
    pub tasks: usize,
    pub reserved_bytes: usize,
    pub processed_rows: u64,
    pub processed_bytes: u64,
    /// Its reservations waiting for memory now.
    pub blocked: usize,
}

impl TaskTracker {
    fn new(pool: Arc<dyn MemoryPool>, per_query: usize, blocked_timeout: std::time::Duration) -> Self {
        let waits = Arc::new(MemoryWaits::new(blocked_timeout));
        Self { pool, per_query, waits, queries: Mutex::new(HashMap::new()) }
    }

    /// How long reservations have waited on the full pool without a break.
    pub fn memory_blocked_for(&self) -> std::time::Duration {
        self.waits.blocked_for()
    }

    /// Fails the query's waiting and future reservations here (the low-memory killer's
    /// verdict); a query with nothing here is left alone.
    pub fn kill(&self, query_id: &str, error: flotilla_proto::FlotillaError) {
        if let Some(usage) = self.queries.lock().get(query_id) {
            tracing::warn!(query = query_id, "{}", error.message);
            usage.memory.kill(error);
        }
    }

    /// The query's figures here; a query first seen gets a memory view limited to
    /// `query.max-memory-per-node`, lowered by `limit` when its session asks.
    fn with_usage<T>(&self, query_id: &str, limit: Option<usize>, f: impl FnOnce(&mut QueryUsage) -> T) -> T {
        let mut queries = self.queries.lock();
        let usage = queries.entry(query_id.to_string()).or_insert_with(|| QueryUsage {
            tasks: 0,
            memory: Arc::new(
                PeakMemoryPool::with_limit(self.pool.clone(), self.per_query).waiting_on(self.waits.clone()),
            ),
            scans: Arc::default(),
        });
        if let Some(limit) = limit {
            usage.memory.lower_limit(limit);
        }
        f(usage)
    }

    fn start_task(self: &Arc<Self>, query_id: &str) -> TaskGuard {
        self.with_usage(query_id, None, |usage| usage.tasks += 1);
        TaskGuard { tracker: self.clone(), query_id: query_id.to_string() }
    }

    /// What a query's task on this node is charged to: its memory and its input.
    fn counters_of(&self, query_id: &str, limit: Option<usize>) -> (Arc<PeakMemoryPool>, Arc<ScanCounters>) {
        self.with_usage(query_id, limit, |usage| (usage.memory.clone(), usage.scans.clone()))
    }

    /// Queries with tasks or memory here; forgets those with neither.
    pub fn queries(&self) -> Vec<QueryTasks> {
        let mut queries = self.queries.lock();
        queries.retain(|_, usage| usage.tasks > 0 || usage.memory.query_reserved() > 0);
        let mut list: Vec<QueryTasks> = queries
            .iter()
            .map(|(id, usage)| QueryTasks {
                query_id: id.clone(),
                tasks: usage.tasks,
                reserved_bytes: usage.memory.query_reserved(),
                processed_rows: usage.scans.rows(),
                processed_bytes: usage.scans.bytes(),
                blocked: usage.memory.blocked(),
            })
            .collect();
        list.sort_by(|a, b| a.query_id.cmp(&b.query_id));
        list
    }

    pub fn running_tasks(&self) -> usize {
        self.queries.lock().values().map(|u| u.tasks).sum()
    }

    /// The heartbeat's per-query figures.
    pub fn query_memory(&self) -> Vec<QueryMemory> {
        self.queries()
            .into_iter()
            .map(|q| QueryMemory {
                query_id: q.query_id,
                reserved_bytes: q.reserved_bytes as u64,
                tasks: q.tasks as u32,
                processed_rows: q.processed_rows,
                processed_bytes: q.processed_bytes,
                blocked: q.blocked as u32,
            })
            .collect()
    }
}

/// Held by a task's call; the task stops counting when the call is over.
pub struct TaskGuard {
    tracker: Arc<TaskTracker>,
    query_id: String,
}

impl fmt::Debug for TaskGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGuard").field("query_id", &self.query_id).finish()
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let mut queries = self.tracker.queries.lock();
        if let Some(usage) = queries.get_mut(&self.query_id) {
            usage.tasks = usage.tasks.saturating_sub(1);
        }
    }
}

/// `datafusion-distributed`'s buffer per worker connection, used when the query may hold
/// more than [`SMALL_SHARE`] times it on the node.
const DEFAULT_EXCHANGE_BUFFER: usize = 64 << 20;

/// DataFusion's `sort_spill_reservation_bytes`, likewise.
const DEFAULT_SORT_MERGE_RESERVATION: usize = 10 << 20;

/// At most this fraction of the query's memory on a node goes to one connection's buffer,
/// or to one sort's merge reservation.
const SMALL_SHARE: usize = 32;

/// Builds each task's session.
struct TaskSessions {
    runtime: Arc<RuntimeEnv>,
    tracker: Arc<TaskTracker>,
    channels: Arc<FlightChannels>,
    /// Join filters from other stages, for the scans of this node's tasks.
    inbox: Arc<FilterInbox>,
    publisher: Arc<dyn FilterPublisher>,
}

fn query_id_of(headers: &http::HeaderMap) -> &str {
    headers.get(QUERY_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("unknown")
}

#[async_trait]
impl WorkerSessionBuilder for TaskSessions {
    async fn build_session_state(&self, ctx: WorkerQueryContext) -> Result<SessionState, DataFusionError> {
        let limit = ctx
            .headers
            .get(MAX_MEMORY_PER_NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let query_id = query_id_of(&ctx.headers).to_string();
        let (memory, scans) = self.tracker.counters_of(&query_id, limit);
        // What a task's connection to another worker buffers, and what each sort keeps back
        // for merging its spill files, count in the query's memory and cannot spill: keep
        // them a small share of what the query may hold here, so operators that can spill
        // (several sorts behind an exchange) still find memory in a small pool.
        let share = memory.limit() / SMALL_SHARE;
        let exchange_budget = share.clamp(1 << 20, DEFAULT_EXCHANGE_BUFFER);
        // A sort merging its spill files needs a little more than a connection buffer; held
        // back from the start, it cannot be taken by buffers filling up meanwhile.
        let merge_reservation = (2 * share).clamp(1 << 20, DEFAULT_SORT_MERGE_RESERVATION);
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.runtime).with_memory_pool(memory).build_arc()?;
        let channels = self.channels.clone() as Arc<dyn ChannelResolver + Send + Sync>;
        let mut builder = ctx
            .builder
            .with_runtime_env(runtime)
            .with_distributed_channel_resolver(channels)
            .with_distributed_worker_connection_buffer_budget_bytes(exchange_budget)?;
        let config = builder.config().get_or_insert_default();
        config.set_extension(scans);
        // Join filters are matched to scans by query: a task whose query is not named sends
        // and awaits none.
        if ctx.headers.contains_key(QUERY_ID_HEADER) {
            config.set_extension(Arc::new(FilterExchange::new(query_id, self.inbox.clone(), self.publisher.clone())));
        }
        config.options_mut().execution.sort_spill_reservation_bytes = merge_reservation;
        Ok(flotilla_sql::distributed::worker_session_state(builder))
    }
}

/// The path of the call that carries one task's life.
const TASK_CALL_SUFFIX: &str = "/CoordinatorChannel";

/// Counts open task calls per query on the worker service.
#[derive(Debug, Clone)]
pub struct TaskCountingLayer {
    tracker: Arc<TaskTracker>,
}

impl<S> tower::Layer<S> for TaskCountingLayer {
    type Service = TaskCounting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TaskCounting { inner, tracker: self.tracker.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct TaskCounting<S> {
    inner: S,
    tracker: Arc<TaskTracker>,
}

impl<S, B> tower::Service<http::Request<B>> for TaskCounting<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request
            .uri()
            .path()
            .ends_with(TASK_CALL_SUFFIX)
            .then(|| self.tracker.start_task(query_id_of(request.headers())));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| tonic::body::Body::new(GuardedBody { body, _guard: guard })),
                None => response,
            })
        })
    }
}

/// A response body that ends the task when it is dropped.
struct GuardedBody {
    body: tonic::body::Body,
    _guard: TaskGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A node's task execution: the worker service, its pool and its tasks.
#[derive(Clone)]
pub struct DataPlane {
    pub worker: Worker,
    pub tracker: Arc<TaskTracker>,
    pub pool: Arc<dyn MemoryPool>,
    pub pool_bytes: u64,
    /// Where the worker service listens (`http://host:port`, as bound).
    pub url: String,
    /// The address it is bound to (announced through `NodeConfig::announced_url`).
    pub address: std::net::SocketAddr,
    /// For calling other workers.
    pub channels: Arc<FlightChannels>,
}

impl fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlane").field("url", &self.url).field("pool_bytes", &self.pool_bytes).finish()
    }
}

impl DataPlane {
    /// Binds the worker service on `address` (port 0 picks a free one) and serves it until
    /// `shutdown`.
    pub async fn start(
        address: SocketAddr,
        config: &crate::WorkerConfig,
        object_stores: Arc<dyn ObjectStoreRegistry>,
        auth: Arc<InternalAuth>,
        shutdown: CancellationToken,
    ) -> std::io::Result<(DataPlane, JoinHandle<()>)> {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let pool_bytes = config.memory_pool_bytes();
        for path in &config.spill_paths {
            std::fs::create_dir_all(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("spiller-spill-path {}: {e}", path.display())))?;
        }
        // Spilling operators (sort, aggregation) share the pool fairly and spill to the
        // disk manager's directories instead of failing.
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(pool_bytes as usize));
        let disks = DiskManagerBuilder::default().with_mode(config.disk_manager());
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .with_disk_manager_builder(disks)
            .with_object_store_registry(object_stores)
            .build_arc()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let per_query = config.max_query_memory_per_node().min(pool_bytes) as usize;
        let tracker = Arc::new(TaskTracker::new(pool.clone(), per_query, config.memory_blocked_timeout));
        let channels = FlightChannels::new(auth.clone());
        let inbox = Arc::new(FilterInbox::default());
        let sessions = TaskSessions {
            runtime: runtime.clone(),
            tracker: tracker.clone(),
            channels: channels.clone(),
            inbox: inbox.clone(),
            publisher: Arc::new(ChannelPublisher::new(channels.clone())),
        };
        let worker = Worker::from_session_builder(sessions)
            .with_runtime_env(runtime)
            .with_version(flotilla_proto::FLOTILLA_VERSION);
        let service = worker.clone().into_worker_server();
        let incoming = tokio_stream_listener(listener);
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(crate::flight::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(crate::flight::KEEPALIVE_TIMEOUT))
            .layer(InterceptorLayer::new(authenticate(auth)))
            .layer(TaskCountingLayer { tracker: tracker.clone() })
            .add_service(service)
            .add_service(FilterExchangeService::new(inbox))
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await });
        let handle = tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "worker data service failed");
            }
        });
        let url = format!("http://{local}");
        Ok((DataPlane { worker, tracker, pool, pool_bytes, url, address: local, channels }, handle))
    }
}

fn tokio_stream_listener(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    })
}
