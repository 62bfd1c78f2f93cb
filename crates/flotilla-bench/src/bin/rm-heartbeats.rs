//! Drives one resource manager with simulated heartbeats: N workers at 1 Hz each, plus
//! coordinators reporting 1,000 new queries/s (and their completion as deltas) and fetching
//! the cluster view once a second each, as real coordinators do; records the resource
//! manager's CPU per heartbeat, request latency and memory.
//!
//! The resource manager runs in a child process (this binary with `--serve`) on a
//! single-threaded runtime, so its CPU and memory are read from /proc apart from the load
//! generator's.
//!
//! Run: `cargo run --release -p flotilla-bench --bin rm-heartbeats -- --output BENCHMARKS.md`

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_bench::cpu_seconds;
use flotilla_node::InternalClient;
use flotilla_proto::cluster::{
    CoordinatorReport, Heartbeat, NodeAnnouncement, NodeRole, QueryIdentity, QueryProgress, QuerySummary, QueryUpdate,
    ReportedState, WorkerLoad, CLUSTER_VIEW_PATH, HEARTBEAT_PATH,
};
use flotilla_proto::{InternalAuth, NodeConfig};
use flotilla_resource_manager::ResourceManagerConfig;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

const SECRET_ENV: &str = "FLOTILLA_BENCH_SECRET";

#[derive(Debug, Parser)]
struct Args {
    /// Simulated worker counts, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    workers: Vec<usize>,
    /// New queries per second (reported by 10 simulated coordinators).
    #[arg(long, default_value_t = 1000)]
    queries_per_second: usize,
    /// Seconds of load per phase (after a warm-up second).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Markdown file to update (its `resource-manager` section).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Threads of the load generator (default: one per core; the resource manager's single
    /// thread shares them, and on a 2-core machine one generator thread cannot offer
    /// 10,000 heartbeats/s).
    #[arg(long)]
    generator_threads: Option<usize>,
    /// Internal: run the resource manager and print its URL.
    #[arg(long, hide = true)]
    serve: bool,
}

fn serve() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut node = NodeConfig { node_id: Some("bench-rm".into()), ..Default::default() };
        node.shared_secret = std::env::var(SECRET_ENV).ok();
        let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let running =
            flotilla_resource_manager::start_resource_manager(node, ResourceManagerConfig::default(), address)
                .await
                .map_err(|e| e.to_string())?;
        println!("{}", running.url());
        // Exit when the parent closes stdin.
        let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())).await;
        running.shutdown().await;
        Ok(())
    })
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn announcement(node_id: String, role: NodeRole) -> NodeAnnouncement {
    NodeAnnouncement {
        http_uri: format!("http://10.0.0.1:8080/{node_id}"),
        node_id,
        instance: "bench".into(),
        start_time_ms: 1,
        roles: vec![role],
        data_uri: None,
        coordinator_id: None,
        version: flotilla_proto::FLOTILLA_VERSION.into(),
        environment: "flotilla".into(),
        warehouse: "default".into(),
        worker_group: "default".into(),
    }
}

fn query_id(coordinator: usize, n: u64) -> String {
    format!("20261122_000000_{n:05}_c{coordinator:04}")
}

fn query(coordinator: usize, n: u64, state: &str) -> QuerySummary {
    QuerySummary {
        identity: QueryIdentity {
            query_id: query_id(coordinator, n),
            user: "bench".into(),
            source: Some("rm-heartbeats".into()),
            resource_group: "global".into(),
            warehouse: "default".into(),
            query: "SELECT l_returnflag, sum(l_quantity) FROM tpch.sf1.lineitem GROUP BY 1".into(),
            create_time_ms: 1,
        },
        progress: QueryProgress {
            state: state.into(),
            start_time_ms: Some(1),
            end_time_ms: None,
            cpu_time_ms: 10,
            peak_memory_bytes: 1 << 20,
            progress_percentage: None,
            error_code: None,
        },
        coordinator: String::new(),
        version: n * 2,
        epoch: 0,
    }
}

/// Heartbeat outcomes: latencies of those handled, and how many failed.
struct Tally {
    latency: Histogram<u64>,
    handled: u64,
    failures: u64,
}

