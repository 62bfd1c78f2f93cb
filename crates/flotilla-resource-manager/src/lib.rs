//! The resource manager role: discovery, heartbeats and the cluster's shared view.
//!
//! Not implemented yet (see the resource-manager issue): this crate holds the role's place in
//! the workspace so the layout shows the architecture. No `flotilla resource-manager`
//! command exists until it is built.
