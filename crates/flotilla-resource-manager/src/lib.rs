//! The resource manager role: discovery, the cluster's state from heartbeats, and the view
//! every coordinator schedules and admits from.
//!
//! ```text
//!   worker / coordinator / resource manager                 coordinator
//!     Heartbeater ──POST heartbeat (every 1s, to every RM)──▶ ┌────────────────────┐
//!                 ◀──ack: report version, live RM list────── │  ClusterState      │──GET view──▶ ClusterViewClient
//!                                                            │  (soft, per RM)    │              (cached, fails over)
//!                           peer sync (changed records) ◀──▶ └────────────────────┘
//!                                                               other resource managers
//! ```
//!
//! Design (the choices that keep Presto's resource-manager failures away):
//! - **Every resource manager is a full primary.** There is no leader and no consensus: the
//!   state is soft and rebuilt from heartbeats. Nodes heartbeat every resource manager they
//!   know (the `discovery.uri` seeds plus the live list each ack returns), so in the normal
//!   case every RM hears every node directly.
//! - **Peers share what they hear.** Each RM pushes to every live peer the records changed
//!   since that peer last acknowledged (a per-peer cursor over a local change counter), so a
//!   node that reached only one RM is still known to all, a lost push is repeated, and a
//!   peer cut off for a while gets everything it missed when the link heals. A restarted
//!   peer (new instance id) is sent everything. RMs find each other the same way nodes do:
//!   a resource manager announces itself like any node, so there is no separate setting to
//!   make two RMs sync.
//! - **No flapping.** Records merge by (incarnation, sequence number), so duplicates and
//!   reordering never move a node backwards; liveness is judged from local receive times,
//!   and a relayed record carries how long ago its sender heard the node, so a relay never
//!   makes a silent node look alive.
//! - **Deltas, not records.** A coordinator sends a query's identity (user, SQL text, ...)
//!   once per RM and afterwards only its changing progress, as a delta against the version
//!   the RM acknowledged; an RM that missed a delta (or restarted) answers "full report
//!   please" instead of guessing.
//! - **Never in the query path.** Coordinators read a cached view and keep the last good
//!   one, with its age, when no RM answers. The one exception is deliberate: resource
//!   group limits hold for the whole cluster, so coordinators admit within leases of slots
//!   granted by one resource manager, the admission leader ([`admission`]); between
//!   renewals they admit locally, and without a lease they queue rather than over-admit.
//!   Likewise, coordinators register each query before answering its client, and the
//!   admission leader decides which live coordinator adopts a dead owner's query
//!   ([`registry`]).
//!
//! Entry points: [`ResourceManager`] (the role: [`ResourceManager::router`] for its HTTP
//! API, [`ResourceManager::spawn_background`] for peer sync and sweeping). The other ends,
//! `Heartbeater` (run by every node) and `ClusterViewClient` (run by coordinators and
//! gateways), are in `flotilla-node`. All internal calls are signed with the shared secret
//! ([`flotilla_proto::InternalAuth`]).

pub mod admission;
mod config;
mod jobs;
mod lending;
pub mod memory_killer;
mod peer;
pub mod registry;
mod role;
mod server;
pub mod state;
mod warehouses;

pub use config::{ResourceManagerConfig, SETTINGS};
pub use peer::{HttpPeerTransport, PeerTransport};
pub use role::start_resource_manager;
pub use server::ResourceManager;
pub use state::{ClusterState, StateConfig};
