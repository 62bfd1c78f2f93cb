//! The queries this coordinator owns: creation (id, slug, execution task), lookup, cancel,
//! and the background loop that abandons queries whose client went away and expires old
//! ones, so the registry stays bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::{ErrorCode, FlotillaError, QueryId, QueryIdGenerator};
use flotilla_protocol::ClientSession;
use flotilla_sql::Engine;
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::adoption::Registrar;
use crate::config::CoordinatorConfig;
use crate::execution::{Execution, Task};
use crate::query::{Adopted, NewQuery, Query, QueryState, Registration, PAGE_BUFFER};
use crate::resource_groups::Admission;
use crate::scheduler::Scheduler;
use flotilla_proto::adoption::QueryRegistration;

/// A finished query whose client has not polled for this long is not waited for by a
/// draining coordinator (clients poll pages back to back).
const DRAIN_CLIENT_IDLE: Duration = Duration::from_secs(5);

/// How long after a query ended its registration is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(5);

/// What a kill found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillOutcome {
    Killed,
    /// The query had already ended.
    NotRunning,
    NotFound,
}

/// Queries by id; shared with the `system.runtime` tables.
#[derive(Debug, Default)]
pub struct QueryRegistry {
    queries: Mutex<HashMap<QueryId, Arc<Query>>>,
    /// Woken whenever a query changes state, so the heartbeat reporting it goes out soon.
    changed: std::sync::OnceLock<Arc<Notify>>,
}

impl QueryRegistry {
    /// Wakes `notify` on every state change of a query created from now on.
    pub fn notify_changes(&self, notify: Arc<Notify>) {
        let _ = self.changed.set(notify);
    }

    pub fn get(&self, id: &QueryId) -> Option<Arc<Query>> {
        self.queries.lock().get(id).cloned()
    }

    /// Kills a query of this coordinator with `ADMINISTRATIVELY_KILLED`, as Trino's
    /// `kill_query` and `PUT /v1/query/{id}/killed` do.
    pub fn kill(&self, id: &QueryId, message: Option<&str>) -> KillOutcome {
        let text = match message.filter(|m| !m.is_empty()) {
            Some(message) => format!("Query killed. Message: {message}"),
            None => "Query killed. No message provided.".to_string(),
        };
        self.fail(id, FlotillaError::new(ErrorCode::AdministrativelyKilled, text))
    }

    /// Fails a query of this coordinator with `error` (a kill).
    pub fn fail(&self, id: &QueryId, error: FlotillaError) -> KillOutcome {
        let Some(query) = self.get(id) else { return KillOutcome::NotFound };
        match query.fail(error) {
            true => KillOutcome::Killed,
            false => KillOutcome::NotRunning,
        }
    }

    pub fn all(&self) -> Vec<Arc<Query>> {
        let mut queries: Vec<Arc<Query>> = self.queries.lock().values().cloned().collect();
        queries.sort_by_key(|q| q.created);
        queries
    }

    fn insert(&self, query: Arc<Query>) {
        self.queries.lock().insert(query.id.clone(), query);
    }

    fn remove(&self, ids: &[QueryId]) {
        let mut queries = self.queries.lock();
        for id in ids {
            queries.remove(id);
        }
    }
}

/// Creates and tracks this coordinator's queries.
#[derive(Debug)]
pub struct QueryManager {
    execution: Arc<Execution>,
    ids: QueryIdGenerator,
    registry: Arc<QueryRegistry>,
    config: CoordinatorConfig,
}

fn new_slug() -> String {
    let mut rng = rand::rng();
    format!("y{:016x}", rng.random::<u64>())
}

impl QueryManager {
    pub fn new(
        engine: Engine,
        scheduler: Arc<Scheduler>,
        admission: Arc<Admission>,
        registrar: Arc<Registrar>,
        ids: QueryIdGenerator,
        registry: Arc<QueryRegistry>,
        config: CoordinatorConfig,
    ) -> Self {
        let execution = Arc::new(Execution {
            engine,
            scheduler,
            admission,
            registrar,
            max_memory: config.max_memory,
            retry: config.retry.clone(),
            metrics: Default::default(),
            events: Default::default(),
        });
        Self { execution, ids, registry, config }
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.execution.admission
    }

    /// Sends every query that ends to `listener` (set once, at start).
    pub fn set_event_listener(
        &self,
        listener: Arc<crate::events::EventListener>,
        local: Arc<flotilla_node::LocalNode>,
    ) {
        let _ = self.execution.events.set((listener, local));
    }

