//! Routing Trino client requests between coordinators: the `flotilla gateway` role, and the
//! follow-up forwarding every coordinator does itself.
//!
//! ```text
//!  client ──POST /v1/statement──▶ gateway ──(policy: round-robin | least-loaded | user-hash)──▶ coordinator A
//!  client ──GET nextUri (…_abcde)──▶ gateway or any coordinator ──(suffix abcde, from the view)──▶ owner
//! ```
//!
//! A query id ends with its owner's five-character coordinator id, and every coordinator
//! announces its id to the resource managers, so the owner of any query is one lookup in
//! the cluster view away: no database, no fan-out. [`proxy`] relays a request to a
//! coordinator (streaming the response back) and finds owners; [`routing`] orders the
//! coordinators for a new query; [`server`] is the gateway process. The gateway keeps no
//! state that another gateway needs: several can run side by side.

pub mod proxy;
pub mod routing;
pub mod server;
pub mod uris;

pub use proxy::{follow_up_query, relay_to_owner, ForwardError, Forwarder, Relayed, FORWARDED_BY};
pub use routing::{Router, RoutingPolicy, Target};
pub use server::{start, GatewayConfig, RunningGateway, SETTINGS};
