//! `gateway-throughput`: trivial queries (`SELECT 1`) through a gateway in front of 1, 2 and
//! 3 coordinators (real processes, as `flotilla up` starts them: one resource manager, the
//! coordinators, one gateway), with the CPU each process spent per query, and what the
//! gateway adds to a query's latency (sequential p50 through the gateway vs straight to a
//! coordinator, same cluster, same run).
//!
//! Run (after `cargo build --release -p flotilla -p flotilla-bench`):
//! `target/release/gateway-throughput --output BENCHMARKS.md`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla::local_cluster::{LocalCluster, LocalClusterSpec};
use flotilla_bench::{cpu_seconds, flotilla_binary, select_one_latencies as latencies};
use flotilla_cli::Client;
use flotilla_gateway::RoutingPolicy;
use serde_json::Value;

#[derive(Debug, Parser)]
struct Args {
    /// Coordinator counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    coordinators: Vec<usize>,
    /// Concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Sequential queries for each latency figure.
    #[arg(long, default_value_t = 1000)]
    latency_queries: usize,
    /// Markdown file to write the results into (its `gateway` section).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Queries completed by `clients` concurrent clients in `seconds`.
async fn throughput(url: &str, clients: usize, seconds: u64) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for index in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(&url, &format!("bench{index}")).map_err(|e| e.to_string())?;
            let mut done = 0u64;
            while Instant::now() < deadline {
                client.run("SELECT 1", |_| {}).await.map_err(|e| e.to_string())?;
                done += 1;
            }
            Ok::<u64, String>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| e.to_string())??;
    }
    Ok(total)
}

/// Waits until the gateway routes to `expected` coordinators.
async fn wait_for_gateway(url: &str, expected: usize) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/v1/gateway")).send().await {
            if let Ok(status) = response.json::<Value>().await {
                if status["coordinators"].as_array().is_some_and(|c| c.len() == expected) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the gateway never saw {expected} coordinators"))
}

struct Run {
    coordinators: usize,
    qps: f64,
    gateway_cpu_ms: f64,
    coordinator_cpu_ms: f64,
    direct_p50: f64,
    gateway_p50: f64,
    gateway_p99: f64,
}

fn measure(args: &Args, runtime: &tokio::runtime::Runtime, coordinators: usize) -> Result<Run, String> {
    let logs = std::env::temp_dir().join(format!("flotilla-gateway-bench-{}", std::process::id()));
    let spec = LocalClusterSpec {
        resource_managers: 1,
        coordinators,
        workers: 0,
        gateways: 1,
        routing_policy: RoutingPolicy::RoundRobin,
        client_port: 0,
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        etc_dir: None,
        log_dir: logs.clone(),
        one_resource_manager_each: false,
        worker_labels: Vec::new(),
        env: vec![("RUST_LOG".into(), "warn".into())],
    };
    let mut cluster = LocalCluster::start(&flotilla_binary()?, &spec)?;
    let gateway = cluster.client_url().to_string();
    let direct = cluster.coordinators[0].url.clone();
    let run = runtime.block_on(async {
        wait_for_gateway(&gateway, coordinators).await?;
        let direct_latency = latencies(&direct, args.latency_queries).await?;
        let gateway_latency = latencies(&gateway, args.latency_queries).await?;
        let pids: Vec<u32> = cluster.coordinators.iter().map(|c| c.pid()).collect();
        let gateway_pid = cluster.gateways[0].pid();
        let coordinator_cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        let gateway_cpu_before = cpu_seconds(gateway_pid);
        let done = throughput(&gateway, args.clients, args.seconds).await?;
        let coordinator_cpu = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - coordinator_cpu_before;
        let gateway_cpu = cpu_seconds(gateway_pid) - gateway_cpu_before;
        let per_query = |seconds: f64| seconds * 1000.0 / done.max(1) as f64;
        Ok::<_, String>(Run {
            coordinators,
            qps: done as f64 / args.seconds as f64,
            gateway_cpu_ms: per_query(gateway_cpu),
            coordinator_cpu_ms: per_query(coordinator_cpu),
            direct_p50: direct_latency.value_at_quantile(0.5) as f64 / 1000.0,
            gateway_p50: gateway_latency.value_at_quantile(0.5) as f64 / 1000.0,
            gateway_p99: gateway_latency.value_at_quantile(0.99) as f64 / 1000.0,
        })
    });
    cluster.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&logs);
    run
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = flotilla_bench::runtime()?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut report = format!(
        "Produced by `target/release/gateway-throughput --output BENCHMARKS.md` (release build). \
         Every role is its own process on loopback: one resource manager, the coordinators, one \
         gateway (round-robin), and this load generator ({} clients running `SELECT 1` back to \
         back for {} s through the gateway), all on one machine with {cores} CPUs, so the \
         processes compete for the same cores. Latency: {} sequential queries, straight to a \
         coordinator and through the gateway, in the same cluster and run; CPU per query: \
         user+system time of the processes during the throughput run / queries.\n\n\
         | coordinators | queries/s | gateway CPU per query | coordinators' CPU per query | p50 direct | p50 through gateway | gateway adds (p50) | p99 through gateway |\n\
         |---|---|---|---|---|---|---|---|\n",
        args.clients, args.seconds, args.latency_queries
    );
    for &coordinators in &args.coordinators {
        let run = measure(&args, &runtime, coordinators)?;
        println!(
            "{} coordinator(s): {:.0} queries/s, gateway {:.3} ms CPU/query, coordinators {:.3} ms CPU/query, p50 direct {:.2} ms, via gateway {:.2} ms",
            run.coordinators, run.qps, run.gateway_cpu_ms, run.coordinator_cpu_ms, run.direct_p50, run.gateway_p50
        );
        report.push_str(&format!(
            "| {} | {:.0} | {:.3} ms | {:.3} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            run.coordinators,
            run.qps,
            run.gateway_cpu_ms,
            run.coordinator_cpu_ms,
            run.direct_p50,
            run.gateway_p50,
            run.gateway_p50 - run.direct_p50,
            run.gateway_p99
        ));
    }
    report.push_str(&format!(
        "\nRead with care: throughput can only grow with coordinators while there are idle cores. \
         Here {cores} CPUs run the load generator, the gateway, the resource manager and every \
         coordinator, so one coordinator already saturates the machine and more coordinators \
         only share the same cores (and add their own heartbeats and view refreshes). Run it on a \
         machine with more cores than processes to see the scaling.\n\n"
    ));
    if let Some(output) = &args.output {
        flotilla_bench::write_section(
            output,
            "gateway",
            &format!("## Trivial queries through the gateway\n\n{report}"),
        )?;
        println!("wrote {}", output.display());
    }
    Ok(())
}
