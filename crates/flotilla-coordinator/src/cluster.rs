//! The coordinator as a member of the cluster: what it reports about its queries in its
//! heartbeats ([`QueryReporter`]), and the `system.runtime` tables served from the
//! resource managers' view ([`ClusterRuntime`]).

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_node::relay::locate_owner;
use flotilla_node::{ClusterViewClient, HeartbeatSource, LocalNode, NodeAccess};
use flotilla_node::{Forwarder, Relayed};
use flotilla_proto::cluster::{
    truncate_query_text, CoordinatorReport, NodeRole, QueryIdentity, QueryProgress, QuerySummary, QueryUpdate,
    ResourceGroupUsage,
};
use flotilla_proto::{ErrorCode, FlotillaError, QueryId};
use flotilla_sql::catalog::{NodeRow, QueryRow, RuntimeSource, WorkerPlace};
use flotilla_worker::WorkerLoadSource;
use parking_lot::Mutex;

use crate::manager::{KillOutcome, QueryRegistry};
use crate::query::{Query, QueryState};
use crate::resource_groups::Admission;

/// The most query data one heartbeat carries to one resource manager (whose body limit is
/// 2 MiB): a coordinator with more to report (a burst of new queries after a resource
/// manager restarted) sends it over the next heartbeats, oldest first, so no heartbeat is
/// ever refused for its size.
pub const REPORT_BUDGET_BYTES: usize = 256 << 10;

/// One change a report carries.
enum ReportItem {
    New(QuerySummary),
    Update(QueryUpdate),
}

/// How many of `items` ((version, bytes), oldest first) fit in `budget` (at least one, so
/// a report always moves forward), and the version a cut report stands for (everything up
/// to it is included) when not all fit.
fn within_budget(items: &[(u64, usize)], budget: usize) -> (usize, Option<u64>) {
    let mut used = 0usize;
    for (index, (version, size)) in items.iter().enumerate() {
        if index > 0 && used + size > budget {
            return (index, Some(version - 1));
        }
        used += size;
    }
    (items.len(), None)
}

#[derive(Debug)]
struct Tracked {
    created_version: u64,
    version: u64,
    progress: QueryProgress,
}

#[derive(Debug, Default)]
struct ReporterState {
    version: u64,
    tracked: HashMap<QueryId, Tracked>,
}

/// Builds the query part of the coordinator's heartbeats: each query's identity once, then
/// its progress whenever it changed, as a delta against what a resource manager has
/// acknowledged.
#[derive(Debug)]
pub struct QueryReporter {
    local: Arc<LocalNode>,
    registry: Arc<QueryRegistry>,
    /// Per resource group counts.
    admission: Arc<Admission>,
    /// This node's load as a worker (with `node-scheduler.include-coordinator`).
    worker: Option<Arc<WorkerLoadSource>>,
    state: Mutex<ReporterState>,
}

fn progress_of(query: &Query) -> QueryProgress {
    let stats = query.stats();
    let status = query.status();
    QueryProgress {
        state: status.state.as_str().to_string(),
        start_time_ms: status.started_at.map(|t| t.timestamp_millis()),
        end_time_ms: status.ended_at.map(|t| t.timestamp_millis()),
        cpu_time_ms: stats.cpu_time_millis,
        peak_memory_bytes: stats.peak_memory_bytes,
        progress_percentage: stats.progress_percentage,
        error_code: status.error.as_ref().map(|e| e.code.name().to_string()),
    }
}

/// The query's resource group (`global` until it has been selected).
fn status_group(query: &Query) -> String {
    query.status().resource_group.clone().unwrap_or_else(|| crate::resource_groups::DEFAULT_GROUP.to_string())
}

fn identity_of(query: &Query) -> QueryIdentity {
    QueryIdentity {
        query_id: query.id.to_string(),
        user: query.session.user.clone(),
        source: query.session.source.clone(),
        resource_group: status_group(query),
        warehouse: query.warehouse(),
        query: truncate_query_text(&query.sql),
        create_time_ms: query.created_at.timestamp_millis(),
    }
}

impl QueryReporter {
    pub fn new(
        local: Arc<LocalNode>,
        registry: Arc<QueryRegistry>,
        admission: Arc<Admission>,
        worker: Option<Arc<WorkerLoadSource>>,
    ) -> Self {
        Self { local, registry, admission, worker, state: Mutex::new(ReporterState::default()) }
    }

