//! The task that runs one query and owns its state ([`QueryOwner`]): registers it for
//! adoption, queues it in its resource group, plans it with the engine, encodes its batches
//! into pages of Trino JSON rows and feeds them to the query's bounded page channel, runs it
//! again when it loses a worker, and races all that against its limits ([`crate::limits`])
//! and the commands others send it (kills, cancels).

use std::sync::Arc;

use datafusion_distributed::{rewrite_distributed_plan_with_metrics, DistributedExec, DistributedMetricsFormat};
use flotilla_proto::adoption::QueryRegistration;
use flotilla_proto::{ErrorCode, FlotillaError};
use flotilla_protocol::{encode_batch, Column, TrinoType};
use flotilla_sql::{Engine, SqlSession};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::adoption::Registrar;
use crate::config::RetryConfig;
use crate::limits::{MemoryLimit, TimeLimit};
use crate::query::{Command, Commands, Page, Query, QueryOwner, QueryState, Registration, TARGET_PAGE_BYTES};
use crate::resource_groups::{Admission, QueryContext};
use crate::scheduler::Scheduler;

/// What every query's execution task works with.
#[derive(Debug)]
pub struct Execution {
    pub engine: Engine,
    pub scheduler: Arc<Scheduler>,
    pub admission: Arc<Admission>,
    pub registrar: Arc<Registrar>,
    /// `query.max-memory`.
    pub max_memory: u64,
    pub retry: RetryConfig,
    pub metrics: QueryMetrics,
    /// The query completion event listener, when one is configured.
    pub events: std::sync::OnceLock<(Arc<crate::events::EventListener>, Arc<flotilla_node::LocalNode>)>,
}

type Labels = Vec<(String, String)>;

/// What the coordinator counts of its queries for `/metrics`.
#[derive(Debug)]
pub struct QueryMetrics {
    /// Ended queries, by state, error name, resource group and warehouse.
    pub completed: prometheus_client::metrics::family::Family<Labels, prometheus_client::metrics::counter::Counter>,
    /// Bytes its queries' operators spilled to disk, here and on the workers.
    pub spilled_bytes: prometheus_client::metrics::counter::Counter,
    /// Seconds from submission to the end, by state.
    pub seconds: prometheus_client::metrics::family::Family<
        Labels,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        fn histogram() -> prometheus_client::metrics::histogram::Histogram {
            prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 18),
            )
        }
        Self {
            completed: Default::default(),
            spilled_bytes: Default::default(),
            seconds: prometheus_client::metrics::family::Family::new_with_constructor(histogram),
        }
    }
}

impl QueryMetrics {
    /// Counts a query that ended.
    fn ended(&self, query: &Query) {
        let stats = query.stats();
        self.spilled_bytes.inc_by(stats.spilled_bytes);
        let (state, error, group) = {
            let status = query.status();
            let error = status.error.as_ref().map_or(String::new(), |e| e.code.name().to_string());
            (status.state, error, status.resource_group.clone().unwrap_or_default())
        };
        let state = state.as_str().to_string();
        let labels = vec![
            ("state".to_string(), state.clone()),
            ("error".to_string(), error),
            ("resource_group".to_string(), group),
            ("warehouse".to_string(), query.warehouse()),
        ];
        self.completed.get_or_create(&labels).inc();
        let seconds = stats.elapsed_time_millis as f64 / 1000.0;
        self.seconds.get_or_create(&vec![("state".to_string(), state)]).observe(seconds);
    }
}

/// One query's execution task: the query, its owner (the one writer of its state) and the
/// commands sent to it.
pub struct Task {
    pub query: Arc<Query>,
    pub owner: QueryOwner,
    pub commands: Commands,
    pub pages: mpsc::Sender<Page>,
    pub registration: QueryRegistration,
}

