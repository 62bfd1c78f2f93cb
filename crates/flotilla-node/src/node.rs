//! What every node of every role has in common: its identity (announced to the resource
//! managers) and the node information endpoints Trino tools and load balancers check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flotilla_proto::access_control::{AccessControl, QueryAccess, SystemInformationAccess};
use flotilla_proto::cluster::{NodeAnnouncement, NodeRole, ReportedState};
use flotilla_proto::{random_hex, InternalAuth, NodeConfig, INTERNAL_BEARER_HEADER};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// This process as a node of the cluster.
#[derive(Debug)]
pub struct LocalNode {
    pub node_id: String,
    /// Random per process start.
    pub instance: String,
    pub start_time_ms: i64,
    pub started: Instant,
    pub environment: String,
    pub roles: Vec<NodeRole>,
    pub http_uri: String,
    /// Where this node's worker service listens, when it runs tasks.
    pub data_uri: Option<String>,
    pub warehouse: String,
    pub worker_group: String,
    /// A coordinator's id (the suffix of its query ids).
    pub coordinator_id: Option<String>,
    shutting_down: AtomicBool,
    /// Cancelled when someone asks this node to shut down gracefully (`PUT /v1/info/state`
    /// with `"SHUTTING_DOWN"`); the process's main loop waits on it next to its signals.
    drain_requested: CancellationToken,
    /// This node's metrics (`GET /metrics`).
    pub metrics: Arc<crate::NodeMetrics>,
}

impl LocalNode {
    /// `default_id_prefix` names the node when `node.id` is not set (with a random suffix).
    pub fn new(
        config: &NodeConfig,
        roles: Vec<NodeRole>,
        http_uri: String,
        data_uri: Option<String>,
        coordinator_id: Option<String>,
        default_id_prefix: &str,
    ) -> Arc<Self> {
        let node_id = config.node_id.clone().unwrap_or_else(|| format!("{default_id_prefix}-{}", random_hex(6)));
        Arc::new(Self {
            node_id,
            instance: random_hex(16),
            start_time_ms: chrono::Utc::now().timestamp_millis(),
            started: Instant::now(),
            environment: config.environment.clone(),
            roles,
            http_uri,
            data_uri,
            warehouse: config.warehouse.clone(),
            worker_group: config.worker_group.clone(),
            coordinator_id,
            shutting_down: AtomicBool::new(false),
            drain_requested: CancellationToken::new(),
            metrics: crate::NodeMetrics::new(),
        })
    }

    pub fn announcement(&self) -> NodeAnnouncement {
        NodeAnnouncement {
            node_id: self.node_id.clone(),
            instance: self.instance.clone(),
            start_time_ms: self.start_time_ms,
            roles: self.roles.clone(),
            http_uri: self.http_uri.clone(),
            data_uri: self.data_uri.clone(),
            coordinator_id: self.coordinator_id.clone(),
            version: flotilla_proto::FLOTILLA_VERSION.to_string(),
            environment: self.environment.clone(),
            warehouse: self.warehouse.clone(),
            worker_group: self.worker_group.clone(),
        }
    }

