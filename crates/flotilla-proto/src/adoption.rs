//! Queries that outlive their coordinator: what an owner registers with the resource
//! managers before a query's first response, and how a live coordinator adopts the query
//! when its owner dies.
//!
//! ```text
//!  owner ── register(Q, owner, epoch 0) ──▶ every resource manager   (before the first response)
//!  owner dies; a follow-up of Q reaches coordinator C (by the gateway, or directly)
//!  C ── registration of Q? ──▶ any resource manager ──▶ (owner O, epoch e)
//!  C ── adopt(Q, from O at e) ──▶ admission leader: Granted{e+1} to exactly one asker
//!  C ── register(Q, owner C, epoch e+1) ──▶ every resource manager; C re-runs Q
//! ```
//!
//! The leader grants an adoption only when the registered owner is gone (no longer in its
//! view, dead there, restarted as another instance, or refusing connections), and only one
//! per epoch: a second asker is told who adopted it. A leader that has just taken over grants
//! nothing for one lease duration, so the registration of an adoption its predecessor granted
//! has reached it first.

use serde::{Deserialize, Serialize};

/// Registering (`POST`) and forgetting (`POST .../forget`) queries; served by every resource
/// manager.
pub const REGISTRATION_PATH: &str = "/v1/resource-manager/queries";
/// Forgetting registrations whose queries are over.
pub const FORGET_PATH: &str = "/v1/resource-manager/queries/forget";
/// Claiming a query whose owner is gone; only the admission leader grants.
pub const ADOPT_PATH: &str = "/v1/resource-manager/queries/adopt";

/// The path of one query's registration (the id is checked to be a query id by the caller,
/// so it needs no escaping).
pub fn registration_path(query_id: &crate::QueryId) -> String {
    format!("{REGISTRATION_PATH}/{query_id}")
}

/// Everything another coordinator needs to run a query again under its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRegistration {
    pub query_id: String,
    /// The query's secret path segment (a follow-up must carry it).
    pub slug: String,
    /// The full SQL text.
    pub sql: String,
    /// The client's `X-Trino-*` request headers (name, value): the session (user included),
    /// exactly as sent.
    pub session_headers: Vec<(String, String)>,
    pub create_time_ms: i64,
    /// The coordinator running it now (node id, instance, HTTP URI).
    pub owner: String,
    pub owner_instance: String,
    pub owner_uri: String,
    /// How many times it was adopted; a registration replaces one with a lower epoch.
    pub epoch: u32,
    /// Whether running it again may change data twice: a write (or DDL) that has left the
    /// queue may have committed, so it is not re-run.
    pub write: bool,
    /// A write that has left its queue (set before it starts).
    #[serde(default)]
    pub started: bool,
}

impl QueryRegistration {
    /// Bytes this registration holds in a resource manager's memory, roughly.
    pub fn weight(&self) -> usize {
        256 + self.sql.len()
            + self.slug.len()
            + self.owner_uri.len()
            + self.session_headers.iter().map(|(n, v)| n.len() + v.len() + 16).sum::<usize>()
    }
}

/// Registrations to drop: their queries ended and their clients have the final answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgetQueries {
    pub owner: String,
    pub query_ids: Vec<String>,
}

/// A coordinator's claim on a query whose owner it found gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdoptRequest {
    /// The registration as the claimant read it (the leader keeps it if it had none).
    pub registration: QueryRegistration,
    /// The claimant (node id, instance, HTTP URI).
    pub adopter: String,
    pub adopter_instance: String,
    pub adopter_uri: String,
}

/// The leader's answer to a claim (a `409` body when it is not a grant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum AdoptAnswer {
    /// The claimant owns the query from now on, at this epoch.
    Granted { epoch: u32 },
    /// Another coordinator owns it (adopted it, or its owner is alive): follow-ups go there.
    OwnedBy { owner: String, uri: String, epoch: u32 },
    /// This resource manager is not the admission leader; `uri` is.
    NotLeader { leader: String, uri: String },
    /// The leader took over too recently to know every adoption its predecessor granted.
    NotReady { retry_after_ms: u64 },
}

impl std::fmt::Display for AdoptAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdoptAnswer::Granted { epoch } => write!(f, "adoption granted (epoch {epoch})"),
            AdoptAnswer::OwnedBy { owner, uri, epoch } => write!(f, "owned by {owner} at {uri} (epoch {epoch})"),
            AdoptAnswer::NotLeader { leader, uri } => write!(f, "not the admission leader ({leader} at {uri} is)"),
            AdoptAnswer::NotReady { retry_after_ms } => {
                write!(f, "the admission leader is new; ask again in {retry_after_ms} ms")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_as_tagged_json() {
        for answer in [
            AdoptAnswer::Granted { epoch: 2 },
            AdoptAnswer::OwnedBy { owner: "c2".into(), uri: "http://h:1".into(), epoch: 1 },
            AdoptAnswer::NotLeader { leader: "rm1".into(), uri: "http://h:2".into() },
            AdoptAnswer::NotReady { retry_after_ms: 300 },
        ] {
            let text = serde_json::to_string(&answer).unwrap();
            assert_eq!(serde_json::from_str::<AdoptAnswer>(&text).unwrap(), answer, "{text}");
        }
        assert!(serde_json::from_str::<AdoptAnswer>(r#"{"answer":"stolen"}"#).is_err());
    }
}