impl Execution {
    /// Runs the query to completion, failure, a command or a limit: registers it for
    /// adoption first (its first response waits for that), then queues, plans and runs it.
    pub async fn run(self: Arc<Self>, task: Task) {
        let Task { query, owner, mut commands, pages, registration } = task;
        let work = async {
            let kept = self.registrar.register(&registration).await;
            owner.registered(if kept { Registration::Kept } else { Registration::NotKept });
            let mut session = SqlSession::from(&query.session);
            session.query_id = Some(query.id.to_string());
            // The session and routing rules named no warehouse: the tables may.
            if !session.properties.contains_key("warehouse") {
                if let Some(warehouse) = self.engine.table_warehouse(&session, &query.sql).await {
                    let _ = query.table_warehouse.set(warehouse.clone());
                    session.properties.insert("warehouse".to_string(), warehouse);
                }
            }
            self.run_owned(&query, &owner, &mut commands, &session, pages, registration).await;
            self.metrics.ended(&query);
            if let Some((events, local)) = self.events.get() {
                events.query_completed(&query, local);
            }
        };
        // A bug that panics while running one query fails that query; it must not leave the
        // client polling a query that will never end.
        if let Err(panic) = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work)).await {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            tracing::error!(query_id = %query.id, %detail, "query execution panicked");
            if owner.status().registration == Registration::Pending {
                owner.registered(Registration::NotKept);
            }
            owner.fail(FlotillaError::internal(format!("query execution failed unexpectedly: {detail}")));
        }
        // The query's tasks are gone from the workers once its stream is dropped; what
        // stays is where they ran (already copied when the query ended by itself).
        keep_placements(&self.scheduler, &query, &owner);
        self.scheduler.forget(&query.id.to_string());
    }

    async fn run_owned(
        &self,
        query: &Arc<Query>,
        owner: &QueryOwner,
        commands: &mut Commands,
        session: &SqlSession,
        pages: mpsc::Sender<Page>,
        mut registration: QueryRegistration,
    ) {
        let limits = session
            .max_run_time()
            .and_then(|time| Ok((TimeLimit(time), MemoryLimit::for_session(session, self.max_memory)?)));
        let (time_limit, memory_limit) = match limits {
            Ok(limits) => limits,
            Err(error) => {
                owner.fail(error);
                return;
            }
        };
        // Queued until its resource group has room. The slot is kept outside the work so it
        // is released only after the query has recorded its end (below): a query that starts
        // with it never overlaps this one.
        let slot = parking_lot::Mutex::new(Vec::new());
        let work = async {
            *slot.lock() = admit(&self.admission, &self.scheduler, query, owner, session).await?;
            // A write that may commit is never run again by an adopter: say so before it
            // starts.
            if registration.write && owner.status().registration == Registration::Kept {
                registration.started = true;
                self.registrar.register(&registration).await;
            }
            execute_with_retries(&self.engine, &self.scheduler, &self.retry, query, owner, session, pages).await
        };
        let id = query.id.to_string();
        let ended = tokio::select! {
            outcome = work => {
                // Where the tasks ran is part of the final stats: in place before the query
                // reports its end.
                keep_placements(&self.scheduler, query, owner);
                outcome
            }
            Command::Fail(error) = commands.next() => Err(error),
            error = memory_limit.exceeded(owner, &self.scheduler, &id) => Err(error),
            error = time_limit.expired() => Err(error),
        };
        match ended {
            Ok(()) => owner.transition(QueryState::Finished),
            Err(error) => {
                owner.fail(error);
            }
        }
        query.release_plan(owner);
        drop(slot);
    }
}

/// Copies where the query's tasks ran from the scheduler into the query's stats.
fn keep_placements(scheduler: &Scheduler, query: &Query, owner: &QueryOwner) {
    let placements = scheduler.placements(&query.id.to_string());
    owner.update(|status| status.tasks = placements);
}

/// Waits for a running slot in the query's warehouse, when its definition limits it, then
/// in its resource group; the permits hold the slots until dropped.
async fn admit(
    admission: &Arc<Admission>,
    scheduler: &Scheduler,
    query: &Arc<Query>,
    owner: &QueryOwner,
    session: &SqlSession,
) -> Result<Vec<crate::resource_groups::Permit>, FlotillaError> {
    let context = QueryContext {
        user: &query.session.user,
        source: query.session.source.as_deref(),
        client_tags: &query.session.client_tags,
        query_type: crate::resource_groups::config::query_type(&query.sql),
        user_groups: &[],
    };
    let selected = admission.select(&context)?;
    owner.update(|status| status.resource_group = Some(selected.path.clone()));
    let priority = session.property("query_priority")?.parse::<i64>().unwrap_or(1);
    let created_ms = query.created_at.timestamp_millis();
    let mut permits = Vec::new();
    let warehouse = session.property("warehouse")?;
    if let Some(limits) = scheduler.warehouse(&warehouse).as_ref().and_then(crate::resource_groups::warehouse_group) {
        permits.extend(admission.admit(&query.id, &limits, created_ms, priority, &owner.cancel).await?);
    }
    permits.extend(admission.admit(&query.id, &selected, created_ms, priority, &owner.cancel).await?);
    Ok(permits)
}