impl Tally {
    fn new() -> Self {
        // Three significant digits is a valid histogram configuration.
        Self { latency: Histogram::new(3).expect("valid histogram"), handled: 0, failures: 0 }
    }

    fn record(&mut self, result: Result<u64, String>) {
        match result {
            Ok(micros) => {
                self.handled += 1;
                self.latency.record(micros.max(1)).ok();
            }
            Err(_) => self.failures += 1,
        }
    }
}

struct PhaseResult {
    workers: usize,
    view_latency: Histogram<u64>,
    view_bytes: usize,
    tally: Tally,
    seconds: f64,
    cpu_seconds: f64,
    rss_bytes: u64,
}

async fn phase(args: &Args, workers: usize) -> Result<PhaseResult, String> {
    let secret = InternalAuth::generate_secret();
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("--serve")
        .env(SECRET_ENV, &secret)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut url = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut url).map_err(|e| e.to_string())?;
    let url = url.trim().to_string();
    let pid = child.id();
    let client = InternalClient::new(Arc::new(InternalAuth::new(&secret, "bench").unwrap()), Duration::from_secs(10));
    let coordinators = 10usize;
    let queries_per_beat = (args.queries_per_second / coordinators) as u64;
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let mut tally = Tally::new();
    let (sender, mut results) = tokio::sync::mpsc::unbounded_channel::<Result<u64, String>>();
    let (view_sender, mut view_results) = tokio::sync::mpsc::unbounded_channel::<(u64, usize)>();
    let total_seconds = args.seconds + 1;
    let mut cpu_start = 0.0;
    let mut measured_from = Instant::now();
    for second in 0..total_seconds {
        if second == 1 {
            // Warm-up over: every node is known, connections are open.
            while results.try_recv().is_ok() {}
            cpu_start = cpu_seconds(pid);
            measured_from = Instant::now();
            tally = Tally::new();
        }
        let second_start = Instant::now();
        for c in 0..coordinators {
            // Each coordinator refreshes its cached view once a second.
            let client = client.clone();
            let url = url.clone();
            let view_sender = view_sender.clone();
            let due = second_start + Duration::from_secs_f64(c as f64 / coordinators as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                let started = Instant::now();
                if let Ok(view) = client.get::<serde_json::Value>(&url, CLUSTER_VIEW_PATH).await {
                    let bytes = serde_json::to_vec(&view).map(|v| v.len()).unwrap_or(0);
                    let _ = view_sender.send((started.elapsed().as_micros() as u64, bytes));
                }
            });
        }
        let beats = workers + coordinators;
        for i in 0..beats {
            // Spread the second's heartbeats evenly, as 1 Hz nodes with random phases would.
            let due = second_start + Duration::from_secs_f64(i as f64 / beats as f64);
            tokio::time::sleep_until(due.into()).await;
            let heartbeat = if i < workers {
                Heartbeat {
                    node: announcement(format!("worker-{i:05}"), NodeRole::Worker),
                    seq: second + 1,
                    state: ReportedState::Active,
                    worker: Some(WorkerLoad {
                        memory_pool_bytes: 64 << 30,
                        memory_reserved_bytes: (i as u64 % 7) << 30,
                        memory_free_bytes: 60 << 30,
                        process_cpu_load: 0.5,
                        system_cpu_load: 0.6,
                        processors: 32,
                        running_tasks: (i % 13) as u32,
                        query_memory: Vec::new(),
                        memory_blocked_ms: 0,
                    }),
                    coordinator: None,
                }
            } else {
                let c = i - workers;
                let first = second * queries_per_beat;
                // This second's queries arrive in full; last second's finish as deltas.
                let report = CoordinatorReport {
                    base_version: second * queries_per_beat * 2,
                    version: (second + 1) * queries_per_beat * 2,
                    new_queries: (first..first + queries_per_beat).map(|n| query(c, n, "RUNNING")).collect(),
                    updates: (first.saturating_sub(queries_per_beat)..first)
                        .map(|n| QueryUpdate {
                            query_id: query_id(c, n),
                            version: n * 2 + 1,
                            progress: QueryProgress { end_time_ms: Some(2), ..query(c, n, "FINISHED").progress },
                        })
                        .collect(),
                    resource_groups: Vec::new(),
                };
                Heartbeat {
                    node: announcement(format!("coordinator-{c}"), NodeRole::Coordinator),
                    seq: second + 1,
                    state: ReportedState::Active,
                    worker: None,
                    coordinator: Some(report),
                }
            };
            let permit = limit.clone().acquire_owned().await.map_err(|e| e.to_string())?;
            let client = client.clone();
            let url = url.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result: Result<serde_json::Value, String> =
                    client.post(&url, HEARTBEAT_PATH, &heartbeat).await.map_err(|e| e.to_string());
                drop(permit);
                let _ = sender.send(result.map(|_| started.elapsed().as_micros() as u64));
            });
            while let Ok(result) = results.try_recv() {
                tally.record(result);
            }
        }
    }
    let _ = limit.acquire_many(args.concurrency as u32).await;
    let seconds = measured_from.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_start;
    // The last view fetches may still be under way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(sender);
    drop(view_sender);
    let mut view_latency = Histogram::<u64>::new(3).expect("valid histogram");
    let mut view_bytes = 0;
    while let Some((micros, bytes)) = view_results.recv().await {
        view_latency.record(micros.max(1)).ok();
        view_bytes = view_bytes.max(bytes);
    }
    while let Some(result) = results.recv().await {
        tally.record(result);
    }
    let rss = rss_bytes(pid);
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(PhaseResult { workers, view_latency, view_bytes, tally, seconds, cpu_seconds: cpu, rss_bytes: rss })
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.serve {
        return serve();
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let generator_threads = args.generator_threads.unwrap_or(cores).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(generator_threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut table = String::from(
        "| simulated workers | heartbeats/s handled | failed | RM CPU per heartbeat | RM CPU (cores) | heartbeat p50 | heartbeat p99 | view size | view fetch p99 | RM memory (RSS) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &workers in &args.workers {
        let result = runtime.block_on(phase(&args, workers))?;
        let rate = result.tally.handled as f64 / result.seconds;
        let per_beat_us = result.cpu_seconds * 1e6 / result.tally.handled.max(1) as f64;
        let cores = result.cpu_seconds / result.seconds;
        let line = format!(
            "| {} | {:.0} | {} | {:.1} µs | {:.2} | {:.2} ms | {:.2} ms | {:.1} MiB | {:.1} ms | {:.0} MiB |",
            result.workers,
            rate,
            result.tally.failures,
            per_beat_us,
            cores,
            result.tally.latency.value_at_quantile(0.5) as f64 / 1000.0,
            result.tally.latency.value_at_quantile(0.99) as f64 / 1000.0,
            result.view_bytes as f64 / (1 << 20) as f64,
            result.view_latency.value_at_quantile(0.99) as f64 / 1000.0,
            result.rss_bytes as f64 / (1 << 20) as f64,
        );
        println!("{line}");
        table.push_str(&line);
        table.push('\n');
    }
    if let Some(output) = &args.output {
        let section = format!(
            "## Resource manager heartbeats\n\nProduced by `cargo run --release -p flotilla-bench --bin rm-heartbeats -- --output BENCHMARKS.md`. \
             One resource manager (child process, single-threaded runtime: one core at most) receives heartbeats from N simulated workers at 1 Hz \
             plus 10 simulated coordinators reporting {} new queries/s in full and their completion as deltas and each fetching the cluster view once a second, over signed loopback HTTP, \
             {} s per phase after 1 s of warm-up, on a machine with {cores} cores (load generator: {generator_threads} threads). Where fewer heartbeats/s were handled than offered, the load generator was the limit (see the resource manager's CPU). CPU is the resource manager process's (from /proc), view fetches included, divided by heartbeats; latency is per request at the client \
             (HTTP included); the load generator runs on the same cores, so latencies include its contention. Offered load is N + 10 heartbeats/s.\n\n{table}\n",
            args.queries_per_second, args.seconds
        );
        flotilla_bench::write_section(output, "resource-manager", &section)?;
        println!("wrote {}", output.display());
    }
    Ok(())
}
