//! What a worker reports in its heartbeats: its memory pool (the one its tasks reserve
//! from), CPU load sampled with `sysinfo`, its running tasks and memory per query.

use std::sync::Arc;

use datafusion::execution::memory_pool::MemoryPool;
use flotilla_node::{HeartbeatSource, LocalNode};
use flotilla_proto::cluster::{MemoryKill, WorkerLoad};
use parking_lot::Mutex;
use serde_json::Value;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::execution::{DataPlane, TaskTracker};

/// The worker's load, read at each heartbeat.
pub struct WorkerLoadSource {
    local: Arc<LocalNode>,
    pool: Arc<dyn MemoryPool>,
    pool_bytes: u64,
    tracker: Arc<TaskTracker>,
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
    pub fn new(local: Arc<LocalNode>, plane: &DataPlane) -> Self {
        let processors = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        Self {
            local,
            pool: plane.pool.clone(),
            pool_bytes: plane.pool_bytes,
            tracker: plane.tracker.clone(),
            system: Mutex::new(System::new()),
            pid: sysinfo::get_current_pid().unwrap_or(Pid::from_u32(std::process::id())),
            processors,
        }
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
            running_tasks: self.tracker.running_tasks() as u32,
            query_memory: self.tracker.query_memory(),
            memory_blocked_ms: self.tracker.memory_blocked_for().as_millis() as u64,
        }
    }

    /// The worker's gauges in its node's metrics, set from a fresh sample at each scrape.
    pub fn register_metrics(self: &Arc<Self>, metrics: &flotilla_node::NodeMetrics) {
        use prometheus_client::metrics::gauge::Gauge;
        let gauges: [(&str, &str, Gauge); 4] = [
            ("worker_memory_pool_bytes", "The worker's memory pool", Gauge::default()),
            ("worker_memory_reserved_bytes", "Memory its tasks reserve now", Gauge::default()),
            ("worker_running_tasks", "Tasks running now", Gauge::default()),
            (
                "worker_memory_blocked_milliseconds",
                "How long reservations have waited on the full pool",
                Gauge::default(),
            ),
        ];
        for (name, help, gauge) in &gauges {
            metrics.register(name, help, gauge.clone());
        }
        let source = self.clone();
        metrics.on_scrape(move || {
            let load = source.sample();
            let values =
                [load.memory_pool_bytes, load.memory_reserved_bytes, load.running_tasks as u64, load.memory_blocked_ms];
            for ((_, _, gauge), value) in gauges.iter().zip(values) {
                gauge.set(value.min(i64::MAX as u64) as i64);
            }
        });
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
        let queries: Vec<Value> = self
            .tracker
            .queries()
            .into_iter()
            .map(|q| {
                serde_json::json!({
                    "queryId": q.query_id,
                    "tasks": q.tasks,
                    "reservedBytes": q.reserved_bytes,
                    "processedRows": q.processed_rows,
                })
            })
            .collect();
        status.insert("queries".into(), Value::Array(queries));
        Value::Object(status)
    }
}

impl HeartbeatSource for WorkerLoadSource {
    fn worker_load(&self) -> Option<WorkerLoad> {
        Some(self.sample())
    }

    fn memory_kills(&self, kills: &[MemoryKill]) {
        for kill in kills {
            self.tracker.kill(&kill.query_id, kill.error());
        }
    }
}
