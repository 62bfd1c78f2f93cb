//! The gateway process: its settings, its routes and its start-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as HttpRouter};
use flotilla_node::{require_secret, serve_http, ClusterViewClient, InternalClient, INTERNAL_CALL_TIMEOUT};
use flotilla_proto::config::{ConfigError, Setting};
use flotilla_proto::{InternalAuth, NodeConfig};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::routing::{Router, RoutingPolicy};
use flotilla_node::relay::{follow_up_query, refuse_ambiguous_path, relay_to_owner, ForwardError, Forwarder, Relayed};

/// Every setting only the gateway reads.
pub const SETTINGS: &[Setting] = &[Setting {
    name: "gateway.routing-policy",
    default: "round-robin",
    roles: "gateway",
    doc: "How the gateway picks a coordinator for a new query: round-robin, least-loaded (fewest queued+running) or user-hash (one user's queries on one coordinator)",
}];

/// The largest request body relayed (SQL text; Trino's longest query is 1,000,000 characters).
const BODY_LIMIT: usize = 8 << 20;

/// The gateway's configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub node: NodeConfig,
    pub policy: RoutingPolicy,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { node: NodeConfig::default(), policy: RoutingPolicy::RoundRobin }
    }
}

impl GatewayConfig {
    /// Applies one property; `Ok(false)` when the key is not a gateway setting.
    pub fn apply(&mut self, file: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "gateway.routing-policy" => {
                self.policy =
                    value.parse().map_err(|message: String| ConfigError::invalid(file, key, value, message))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Debug)]
struct Gateway {
    name: String,
    /// This gateway's own address, for a request that names none.
    host: String,
    view: Arc<ClusterViewClient>,
    router: Router,
    forwarder: Forwarder,
    /// `http-server.process-forwarded`.
    process_forwarded: bool,
    counters: GatewayCounters,
}

/// A started gateway.
#[derive(Debug)]
pub struct RunningGateway {
    pub name: String,
    pub address: SocketAddr,
    /// Where it serves clients over HTTPS, when `http-server.https.enabled`.
    pub https_address: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds `address` and serves. The gateway needs `discovery.uri` and the cluster's shared
/// secret: it reads the resource managers' view (which coordinators are alive, their load
/// and ids); it does not announce itself.
pub async fn start(config: GatewayConfig, address: SocketAddr) -> std::io::Result<RunningGateway> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    if config.node.discovery_uris.is_empty() {
        return Err(invalid("the gateway needs discovery.uri (the resource managers to read the cluster from)".into()));
    }
    let secret = require_secret(&config.node)?;
    let name = config.node.node_id.clone().unwrap_or_else(|| format!("gateway-{}", flotilla_proto::random_hex(6)));
    let auth = Arc::new(InternalAuth::new(secret, &name).map_err(invalid)?);
    let listener = TcpListener::bind(address).await?;
    let local_address = listener.local_addr()?;
    let view = ClusterViewClient::new(
        config.node.discovery_uris.clone(),
        InternalClient::new(auth.clone(), INTERNAL_CALL_TIMEOUT),
        config.node.heartbeat_interval,
    );
    if let Err(error) = view.refresh().await {
        tracing::warn!(%error, "no cluster view yet; starting anyway");
    }
    let metrics = flotilla_node::NodeMetrics::new();
    let counters = GatewayCounters::default();
    metrics.register("gateway_queries_routed", "New queries sent to each coordinator", counters.routed.clone());
    metrics.register(
        "gateway_coordinators_skipped",
        "New queries a coordinator could not take and the gateway sent to the next, by coordinator and reason",
        counters.skipped.clone(),
    );
    let access = Arc::new(flotilla_node::NodeAccess::from_config(auth.clone(), &config.node, false).map_err(invalid)?);
    let gateway = Arc::new(Gateway {
        counters,
        name: name.clone(),
        host: local_address.to_string(),
        view: view.clone(),
        router: Router::new(config.policy),
        forwarder: Forwarder::new(auth.clone()),
        process_forwarded: config.node.process_forwarded,
    });
    let scrape = {
        let metrics = metrics.clone();
        move |headers: axum::http::HeaderMap| async move { flotilla_node::metrics::serve(&metrics, &access, &headers).await }
    };
    let app = HttpRouter::new()
        .route("/v1/statement", post(submit))
        .route("/v1/gateway", get(status))
        .route("/metrics", get(scrape))
        .route_layer(axum::middleware::from_fn_with_state(metrics, flotilla_node::metrics::count_requests))
        .fallback(relay)
        .with_state(gateway);
    let shutdown = CancellationToken::new();
    let mut tasks = vec![view.spawn(shutdown.clone())];
    let https = flotilla_node::tls::start_https(&config.node, address.ip(), app.clone(), shutdown.clone()).await?;
    let https_address = https.map(|(address, task)| {
        tasks.push(task);
        address
    });
    tasks.push(serve_http(listener, app, shutdown.clone()));
    tracing::info!(address = %local_address, policy = %config.policy, "gateway started");
    Ok(RunningGateway { name, address: local_address, https_address, shutdown, tasks })
}

type Labels = Vec<(String, String)>;

/// What the gateway counts for `/metrics`.
#[derive(Debug, Default)]
struct GatewayCounters {
    routed: prometheus_client::metrics::family::Family<Labels, prometheus_client::metrics::counter::Counter>,
    skipped: prometheus_client::metrics::family::Family<Labels, prometheus_client::metrics::counter::Counter>,
}

impl GatewayCounters {
    fn skip(&self, coordinator: &str, reason: &str) {
        let labels =
            vec![("coordinator".to_string(), coordinator.to_string()), ("reason".to_string(), reason.to_string())];
        self.skipped.get_or_create(&labels).inc();
    }
}

fn user_of(request: &Relayed) -> String {
    ["x-trino-user", "x-presto-user"]
        .iter()
        .find_map(|name| request.headers.get(*name).and_then(|v| v.to_str().ok()))
        .unwrap_or_default()
        .to_string()
}

/// Whether the coordinator at `base`, whose exchange just broke, is dead: its address
/// refuses connections within a second (a killed process's port closes as it is torn down).
async fn died(base: &str) -> bool {
    for _ in 0..10 {
        if flotilla_node::relay::refuses_connections(base).await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// A new query: to the first coordinator in policy order that takes it. A coordinator that
/// refuses the connection, or answers 503 (a coordinator shutting down says so before it
/// registers anything), is skipped and the next one tried. Once a coordinator may have
/// registered the query, a write is never sent elsewhere (it may have run there), and a
/// failure then is a 500, which no Trino client retries (they retry 502, 503 and 504); a
/// read-only query is sent to the next coordinator when the first one died meanwhile.
async fn submit(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let request =
        match Relayed::read(request, BODY_LIMIT, &gateway.host, &gateway.name, gateway.process_forwarded).await {
            Ok(request) => request,
            Err(response) => return response,
        };
    let read_only = std::str::from_utf8(&request.body).is_ok_and(flotilla_protocol::is_read_only);
    let snapshot = gateway.view.snapshot();
    let targets = gateway.router.order(snapshot.as_ref(), &user_of(&request), Instant::now());
    let mut skipped = Vec::new();
    for target in targets {
        match gateway.forwarder.send(&target.url, &request).await {
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                gateway.router.failed(&target.node_id, Instant::now());
                gateway.counters.skip(&target.node_id, "shutting_down");
                skipped.push(format!("{} is shutting down", target.node_id));
            }
            Ok(response) => {
                gateway.router.routed(&target.node_id, Instant::now());
                gateway.counters.routed.get_or_create(&vec![("coordinator".to_string(), target.node_id.clone())]).inc();
                return response;
            }
            Err(ForwardError::Refused(error)) => {
                tracing::warn!(coordinator = %target.node_id, %error, "coordinator refused a new query; trying the next");
                gateway.router.failed(&target.node_id, Instant::now());
                gateway.counters.skip(&target.node_id, "refused");
                skipped.push(format!("{} refused the connection", target.node_id));
            }
            // A query (read-only) that a coordinator took and then died with: it ran
            // nowhere else, and running it again changes nothing, so the next one takes it.
            Err(ForwardError::Failed(error)) if read_only && died(&target.url).await => {
                tracing::warn!(coordinator = %target.node_id, %error, "coordinator died while taking a new query; trying the next");
                gateway.router.failed(&target.node_id, Instant::now());
                gateway.counters.skip(&target.node_id, "died");
                skipped.push(format!("{} died while taking the query", target.node_id));
            }
            Err(ForwardError::Failed(error)) => {
                tracing::warn!(coordinator = %target.node_id, %error, "coordinator failed while taking a new query");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "Coordinator {} failed while taking the query, which may have started there, so it is not sent elsewhere: {error}",
                        target.node_id
                    ),
                )
                    .into_response();
            }
        }
    }
    let why = if skipped.is_empty() {
        match gateway.view.last_error() {
            Some(error) if snapshot.is_none() => format!("no cluster view yet ({error})"),
            _ => "the cluster has no active coordinator".to_string(),
        }
    } else {
        skipped.join("; ")
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("No coordinator can take the query: {why}")).into_response()
}

