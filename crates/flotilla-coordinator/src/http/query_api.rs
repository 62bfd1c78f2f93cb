//! `/v1/query`: the queries of the cluster (this coordinator's as they are, the others' from
//! the resource managers' view), one query's details, and kill.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use flotilla_proto::admission::GroupState;
use flotilla_proto::cluster::{ClusterView, QuerySummary};
use flotilla_proto::{ErrorCode, QueryId};
use flotilla_protocol::QueryError;
use serde_json::{json, Value};

use super::HttpError;
use crate::manager::KillOutcome;
use crate::query::Query;
use crate::ui::UiUser;
use crate::Coordinator;

fn summary(coordinator: &Coordinator, query: &Query, self_uri: &str) -> Value {
    let stats = query.stats();
    let status = query.status();
    // The scheduler knows the placements while the query runs; they move to the query when
    // it ends (copied before the scheduler forgets them, so one of the two has them).
    let placements = match status.tasks.is_empty() {
        true => coordinator.manager.scheduler().placements(&query.id.to_string()),
        false => status.tasks.clone(),
    };
    let tasks: Vec<Value> =
        placements.iter().map(|t| json!({"stage": t.stage, "task": t.task, "nodeId": t.node_id})).collect();
    let mut stages = Vec::new();
    if let Some(tree) = query.plan_figures(&status).1 {
        flatten_stages(&tree, status.state.as_str(), &mut stages);
    }
    json!({
        "queryId": query.id.to_string(),
        "state": status.state.as_str(),
        "query": query.sql,
        "self": format!("{self_uri}/v1/query/{}", query.id),
        "coordinator": coordinator.local.node_id,
        "warehouse": query.warehouse(),
        "plan": status.plan_text(),
        "resourceGroupId": status.resource_group.as_ref().map(|g| g.split('.').collect::<Vec<_>>()),
        "session": {
            "user": query.session.user,
            "source": query.session.source,
            "catalog": query.session.catalog,
            "schema": query.session.schema,
            "timeZone": query.session.time_zone,
            "clientTags": query.session.client_tags,
            "systemProperties": query.session.properties,
        },
        "queryStats": {
            "createTime": query.created_at.to_rfc3339(),
            "executionStartTime": status.started_at.map(|t| t.to_rfc3339()),
            "endTime": status.ended_at.map(|t| t.to_rfc3339()),
            "queuedTimeMillis": stats.queued_time_millis,
            "elapsedTimeMillis": stats.elapsed_time_millis,
            "cpuTimeMillis": stats.cpu_time_millis,
            "totalSplits": stats.total_splits,
            "completedSplits": stats.completed_splits,
            "processedRows": stats.processed_rows,
            "outputRows": status.output_rows,
            "peakMemoryBytes": stats.peak_memory_bytes,
            "spilledBytes": stats.spilled_bytes,
        },
        "tasks": tasks,
        "stages": stages,
        "errorType": status.error.as_ref().map(|e| e.code.error_type().as_str()),
        "errorCode": status.error.as_ref().map(|e| json!({"code": e.code.code(), "name": e.code.name(), "type": e.code.error_type().as_str()})),
        "failureInfo": status.error.as_ref().map(|e| QueryError::from(e).failure_info),
        // Set when this coordinator adopted the query after its owner died.
        "adoptedFrom": query.adopted.as_ref().map(|a| json!({"from": a.from, "rowsSkipped": a.rows})),
        // Attempts run again after losing a worker (retry-policy=QUERY), oldest first.
        "failedAttempts": status.failed_attempts.iter().map(|attempt| json!({
            "errorName": attempt.error.code.name(),
            "message": attempt.error.message,
            "time": attempt.at.to_rfc3339(),
        })).collect::<Vec<_>>(),
    })
}

/// The stages of a distributed query, each with its tasks' figures (complete once the
/// workers' metrics have arrived at the end of the query). Stages carry the query's state;
/// tasks have no state of their own here (the workers do not report one while they run).
fn flatten_stages(stage: &flotilla_sql::StageProgress, state: &str, out: &mut Vec<Value>) {
    let tasks: Vec<Value> = (0..stage.tasks.max(stage.task_figures.len()))
        .map(|task| {
            let figures = stage.task_figures.get(&task).copied().unwrap_or_default();
            json!({
                "taskId": task,
                "processedRows": figures.processed_rows,
                "cpuTimeMillis": figures.cpu_nanos / 1_000_000,
            })
        })
        .collect();
    out.push(json!({
        "stageId": stage.stage,
        "state": state,
        "tasks": tasks,
        "totalSplits": stage.progress.total_splits,
        "processedRows": stage.progress.processed_rows,
        "cpuTimeMillis": stage.progress.cpu_nanos / 1_000_000,
    }));
    for child in &stage.children {
        flatten_stages(child, state, out);
    }
}

