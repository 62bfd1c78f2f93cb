//! The gateway role: a stateless front door routing new queries to coordinators and
//! follow-ups to their owners.
//!
//! Not implemented yet (see the many-coordinators issue). No `flotilla gateway` command
//! exists until this is built.