    /// Brings the tracked progress up to date, giving changed queries a new version.
    fn refresh(&self, state: &mut ReporterState) -> Vec<Arc<Query>> {
        let queries = self.registry.all();
        let mut live = std::collections::HashSet::with_capacity(queries.len());
        for query in &queries {
            live.insert(query.id.clone());
            let progress = progress_of(query);
            match state.tracked.get_mut(&query.id) {
                Some(tracked) if tracked.progress == progress => {}
                Some(tracked) => {
                    state.version += 1;
                    tracked.version = state.version;
                    tracked.progress = progress;
                }
                None => {
                    state.version += 1;
                    let version = state.version;
                    state.tracked.insert(query.id.clone(), Tracked { created_version: version, version, progress });
                }
            }
        }
        // Expired here; the resource managers keep their own bounded history.
        state.tracked.retain(|id, _| live.contains(id));
        queries
    }
}

impl HeartbeatSource for QueryReporter {
    fn worker_load(&self) -> Option<flotilla_proto::cluster::WorkerLoad> {
        self.worker.as_ref().and_then(|worker| worker.worker_load())
    }

    /// Fails this coordinator's queries the low-memory killer chose, with
    /// `CLUSTER_OUT_OF_MEMORY` (the killer's answer repeats them: a query already ended is
    /// left as it is).
    fn memory_kills(&self, kills: &[flotilla_proto::cluster::MemoryKill]) {
        for kill in kills {
            let Ok(id) = kill.query_id.parse::<QueryId>() else { continue };
            if self.registry.fail(&id, kill.error()) == KillOutcome::Killed {
                tracing::warn!(query = %id, "killed by the cluster's low-memory killer");
            }
        }
        if let Some(worker) = &self.worker {
            worker.memory_kills(kills);
        }
    }

    fn coordinator_reports(&self, base_versions: &[u64]) -> Option<Vec<CoordinatorReport>> {
        let mut state = self.state.lock();
        let queries = self.refresh(&mut state);
        // Per group: what admission counts where it runs, else the queries' states.
        let resource_groups: Vec<ResourceGroupUsage> =
            if self.admission.enabled() {
                self.admission
                    .usage()
                    .into_iter()
                    .filter(|(_, queued, running)| queued + running > 0)
                    .map(|(resource_group, queued, running)| ResourceGroupUsage { resource_group, queued, running })
                    .collect()
            } else {
                let mut groups: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
                for query in &queries {
                    let counts = groups.entry(status_group(query)).or_default();
                    match query.state() {
                        QueryState::Queued => counts.0 += 1,
                        QueryState::Planning | QueryState::Running => counts.1 += 1,
                        QueryState::Finished | QueryState::Failed => {}
                    }
                }
                // Warehouses with limits are admitted all the same.
                groups
                    .into_iter()
                    .map(|(resource_group, (queued, running))| ResourceGroupUsage { resource_group, queued, running })
                    .chain(self.admission.usage().into_iter().filter(|(_, queued, running)| queued + running > 0).map(
                        |(resource_group, queued, running)| ResourceGroupUsage { resource_group, queued, running },
                    ))
                    .collect()
            };
        let reports = base_versions
            .iter()
            .map(|&base_version| {
                // What this resource manager lacks, oldest change first, so a report cut at
                // the budget leaves a clean version to continue from.
                let mut changes: Vec<(u64, &Arc<Query>, bool)> = queries
                    .iter()
                    .filter_map(|query| {
                        let tracked = state.tracked.get(&query.id)?;
                        (tracked.version > base_version).then_some((
                            tracked.version,
                            query,
                            tracked.created_version > base_version,
                        ))
                    })
                    .collect();
                changes.sort_by_key(|(version, _, _)| *version);
                let mut report = CoordinatorReport {
                    base_version,
                    version: state.version,
                    resource_groups: resource_groups.clone(),
                    ..Default::default()
                };
                let mut items = Vec::with_capacity(changes.len());
                for (version, query, new) in changes {
                    let Some(tracked) = state.tracked.get(&query.id) else { continue };
                    let item = match new {
                        true => ReportItem::New(QuerySummary {
                            identity: identity_of(query),
                            progress: tracked.progress.clone(),
                            coordinator: self.local.node_id.clone(),
                            version,
                            epoch: query.adopted.as_ref().map_or(0, |a| a.epoch),
                        }),
                        false => ReportItem::Update(QueryUpdate {
                            query_id: query.id.to_string(),
                            version,
                            progress: tracked.progress.clone(),
                        }),
                    };
                    let size = match &item {
                        ReportItem::New(summary) => serde_json::to_vec(summary).map_or(0, |b| b.len()),
                        ReportItem::Update(update) => serde_json::to_vec(update).map_or(0, |b| b.len()),
                    };
                    items.push((version, size, item));
                }
                let sizes: Vec<(u64, usize)> = items.iter().map(|(version, size, _)| (*version, *size)).collect();
                let (included, cut_version) = within_budget(&sizes, REPORT_BUDGET_BYTES);
                if let Some(version) = cut_version {
                    // The rest goes in the next heartbeats, from this version on.
                    report.version = version;
                }
                for (_, _, item) in items.into_iter().take(included) {
                    match item {
                        ReportItem::New(summary) => report.new_queries.push(summary),
                        ReportItem::Update(update) => report.updates.push(update),
                    }
                }
                report
            })
            .collect();
        Some(reports)
    }
}

