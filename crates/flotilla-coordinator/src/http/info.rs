//! Node and cluster information: `/v1/info`, `/v1/info/state` and `/v1/status` (what a
//! client or load balancer checks before sending work), `/v1/node` and `/v1/node/failed`
//! (the cluster's nodes, from the resource managers' view; `system_information` read with
//! access control rules) and `/v1/cluster` (cluster
//! statistics, as Presto serves them).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use flotilla_proto::cluster::{NodeRole, NodeView};
use serde_json::{json, Value};

use super::HttpError;
use crate::Coordinator;

pub async fn status(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    let mut status = coordinator.local.status();
    status.insert("runningQueries".into(), coordinator.manager.running_count().into());
    Json(Value::Object(status))
}

pub fn node_json(node: &NodeView) -> Value {
    json!({
        "uri": node.node.http_uri,
        "dataUri": node.node.data_uri,
        "nodeId": node.node.node_id,
        "roles": node.node.roles,
        "coordinatorId": node.node.coordinator_id,
        "state": node.state.trino_name(),
        "nodeVersion": {"version": node.node.version},
        "environment": node.node.environment,
        "warehouse": node.node.warehouse,
        "workerGroup": node.node.worker_group,
        "startTime": chrono::DateTime::from_timestamp_millis(node.node.start_time_ms).map(|t| t.to_rfc3339()),
        "lastHeartbeatAgeMillis": node.last_heartbeat_age_ms,
        "load": node.worker,
    })
}

fn nodes(coordinator: &Coordinator, live: bool) -> Vec<Value> {
    let Some(snapshot) = coordinator.view.snapshot() else {
        return Vec::new();
    };
    snapshot.view.nodes.iter().filter(|n| n.state.is_live() == live).map(node_json).collect()
}

/// The live nodes of the cluster.
pub async fn node_list(
    State(coordinator): State<Arc<Coordinator>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Value>>, HttpError> {
    may_read_nodes(&coordinator, &headers)?;
    Ok(Json(nodes(&coordinator, true)))
}

/// Nodes the resource managers have marked dead and not dropped yet.
pub async fn failed_nodes(
    State(coordinator): State<Arc<Coordinator>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Value>>, HttpError> {
    may_read_nodes(&coordinator, &headers)?;
    Ok(Json(nodes(&coordinator, false)))
}

/// The cluster's nodes are system information: with access control rules, only for those
/// they let read it (403 with Trino's words otherwise).
fn may_read_nodes(coordinator: &Coordinator, headers: &HeaderMap) -> Result<(), HttpError> {
    if coordinator.access.may_read_system_information(headers) {
        return Ok(());
    }
    Err(HttpError::new(StatusCode::FORBIDDEN, "Access Denied: Cannot read system information"))
}

/// Cluster statistics from the resource managers' view, with the view's age.
pub async fn cluster(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    Json(cluster_stats(&coordinator))
}

/// `/v1/cluster`'s figures (also the web UI's `/ui/api/stats`).
pub fn cluster_stats(coordinator: &Coordinator) -> Value {
    let Some(snapshot) = coordinator.view.snapshot() else {
        return json!({
            "viewAgeMillis": Value::Null,
            "viewError": coordinator.view.last_error(),
        });
    };
    let view = &snapshot.view;
    let count_state = |state: &str| view.queries.iter().filter(|q| q.progress.state == state).count();
    let workers: Vec<&NodeView> = view.live_with_role(NodeRole::Worker).collect();
    // Queries with a reservation waiting on a worker's full pool.
    let blocked: std::collections::HashSet<&str> = workers
        .iter()
        .filter_map(|w| w.worker.as_ref())
        .flat_map(|load| load.query_memory.iter().filter(|q| q.blocked > 0).map(|q| q.query_id.as_str()))
        .collect();
    json!({
        "runningQueries": count_state("RUNNING") + count_state("PLANNING"),
        "blockedQueries": blocked.len(),
        "queuedQueries": count_state("QUEUED"),
        "activeCoordinators": view.live_with_role(NodeRole::Coordinator).count(),
        "activeResourceManagers": view.live_with_role(NodeRole::ResourceManager).count(),
        "activeWorkers": workers.len(),
        "runningDrivers": workers.iter().filter_map(|w| w.worker.as_ref()).map(|l| l.running_tasks as u64).sum::<u64>(),
        "totalAvailableProcessors": workers.iter().filter_map(|w| w.worker.as_ref()).map(|l| l.processors as u64).sum::<u64>(),
        "reservedMemory": view.memory.reserved_bytes,
        "totalMemory": view.memory.pool_bytes,
        "totalCpuTimeSecs": view.queries.iter().map(|q| q.progress.cpu_time_ms).sum::<u64>() / 1000,
        "viewAgeMillis": snapshot.age().as_millis() as u64,
        "viewResourceManager": view.resource_manager,
        "viewError": coordinator.view.last_error(),
    })
}
