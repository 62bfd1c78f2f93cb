//! One query on its owning coordinator: its state machine, the pages of results the
//! execution task produces (through a bounded channel, so a slow client slows execution
//! instead of filling memory), and the idempotent page cursor the protocol serves.
//!
//! ```text
//!            commands (fail: kill, cancel, abandon, shutdown, memory kill)
//!  anyone ─────────────────────────────────────────────┐
//!                                                      ▼
//!  execution task (QueryOwner: the one writer) ── Page ──▶ bounded channel ──▶ ResultCursor
//!        │ publishes QueryStatus (watch)                           ▲ GET nextUri (token n or n+1)
//!        └──────────────────▶ Query::status() ◀────────────────────┘ (and every other reader)
//! ```
//!
//! The execution task owns the query's state: it alone writes [`QueryStatus`], through its
//! [`QueryOwner`], and publishes every change on a `watch` channel; everything else reads
//! it, and asks for a change (a failure) by sending the owner a [`Command`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::physical_plan::ExecutionPlan;
use flotilla_proto::{FlotillaError, QueryId};
use flotilla_protocol::{ClientSession, Column, QueryError, QueryResults, StageStats, StatementStats, TrinoType};
use flotilla_sql::{
    plan_progress, stage_tree, PeakMemoryPool, PlanProgress, ScanCounters, SessionChanges, StageProgress,
};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// Pages buffered between the execution task and the client.
pub const PAGE_BUFFER: usize = 4;
/// Target size of one page of JSON rows.
pub const TARGET_PAGE_BYTES: usize = 1 << 20;

/// Trino's query states, as clients see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryState {
    Queued,
    Planning,
    Running,
    Finished,
    Failed,
}

impl QueryState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryState::Queued => "QUEUED",
            QueryState::Planning => "PLANNING",
            QueryState::Running => "RUNNING",
            QueryState::Finished => "FINISHED",
            QueryState::Failed => "FAILED",
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, QueryState::Finished | QueryState::Failed)
    }
}

/// Rows already serialised as a JSON array, with their count.
#[derive(Debug)]
pub struct Page {
    pub rows: Box<RawValue>,
    pub row_count: usize,
}

/// A stage's figures in the protocol's shape. Stages share the query's state (they run
/// together); their splits, rows and CPU are their own, complete once the workers' task
/// metrics have arrived at the end of the query.
fn stage_stats(stage: &StageProgress, state: QueryState, wall_time_millis: u64, workers: u32) -> StageStats {
    let done = state.is_done();
    let splits = stage.progress.total_splits;
    StageStats {
        stage_id: stage.stage.to_string(),
        state: state.as_str().to_string(),
        done,
        nodes: if stage.stage == 0 { 1 } else { (stage.tasks as u32).min(workers.max(1)) },
        total_splits: splits,
        queued_splits: 0,
        running_splits: if state == QueryState::Running { splits } else { 0 },
        completed_splits: if done { splits } else { 0 },
        cpu_time_millis: stage.progress.cpu_nanos / 1_000_000,
        wall_time_millis,
        processed_rows: stage.progress.processed_rows,
        processed_bytes: stage.progress.processed_bytes,
        physical_input_bytes: stage.progress.processed_bytes,
        failed_tasks: 0,
        coordinator_only: stage.stage == 0,
        sub_stages: stage.children.iter().map(|c| stage_stats(c, state, wall_time_millis, workers)).collect(),
    }
}