/// Runs the query, and again (up to `query-retry-attempts` times, after growing waits) while
/// it fails because a worker was lost: the retry is planned afresh, so its tasks go to the
/// live workers (the lost one is a suspect the scheduler skips until it heartbeats again).
/// When rows have reached the client already, a read-only query whose output order is
/// total is run again past those rows (as an adopted one is); others fail. A write is run
/// again only when nothing was sent: its commit is the last thing it does, so a failed
/// attempt committed nothing, and what it wrote is deleted. User errors, limits, kills and
/// cancels are never retried.
async fn execute_with_retries(
    engine: &Engine,
    scheduler: &Scheduler,
    retry: &RetryConfig,
    query: &Arc<Query>,
    owner: &QueryOwner,
    session: &SqlSession,
    pages: mpsc::Sender<Page>,
) -> Result<(), FlotillaError> {
    let enabled = match session.property("retry_policy")?.to_ascii_uppercase().as_str() {
        "QUERY" => true,
        "NONE" => false,
        _ => retry.enabled,
    };
    let mut retries = 0u32;
    let read_only = flotilla_protocol::is_read_only(&query.sql);
    // Rows handed to the client, over every attempt.
    let delivered = std::sync::atomic::AtomicU64::new(0);
    loop {
        let sent = std::sync::atomic::AtomicBool::new(false);
        let ordered = std::sync::atomic::AtomicBool::new(false);
        let attempt = Attempt { sent: &sent, ordered: &ordered, delivered: &delivered };
        let error = match execute(engine, query, owner, session, &pages, attempt).await {
            Ok(()) => return Ok(()),
            Err(error) => scheduler.name_workers(error),
        };
        let resumable = !sent.load(std::sync::atomic::Ordering::Relaxed)
            || (read_only && ordered.load(std::sync::atomic::Ordering::Relaxed));
        let retryable = error.code == ErrorCode::RemoteHostGone && resumable && !owner.cancel.is_cancelled();
        if !enabled || !retryable || retries >= retry.attempts {
            return Err(error);
        }
        retries += 1;
        let delay = retry.delay(retries);
        tracing::warn!(query = %query.id, attempt = retries, ?delay, %error, "a worker was lost; running the query again");
        // The next attempt's figures start afresh: the failed one's tasks are gone.
        scheduler.forget(&query.id.to_string());
        owner.update(|status| {
            status.failed_attempts.push(crate::query::FailedAttempt { error, at: chrono::Utc::now() });
            status.plan = None;
            status.output_rows = delivered.load(std::sync::atomic::Ordering::Relaxed);
            status.tasks.clear();
            status.remote = Default::default();
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = owner.cancel.cancelled() => return Err(FlotillaError::new(ErrorCode::UserCanceled, "Query was canceled")),
        }
    }
}

/// What one attempt reports back to [`execute_with_retries`].
struct Attempt<'a> {
    /// Some row of this attempt reached the page channel.
    sent: &'a std::sync::atomic::AtomicBool,
    /// Its output order is total (the same rows come in the same order when run again).
    ordered: &'a std::sync::atomic::AtomicBool,
    /// Rows handed to the client over every attempt (this one skips them).
    delivered: &'a std::sync::atomic::AtomicU64,
}

