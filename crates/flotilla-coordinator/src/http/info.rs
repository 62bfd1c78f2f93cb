//! `/v1/info`, `/v1/info/state` and `/v1/status`: what a client or load balancer checks
//! before sending work.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::Coordinator;

fn uptime(coordinator: &Coordinator) -> String {
    format!("{:.2}s", coordinator.identity.lock().started.elapsed().as_secs_f64())
}

pub async fn info(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    let identity = coordinator.identity.lock().clone();
    Json(json!({
        "nodeVersion": {"version": flotilla_proto::FLOTILLA_VERSION},
        "environment": identity.environment,
        "coordinator": true,
        "starting": false,
        "uptime": uptime(&coordinator),
    }))
}

pub async fn state(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    let state = if coordinator.shutting_down() { "SHUTTING_DOWN" } else { "ACTIVE" };
    Json(json!(state))
}

pub async fn status(State(coordinator): State<Arc<Coordinator>>) -> Json<Value> {
    let identity = coordinator.identity.lock().clone();
    Json(json!({
        "nodeId": identity.node_id,
        "nodeVersion": {"version": flotilla_proto::FLOTILLA_VERSION},
        "environment": identity.environment,
        "coordinator": true,
        "uptime": uptime(&coordinator),
        "externalAddress": identity.http_uri,
        "processors": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "runningQueries": coordinator.manager.running_count(),
    }))
}
