//! What every Flotilla node runs, whatever its role: its identity and state
//! ([`LocalNode`], `/v1/info`, draining), the bounded HTTP server ([`serve_http`]), the
//! signed, time-limited client for internal calls ([`InternalClient`], failing with
//! [`flotilla_proto::CallError`]), the heartbeat loop to the resource managers
//! ([`Heartbeater`]), the cached cluster view with failover ([`ClusterViewClient`]), and
//! the relaying of a client's request to the coordinator that owns its query ([`relay`]),
//! which gateways and coordinators both do.
//!
//! ```text
//!   any node ──Heartbeater──▶ resource managers ──view──▶ ClusterViewClient (coordinators, gateways)
//!   client ──follow-up──▶ gateway or coordinator ──relay (owner from the view)──▶ owning coordinator
//! ```
//!
//! The roles' crates (`flotilla-resource-manager`, `flotilla-coordinator`,
//! `flotilla-worker`, `flotilla-gateway`) build on this one and not on each other.

mod agent;
pub mod authentication;
mod http_client;
pub mod http_server;
pub mod metrics;
pub mod node;
pub mod password_file;
pub mod relay;
mod runtime;
pub mod tls;
mod view_client;

pub use agent::{HeartbeatSource, Heartbeater};
pub use http_client::InternalClient;
pub use http_server::{serve_http, serve_https};
pub use metrics::NodeMetrics;
pub use node::{counted, info_routes, request_user, LocalNode, NodeAccess};
pub use relay::{follow_up_query, relay_to_owner, ForwardError, Forwarder, Relayed, FORWARDED_BY};
pub use runtime::{heartbeater, require_secret, InFlight, RunningNode, INTERNAL_CALL_TIMEOUT};
pub use view_client::{ClusterViewClient, ViewSnapshot};