    /// Registers the coordinator's query metrics in its node's registry (once): ended
    /// queries and their times, and at each scrape the queries queued and running per
    /// resource group and warehouse, and the age of the cluster view.
    pub fn register_metrics(
        self: &Arc<Self>,
        metrics: &flotilla_node::NodeMetrics,
        view: Arc<flotilla_node::ClusterViewClient>,
    ) {
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        let queries = &self.execution.metrics;
        metrics.register(
            "queries_completed",
            "Queries that ended, by state, error, resource group and warehouse",
            queries.completed.clone(),
        );
        metrics.register(
            "query_seconds",
            "Queries' time from submission to their end, by state",
            queries.seconds.clone(),
        );
        metrics.register(
            "query_spilled_bytes",
            "Bytes its queries' operators spilled to disk, on the workers and here",
            queries.spilled_bytes.clone(),
        );
        let active = Family::<Vec<(String, String)>, Gauge>::default();
        let view_age = prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        metrics.register(
            "queries",
            "Unfinished queries of this coordinator, by state, resource group and warehouse",
            active.clone(),
        );
        metrics.register(
            "cluster_view_age_seconds",
            "Age of the cluster view this coordinator schedules by",
            view_age.clone(),
        );
        let blocked: Gauge = Gauge::default();
        metrics.register(
            "queries_blocked_on_memory",
            "Running queries of this coordinator with a reservation waiting on a worker's full memory pool",
            blocked.clone(),
        );
        let manager = self.clone();
        metrics.on_scrape(move || {
            active.clear();
            for query in manager.registry.all() {
                let state = query.state();
                if state.is_done() {
                    continue;
                }
                let group = query.status().resource_group.clone().unwrap_or_default();
                let labels = vec![
                    ("state".to_string(), state.as_str().to_string()),
                    ("resource_group".to_string(), group),
                    ("warehouse".to_string(), query.warehouse()),
                ];
                active.get_or_create(&labels).inc();
            }
            let snapshot = view.snapshot();
            view_age.set(snapshot.as_ref().map_or(f64::NAN, |s| s.age().as_secs_f64()));
            // Blocked as the workers' last heartbeats say.
            let waiting: std::collections::HashSet<&str> = snapshot
                .as_ref()
                .into_iter()
                .flat_map(|s| s.view.live_nodes())
                .filter_map(|n| n.worker.as_ref())
                .flat_map(|w| w.query_memory.iter())
                .filter(|q| q.blocked > 0)
                .map(|q| q.query_id.as_str())
                .collect();
            let count = manager
                .registry
                .all()
                .iter()
                .filter(|q| !q.state().is_done() && waiting.contains(q.id.to_string().as_str()))
                .count();
            blocked.set(count as i64);
        });
    }

    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.execution.scheduler
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    pub fn registry(&self) -> &Arc<QueryRegistry> {
        &self.registry
    }

    /// Registers a query and starts running it; too long a text fails the query (as Trino
    /// does) rather than the request. `session_headers`: the client's `X-Trino-*` headers,
    /// kept so another coordinator can run the query again if this one dies.
    pub fn create(
        &self,
        mut session: ClientSession,
        session_headers: Vec<(String, String)>,
        sql: String,
    ) -> Arc<Query> {
        self.execution.scheduler.route(&mut session, &sql);
        let (sender, receiver) = mpsc::channel(PAGE_BUFFER);
        let new = NewQuery {
            id: self.ids.next(),
            slug: new_slug(),
            sql,
            session,
            pages: receiver,
            adopted: None,
            created_at: chrono::Utc::now(),
            on_change: self.registry.changed.get().cloned(),
        };
        let (query, owner, commands) = Query::new(new);
        let query = Arc::new(query);
        self.registry.insert(query.clone());
        let length = query.sql.chars().count();
        if length > self.config.max_query_length {
            owner.registered(Registration::NotKept);
            owner.fail(FlotillaError::new(
                ErrorCode::QueryTextTooLarge,
                format!("Query text length ({length}) exceeds the maximum length ({})", self.config.max_query_length),
            ));
            return query;
        }
        let registration = self.execution.registrar.registration(
            &query.id,
            &query.slug,
            &query.sql,
            session_headers,
            query.created_at.timestamp_millis(),
        );
        self.spawn(Task { query: query.clone(), owner, commands, pages: sender, registration });
        query
    }