/// Serves `system.runtime.nodes` from the cluster view, and `system.runtime.queries` from
/// this coordinator's queries plus every other coordinator's from the view.
#[derive(Debug)]
pub struct ClusterRuntime {
    pub local: Arc<LocalNode>,
    pub registry: Arc<QueryRegistry>,
    pub view: Arc<ClusterViewClient>,
    /// Sends kills to the coordinators that own the queries.
    pub forwarder: Forwarder,
    /// Who may kill which query.
    pub access: Arc<NodeAccess>,
}

#[async_trait::async_trait]
impl RuntimeSource for ClusterRuntime {
    fn nodes(&self) -> Vec<NodeRow> {
        // Before any resource manager has answered (start-up waits for the first view, so
        // only when none is reachable) the cluster's membership is unknown: no rows, and
        // `/v1/cluster` says why.
        let Some(snapshot) = self.view.snapshot() else {
            return Vec::new();
        };
        snapshot
            .view
            .nodes
            .iter()
            .map(|node| NodeRow {
                node_id: node.node.node_id.clone(),
                http_uri: node.node.http_uri.clone(),
                node_version: node.node.version.clone(),
                coordinator: node.node.has_role(NodeRole::Coordinator),
                state: node.state.trino_name().to_string(),
                memory_pool_bytes: node.worker.as_ref().map(|w| w.memory_pool_bytes),
                memory_reserved_bytes: node.worker.as_ref().map(|w| w.memory_reserved_bytes),
                worker: node.worker.as_ref().map(|w| WorkerPlace {
                    warehouse: node.node.warehouse.clone(),
                    worker_group: node.node.worker_group.clone(),
                    running_tasks: w.running_tasks,
                    process_cpu_load: w.process_cpu_load,
                }),
                live: node.state.is_live(),
            })
            .collect()
    }

    fn warehouses(&self) -> Vec<flotilla_proto::warehouses::WarehouseDefinition> {
        self.view.snapshot().map(|snapshot| snapshot.view.warehouses.clone()).unwrap_or_default()
    }

    /// This coordinator's queries as they are now, plus every other coordinator's from the
    /// resource managers' view (as recent as their last heartbeat).
    fn queries(&self) -> Vec<QueryRow> {
        let mut rows = self.local_queries();
        let local: std::collections::HashSet<String> = rows.iter().map(|r| r.query_id.clone()).collect();
        if let Some(snapshot) = self.view.snapshot() {
            let remote = snapshot.view.queries.iter().filter(|q| !local.contains(&q.identity.query_id)).map(remote_row);
            rows.extend(remote);
        }
        rows
    }