async fn execute(
    engine: &Engine,
    query: &Arc<Query>,
    owner: &QueryOwner,
    session: &SqlSession,
    pages: &mpsc::Sender<Page>,
    attempt: Attempt<'_>,
) -> Result<(), FlotillaError> {
    let Attempt { sent, ordered, delivered } = attempt;
    owner.transition(QueryState::Planning);
    let result = engine.execute(session, &query.sql).await?;
    let types = result
        .schema
        .fields()
        .iter()
        .map(|f| TrinoType::from_arrow(f.data_type()).map_err(|e| FlotillaError::not_supported(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let columns = result
        .schema
        .fields()
        .iter()
        .zip(&types)
        .map(|(field, trino_type)| Column {
            name: field.name().clone(),
            type_name: trino_type.to_string(),
            type_signature: trino_type.signature(),
        })
        .collect();
    owner.update(|status| {
        status.columns = Some(columns);
        status.column_types = types.clone();
        status.update_type = result.update_type.clone();
        status.update_count = result.update_count;
        status.changes = result.changes.clone();
        status.plan = result.plan.clone();
        status.memory = Some(result.memory.clone());
        status.scans = Some(result.scans.clone());
    });
    ordered.store(result.totally_ordered, std::sync::atomic::Ordering::Relaxed);
    // An adopted query whose client has rows already, or a query run again after rows
    // reached the client: skip exactly those, which is only the same rows when the order is
    // deterministic.
    let mut skip = query.adopted.as_ref().map_or(0, |a| a.rows) + delivered.load(std::sync::atomic::Ordering::Relaxed);
    if skip > 0 && !result.totally_ordered {
        let from = query.adopted.as_ref().map_or("", |a| a.from.as_str());
        // Not REMOTE_HOST_GONE: that one is retried, and this would fail the same way.
        return Err(FlotillaError::new(
            ErrorCode::GenericInternalError,
            format!(
                "The coordinator that ran query {} died after {skip} rows were returned ({from}); the query's output order \
                 is not deterministic (no ORDER BY that orders every row), so it cannot be resumed safely. Run it again.",
                query.id
            ),
        ));
    }
    owner.transition(QueryState::Running);

    let mut stream = result.stream;
    let mut buffer: Vec<u8> = Vec::with_capacity(TARGET_PAGE_BYTES);
    let mut rows_in_buffer = 0usize;
    while let Some(batch) = stream.next().await {
        let mut batch = batch.map_err(|e| flotilla_sql::error::from_datafusion(&e))?;
        if skip > 0 {
            let skipped = skip.min(batch.num_rows() as u64);
            skip -= skipped;
            batch = batch.slice(skipped as usize, batch.num_rows() - skipped as usize);
            if batch.num_rows() == 0 {
                continue;
            }
        }
        let rows = encode_batch(&batch, &types).map_err(|e| FlotillaError::internal(e.to_string()))?;
        owner.update(|status| status.output_rows += rows.len() as u64);
        for row in rows {
            buffer.push(if rows_in_buffer == 0 { b'[' } else { b',' });
            serde_json::to_writer(&mut buffer, &row).map_err(|e| FlotillaError::internal(e.to_string()))?;
            rows_in_buffer += 1;
            if buffer.len() >= TARGET_PAGE_BYTES {
                sent.store(true, std::sync::atomic::Ordering::Relaxed);
                delivered.fetch_add(rows_in_buffer as u64, std::sync::atomic::Ordering::Relaxed);
                send_page(pages, &mut buffer, &mut rows_in_buffer).await?;
            }
        }
        // Hand over what a batch produced rather than holding it for the next batch, so
        // the first rows reach the client early.
        if rows_in_buffer > 0 {
            sent.store(true, std::sync::atomic::Ordering::Relaxed);
            delivered.fetch_add(rows_in_buffer as u64, std::sync::atomic::Ordering::Relaxed);
            send_page(pages, &mut buffer, &mut rows_in_buffer).await?;
        }
    }
    collect_task_metrics(query, owner).await;
    Ok(())
}

/// How long a finished query waits for its tasks' metrics (each task pushes them over its
/// coordinator channel as it closes, so they are normally there within milliseconds).
const TASK_METRICS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Puts the workers' task metrics into a distributed query's plan, so its final stats
/// (processed rows and bytes, CPU, splits) count the work done on the workers.
async fn collect_task_metrics(query: &Query, owner: &QueryOwner) {
    let plan = owner.status().plan.clone();
    let Some(plan) = plan.filter(|p| p.is::<DistributedExec>()) else { return };
    let rewrite = rewrite_distributed_plan_with_metrics(plan, DistributedMetricsFormat::PerTask);
    match tokio::time::timeout(TASK_METRICS_WAIT, rewrite).await {
        Ok(Ok(with_metrics)) => owner.update(|status| status.plan = Some(with_metrics)),
        Ok(Err(error)) => tracing::warn!(query_id = %query.id, %error, "task metrics could not be merged"),
        Err(_) => tracing::warn!(query_id = %query.id, "task metrics did not all arrive in time"),
    }
}

async fn send_page(
    pages: &mpsc::Sender<Page>,
    buffer: &mut Vec<u8>,
    rows_in_buffer: &mut usize,
) -> Result<(), FlotillaError> {
    buffer.push(b']');
    let text = String::from_utf8(std::mem::take(buffer)).map_err(|e| FlotillaError::internal(e.to_string()))?;
    let rows = RawValue::from_string(text).map_err(|e| FlotillaError::internal(e.to_string()))?;
    let page = Page { rows, row_count: *rows_in_buffer };
    *rows_in_buffer = 0;
    // The receiver lives as long as the query; a closed channel means it was cancelled.
    pages.send(page).await.map_err(|_| FlotillaError::new(ErrorCode::UserCanceled, "Query was canceled"))
}
