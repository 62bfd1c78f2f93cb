//! Scheduled maintenance of `files` tables (catalogs with `files.maintenance-interval`):
//! every coordinator looks for work once per interval, and runs a table's job only under a
//! claim the admission leader granted it (`flotilla_proto::jobs`: one job per table at a
//! time cluster-wide, once per interval). A job is ordinary statements run as queries of
//! user `flotilla` (source `flotilla-maintenance`), so they are routed, admitted, placed in
//! the table's write warehouse, listed, and run again when a worker dies like any other:
//! `ALTER TABLE ... EXECUTE optimize` when the table has `files.compaction-min-files` small
//! files, then `CALL catalog.system.vacuum(schema, table)`. The claim is renewed every
//! second while the job runs; a coordinator that dies stops renewing, its claim expires,
//! and the next coordinator to look runs the job (a statement cut off midway committed
//! nothing, and its files are vacuumed later). A resource manager that dies is replaced as
//! leader by the next; the new leader grants claims once the old ones have expired.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_node::{ClusterViewClient, InternalClient, LocalNode};
use flotilla_proto::jobs::{JobAnswer, JobClaim, JobDone, JOB_CLAIM_PATH, JOB_DONE_PATH};
use flotilla_proto::{CallError, ErrorCode, FlotillaError};
use flotilla_protocol::ClientSession;
use flotilla_sql::catalog::files::FilesCatalog;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::manager::QueryManager;
use crate::query::QueryState;

/// The user maintenance statements run as (give it INSERT and DELETE on the tables under
/// access control rules).
pub const MAINTENANCE_USER: &str = "flotilla";
const MAINTENANCE_SOURCE: &str = "flotilla-maintenance";

/// How long a claim holds unless renewed, and how often it is renewed.
const CLAIM_LEASE: Duration = Duration::from_secs(3);
const CLAIM_RENEWAL: Duration = Duration::from_secs(1);
/// How often the catalogs are checked for a round that is due.
const CHECK: Duration = Duration::from_secs(1);

/// The maintenance loop of one coordinator.
pub struct Maintenance {
    manager: Arc<QueryManager>,
    catalogs: BTreeMap<String, Arc<FilesCatalog>>,
    view: Arc<ClusterViewClient>,
    client: InternalClient,
    local: Arc<LocalNode>,
}