    /// Kills here when this coordinator owns the query, else asks its owner (found by the
    /// id's suffix in the view) with Trino's `PUT /v1/query/{id}/killed`.
    /// The owner decides whether `user` may (the query's user or an admin), as for
    /// `PUT /v1/query/{id}/killed`, which carries `user` in `X-Trino-User`.
    async fn kill_query(&self, user: &str, query_id: &str, message: Option<&str>) -> Result<(), FlotillaError> {
        let id: QueryId = query_id.parse().map_err(|e| {
            FlotillaError::new(ErrorCode::InvalidProcedureArgument, format!("Invalid query id '{query_id}': {e}"))
        })?;
        let owner = id.coordinator();
        let denied = |query_user: &str| {
            FlotillaError::new(
                ErrorCode::PermissionDenied,
                format!("Access Denied: User {user} cannot kill query {query_id} owned by {query_user}"),
            )
        };
        let outcome = if self.local.coordinator_id.as_deref() == Some(owner.as_str()) {
            match self.registry.get(&id) {
                Some(query) if !self.access.may_act_on_query(Some(user), &query.session.user) => {
                    return Err(denied(&query.session.user))
                }
                _ => self.registry.kill(&id, message),
            }
        } else {
            let base = locate_owner(&self.view, &owner).await.map_err(|reason| {
                FlotillaError::new(ErrorCode::NotFound, format!("Target query not found: {query_id} ({reason})"))
            })?;
            let path = format!("/v1/query/{id}/killed");
            let body = bytes::Bytes::from(message.unwrap_or_default().to_string());
            let mut request = Relayed::internal(http::Method::PUT, path, body, &self.local.node_id);
            if let Ok(value) = http::HeaderValue::from_str(user) {
                request.headers.insert("x-trino-user", value);
            }
            // The owner authenticates clients too: this coordinator vouches for the user.
            if let Ok(value) = http::HeaderValue::from_str(&self.access.vouch(user)) {
                request.headers.insert(flotilla_proto::PRINCIPAL_HEADER, value);
            }
            let response = self.forwarder.send(&base, &request).await.map_err(|error| {
                FlotillaError::new(
                    ErrorCode::RemoteHostGone,
                    format!("Could not reach coordinator {owner} at {base} to kill {query_id}: {error:?}"),
                )
            })?;
            match response.status() {
                http::StatusCode::ACCEPTED => KillOutcome::Killed,
                http::StatusCode::CONFLICT => KillOutcome::NotRunning,
                http::StatusCode::GONE | http::StatusCode::NOT_FOUND => KillOutcome::NotFound,
                http::StatusCode::FORBIDDEN => return Err(denied("another user")),
                other => {
                    return Err(FlotillaError::internal(format!(
                        "coordinator {owner} answered {other} when asked to kill {query_id}"
                    )))
                }
            }
        };
        match outcome {
            KillOutcome::Killed => Ok(()),
            KillOutcome::NotRunning => {
                Err(FlotillaError::new(ErrorCode::NotSupported, format!("Target query is not running: {query_id}")))
            }
            KillOutcome::NotFound => {
                Err(FlotillaError::new(ErrorCode::NotFound, format!("Target query not found: {query_id}")))
            }
        }
    }
}

fn millis_to_time(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

/// A query of another coordinator, from the view.
fn remote_row(summary: &QuerySummary) -> QueryRow {
    let error = summary.progress.error_code.as_deref();
    QueryRow {
        query_id: summary.identity.query_id.clone(),
        state: summary.progress.state.clone(),
        user: summary.identity.user.clone(),
        source: summary.identity.source.clone(),
        query: summary.identity.query.clone(),
        created: millis_to_time(summary.identity.create_time_ms).unwrap_or_default(),
        started: summary.progress.start_time_ms.and_then(millis_to_time),
        end: summary.progress.end_time_ms.and_then(millis_to_time),
        error_type: error
            .and_then(|name| flotilla_proto::ErrorCode::ALL.iter().find(|c| c.name() == name))
            .map(|code| code.error_type().as_str().to_string()),
        error_code: error.map(str::to_string),
        warehouse: summary.identity.warehouse.clone(),
    }
}

impl ClusterRuntime {
    fn local_queries(&self) -> Vec<QueryRow> {
        self.registry
            .all()
            .into_iter()
            .map(|q| {
                let status = q.status();
                QueryRow {
                    query_id: q.id.to_string(),
                    state: status.state.as_str().to_string(),
                    user: q.session.user.clone(),
                    source: q.session.source.clone(),
                    query: q.sql.clone(),
                    created: q.created_at,
                    started: status.started_at,
                    end: status.ended_at,
                    error_type: status.error.as_ref().map(|e| e.code.error_type().as_str().to_string()),
                    error_code: status.error.as_ref().map(|e| e.code.name().to_string()),
                    warehouse: q.warehouse(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_cut_at_the_budget_on_a_version_boundary() {
        assert_eq!(within_budget(&[], 100), (0, None));
        assert_eq!(within_budget(&[(3, 40), (5, 40), (9, 10)], 100), (3, None));
        assert_eq!(within_budget(&[(3, 40), (5, 40), (9, 30)], 100), (2, Some(8)));
        // One item larger than the budget still goes, alone.
        assert_eq!(within_budget(&[(7, 500), (8, 1)], 100), (1, Some(7)));
    }
}