/// What the execution task learns about the query; read by every response.
#[derive(Debug)]
pub struct QueryStatus {
    pub state: QueryState,
    pub columns: Option<Vec<Column>>,
    pub column_types: Vec<TrinoType>,
    pub error: Option<FlotillaError>,
    pub update_type: Option<String>,
    pub update_count: Option<i64>,
    pub changes: SessionChanges,
    /// The executed plan, until the query has ended ([`Query::release_plan`]).
    pub plan: Option<Arc<dyn ExecutionPlan>>,
    /// The plan as text, kept when an ended query lets its plan go (set only then).
    pub released_plan: Option<Arc<str>>,
    pub memory: Option<Arc<PeakMemoryPool>>,
    pub scans: Option<Arc<ScanCounters>>,
    pub started: Option<Instant>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended: Option<Instant>,
    pub ended_at: Option<DateTime<Utc>>,
    pub output_rows: u64,
    /// Where the query's tasks ran (set when it ends; the scheduler knows while it runs).
    pub tasks: Vec<crate::scheduler::TaskPlacement>,
    /// Progress on the workers while the query runs, from their heartbeats.
    pub remote: crate::scheduler::RemoteProgress,
    /// How the query's registration for adoption went.
    pub registration: Registration,
    /// The resource group the query was placed in (once selected).
    pub resource_group: Option<String>,
    /// Attempts that failed because a worker was lost, and were run again.
    pub failed_attempts: Vec<FailedAttempt>,
}

/// An attempt of a query that lost a worker and was run again.
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    pub error: FlotillaError,
    pub at: DateTime<Utc>,
}

/// The page cursor: the last response served (so a retry gets the same bytes) and the
/// receiving end of the page channel.
#[derive(Debug)]
pub struct ResultCursor {
    pub last_token: u64,
    pub last_response: Arc<CachedResponse>,
    pub pages: mpsc::Receiver<Page>,
    /// A page taken from the channel to look past it, not served yet.
    pub pending: Option<Page>,
    pub exhausted: bool,
    /// Rows in the responses served so far (with those an adopted query skipped).
    pub rows_served: u64,
}

/// A response as served, so re-asking a token returns the same page.
#[derive(Debug)]
pub struct CachedResponse {
    pub body: bytes::Bytes,
    pub changes: SessionChanges,
}

/// Where the query's registration with the resource managers stands (for adoption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Its execution task is registering it.
    Pending,
    /// At least one resource manager keeps it.
    Kept,
    /// None does: the query cannot be adopted.
    NotKept,
}

/// What others ask of a query's execution task.
#[derive(Debug)]
pub enum Command {
    /// End the query with this error (a kill, a cancel, abandonment, shutdown, the memory
    /// killer's verdict), unless it has already ended.
    Fail(FlotillaError),
}

/// Commands waiting for the execution task, at most (the first failure decides; more are
/// dropped).
const COMMAND_BACKLOG: usize = 8;

/// What this coordinator took over when it adopted the query from a dead owner.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// Why the previous owner is gone.
    pub from: String,
    /// Rows the client had received already: skipped.
    pub rows: u64,
    /// The adoption's epoch (how many times the query changed owner).
    pub epoch: u32,
}

/// A query owned by this coordinator: what never changes, the page cursor, and a view of
/// the state its execution task publishes.
#[derive(Debug)]
pub struct Query {
    pub id: QueryId,
    pub slug: String,
    pub sql: String,
    pub session: ClientSession,
    pub created: Instant,
    pub created_at: DateTime<Utc>,
    /// Set when this coordinator adopted the query from a dead owner.
    pub adopted: Option<Adopted>,
    /// The warehouse its tables asked for, when its session and routing named none (set
    /// once, before it is admitted). Not part of the status: read without its lock, so it
    /// can be read while the status is held.
    pub table_warehouse: std::sync::OnceLock<String>,
    pub cursor: tokio::sync::Mutex<ResultCursor>,
    status: watch::Receiver<QueryStatus>,
    commands: mpsc::Sender<Command>,
    /// Last time a client asked about this query (for abandonment).
    last_heartbeat: Mutex<Instant>,
    /// The final response (no `nextUri`) has been produced (written by the page cursor).
    delivered: std::sync::atomic::AtomicBool,
    /// The resource managers were told to drop the registration (written by the sweep).
    forgotten: std::sync::atomic::AtomicBool,
    /// The figures last read from the plan's metrics (see [`Query::plan_figures`]).
    figures: Mutex<Option<PlanFigures>>,
}

