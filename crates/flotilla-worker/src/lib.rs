//! The worker role: executes plan fragments and exchanges data over Arrow Flight.
//!
//! Not implemented yet (see the distributed-execution issue): today the coordinator runs
//! every query itself. No `flotilla worker` command exists until this is built.
