//! Routing Trino client requests between coordinators: the `flotilla gateway` role.
//!
//! ```text
//!  client ──POST /v1/statement──▶ gateway ──(policy: round-robin | least-loaded | user-hash)──▶ coordinator A
//!  client ──GET nextUri (…_abcde)──▶ gateway or any coordinator ──(suffix abcde, from the view)──▶ owner
//! ```
//!
//! A query id ends with its owner's five-character coordinator id, and every coordinator
//! announces its id to the resource managers, so the owner of any query is one lookup in
//! the cluster view away: no database, no fan-out. `flotilla_node::relay` relays a request to
//! a coordinator (streaming the response back) and finds owners, as every coordinator does
//! for follow-ups too; [`routing`] orders the
//! coordinators for a new query; [`server`] is the gateway process. The gateway keeps no
//! state that another gateway needs: several can run side by side.

pub mod routing;
pub mod server;

pub use routing::{Router, RoutingPolicy, Target};
pub use server::{start, GatewayConfig, RunningGateway, SETTINGS};