/// A query's figures read from its plan's metrics, and which plan and when.
#[derive(Debug, Clone)]
struct PlanFigures {
    /// The plan they were read from (its address: a query's plan is replaced, not changed,
    /// when the workers' metrics are merged in).
    plan: usize,
    /// Read after the query ended: final.
    done: bool,
    at: Instant,
    progress: PlanProgress,
    stages: Option<StageProgress>,
}

/// How long figures read from a running query's plan are reused. Reading them walks every
/// operator's metrics (with the workers' merged in, for every task): on every poll, each
/// heartbeat and each status request that was a third of a small distributed query's
/// coordinator CPU.
const FIGURES_MAX_AGE: Duration = Duration::from_millis(250);

/// The one writer of a query's state, held by its execution task.
#[derive(Debug)]
pub struct QueryOwner {
    status: watch::Sender<QueryStatus>,
    /// Cancelled when the query ends by a failure: stops whatever works for it.
    pub cancel: CancellationToken,
    /// Woken on state changes: the coordinator's heartbeat reports them.
    on_change: Option<Arc<Notify>>,
}

/// What a new query starts from (`adopted`, `created`: for a query taken over from a dead
/// owner).
#[derive(Debug)]
pub struct NewQuery {
    pub id: QueryId,
    pub slug: String,
    pub sql: String,
    pub session: ClientSession,
    pub pages: mpsc::Receiver<Page>,
    pub adopted: Option<Adopted>,
    /// When it was submitted (now, unless adopted).
    pub created_at: DateTime<Utc>,
    /// Woken on every state change.
    pub on_change: Option<Arc<Notify>>,
}

impl Query {
    /// The warehouse the query runs in (what the scheduler places its tasks by): its
    /// session's `warehouse` property (set by the client or a routing rule), else the one
    /// its tables ask for, else the property's default.
    pub fn warehouse(&self) -> String {
        if let Some(warehouse) = self.session.properties.get("warehouse") {
            return warehouse.clone();
        }
        if let Some(warehouse) = self.table_warehouse.get() {
            return warehouse.clone();
        }
        flotilla_sql::session::session_property("warehouse").map(|p| (p.default)()).unwrap_or_default()
    }

    /// The query, and its owner and commands (for the execution task).
    pub fn new(new: NewQuery) -> (Query, QueryOwner, Commands) {
        let now = Instant::now();
        let age = (Utc::now() - new.created_at).to_std().unwrap_or_default();
        let (sender, receiver) = watch::channel(QueryStatus {
            state: QueryState::Queued,
            columns: None,
            column_types: Vec::new(),
            error: None,
            update_type: None,
            update_count: None,
            changes: SessionChanges::default(),
            plan: None,
            released_plan: None,
            memory: None,
            scans: None,
            started: None,
            started_at: None,
            ended: None,
            ended_at: None,
            output_rows: 0,
            tasks: Vec::new(),
            remote: Default::default(),
            registration: Registration::Pending,
            resource_group: None,
            failed_attempts: Vec::new(),
        });
        let (commands, command_receiver) = mpsc::channel(COMMAND_BACKLOG);
        let rows = new.adopted.as_ref().map_or(0, |a| a.rows);
        let query = Query {
            id: new.id,
            slug: new.slug,
            sql: new.sql,
            session: new.session,
            created: now.checked_sub(age).unwrap_or(now),
            created_at: new.created_at,
            adopted: new.adopted,
            table_warehouse: std::sync::OnceLock::new(),
            cursor: tokio::sync::Mutex::new(ResultCursor {
                last_token: 0,
                last_response: Arc::new(CachedResponse {
                    body: bytes::Bytes::new(),
                    changes: SessionChanges::default(),
                }),
                pages: new.pages,
                pending: None,
                exhausted: false,
                rows_served: rows,
            }),
            status: receiver,
            commands,
            last_heartbeat: Mutex::new(now),
            delivered: Default::default(),
            forgotten: Default::default(),
            figures: Mutex::new(None),
        };
        let owner = QueryOwner { status: sender, cancel: CancellationToken::new(), on_change: new.on_change };
        (query, owner, Commands(command_receiver))
    }

