//! The policies that end a query from outside its work: its time limit
//! (`query.max-run-time`, session `query_max_run_time`) and its memory limit across the
//! cluster (`query.max-memory`, session `query_max_memory`). Each is a future the query's
//! execution task races against the work; the first to finish decides.

use std::time::Duration;

use datafusion_distributed::DistributedExec;
use flotilla_proto::{ErrorCode, FlotillaError};
use flotilla_sql::SqlSession;

use crate::query::QueryOwner;
use crate::scheduler::Scheduler;

/// How often a running query's progress is read from the cluster view.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// A query's run-time limit.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimit(pub Duration);

impl TimeLimit {
    /// Resolves, with the query's error, when the limit is reached.
    pub async fn expired(self) -> FlotillaError {
        tokio::time::sleep(self.0).await;
        FlotillaError::new(
            ErrorCode::ExceededTimeLimit,
            format!("Query exceeded maximum time limit of {:.2}s", self.0.as_secs_f64()),
        )
    }
}

/// A query's memory limit across the cluster: what it holds on this coordinator plus what
/// every worker last reported it holding.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimit(pub u64);

impl MemoryLimit {
    /// `query.max-memory`, lowered (never raised) by the session's `query_max_memory`.
    pub fn for_session(session: &SqlSession, max_memory: u64) -> Result<Self, FlotillaError> {
        let limit = session.data_size("query_max_memory")?.map_or(max_memory, |m| m.min(max_memory));
        Ok(Self(limit))
    }

    pub fn check(self, local: u64, remote: u64) -> Result<(), FlotillaError> {
        if local.saturating_add(remote) <= self.0 {
            return Ok(());
        }
        Err(FlotillaError::new(
            ErrorCode::ExceededGlobalMemoryLimit,
            format!(
                "Query exceeded distributed user memory limit of {}",
                flotilla_sql::memory::human_bytes(self.0 as usize)
            ),
        ))
    }

    /// Follows a running query's progress on the workers (from their heartbeats, through
    /// the cluster view) into its status, and resolves, with the query's error, when the
    /// query holds more than the limit.
    pub async fn exceeded(self, owner: &QueryOwner, scheduler: &Scheduler, query_id: &str) -> FlotillaError {
        loop {
            tokio::time::sleep(PROGRESS_INTERVAL).await;
            // Only a query running on workers has progress there.
            let (distributed, local) = {
                let status = owner.status();
                let distributed = status.plan.as_ref().is_some_and(|p| p.is::<DistributedExec>());
                (distributed, status.memory.as_ref().map_or(0, |m| m.query_reserved() as u64))
            };
            let remote = if distributed { scheduler.remote_progress(query_id) } else { Default::default() };
            if distributed {
                owner.update(|status| {
                    // Tasks that ended drop out of the heartbeats: keep the most seen.
                    status.remote.rows = status.remote.rows.max(remote.rows);
                    status.remote.bytes = status.remote.bytes.max(remote.bytes);
                    status.remote.workers = status.remote.workers.max(remote.workers);
                    status.remote.reserved_bytes = status.remote.reserved_bytes.max(remote.reserved_bytes);
                });
            }
            if let Err(error) = self.check(local, remote.reserved_bytes) {
                return error;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_counts_this_coordinator_and_the_workers() {
        let limit = MemoryLimit(100);
        assert!(limit.check(40, 60).is_ok());
        let error = limit.check(40, 61).unwrap_err();
        assert_eq!(error.code, ErrorCode::ExceededGlobalMemoryLimit);
        assert!(limit.check(u64::MAX / 2, 0).is_err());
    }

    #[tokio::test]
    async fn the_time_limit_names_itself() {
        let error = TimeLimit(Duration::from_millis(10)).expired().await;
        assert_eq!(error.code, ErrorCode::ExceededTimeLimit);
        assert_eq!(error.message, "Query exceeded maximum time limit of 0.01s");
    }
}