impl Maintenance {
    /// `None` when no catalog schedules maintenance.
    pub fn new(
        manager: Arc<QueryManager>,
        catalogs: BTreeMap<String, Arc<FilesCatalog>>,
        view: Arc<ClusterViewClient>,
        client: InternalClient,
        local: Arc<LocalNode>,
    ) -> Option<Arc<Self>> {
        let catalogs: BTreeMap<_, _> =
            catalogs.into_iter().filter(|(_, c)| c.settings().maintenance_interval.is_some()).collect();
        (!catalogs.is_empty()).then(|| Arc::new(Self { manager, catalogs, view, client, local }))
    }

    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut last: BTreeMap<String, Instant> = BTreeMap::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(CHECK) => {}
                }
                for (name, catalog) in &self.catalogs {
                    let every = catalog.settings().maintenance_interval.unwrap_or(Duration::MAX);
                    if last.get(name).is_some_and(|at| at.elapsed() < every) {
                        continue;
                    }
                    last.insert(name.clone(), Instant::now());
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.round(name, catalog, every) => {}
                    }
                }
            }
        })
    }

    /// Looks at every table of `catalog` once, running the jobs this coordinator is granted.
    async fn round(&self, name: &str, catalog: &FilesCatalog, every: Duration) {
        let tables = match catalog.tables().await {
            Ok(tables) => tables,
            Err(error) => {
                tracing::warn!(catalog = name, %error, "maintenance: cannot list the tables");
                return;
            }
        };
        for (schema, table) in tables {
            let job = format!("maintain:{name}.{schema}.{table}");
            match self.claim(&job, every).await {
                Ok(JobAnswer::Granted) => {}
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(%job, %error, "maintenance: no claim");
                    continue;
                }
            }
            tracing::info!(%job, "maintenance job started");
            match self.run_job(&job, name, catalog, &schema, &table, every).await {
                Ok(()) => {
                    tracing::info!(%job, "maintenance job done");
                    let done = JobDone {
                        job: job.clone(),
                        coordinator: self.local.node_id.clone(),
                        instance: self.local.instance.clone(),
                    };
                    self.report_done(&done).await;
                }
                // Not reported done: the claim expires and the job is run again by whoever
                // claims it next.
                Err(error) => tracing::warn!(%job, %error, "maintenance job failed"),
            }
        }
    }

    async fn run_job(
        &self,
        job: &str,
        catalog_name: &str,
        catalog: &FilesCatalog,
        schema: &str,
        table: &str,
        every: Duration,
    ) -> Result<(), FlotillaError> {
        let settings = catalog.settings();
        let opened = catalog.open_table(schema, table).await?;
        let Some(opened) = opened else { return Ok(()) };
        let small = opened
            .small_files(settings.target_file_size)
            .await
            .map_err(|e| FlotillaError::internal(format!("cannot list the files of {schema}.{table}: {e}")))?;
        if small.len() >= settings.compaction_min_files {
            let optimize = format!("ALTER TABLE \"{catalog_name}\".\"{schema}\".\"{table}\" EXECUTE optimize");
            self.run_statement(job, &optimize, every).await?;
        }
        let vacuum = format!("CALL \"{catalog_name}\".system.vacuum('{schema}', '{table}')");
        self.run_statement(job, &vacuum, every).await
    }

    /// Runs one statement as a query of the maintenance user, renewing the job's claim
    /// while it runs (a lost claim cancels it: someone else may run the job now).
    async fn run_statement(&self, job: &str, sql: &str, every: Duration) -> Result<(), FlotillaError> {
        let session = ClientSession {
            user: MAINTENANCE_USER.to_string(),
            source: Some(MAINTENANCE_SOURCE.to_string()),
            ..ClientSession::default()
        };
        let headers = vec![
            ("x-trino-user".to_string(), MAINTENANCE_USER.to_string()),
            ("x-trino-source".to_string(), MAINTENANCE_SOURCE.to_string()),
        ];
        let query = self.manager.create(session, headers, sql.to_string());
        let mut status = query.watch();
        let mut renewed = Instant::now();
        loop {
            // Nobody polls this query: it must not be abandoned.
            query.touch();
            if status.borrow().state.is_done() {
                break;
            }
            if renewed.elapsed() >= CLAIM_RENEWAL {
                renewed = Instant::now();
                if let Ok(answer) = self.claim(job, every).await {
                    if answer != JobAnswer::Granted {
                        query.fail(FlotillaError::new(
                            ErrorCode::GenericInternalError,
                            format!("maintenance job {job} lost its claim ({answer:?})"),
                        ));
                    }
                }
            }
            if let Ok(Err(_)) = tokio::time::timeout(CLAIM_RENEWAL, status.changed()).await {
                // The execution task is gone: the state it left is final.
                break;
            }
        }
        let ended = status.borrow();
        match (ended.state, &ended.error) {
            (QueryState::Finished, _) => Ok(()),
            (_, Some(error)) => Err(error.clone()),
            (state, None) => Err(FlotillaError::internal(format!("{sql} ended {state:?}"))),
        }
    }

    async fn claim(&self, job: &str, every: Duration) -> Result<JobAnswer, CallError> {
        let claim = JobClaim {
            job: job.to_string(),
            coordinator: self.local.node_id.clone(),
            instance: self.local.instance.clone(),
            lease_ms: CLAIM_LEASE.as_millis() as u64,
            every_ms: every.as_millis() as u64,
        };
        self.ask_leader(&claim).await
    }

    /// Tells the leader (the first resource manager that knows the claim) the job is done.
    async fn report_done(&self, done: &JobDone) {
        for (_, uri) in self.view.resource_managers() {
            if self.client.post::<_, serde_json::Value>(&uri, JOB_DONE_PATH, done).await.is_ok() {
                return;
            }
        }
    }

    /// Asks the resource managers in node-id order (the leader is the live one with the
    /// smallest) for a claim; a refusal naming the leader sends it there next, one saying
    /// what the leader decided ends it.
    async fn ask_leader(&self, claim: &JobClaim) -> Result<JobAnswer, CallError> {
        let mut errors = Vec::new();
        let mut order: Vec<String> = self.view.resource_managers().into_iter().map(|(_, uri)| uri).collect();
        let mut index = 0;
        while index < order.len() && index < 8 {
            let uri = order[index].clone();
            index += 1;
            match self.client.post::<_, JobAnswer>(&uri, JOB_CLAIM_PATH, claim).await {
                Ok(answer) => return Ok(answer),
                Err(error) => match error.refusal::<JobAnswer>(409) {
                    Some(JobAnswer::NotLeader { uri: leader, .. }) if !order[index..].contains(&leader) => {
                        order.insert(index, leader);
                        errors.push(error);
                    }
                    Some(answer @ (JobAnswer::Running { .. } | JobAnswer::Done { .. } | JobAnswer::NotReady)) => {
                        return Ok(answer)
                    }
                    _ => errors.push(error),
                },
            }
        }
        Err(CallError::all_failed(errors, "no resource manager in the cluster view"))
    }
}
