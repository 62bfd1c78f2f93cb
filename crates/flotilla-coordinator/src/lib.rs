//! flotilla-coordinator