/// Paths any coordinator answers the same (cluster-wide), relayed to a healthy one.
fn shared_path(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let cluster_wide = ["/v1/node", "/v1/cluster", "/v1/query"].contains(&path)
        || under("/v1/info")
        || under("/v1/resourceGroupState");
    (read && cluster_wide) || under("/ui") || path == "/"
}

/// Follow-ups to their owner (by the query id's suffix); the cluster-wide pages to any
/// healthy coordinator; nothing else.
async fn relay(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    // Decided on the path as received, so only on a path no one downstream rewrites.
    if let Some(refused) = refuse_ambiguous_path(request.uri().path()) {
        return refused;
    }
    let query = follow_up_query(request.uri().path());
    if query.is_none() && !shared_path(request.method(), request.uri().path()) {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    }
    let request =
        match Relayed::read(request, BODY_LIMIT, &gateway.host, &gateway.name, gateway.process_forwarded).await {
            Ok(request) => request,
            Err(response) => return response,
        };
    if let Some(id) = query {
        return relay_to_owner(&gateway.forwarder, &gateway.view, &request, &id).await;
    }
    let mut targets = gateway.router.targets(gateway.view.snapshot().as_ref(), Instant::now());
    targets.sort_by_key(|t| (t.suspect, t.load));
    let mut last_error = "the cluster has no active coordinator".to_string();
    for target in targets {
        match gateway.forwarder.send(&target.url, &request).await {
            Ok(response) => return response,
            Err(ForwardError::Refused(error) | ForwardError::Failed(error)) => {
                gateway.router.failed(&target.node_id, Instant::now());
                last_error = format!("{}: {error}", target.node_id);
            }
        }
    }
    (StatusCode::SERVICE_UNAVAILABLE, format!("No coordinator answered: {last_error}")).into_response()
}

