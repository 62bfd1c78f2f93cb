//! The `flotilla` binary's library half: reading a Trino-style `etc/` directory ([`etc`])
//! and starting a cluster of local processes ([`local_cluster`]), shared by the binary and
//! the multi-process test harness.

pub mod etc;
pub mod local_cluster;