fn self_uri(coordinator: &Coordinator, request_headers: &HeaderMap) -> String {
    coordinator
        .client_uris(request_headers)
        .map(|u| u.base().to_string())
        .unwrap_or_else(|_| coordinator.local.http_uri.clone())
}

/// Whether the caller (`X-Trino-User`) may kill or cancel `query`: its own user, or as the
/// access control rules allow (an admin in `access-control.admin-users` without rules);
/// 403 with Trino's words otherwise.
fn check_may_act(coordinator: &Coordinator, request_headers: &HeaderMap, query: &Query) -> Result<(), HttpError> {
    let user = flotilla_node::request_user(request_headers);
    if coordinator.access.may_act_on_query(user, &query.session.user) {
        return Ok(());
    }
    Err(HttpError::new(
        StatusCode::FORBIDDEN,
        format!(
            "Access Denied: User {} cannot kill query {} owned by {}",
            user.unwrap_or("(anonymous)"),
            query.id,
            query.session.user
        ),
    ))
}

fn find(coordinator: &Coordinator, query_id: &str) -> Result<Arc<Query>, HttpError> {
    let id: QueryId = query_id.parse().map_err(|_| HttpError::not_found(format!("Query not found: {query_id}")))?;
    coordinator.manager.get(&id).ok_or_else(|| HttpError::not_found(format!("Query not found: {query_id}")))
}

/// The user asking: the web UI's logged-in user, else the request's (authenticated) user.
fn viewer<'a>(
    coordinator: &Coordinator,
    ui_user: &'a Option<Extension<UiUser>>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    match ui_user {
        Some(Extension(UiUser(user))) => Some(user.as_str()),
        None => coordinator.access.user(headers),
    }
}

/// `GET /v1/query` (and the UI's list): the queries the caller may see (with access control
/// rules: their own and those the `queries` rules let them view).
pub async fn list(
    State(coordinator): State<Arc<Coordinator>>,
    UrlQuery(parameters): UrlQuery<HashMap<String, String>>,
    ui_user: Option<Extension<UiUser>>,
    request_headers: HeaderMap,
) -> Json<Vec<Value>> {
    let base = self_uri(&coordinator, &request_headers);
    let wanted = parameters.get("state").map(|s| s.to_ascii_uppercase());
    let user = viewer(&coordinator, &ui_user, &request_headers);
    let visible = |owner: &str| coordinator.access.may_view_query(user, owner);
    let mut listed: Vec<Value> = coordinator
        .manager
        .registry()
        .all()
        .iter()
        .filter(|q| wanted.as_deref().is_none_or(|s| q.state().as_str() == s))
        .filter(|q| visible(&q.session.user))
        .map(|q| summary(&coordinator, q, &base))
        .collect();
    // The other coordinators' queries, from the resource managers' view.
    if let Some(snapshot) = coordinator.view.snapshot() {
        let own: HashSet<&str> = listed.iter().filter_map(|q| q["queryId"].as_str()).collect();
        let remote: Vec<Value> = snapshot
            .view
            .queries
            .iter()
            .filter(|q| !own.contains(q.identity.query_id.as_str()))
            .filter(|q| wanted.as_deref().is_none_or(|s| q.progress.state == s))
            .filter(|q| visible(&q.identity.user))
            .map(|q| remote_summary(q, &snapshot.view))
            .collect();
        listed.extend(remote);
    }
    Json(listed)
}

/// Another coordinator's query as the view has it (as of its owner's last heartbeat).
fn remote_summary(query: &QuerySummary, view: &ClusterView) -> Value {
    let owner = view.nodes.iter().find(|n| n.node.node_id == query.coordinator).map(|n| n.node.http_uri.as_str());
    let time = |ms: Option<i64>| ms.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339());
    json!({
        "queryId": query.identity.query_id,
        "state": query.progress.state,
        "query": query.identity.query,
        "self": owner.map(|uri| format!("{uri}/v1/query/{}", query.identity.query_id)),
        "coordinator": query.coordinator,
        "warehouse": query.identity.warehouse,
        "session": {"user": query.identity.user, "source": query.identity.source},
        "resourceGroupId": query.identity.resource_group.split('.').collect::<Vec<_>>(),
        "queryStats": {
            "createTime": time(Some(query.identity.create_time_ms)),
            "executionStartTime": time(query.progress.start_time_ms),
            "endTime": time(query.progress.end_time_ms),
            "cpuTimeMillis": query.progress.cpu_time_ms,
            "peakMemoryBytes": query.progress.peak_memory_bytes,
            "progressPercentage": query.progress.progress_percentage,
        },
        "errorCode": query.progress.error_code.as_ref().map(|name| json!({"name": name})),
    })
}

