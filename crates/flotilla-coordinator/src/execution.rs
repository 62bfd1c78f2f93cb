//! The task that runs one query: plans it with the engine, encodes its batches into pages of
//! Trino JSON rows and feeds them to the query's bounded page channel.

use std::sync::Arc;

use datafusion_distributed::{rewrite_distributed_plan_with_metrics, DistributedExec, DistributedMetricsFormat};
use flotilla_proto::{ErrorCode, FlotillaError};
use flotilla_protocol::{encode_batch, Column, TrinoType};
use flotilla_sql::{Engine, SqlSession};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::adoption::Registrar;
use crate::config::RetryConfig;
use crate::query::{Page, Query, QueryState, Registration, TARGET_PAGE_BYTES};
use flotilla_proto::adoption::QueryRegistration;
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
}

impl Execution {
    /// Runs `query` to completion, failure, cancellation or its time limit: registers it
    /// for adoption first (its first response waits for that), then queues, plans and runs
    /// it.
    pub async fn run(self: Arc<Self>, query: Arc<Query>, pages: mpsc::Sender<Page>, registration: QueryRegistration) {
        let kept = self.registrar.register(&registration).await;
        query.set_registration(if kept { Registration::Kept } else { Registration::NotKept });
        let mut session = SqlSession::from(&query.session);
        session.query_id = Some(query.id.to_string());
        run(&self, &query, &session, pages, registration).await;
        // The query's tasks are gone from the workers once its stream is dropped; what
        // stays is where they ran (already copied when the query ended by itself).
        keep_placements(&self.scheduler, &query);
        self.scheduler.forget(&query.id.to_string());
    }
}

/// Copies where the query's tasks ran from the scheduler into the query's stats.
fn keep_placements(scheduler: &Scheduler, query: &Query) {
    query.status.lock().tasks = scheduler.placements(&query.id.to_string());
}

async fn run(
    execution: &Execution,
    query: &Arc<Query>,
    session: &SqlSession,
    pages: mpsc::Sender<Page>,
    mut registration: QueryRegistration,
) {
    let Execution { engine, scheduler, admission, registrar, max_memory, retry } = execution;
    let max_memory = *max_memory;
    let cancel = query.cancel.clone();
    let limits = session.max_run_time().and_then(|time| {
        let memory = session.data_size("query_max_memory")?.map_or(max_memory, |m| m.min(max_memory));
        Ok((time, memory))
    });
    let (limit, memory_limit) = match limits {
        Ok(limits) => limits,
        Err(error) => {
            query.fail(error);
            return;
        }
    };
    // Queued until its resource group has room. The slot is kept outside the work so it is
    // released only after the query has recorded its end (below): a query that starts with
    // it never overlaps this one.
    let slot = parking_lot::Mutex::new(None);
    let work = async {
        *slot.lock() = admit(admission, query, session).await?;
        // A write that may commit is never run again by an adopter: say so before it starts.
        if registration.write && *query.registration.lock() == Registration::Kept {
            registration.started = true;
            registrar.register(&registration).await;
        }
        execute_with_retries(engine, scheduler, retry, query, session, pages).await
    };
    // The workers' heartbeats carry each query's progress; the view brings it here.
    let id = query.id.to_string();
    let progress = async {
        loop {
            tokio::time::sleep(PROGRESS_INTERVAL).await;
            // Only a query running on workers has progress there.
            let (distributed, local) = {
                let status = query.status.lock();
                let distributed = status.plan.as_ref().is_some_and(|p| p.is::<DistributedExec>());
                (distributed, status.memory.as_ref().map_or(0, |m| m.query_reserved() as u64))
            };
            let remote = if distributed { scheduler.remote_progress(&id) } else { Default::default() };
            if distributed {
                let mut status = query.status.lock();
                // Tasks that ended drop out of the heartbeats: keep the most seen.
                status.remote.rows = status.remote.rows.max(remote.rows);
                status.remote.bytes = status.remote.bytes.max(remote.bytes);
                status.remote.workers = status.remote.workers.max(remote.workers);
                status.remote.reserved_bytes = status.remote.reserved_bytes.max(remote.reserved_bytes);
            }
            // query.max-memory: what it holds here plus on every worker (as of their last
            // heartbeats).
            if local + remote.reserved_bytes > memory_limit {
                query.fail(FlotillaError::new(
                    ErrorCode::ExceededGlobalMemoryLimit,
                    format!(
                        "Query exceeded distributed user memory limit of {}",
                        flotilla_sql::memory::human_bytes(memory_limit as usize)
                    ),
                ));
            }
        }
    };
    tokio::select! {
        _ = progress => {}
        outcome = work => {
            // Where the tasks ran is part of the final stats: in place before the query
            // reports its end.
            keep_placements(scheduler, query);
            match outcome {
                Ok(()) => query.transition(QueryState::Finished),
                Err(error) => {
                    query.fail(error);
                }
            }
        }
        _ = cancel.cancelled() => {
            // `fail` or a cancel request already recorded why.
        }
        _ = tokio::time::sleep(limit) => {
            query.fail(FlotillaError::new(
                ErrorCode::ExceededTimeLimit,
                format!("Query exceeded maximum time limit of {}", humanize(limit)),
            ));
        }
    }
    drop(slot);
}

/// How often a running query's progress is read from the cluster view.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

fn humanize(limit: std::time::Duration) -> String {
    format!("{:.2}s", limit.as_secs_f64())
}