    pub fn is_coordinator(&self) -> bool {
        self.roles.contains(&NodeRole::Coordinator)
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Asks for a graceful shutdown: the node reports `SHUTTING_DOWN` from now on, and
    /// whoever waits on [`LocalNode::drain_requested`] finishes the work in hand and exits.
    pub fn request_drain(&self) {
        self.begin_shutdown();
        self.drain_requested.cancel();
    }

    /// Resolves once a graceful shutdown was asked for.
    pub async fn drain_requested(&self) {
        self.drain_requested.cancelled().await
    }

    pub fn reported_state(&self) -> ReportedState {
        if self.shutting_down() {
            ReportedState::ShuttingDown
        } else {
            ReportedState::Active
        }
    }

    /// Trino's uptime spelling.
    pub fn uptime(&self) -> String {
        format!("{:.2}s", self.started.elapsed().as_secs_f64())
    }

    /// `/v1/status` fields every role reports; roles add their own.
    pub fn status(&self) -> serde_json::Map<String, Value> {
        let Value::Object(map) = json!({
            "nodeId": self.node_id,
            "nodeVersion": {"version": flotilla_proto::FLOTILLA_VERSION},
            "environment": self.environment,
            "coordinator": self.is_coordinator(),
            "roles": self.roles,
            "uptime": self.uptime(),
            "externalAddress": self.http_uri,
            // Where a worker serves its tasks (and join filters): `null` on other roles.
            "dataUri": self.data_uri,
            "warehouse": self.warehouse,
            "workerGroup": self.worker_group,
            "processors": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }) else {
            unreachable!("json! of an object literal is an object")
        };
        map
    }
}

/// Who may do what to a node and its queries.
///
/// Another node proves itself with the cluster's shared secret. A user is who
/// `X-Trino-User` says: on a coordinator with authentication, that header was set by
/// [`crate::authentication::Security::admit`] from the authenticated principal; on a node
/// that does not authenticate clients while the cluster is configured to
/// (`http-server.authentication.type`), user names are not believed at all; without
/// authentication, the header is believed (the README states this trust boundary).
///
/// With `access-control.name=file`, Trino's rules decide (`queries`, `system_information`);
/// without, `access-control.admin-users` may act on every query and node.
#[derive(Debug)]
pub struct NodeAccess {
    auth: Arc<InternalAuth>,
    /// `access-control.admin-users`.
    admins: Vec<String>,
    rules: Option<Arc<AccessControl>>,
    /// Whether `X-Trino-User` names a user this node may believe.
    believes_users: bool,
}

/// The user a request names (`X-Trino-User`, else Presto's header).
pub fn request_user(headers: &HeaderMap) -> Option<&str> {
    ["x-trino-user", "x-presto-user"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|user| !user.is_empty())
}

impl NodeAccess {
    /// A node's access from its configuration: loads the access control rules file, if one
    /// is configured. `authenticates_clients`: this node runs client authentication.
    pub fn from_config(
        auth: Arc<InternalAuth>,
        config: &NodeConfig,
        authenticates_clients: bool,
    ) -> Result<Self, String> {
        let security = &config.security;
        let rules = match (&security.access_control_file, security.access_control) {
            (Some(path), true) => Some(Arc::new(AccessControl::load(path, security.access_control_refresh)?)),
            _ => None,
        };
        let believes_users = security.authentication.is_empty() || authenticates_clients;
        Ok(Self { auth, admins: config.admin_users.clone(), rules, believes_users })
    }

    /// The access control rules, when `access-control.name=file`.
    pub fn access_control(&self) -> Option<&Arc<AccessControl>> {
        self.rules.as_ref()
    }

    /// The request is signed with the cluster's secret (another node sent it or relayed it).
    pub fn is_internal(&self, headers: &HeaderMap) -> bool {
        self.auth.verify(headers.get(INTERNAL_BEARER_HEADER).and_then(|v| v.to_str().ok())).is_ok()
    }

    /// Another node's own call: signed, and not a client's request that a node relayed
    /// (those carry [`crate::FORWARDED_BY`] and are the client's, not the node's).
    pub fn is_node_call(&self, headers: &HeaderMap) -> bool {
        !headers.contains_key(crate::FORWARDED_BY) && self.is_internal(headers)
    }

    /// A signed statement that `user` is authenticated, for a request this node sends on a
    /// user's behalf ([`flotilla_proto::PRINCIPAL_HEADER`]).
    pub fn vouch(&self, user: &str) -> String {
        self.auth.sign_principal(user)
    }

    /// The user of a request, if this node believes it.
    pub fn user<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        request_user(headers).filter(|_| self.believes_users)
    }

    fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|admin| admin == user)
    }

    /// Whether `user` may kill or cancel a query of `owner`: their own always; others' as
    /// the rules' `queries` section allows (`kill`), or as an admin without rules.
    pub fn may_act_on_query(&self, user: Option<&str>, owner: &str) -> bool {
        let Some(user) = user.filter(|_| self.believes_users) else { return false };
        user == owner
            || match &self.rules {
                Some(rules) => rules.rules().query_access(user, Some(owner), QueryAccess::Kill),
                None => self.is_admin(user),
            }
    }

    /// Whether `user` may see a query of `owner` (listings, details): their own always;
    /// others' as the rules allow (`view`); everyone's without rules.
    pub fn may_view_query(&self, user: Option<&str>, owner: &str) -> bool {
        match &self.rules {
            None => true,
            Some(rules) => user
                .filter(|_| self.believes_users)
                .is_some_and(|user| user == owner || rules.rules().query_access(user, Some(owner), QueryAccess::View)),
        }
    }

    /// Whether the request may read the cluster's nodes (`/v1/node`): signed by the cluster,
    /// or, with access control rules, from a user they give `system_information` read
    /// (as Trino's management reads); anyone without rules.
    pub fn may_read_system_information(&self, headers: &HeaderMap) -> bool {
        match &self.rules {
            None => true,
            Some(rules) => {
                self.is_node_call(headers)
                    || self
                        .user(headers)
                        .is_some_and(|user| rules.rules().system_information(user, SystemInformationAccess::Read))
            }
        }
    }

    /// Whether the request may change the node's state: signed by the cluster, or from a
    /// user the rules give `system_information` write (an admin without rules).
    pub fn may_manage_node(&self, headers: &HeaderMap) -> bool {
        self.is_node_call(headers)
            || self.user(headers).is_some_and(|user| match &self.rules {
                Some(rules) => rules.rules().system_information(user, SystemInformationAccess::Write),
                None => self.is_admin(user),
            })
    }
}

/// `/v1/info` and `/v1/info/state`, as Trino serves them; `PUT /v1/info/state` with
/// `"SHUTTING_DOWN"` starts a graceful shutdown, for a caller holding the cluster's secret
/// or an admin user (403 otherwise).
pub fn info_routes(node: Arc<LocalNode>, access: Arc<NodeAccess>) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/info/state", get(state).put(put_state))
        .route("/metrics", get(metrics))
        .with_state((node, access))
}

/// `GET /metrics` (see [`crate::metrics`]).
async fn metrics(State((node, access)): State<(Arc<LocalNode>, Arc<NodeAccess>)>, headers: HeaderMap) -> Response {
    crate::metrics::serve(&node.metrics, &access, &headers).await
}

/// Counts every request of `router`'s routes in the node's metrics (apply it last).
pub fn counted(router: Router, node: &LocalNode) -> Router {
    router.route_layer(axum::middleware::from_fn_with_state(node.metrics.clone(), crate::metrics::count_requests))
}

async fn put_state(
    State((node, access)): State<(Arc<LocalNode>, Arc<NodeAccess>)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !access.may_manage_node(&headers) {
        let user = access.user(&headers).unwrap_or("(anonymous)");
        tracing::warn!(%user, "refused a request to change the node's state");
        return (
            StatusCode::FORBIDDEN,
            format!("Access Denied: User {user} cannot change the state of node {}", node.node_id),
        )
            .into_response();
    }
    let requested: Result<String, _> = serde_json::from_slice(&body);
    match requested.as_deref() {
        Ok("SHUTTING_DOWN") => {
            tracing::info!("graceful shutdown requested over HTTP");
            node.request_drain();
            StatusCode::OK.into_response()
        }
        Ok("ACTIVE") if !node.shutting_down() => StatusCode::OK.into_response(),
        Ok(other) => (StatusCode::BAD_REQUEST, format!("Invalid state transition to {other}")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "expected a JSON string such as \"SHUTTING_DOWN\"").into_response(),
    }
}

async fn info(State((node, _)): State<(Arc<LocalNode>, Arc<NodeAccess>)>) -> Json<Value> {
    Json(json!({
        "nodeVersion": {"version": flotilla_proto::FLOTILLA_VERSION},
        "environment": node.environment,
        "coordinator": node.is_coordinator(),
        "starting": false,
        "uptime": node.uptime(),
    }))
}

async fn state(State((node, _)): State<(Arc<LocalNode>, Arc<NodeAccess>)>) -> Json<Value> {
    Json(json!(if node.shutting_down() { "SHUTTING_DOWN" } else { "ACTIVE" }))
}