pub async fn info(
    State(coordinator): State<Arc<Coordinator>>,
    Path(query_id): Path<String>,
    ui_user: Option<Extension<UiUser>>,
    request_headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let query = find(&coordinator, &query_id)?;
    if !coordinator.access.may_view_query(viewer(&coordinator, &ui_user, &request_headers), &query.session.user) {
        return Err(HttpError::new(StatusCode::FORBIDDEN, "Access Denied: Cannot view query"));
    }
    Ok(Json(summary(&coordinator, &query, &self_uri(&coordinator, &request_headers))))
}

pub async fn exists(
    State(coordinator): State<Arc<Coordinator>>,
    Path(query_id): Path<String>,
) -> Result<StatusCode, HttpError> {
    find(&coordinator, &query_id).map(|_| StatusCode::OK)
}

/// `DELETE /v1/query/{id}`: cancels the query (`USER_CANCELED`), for its user or an admin.
pub async fn cancel(
    State(coordinator): State<Arc<Coordinator>>,
    Path(query_id): Path<String>,
    request_headers: HeaderMap,
) -> Result<StatusCode, HttpError> {
    let query = find(&coordinator, &query_id)?;
    check_may_act(&coordinator, &request_headers, &query)?;
    coordinator.manager.cancel(&query.id, ErrorCode::UserCanceled, "Query was canceled");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/query/{id}/killed` with the message as the body: fails the query with
/// `ADMINISTRATIVELY_KILLED`, for its user or an admin. As Trino: 202 killed, 403 not
/// allowed, 409 already ended, 410 unknown.
pub async fn kill(
    State(coordinator): State<Arc<Coordinator>>,
    Path(query_id): Path<String>,
    request_headers: HeaderMap,
    message: String,
) -> Result<StatusCode, HttpError> {
    let Some(query) = query_id.parse::<QueryId>().ok().and_then(|id| coordinator.manager.get(&id)) else {
        return Ok(StatusCode::GONE);
    };
    check_may_act(&coordinator, &request_headers, &query)?;
    let message = message.trim();
    Ok(match coordinator.manager.registry().kill(&query.id, (!message.is_empty()).then_some(message)) {
        KillOutcome::Killed => StatusCode::ACCEPTED,
        KillOutcome::NotRunning => StatusCode::CONFLICT,
        KillOutcome::NotFound => StatusCode::GONE,
    })
}

/// `GET /v1/resourceGroupState/{group/path}` (Trino's shape, segments separated by `/`):
/// the group's limits here and its cluster-wide numbers from the admission leader.
pub async fn resource_group_state(
    State(coordinator): State<Arc<Coordinator>>,
    Path(path): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let path = path.trim_matches('/').replace('/', ".");
    if flotilla_proto::admission::group_state_path(&path).is_none() {
        return Err(HttpError::not_found(format!("Resource group not found: {path}")));
    }
    let admission = coordinator.manager.admission();
    let state = admission
        .cluster_state(&path)
        .await
        .map_err(|e| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if state.hard_concurrency_limit == 0 && state.max_queued == 0 && state.running == 0 && state.queued == 0 {
        return Err(HttpError::not_found(format!("Resource group not found: {path}")));
    }
    Ok(Json(group_state_json(&state, admission.enabled())))
}

/// A group's cluster-wide state as Trino's `/v1/resourceGroupState` shows it. Without a
/// resource group configuration (`configured` false) nothing limits a group: no limits, and
/// it can always run.
pub fn group_state_json(state: &GroupState, configured: bool) -> Value {
    let (running, queued) = (state.running, state.queued);
    let full = configured && running >= state.hard_concurrency_limit;
    json!({
        "id": state.path.split('.').collect::<Vec<_>>(),
        "state": if !full { "CAN_RUN" } else if queued < state.max_queued { "CAN_QUEUE" } else { "FULL" },
        "hardConcurrencyLimit": configured.then_some(state.hard_concurrency_limit),
        "maxQueuedQueries": configured.then_some(state.max_queued),
        "numRunningQueries": running,
        "numQueuedQueries": queued,
    })
}
