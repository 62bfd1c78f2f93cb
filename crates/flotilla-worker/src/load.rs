//! What a worker reports in its heartbeats: its memory pool (DataFusion's, which tasks
//! will reserve from), CPU load sampled with `sysinfo`, and running tasks.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
use flotilla_proto::cluster::{ReportedState, WorkerLoad};
use flotilla_resource_manager::{HeartbeatSource, LocalNode};
use parking_lot::Mutex;
use serde_json::Value;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// The worker's load, read at each heartbeat.
pub struct WorkerLoadSource {
    local: Arc<LocalNode>,
    pool: Arc<dyn MemoryPool>,
    pool_bytes: u64,
    running_tasks: AtomicU32,
    system: Mutex<System>,
    pid: Pid,
    processors: u32,
}

impl std::fmt::Debug for WorkerLoadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLoadSource").field("node", &self.local.node_id).finish_non_exhaustive()
    }
}

impl WorkerLoadSource {
    pub fn new(local: Arc<LocalNode>, pool_bytes: u64) -> Self {
        let processors = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        Self {
            local,
            pool: Arc::new(GreedyMemoryPool::new(pool_bytes as usize)),
            pool_bytes,
            running_tasks: AtomicU32::new(0),
            system: Mutex::new(System::new()),
            pid: sysinfo::get_current_pid().unwrap_or(Pid::from_u32(std::process::id())),
            processors,
        }
    }

    /// The pool tasks reserve their memory from.
    pub fn memory_pool(&self) -> Arc<dyn MemoryPool> {
        self.pool.clone()
    }

    /// Counts a task while it runs.
    pub fn task_started(&self) {
        self.running_tasks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn task_finished(&self) {
        self.running_tasks.fetch_sub(1, Ordering::Relaxed);
    }

    fn sample(&self) -> WorkerLoad {
        let (process_cpu, system_cpu) = {
            let mut system = self.system.lock();
            system.refresh_cpu_usage();
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[self.pid]),
                false,
                ProcessRefreshKind::nothing().with_cpu(),
            );
            let process = system.process(self.pid).map(|p| p.cpu_usage()).unwrap_or(0.0);
            (process as f64 / 100.0 / self.processors as f64, system.global_cpu_usage() as f64 / 100.0)
        };
        let reserved = self.pool.reserved() as u64;
        WorkerLoad {
            memory_pool_bytes: self.pool_bytes,
            memory_reserved_bytes: reserved,
            memory_free_bytes: self.pool_bytes.saturating_sub(reserved),
            process_cpu_load: process_cpu.clamp(0.0, 1.0),
            system_cpu_load: system_cpu.clamp(0.0, 1.0),
            processors: self.processors,
            running_tasks: self.running_tasks.load(Ordering::Relaxed),
            // Per-query reservations appear once tasks run here (distributed execution).
            query_memory: Vec::new(),
        }
    }

    /// `/v1/status`.
    pub fn status(&self) -> Value {
        let mut status = self.local.status();
        let load = self.sample();
        status.insert("memoryPoolBytes".into(), load.memory_pool_bytes.into());
        status.insert("memoryReservedBytes".into(), load.memory_reserved_bytes.into());
        status.insert("processCpuLoad".into(), load.process_cpu_load.into());
        status.insert("systemCpuLoad".into(), load.system_cpu_load.into());
        status.insert("runningTasks".into(), load.running_tasks.into());
        Value::Object(status)
    }
}

impl HeartbeatSource for WorkerLoadSource {
    fn state(&self) -> ReportedState {
        self.local.reported_state()
    }

    fn worker_load(&self) -> Option<WorkerLoad> {
        Some(self.sample())
    }
}