/// Places the query in its resource group and waits for a running slot there.
async fn admit(
    admission: &Arc<Admission>,
    query: &Arc<Query>,
    session: &SqlSession,
) -> Result<Option<crate::resource_groups::Permit>, FlotillaError> {
    let context = QueryContext {
        user: &query.session.user,
        source: query.session.source.as_deref(),
        client_tags: &query.session.client_tags,
        query_type: crate::resource_groups::config::query_type(&query.sql),
        user_groups: &[],
    };
    let selected = admission.select(&context)?;
    query.status.lock().resource_group = Some(selected.path.clone());
    let priority = session.property("query_priority")?.parse::<i64>().unwrap_or(1);
    let created_ms = query.created_at.timestamp_millis();
    admission.admit(&query.id, &selected, created_ms, priority, &query.cancel).await
}

/// Runs the query, and again (up to `query-retry-attempts` times, after growing waits) while
/// it fails because a worker was lost and no row has reached the client: the retry is
/// planned afresh, so its tasks go to the live workers (the lost one is a suspect the
/// scheduler skips until it heartbeats again). A write is run again too: its commit is the
/// last thing it does, so a failed attempt committed nothing, and what it wrote is deleted.
/// User errors, limits, kills and cancels are never retried.
async fn execute_with_retries(
    engine: &Engine,
    scheduler: &Scheduler,
    retry: &RetryConfig,
    query: &Arc<Query>,
    session: &SqlSession,
    pages: mpsc::Sender<Page>,
) -> Result<(), FlotillaError> {
    let enabled = match session.property("retry_policy")?.to_ascii_uppercase().as_str() {
        "QUERY" => true,
        "NONE" => false,
        _ => retry.enabled,
    };
    let mut retries = 0u32;
    loop {
        let sent = std::sync::atomic::AtomicBool::new(false);
        let error = match execute(engine, query, session, &pages, &sent).await {
            Ok(()) => return Ok(()),
            Err(error) => scheduler.name_workers(error),
        };
        let retryable = error.code == ErrorCode::RemoteHostGone
            && !sent.load(std::sync::atomic::Ordering::Relaxed)
            && !query.cancel.is_cancelled();
        if !enabled || !retryable || retries >= retry.attempts {
            return Err(error);
        }
        retries += 1;
        let delay = retry.delay(retries);
        tracing::warn!(query = %query.id, attempt = retries, ?delay, %error, "a worker was lost; running the query again");
        {
            let mut status = query.status.lock();
            status.failed_attempts.push(crate::query::FailedAttempt { error, at: chrono::Utc::now() });
            status.plan = None;
            status.output_rows = 0;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = query.cancel.cancelled() => return Err(FlotillaError::new(ErrorCode::UserCanceled, "Query was canceled")),
        }
    }
}

async fn execute(
    engine: &Engine,
    query: &Arc<Query>,
    session: &SqlSession,
    pages: &mpsc::Sender<Page>,
    sent: &std::sync::atomic::AtomicBool,
) -> Result<(), FlotillaError> {
    query.transition(QueryState::Planning);
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
    {
        let mut status = query.status.lock();
        status.columns = Some(columns);
        status.column_types = types.clone();
        status.update_type = result.update_type.clone();
        status.update_count = result.update_count;
        status.changes = result.changes.clone();
        status.plan = result.plan.clone();
        status.memory = Some(result.memory.clone());
        status.scans = Some(result.scans.clone());
    }
    // An adopted query whose client has rows already: skip exactly those, which is only the
    // same rows when the order is deterministic.
    let mut skip = query.adopted.as_ref().map_or(0, |a| a.rows);
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
    query.transition(QueryState::Running);

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
        query.status.lock().output_rows += rows.len() as u64;
        for row in rows {
            buffer.push(if rows_in_buffer == 0 { b'[' } else { b',' });
            serde_json::to_writer(&mut buffer, &row).map_err(|e| FlotillaError::internal(e.to_string()))?;
            rows_in_buffer += 1;
            if buffer.len() >= TARGET_PAGE_BYTES {
                sent.store(true, std::sync::atomic::Ordering::Relaxed);
                send_page(pages, &mut buffer, &mut rows_in_buffer).await?;
            }
        }
        // Hand over what a batch produced rather than holding it for the next batch, so
        // the first rows reach the client early.
        if rows_in_buffer > 0 {
            sent.store(true, std::sync::atomic::Ordering::Relaxed);
            send_page(pages, &mut buffer, &mut rows_in_buffer).await?;
        }
    }
    collect_task_metrics(query).await;
    Ok(())
}

/// How long a finished query waits for its tasks' metrics (each task pushes them over its
/// coordinator channel as it closes, so they are normally there within milliseconds).
const TASK_METRICS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Puts the workers' task metrics into a distributed query's plan, so its final stats
/// (processed rows and bytes, CPU, splits) count the work done on the workers.
async fn collect_task_metrics(query: &Query) {
    let plan = query.status.lock().plan.clone();
    let Some(plan) = plan.filter(|p| p.is::<DistributedExec>()) else { return };
    let rewrite = rewrite_distributed_plan_with_metrics(plan, DistributedMetricsFormat::PerTask);
    match tokio::time::timeout(TASK_METRICS_WAIT, rewrite).await {
        Ok(Ok(with_metrics)) => query.status.lock().plan = Some(with_metrics),
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