    /// Takes over a query whose owner died (the admission leader granted it to this
    /// coordinator as `registration`): runs it again under its id, answering the client's
    /// next poll (`token`), past the `rows` it already has.
    pub fn adopt(
        &self,
        registration: QueryRegistration,
        from: &str,
        token: u64,
        rows: u64,
    ) -> Result<Arc<Query>, String> {
        let id: QueryId = registration.query_id.parse().map_err(|e| format!("{e}"))?;
        let mut session = ClientSession::from_headers(
            registration.session_headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())),
        )
        .map_err(|e| e.to_string())?;
        self.execution.scheduler.route(&mut session, &registration.sql);
        // Two polls racing to adopt the same query here: the second finds the first's.
        let mut queries = self.registry.queries.lock();
        if let Some(existing) = queries.get(&id) {
            return Ok(existing.clone());
        }
        let (sender, receiver) = mpsc::channel(PAGE_BUFFER);
        let new = NewQuery {
            id: id.clone(),
            slug: registration.slug.clone(),
            sql: registration.sql.clone(),
            session,
            pages: receiver,
            adopted: Some(Adopted { from: from.to_string(), rows, epoch: registration.epoch }),
            // Its age and its place in the queue are those of the original submission.
            created_at: chrono::DateTime::from_timestamp_millis(registration.create_time_ms)
                .unwrap_or_else(chrono::Utc::now),
            on_change: self.registry.changed.get().cloned(),
        };
        let (mut query, owner, commands) = Query::new(new);
        query.cursor.get_mut().last_token = token.saturating_sub(1);
        let query = Arc::new(query);
        queries.insert(id, query.clone());
        drop(queries);
        tracing::info!(query_id = %query.id, %from, token, rows, "adopted a query whose coordinator is gone");
        self.spawn(Task { query: query.clone(), owner, commands, pages: sender, registration });
        Ok(query)
    }

    /// Starts a query's execution task.
    fn spawn(&self, task: Task) {
        tokio::spawn(self.execution.clone().run(task));
    }

    pub fn get(&self, id: &QueryId) -> Option<Arc<Query>> {
        self.registry.get(id)
    }

    /// Cancels a query; false when it does not exist.
    pub fn cancel(&self, id: &QueryId, code: ErrorCode, message: &str) -> bool {
        match self.registry.get(id) {
            Some(query) => {
                query.fail(FlotillaError::new(code, message));
                true
            }
            None => false,
        }
    }

    /// One pass of housekeeping: abandon queries nobody polls, expire finished ones.
    pub fn sweep(&self) {
        let queries = self.registry.all();
        for query in &queries {
            if !query.state().is_done() && query.idle_for() > self.config.client_timeout {
                query.fail(FlotillaError::new(
                    ErrorCode::AbandonedQuery,
                    format!("Query {} was abandoned by the client, as it may have exited or stopped checking for query results", query.id),
                ));
            }
        }
        // The client has the final answer: no one will adopt the query any more. Forgotten
        // a little later, once the cluster view lists the query under its owner (where a
        // coordinator finds an adopted query's owner when it has no registration).
        for query in &queries {
            let (done, kept) = {
                let status = query.status();
                let ended_a_while_ago = status.ended.is_some_and(|e| e.elapsed() > FORGET_AFTER);
                (status.state.is_done() && ended_a_while_ago, status.registration == Registration::Kept)
            };
            let over = done && (query.delivered() || query.idle_for() > self.config.client_timeout);
            if over && kept && query.forget_registration() {
                self.execution.registrar.forget_later(&query.id);
            }
        }
        let mut expirable: Vec<&Arc<Query>> = queries
            .iter()
            .filter(|q| q.state().is_done() && (q.delivered() || q.idle_for() > self.config.client_timeout))
            .collect();
        let mut expired: Vec<QueryId> = Vec::new();
        // Oldest first: drop what exceeds the history size, then what outlived its age.
        let excess = expirable.len().saturating_sub(self.config.max_history);
        expired.extend(expirable.drain(..excess).map(|q| q.id.clone()));
        expired.extend(
            expirable
                .iter()
                .filter(|q| q.status().ended.is_some_and(|e| e.elapsed() > self.config.min_expire_age))
                .map(|q| q.id.clone()),
        );
        self.registry.remove(&expired);
    }

    /// Runs [`Self::sweep`] every second until `shutdown`.
    pub async fn sweep_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => self.sweep(),
            }
        }
    }

    /// Fails every running query (on shutdown).
    pub fn fail_all(&self, message: &str) {
        for query in self.registry.all() {
            if !query.state().is_done() {
                query.fail(FlotillaError::new(ErrorCode::ServerShuttingDown, message));
            }
        }
    }

    /// Queries a draining coordinator still waits for: those not finished, and finished
    /// ones whose client is still reading pages (it polled in the last few seconds; a
    /// client that went away is not waited for).
    pub fn in_flight(&self) -> usize {
        self.registry
            .all()
            .iter()
            .filter(|q| !q.state().is_done() || (!q.delivered() && q.idle_for() < DRAIN_CLIENT_IDLE))
            .count()
    }

    pub fn running_count(&self) -> usize {
        self.registry.all().iter().filter(|q| q.state() == QueryState::Running).count()
    }
}