    /// The query's state as its execution task last published it. Do not hold it across an
    /// await, nor take it twice in one expression.
    pub fn status(&self) -> watch::Ref<'_, QueryStatus> {
        self.status.borrow()
    }

    /// A receiver that wakes on every change of the state.
    pub fn watch(&self) -> watch::Receiver<QueryStatus> {
        self.status.clone()
    }

    pub fn state(&self) -> QueryState {
        self.status.borrow().state
    }

    pub fn touch(&self) {
        *self.last_heartbeat.lock() = Instant::now();
    }

    /// Asks the execution task to end the query with `error`; false when it has already
    /// ended (or is ending for another reason already).
    pub fn fail(&self, error: FlotillaError) -> bool {
        if self.state().is_done() {
            return false;
        }
        match self.commands.try_send(Command::Fail(error)) {
            Ok(()) => true,
            // Full: failures already wait, the first decides.
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The page cursor produced the final response.
    pub fn mark_delivered(&self) {
        self.delivered.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the client has received the final response.
    pub fn delivered(&self) -> bool {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the registration forgotten; true the first time.
    pub fn forget_registration(&self) -> bool {
        !self.forgotten.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the execution task has registered the query (or given up on it).
    pub async fn wait_registered(&self) {
        let mut status = self.watch();
        let _ = status.wait_for(|s| s.registration != Registration::Pending || s.state.is_done()).await;
    }

    /// Progress figures and the stage tree of the query's plan (`status` is this query's),
    /// read from its metrics: once for a query that has ended, at most every
    /// [`FIGURES_MAX_AGE`] while it runs.
    pub fn plan_figures(&self, status: &QueryStatus) -> (PlanProgress, Option<StageProgress>) {
        let plan_key = status.plan.as_ref().map_or(0, |plan| Arc::as_ptr(plan) as *const () as usize);
        let done = status.state.is_done();
        let mut figures = self.figures.lock();
        // An ended query's figures are final; they outlive its plan (`release_plan`).
        let released = status.released_plan.is_some();
        if let Some(kept) = figures.as_ref().filter(|kept| (kept.plan == plan_key || released) && kept.done == done) {
            if done || kept.at.elapsed() < FIGURES_MAX_AGE {
                return (kept.progress, kept.stages.clone());
            }
        }
        let progress = match (&status.plan, &status.scans) {
            (Some(plan), Some(scans)) => plan_progress(plan, scans),
            _ => PlanProgress::default(),
        };
        let stages = status.plan.as_ref().and_then(stage_tree);
        *figures = Some(PlanFigures { plan: plan_key, done, at: Instant::now(), progress, stages: stages.clone() });
        (progress, stages)
    }

    /// Lets an ended query's plan go, keeping what is read from it later: its final figures
    /// (read now) and its text. An executed plan holds its operators' state, a collected
    /// join's hash table and build rows among them (~80 MB in TPC-H q09 at scale 1), and an
    /// ended query stays for `query.min-expire-age`: with its plan kept, a coordinator held
    /// what every recent query had built (2.3 GB after ninety TPC-H queries) and each query
    /// took fresh memory from the kernel.
    pub fn release_plan(&self, owner: &QueryOwner) {
        let status = owner.status();
        let Some(plan) = status.plan.clone().filter(|_| status.state.is_done()) else { return };
        self.plan_figures(&status);
        drop(status);
        let text: Arc<str> = render(&plan).into();
        owner.update(|status| {
            status.plan = None;
            status.released_plan = Some(text);
        });
    }

    /// The statistics block of a response.
    pub fn stats(&self) -> StatementStats {
        let status = self.status();
        let now = Instant::now();
        let end = status.ended.unwrap_or(now);
        let queued_until = status.started.unwrap_or(end);
        let (progress, stages) = self.plan_figures(&status);
        let done = status.state.is_done();
        let total_splits = progress.total_splits;
        // Workers that ran tasks (known at the end), or hold them now (heartbeats), plus
        // this coordinator.
        let mut workers: Vec<&str> = status.tasks.iter().map(|t| t.node_id.as_str()).collect();
        workers.sort_unstable();
        workers.dedup();
        let nodes = 1 + (workers.len() as u32).max(status.remote.workers);
        let wall_time_millis = status.started.map(|s| end.saturating_duration_since(s).as_millis() as u64).unwrap_or(0);
        let root_stage = stages.map(|tree| {
            stage_stats(&tree, status.state, wall_time_millis, (workers.len() as u32).max(status.remote.workers))
        });
        StatementStats {
            state: status.state.as_str().to_string(),
            queued: status.state == QueryState::Queued,
            scheduled: matches!(status.state, QueryState::Running | QueryState::Finished),
            progress_percentage: match status.state {
                QueryState::Finished => Some(100.0),
                QueryState::Running if progress.expected_rows > 0 => {
                    let read = progress.processed_rows.max(status.remote.rows) as f64;
                    Some((read * 100.0 / progress.expected_rows as f64).min(99.0))
                }
                _ => None,
            },
            running_percentage: None,
            nodes,
            total_splits,
            queued_splits: 0,
            running_splits: if done {
                0
            } else if status.state == QueryState::Running {
                total_splits
            } else {
                0
            },
            completed_splits: if done { total_splits } else { 0 },
            cpu_time_millis: progress.cpu_nanos / 1_000_000,
            wall_time_millis,
            queued_time_millis: queued_until.saturating_duration_since(self.created).as_millis() as u64,
            elapsed_time_millis: end.saturating_duration_since(self.created).as_millis() as u64,
            processed_rows: match progress.processed_rows.max(status.remote.rows) {
                0 => status.output_rows,
                rows => rows,
            },
            processed_bytes: progress.processed_bytes.max(status.remote.bytes),
            physical_input_bytes: progress.processed_bytes.max(status.remote.bytes),
            physical_written_bytes: 0,
            // Here at most, plus the most the workers reported holding at once.
            peak_memory_bytes: status.memory.as_ref().map(|m| m.peak() as u64).unwrap_or(0)
                + status.remote.reserved_bytes,
            spilled_bytes: progress.spilled_bytes,
            root_stage,
        }
    }

    /// A response document: status fields plus, optionally, one page of data.
    /// `rows`: how many rows the client will have once it has this response (carried in
    /// `nextUri`, so a coordinator that adopts the query knows what to skip).
    pub fn results(
        &self,
        uris: &flotilla_protocol::uris::QueryUris,
        next_token: Option<u64>,
        page: Option<Page>,
        rows: u64,
    ) -> QueryResults {
        let stats = self.stats();
        let status = self.status();
        let mut results = QueryResults {
            id: self.id.to_string(),
            info_uri: uris.info_uri(&self.id),
            partial_cancel_uri: None,
            next_uri: None,
            columns: status.columns.clone(),
            data: page.map(|p| p.rows),
            stats,
            error: status.error.as_ref().map(QueryError::from),
            warnings: Vec::new(),
            update_type: status.update_type.clone(),
            update_count: status.update_count,
        };
        if let Some(token) = next_token {
            // The submission's response always points at the queue, as Trino's does.
            let phase = if token == 1 || status.state == QueryState::Queued { "queued" } else { "executing" };
            results.next_uri = Some(uris.next_uri(phase, &self.id, &self.slug, token, rows));
        }
        results
    }

    /// How long the query has been idle from the client's side.
    pub fn idle_for(&self) -> Duration {
        self.last_heartbeat.lock().elapsed()
    }
}

impl QueryStatus {
    /// The query's plan as text: the executed plan's while it runs, the text kept after.
    pub fn plan_text(&self) -> Option<String> {
        match &self.plan {
            Some(plan) => Some(render(plan)),
            None => self.released_plan.as_deref().map(str::to_string),
        }
    }
}

/// A plan as `/v1/query/{id}` shows it.
fn render(plan: &Arc<dyn ExecutionPlan>) -> String {
    datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string()
}

impl QueryOwner {
    /// The state as published.
    pub fn status(&self) -> watch::Ref<'_, QueryStatus> {
        self.status.borrow()
    }

    /// Changes the state's details (not its lifecycle: [`Self::transition`], [`Self::fail`]).
    /// Readers see it at once; nobody is woken (figures change with every batch, and what
    /// waiters wait for, the state and the registration, wakes them).
    pub fn update(&self, change: impl FnOnce(&mut QueryStatus)) {
        self.status.send_if_modified(|status| {
            change(status);
            false
        });
    }

    /// Moves to `state` unless the query has already ended.
    pub fn transition(&self, state: QueryState) {
        let mut moved = false;
        self.status.send_if_modified(|status| {
            if status.state.is_done() {
                return false;
            }
            status.state = state;
            if state == QueryState::Running && status.started.is_none() {
                status.started = Some(Instant::now());
                status.started_at = Some(Utc::now());
            }
            if state.is_done() {
                status.ended = Some(Instant::now());
                status.ended_at = Some(Utc::now());
            }
            moved = true;
            true
        });
        if moved {
            if let Some(on_change) = &self.on_change {
                on_change.notify_one();
            }
        }
    }

    /// Ends the query with `error` unless it has already ended (whether it did), and stops
    /// whatever still works for it.
    pub fn fail(&self, error: FlotillaError) -> bool {
        let mut failed = false;
        self.status.send_if_modified(|status| {
            if status.state.is_done() {
                return false;
            }
            status.error = Some(error);
            failed = true;
            true
        });
        if failed {
            self.transition(QueryState::Failed);
            self.cancel.cancel();
        }
        failed
    }

    /// Records how the registration went.
    pub fn registered(&self, registration: Registration) {
        self.status.send_modify(|status| status.registration = registration);
    }
}

/// The commands sent to one query, received by its execution task.
#[derive(Debug)]
pub struct Commands(mpsc::Receiver<Command>);

impl Commands {
    /// The next command (never resolves once every sender is gone).
    pub async fn next(&mut self) -> Command {
        match self.0.recv().await {
            Some(command) => command,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> (Query, QueryOwner, Commands) {
        let (_, pages) = mpsc::channel(1);
        Query::new(NewQuery {
            id: "20261203_000000_00000_abcde".parse().unwrap(),
            slug: "slug".into(),
            sql: "SELECT 1".into(),
            session: ClientSession::default(),
            pages,
            adopted: None,
            created_at: Utc::now(),
            on_change: None,
        })
    }

    /// An ended query lets its executed plan (and the state its operators hold) go, and
    /// still answers with the figures and the text it had.
    #[tokio::test]
    async fn an_ended_query_keeps_its_figures_and_text_but_not_its_plan() {
        let context = datafusion::prelude::SessionContext::new();
        let frame = context
            .sql("SELECT x FROM (VALUES (1), (2), (3)) a(x) JOIN (VALUES (2), (3), (4), (5)) b(y) ON x = y")
            .await
            .unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        let rows = datafusion::physical_plan::collect(Arc::clone(&plan), context.task_ctx()).await.unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        let text = render(&plan);
        assert!(text.contains("HashJoinExec"), "{text}");

        let (query, owner, _commands) = query();
        let held = Arc::downgrade(&plan);
        owner.update(|status| {
            status.plan = Some(plan);
            status.scans = Some(Arc::new(ScanCounters::default()));
        });
        owner.transition(QueryState::Running);
        // A running query keeps its plan.
        query.release_plan(&owner);
        assert!(held.upgrade().is_some());
        owner.transition(QueryState::Finished);
        let before = query.stats();
        assert!(before.total_splits > 0, "the leaves' partitions, read from the plan");

        query.release_plan(&owner);
        assert!(held.upgrade().is_none(), "the ended query still holds its plan");
        let status = query.status();
        assert_eq!(status.plan_text().as_deref(), Some(text.as_str()));
        drop(status);
        let after = query.stats();
        assert_eq!(
            (after.processed_rows, after.cpu_time_millis, after.total_splits),
            (before.processed_rows, before.cpu_time_millis, before.total_splits)
        );
    }
}