/// The gateway's own state: its policy, its view's age and the coordinators it routes to.
async fn status(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let snapshot = gateway.view.snapshot();
    let targets = gateway.router.targets(snapshot.as_ref(), Instant::now());
    Json(json!({
        "gateway": gateway.name,
        "routingPolicy": gateway.router.policy().as_str(),
        "viewAgeMillis": snapshot.as_ref().map(|s| s.age().as_millis() as u64),
        "viewError": gateway.view.last_error(),
        "coordinators": targets.iter().map(|t| json!({
            "nodeId": t.node_id, "uri": t.url, "load": t.load, "suspect": t.suspect,
        })).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cluster_wide_reads_and_the_ui_are_relayed_to_any_coordinator() {
        for (method, path) in [
            (Method::GET, "/v1/info"),
            (Method::GET, "/v1/info/state"),
            (Method::GET, "/v1/node"),
            (Method::HEAD, "/v1/cluster"),
            (Method::GET, "/v1/query"),
            (Method::GET, "/v1/resourceGroupState/global/adhoc"),
            (Method::POST, "/ui/login"),
        ] {
            assert!(shared_path(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::PUT, "/v1/info/state"),
            (Method::DELETE, "/v1/query"),
            (Method::GET, "/v1/information"),
            (Method::GET, "/v1/resource-manager/view"),
        ] {
            assert!(!shared_path(&method, path), "{method} {path}");
        }
    }
}
