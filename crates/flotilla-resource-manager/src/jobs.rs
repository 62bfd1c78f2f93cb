//! The admission leader's board of background jobs (see [`flotilla_proto::jobs`]): who holds
//! each job, until when, and when it was last done. Soft state like everything here: a new
//! leader starts with an empty board and grants nothing until every claim an earlier leader
//! granted has expired (the caller checks that, as for admission leases).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flotilla_proto::jobs::{JobAnswer, JobClaim, JobDone, MAX_JOB_NAME};

/// Most jobs remembered; past it, the ones done longest ago are forgotten.
const MAX_JOBS: usize = 100_000;
/// The longest claim granted (a claimant renews well before it ends): one admission lease,
/// so a new leader's wait covers every claim an earlier one granted.
const MAX_LEASE: Duration = crate::admission::LEASE_DURATION;
/// The longest period between runs honoured.
const MAX_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Default)]
struct Job {
    /// (coordinator, instance, claim expiry).
    holder: Option<(String, String, Instant)>,
    done: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct JobBoard {
    jobs: HashMap<String, Job>,
}

impl JobBoard {
    /// Decides a claim (the caller has checked that this resource manager leads).
    pub fn claim(&mut self, claim: &JobClaim, now: Instant) -> Result<JobAnswer, String> {
        if claim.job.is_empty() || claim.job.len() > MAX_JOB_NAME {
            return Err(format!("a job name has 1 to {MAX_JOB_NAME} bytes"));
        }
        if self.jobs.len() >= MAX_JOBS && !self.jobs.contains_key(&claim.job) {
            self.forget_oldest(now);
        }
        let job = self.jobs.entry(claim.job.clone()).or_default();
        if let Some((holder, instance, expires)) = &job.holder {
            let same = holder == &claim.coordinator && instance == &claim.instance;
            if !same && now < *expires {
                return Ok(JobAnswer::Running { by: holder.clone() });
            }
        }
        let every = Duration::from_millis(claim.every_ms).min(MAX_EVERY);
        let held_by_claimant =
            job.holder.as_ref().is_some_and(|(c, i, _)| c == &claim.coordinator && i == &claim.instance);
        if let Some(done) = job.done {
            if !held_by_claimant && now.duration_since(done) < every {
                return Ok(JobAnswer::Done { ago_ms: now.duration_since(done).as_millis() as u64 });
            }
        }
        let lease = Duration::from_millis(claim.lease_ms).min(MAX_LEASE);
        job.holder = Some((claim.coordinator.clone(), claim.instance.clone(), now + lease));
        Ok(JobAnswer::Granted)
    }

    /// Records a job done by its holder; false when the caller does not hold it.
    pub fn done(&mut self, done: &JobDone, now: Instant) -> bool {
        let Some(job) = self.jobs.get_mut(&done.job) else { return false };
        let holds = job.holder.as_ref().is_some_and(|(c, i, _)| c == &done.coordinator && i == &done.instance);
        if holds {
            job.holder = None;
            job.done = Some(now);
        }
        holds
    }

    /// Forgets every job (this resource manager no longer leads).
    pub fn clear(&mut self) {
        self.jobs.clear();
    }

    fn forget_oldest(&mut self, now: Instant) {
        self.jobs.retain(|_, job| job.holder.as_ref().is_some_and(|(_, _, expires)| now < *expires));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(job: &str, coordinator: &str) -> JobClaim {
        JobClaim {
            job: job.into(),
            coordinator: coordinator.into(),
            instance: format!("{coordinator}-i"),
            lease_ms: 10_000,
            every_ms: 60_000,
        }
    }

    fn done(job: &str, coordinator: &str) -> JobDone {
        JobDone { job: job.into(), coordinator: coordinator.into(), instance: format!("{coordinator}-i") }
    }

    #[test]
    fn one_claimant_at_a_time_and_once_per_period() {
        let mut board = JobBoard::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(board.claim(&claim("t", "a"), at(0)).unwrap(), JobAnswer::Granted);
        assert_eq!(board.claim(&claim("t", "b"), at(1)).unwrap(), JobAnswer::Running { by: "a".into() });
        // Renewed by its holder (leases are capped at 3 s); another job is free.
        assert_eq!(board.claim(&claim("t", "a"), at(2)).unwrap(), JobAnswer::Granted);
        assert_eq!(board.claim(&claim("t", "b"), at(4)).unwrap(), JobAnswer::Running { by: "a".into() });
        assert_eq!(board.claim(&claim("u", "b"), at(4)).unwrap(), JobAnswer::Granted);
        assert!(!board.done(&done("t", "b"), at(4)), "b does not hold t");
        assert!(board.done(&done("t", "a"), at(4)));
        assert!(matches!(board.claim(&claim("t", "b"), at(10)).unwrap(), JobAnswer::Done { .. }));
        assert_eq!(board.claim(&claim("t", "b"), at(70)).unwrap(), JobAnswer::Granted);
        // A holder that dies: its claim expires and the job goes to the next claimant.
        assert_eq!(board.claim(&claim("u", "c"), at(6)).unwrap(), JobAnswer::Running { by: "b".into() });
        assert_eq!(board.claim(&claim("u", "c"), at(8)).unwrap(), JobAnswer::Granted);
        // Hostile names and periods.
        assert!(board.claim(&claim("", "a"), at(20)).is_err());
        assert!(board.claim(&claim(&"x".repeat(MAX_JOB_NAME + 1), "a"), at(20)).is_err());
        let mut forever = claim("v", "a");
        forever.lease_ms = u64::MAX;
        forever.every_ms = u64::MAX;
        assert_eq!(board.claim(&forever, at(20)).unwrap(), JobAnswer::Granted);
        assert_eq!(board.claim(&claim("v", "b"), at(24)).unwrap(), JobAnswer::Granted, "leases are capped");
    }
}
