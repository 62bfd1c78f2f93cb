//! Background jobs (a table's compaction and vacuum), one at a time per job cluster-wide:
//! a coordinator claims a job at the admission leader before it runs it, renews the claim
//! while it runs, and reports it done. The leader grants a job to one claimant at a time
//! (a claim expires unless renewed: a coordinator that dies loses it, and the job is run
//! by the next claimant), and refuses it for `every_ms` after it was done, so coordinators
//! that all look for work run each job once per period. A new leader grants nothing for
//! one lease duration (claims an earlier leader granted expire meanwhile).

use serde::{Deserialize, Serialize};

/// Served by every resource manager; only the admission leader grants.
pub const JOB_CLAIM_PATH: &str = "/v1/resource-manager/jobs/claim";
pub const JOB_DONE_PATH: &str = "/v1/resource-manager/jobs/done";

/// The longest job name accepted (a table's full name, with a prefix).
pub const MAX_JOB_NAME: usize = 1024;

/// A coordinator asks to run (or keep running) a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobClaim {
    pub job: String,
    pub coordinator: String,
    pub instance: String,
    /// How long the claim holds unless renewed.
    pub lease_ms: u64,
    /// The job is not run again sooner than this after it was done.
    pub every_ms: u64,
}

/// A coordinator reports a job it held as done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDone {
    pub job: String,
    pub coordinator: String,
    pub instance: String,
}

/// The leader's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum JobAnswer {
    /// Run it (or keep running it), renewing before the lease ends.
    Granted,
    /// Another coordinator runs it.
    Running { by: String },
    /// It was done less than `every_ms` ago.
    Done { ago_ms: u64 },
    /// Ask the leader instead.
    NotLeader { leader: String, uri: String },
    /// The leader is new: ask again later.
    NotReady,
}
