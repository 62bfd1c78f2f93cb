//! flotilla-worker
