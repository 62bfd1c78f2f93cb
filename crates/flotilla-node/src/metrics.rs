//! `GET /metrics` on every role, in the Prometheus/OpenMetrics text format
//! (`prometheus-client`): one registry per node (so nodes in one process stay apart), every
//! metric named `flotilla_*`. HTTP requests are counted by route template, method and
//! status on every role; each role registers its own metrics (queries, heartbeats, leases,
//! memory, gateway relays) and may refresh gauges right before a scrape. Reading it is
//! system information: open without access control rules, else for a signed node call or a
//! user the rules give `system_information` read (as `/v1/node`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Metric, Registry};

use crate::NodeAccess;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

type Refresh = Box<dyn Fn() + Send + Sync>;

/// One node's metrics.
pub struct NodeMetrics {
    registry: Mutex<Registry>,
    refreshers: Mutex<Vec<Refresh>>,
    http_requests: Family<HttpLabels, Counter>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("flotilla");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            http_requests.clone(),
        );
        Arc::new(Self { registry: Mutex::new(registry), refreshers: Mutex::default(), http_requests })
    }

    /// Adds a metric (`name` without the `flotilla_` prefix).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// Runs `refresh` before every scrape (to set gauges from the node's state).
    pub fn on_scrape(&self, refresh: impl Fn() + Send + Sync + 'static) {
        self.refreshers.lock().push(Box::new(refresh));
    }

    /// The registry in the text format.
    pub fn encode(&self) -> String {
        for refresh in self.refreshers.lock().iter() {
            refresh();
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry.lock()).is_err() {
            text.clear();
        }
        text
    }
}

/// Counts a request by its route template (never the raw path: bounded labels), method and
/// status. Add it with `Router::route_layer`, so the route is known.
pub async fn count_requests(State(metrics): State<Arc<NodeMetrics>>, request: Request<Body>, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("(unmatched)", |p| p.as_str()).to_string();
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let labels = HttpLabels { route, method, status: response.status().as_u16() };
    metrics.http_requests.get_or_create(&labels).inc();
    response
}

/// `GET /metrics`.
pub async fn serve(metrics: &NodeMetrics, access: &NodeAccess, headers: &HeaderMap) -> Response {
    if !access.may_read_system_information(headers) {
        return (StatusCode::FORBIDDEN, "Access Denied: Cannot read system information\n").into_response();
    }
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()).into_response()
}
