//! `recovery`: what surviving node deaths costs, in a cluster of 2 resource managers, 2
//! coordinators, 2 workers and a gateway (real processes on loopback).
//!
//! 1. When nothing fails: `SELECT 1` latency straight to a coordinator and through the
//!    gateway (every query is registered with both resource managers before its first
//!    response), and one registration round trip by itself.
//! 2. Per fault kind: a query of about a second through the gateway, the fault injected once
//!    the query runs; its time against the median of undisturbed runs of the same query in
//!    the same cluster. The faulted node is started again (and back in the view) before the
//!    next run.
//!
//! Run (after `cargo build --release -p flotilla -p flotilla-bench`):
//! `target/release/recovery --output BENCHMARKS.md`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla::local_cluster::{LocalCluster, LocalClusterSpec, NodeProcess};
use flotilla_bench::{flotilla_binary, get_json, select_one_latencies as latencies};
use flotilla_gateway::RoutingPolicy;
use flotilla_proto::adoption::{QueryRegistration, REGISTRATION_PATH};
use hdrhistogram::Histogram;
use serde_json::Value;

#[derive(Debug, Parser)]
struct Args {
    /// Runs per fault kind.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Sequential queries for each latency figure.
    #[arg(long, default_value_t = 1000)]
    latency_queries: usize,
    /// The query of about a second each fault hits.
    #[arg(
        long,
        default_value = "SELECT l_returnflag, count(*), sum(l_quantity) FROM tpch.sf1.lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
    )]
    query: String,
    /// Markdown file to write the results into (its `recovery` section).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillWorker,
    KillOwner,
    KillLeader,
    DrainWorker,
    DrainOwner,
}

impl Fault {
    const ALL: [Fault; 5] =
        [Fault::KillWorker, Fault::KillOwner, Fault::KillLeader, Fault::DrainWorker, Fault::DrainOwner];

    fn describe(self) -> &'static str {
        match self {
            Fault::KillWorker => "a worker SIGKILLed (query run again on the others)",
            Fault::KillOwner => "the query's coordinator SIGKILLed (query adopted)",
            Fault::KillLeader => "the admission leader (resource manager) SIGKILLed",
            Fault::DrainWorker => "a worker drained (SIGTERM)",
            Fault::DrainOwner => "the query's coordinator drained (SIGTERM)",
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("a plain client builds")
}

/// One registration (the body a `SELECT 1` registers) to both resource managers at once, as
/// a coordinator sends it, `queries` times; microseconds.
async fn registrations(cluster: &LocalCluster, queries: usize) -> Result<Histogram<u64>, String> {
    let auth = flotilla_proto::InternalAuth::new(&cluster.secret, "bench").map_err(|e| e.to_string())?;
    let client = flotilla_node::InternalClient::new(std::sync::Arc::new(auth), Duration::from_secs(2));
    let managers: Vec<String> = cluster.resource_managers.iter().map(|m| m.url.clone()).collect();
    let mut histogram = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for n in 0..queries + 50 {
        let registration = QueryRegistration {
            query_id: format!("20261201_000000_{:05}_bench", n % 100_000),
            slug: "ybench".into(),
            sql: "SELECT 1".into(),
            session_headers: vec![("x-trino-user".into(), "bench".into())],
            create_time_ms: 0,
            owner: "bench".into(),
            owner_instance: "bench".into(),
            owner_uri: "http://127.0.0.1:1".into(),
            epoch: 0,
            write: false,
            started: false,
        };
        let registration = std::sync::Arc::new(registration);
        let start = Instant::now();
        let calls: Vec<_> = managers
            .iter()
            .map(|uri| {
                let (client, uri, registration) = (client.clone(), uri.clone(), registration.clone());
                tokio::spawn(
                    async move { client.post::<_, Value>(&uri, REGISTRATION_PATH, registration.as_ref()).await },
                )
            })
            .collect();
        for call in calls {
            call.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        if n >= 50 {
            histogram.record(start.elapsed().as_micros() as u64).map_err(|e| e.to_string())?;
        }
    }
    Ok(histogram)
}

/// Submits `sql` at `url`: its first response.
async fn submit(client: &reqwest::Client, url: &str, sql: &str) -> Result<Value, String> {
    client
        .post(format!("{url}/v1/statement"))
        .header("X-Trino-User", "bench")
        .body(sql.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

/// Submits `sql` at `url` and follows it to the end: (rows, seconds).
async fn run_query(url: &str, sql: &str) -> Result<(Vec<Value>, f64), String> {
    let client = http();
    let start = Instant::now();
    let first = submit(&client, url, sql).await?;
    follow(&client, first, start).await
}

async fn follow(client: &reqwest::Client, first: Value, start: Instant) -> Result<(Vec<Value>, f64), String> {
    let mut rows = Vec::new();
    let mut response = first;
    loop {
        if let Some(data) = response["data"].as_array() {
            rows.extend(data.iter().cloned());
        }
        if let Some(error) = response.get("error") {
            return Err(format!("query failed: {error}"));
        }
        let Some(next) = response["nextUri"].as_str().map(str::to_string) else { break };
        response = poll(client, &next).await?;
    }
    Ok((rows, start.elapsed().as_secs_f64()))
}

/// GETs `uri` as Trino clients do: a 502, 503 or 504 (a coordinator that died mid-request,
/// a query being adopted) is asked again, a few times, after a pause.
async fn poll(client: &reqwest::Client, uri: &str) -> Result<Value, String> {
    let mut attempts = 0;
    loop {
        let response = client.get(uri).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if matches!(status, 502..=504) && attempts < 10 {
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
            continue;
        }
        if status != 200 {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("GET {uri}: {status} {text}"));
        }
        return response.json().await.map_err(|e| e.to_string());
    }
}

/// Waits until the gateway's view lists `expected` active nodes and 2 coordinators.
async fn wait_healthy(gateway: &str, expected: usize) -> Result<(), String> {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let nodes = get_json(&client, &format!("{gateway}/v1/node")).await.unwrap_or_default();
        let status = get_json(&client, &format!("{gateway}/v1/gateway")).await.unwrap_or_default();
        let coordinators = status["coordinators"].as_array().map_or(0, Vec::len);
        if nodes.as_array().map_or(0, Vec::len) >= expected && coordinators == 2 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the cluster did not come back".into())
}

fn terminate(process: &NodeProcess) {
    let _ = std::process::Command::new("kill").args(["-TERM", &process.pid().to_string()]).status();
}

async fn wait_exited(process: &mut NodeProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while process.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node a fault hits: (role, index in the cluster's list).
fn node_mut(cluster: &mut LocalCluster, role: Role, index: usize) -> &mut NodeProcess {
    match role {
        Role::Worker => &mut cluster.workers[index],
        Role::ResourceManager => &mut cluster.resource_managers[index],
        Role::Coordinator => &mut cluster.coordinators[index],
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Worker,
    ResourceManager,
    Coordinator,
}

/// node id -> coordinator id, from the view.
async fn coordinator_ids(gateway: &str) -> Result<Vec<(String, String)>, String> {
    let nodes = get_json(&http(), &format!("{gateway}/v1/node")).await?;
    Ok(nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["nodeId"].as_str()?.to_string(), n["coordinatorId"].as_str()?.to_string())))
        .collect())
}

/// One run of the query with `fault` injected once it runs; the faulted node is started
/// again (and back in the view) afterwards.
async fn faulted_run(cluster: &mut LocalCluster, gateway: &str, sql: &str, fault: Fault) -> Result<Faulted, String> {
    let client = http();
    let start = Instant::now();
    let first = submit(&client, gateway, sql).await?;
    let id = first["id"].as_str().unwrap_or_default().to_string();
    let running = {
        let client = client.clone();
        tokio::spawn(async move { follow(&client, first, start).await })
    };
    // Wait until it runs, then a little more, so the fault lands mid-query.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let info = get_json(&client, &format!("{gateway}/v1/query/{id}")).await.unwrap_or_default();
        if info["state"] == "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let owner_suffix = id.rsplit('_').next().unwrap_or_default().to_string();
    let owner_node = coordinator_ids(gateway).await?.into_iter().find(|(_, c)| *c == owner_suffix).map(|(n, _)| n);
    let owner = cluster.coordinators.iter().position(|c| Some(&c.spec.node_id) == owner_node.as_ref());
    let (role, index) = match fault {
        Fault::KillWorker | Fault::DrainWorker => (Role::Worker, 0),
        Fault::KillLeader => (Role::ResourceManager, 0),
        Fault::KillOwner | Fault::DrainOwner => (Role::Coordinator, owner.ok_or("the query's owner is unknown")?),
    };
    match fault {
        Fault::KillWorker | Fault::KillLeader | Fault::KillOwner => node_mut(cluster, role, index).kill(),
        Fault::DrainWorker | Fault::DrainOwner => terminate(node_mut(cluster, role, index)),
    }
    let (rows, seconds) = running.await.map_err(|e| e.to_string())??;
    // How the query got through: run again after losing a worker, or adopted.
    let info = poll(&client, &format!("{gateway}/v1/query/{id}")).await.unwrap_or_default();
    let retried = info["failedAttempts"].as_array().map_or(0, Vec::len);
    let adopted = !info["adoptedFrom"].is_null();
    let (binary, secret, logs) = (cluster.binary.clone(), cluster.secret.clone(), cluster.log_dir.clone());
    let process = node_mut(cluster, role, index);
    wait_exited(process).await;
    let mut spec = process.spec.clone();
    spec.port = process.port();
    *process = NodeProcess::spawn(&binary, &spec, &secret, &logs, Duration::from_secs(60))?;
    Ok(Faulted { seconds, rows, retried, adopted })
}

/// One faulted run: its time, its answer, and how it got through.
struct Faulted {
    seconds: f64,
    rows: Vec<Value>,
    /// Attempts that failed (lost a worker) and were run again.
    retried: usize,
    adopted: bool,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = flotilla_bench::runtime()?;
    let work = std::env::temp_dir().join(format!("flotilla-recovery-bench-{}", std::process::id()));
    let etc = work.join("etc");
    std::fs::create_dir_all(etc.join("catalog")).map_err(|e| e.to_string())?;
    std::fs::write(etc.join("catalog/tpch.properties"), "connector.name=tpch\ntpch.column-naming=STANDARD\n")
        .map_err(|e| e.to_string())?;
    let spec = LocalClusterSpec {
        resource_managers: 2,
        coordinators: 2,
        workers: 2,
        gateways: 1,
        routing_policy: RoutingPolicy::RoundRobin,
        client_port: 0,
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        etc_dir: Some(etc),
        log_dir: work.join("logs"),
        one_resource_manager_each: false,
        worker_labels: Vec::new(),
        env: vec![("RUST_LOG".into(), "warn".into())],
    };
    let mut cluster = LocalCluster::start(&flotilla_binary()?, &spec)?;
    let result = runtime.block_on(measure(&args, &mut cluster));
    cluster.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&work);
    let report = result?;
    println!("{report}");
    if let Some(output) = &args.output {
        flotilla_bench::write_section(output, "recovery", &report)?;
    }
    Ok(())
}

async fn measure(args: &Args, cluster: &mut LocalCluster) -> Result<String, String> {
    let gateway = cluster.client_url().to_string();
    let direct = cluster.coordinators[0].url.clone();
    let nodes = 2 + 2 + 2;
    wait_healthy(&gateway, nodes).await?;
    let direct_latency = latencies(&direct, args.latency_queries).await?;
    let gateway_latency = latencies(&gateway, args.latency_queries).await?;
    let registration = registrations(cluster, args.latency_queries).await?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut report = format!(
        "## Surviving node deaths\n\n\
         Produced by `target/release/recovery --output BENCHMARKS.md` (release build). Every role is its own process \
         on loopback (2 resource managers, 2 coordinators, 2 workers, 1 gateway) on one machine with {cores} CPUs, \
         shared with this load generator.\n\n\
         ### When nothing fails\n\n\
         Every query is registered with both resource managers before its first response (so another coordinator \
         can adopt it). {} sequential `SELECT 1`:\n\n\
         | measure | p50 | p99 |\n|---|---|---|\n\
         | `SELECT 1` straight to a coordinator | {:.2} ms | {:.2} ms |\n\
         | `SELECT 1` through the gateway | {:.2} ms | {:.2} ms |\n\
         | the registration alone (both resource managers, in parallel) | {:.2} ms | {:.2} ms |\n\n",
        args.latency_queries,
        ms(&direct_latency, 0.5),
        ms(&direct_latency, 0.99),
        ms(&gateway_latency, 0.5),
        ms(&gateway_latency, 0.99),
        ms(&registration, 0.5),
        ms(&registration, 0.99),
    );
    // Undisturbed runs of the query, for the reference time and answer.
    let mut plain = Vec::new();
    let mut answer = Vec::new();
    for _ in 0..args.repeats.max(3) {
        let (rows, seconds) = run_query(&gateway, &args.query).await?;
        plain.push(seconds);
        answer = rows;
    }
    let reference = median(&mut plain);
    report.push_str(&format!(
        "### Recovery per fault\n\n\
         The query `{}` through the gateway (undisturbed: {:.2} s, median of {}); the fault lands 200 ms after it \
         starts running; the faulted node is started again before the next run. Extra = the faulted run's time - \
         the undisturbed median (median and worst of {} runs); every faulted run must return the undisturbed \
         answer.\n\n\
         | fault | extra (median) | extra (worst) | runs retried | runs adopted | same answer |\n|---|---|---|---|---|---|\n",
        args.query,
        reference,
        plain.len(),
        args.repeats
    ));
    let mut after_restart = Vec::new();
    for fault in Fault::ALL {
        let mut extras = Vec::new();
        let mut same = true;
        let (mut retried, mut adopted) = (0, 0);
        for _ in 0..args.repeats {
            let run = faulted_run(cluster, &gateway, &args.query, fault).await?;
            same &= run.rows == answer;
            extras.push(run.seconds - reference);
            retried += usize::from(run.retried > 0);
            adopted += usize::from(run.adopted);
            wait_healthy(&gateway, nodes).await?;
            // The restarted node's heartbeats settle (and a new admission leader's lease
            // period passes) before the next run.
            tokio::time::sleep(Duration::from_secs(4)).await;
            // The first query after the restart, undisturbed: what a restart costs on its
            // own, kept out of the next faulted run.
            let (_, seconds) = run_query(&gateway, &args.query).await?;
            after_restart.push(seconds - reference);
        }
        let worst = extras.iter().copied().fold(f64::MIN, f64::max);
        let line = format!(
            "| {} | {:.2} s | {:.2} s | {retried} | {adopted} | {} |\n",
            fault.describe(),
            median(&mut extras),
            worst,
            if same { "yes" } else { "NO" }
        );
        print!("{line}");
        report.push_str(&line);
    }
    let worst = after_restart.iter().copied().fold(f64::MIN, f64::max);
    report.push_str(&format!(
        "\nThe first undisturbed query after each restart (the faulted node back in the view for 4 s): extra {:.2} s \
         median, {:.2} s worst, over {} restarts.\n",
        median(&mut after_restart),
        worst,
        after_restart.len()
    ));
    report.push_str(
        "\nRead with care: one query at a time on shared cores, so a few tenths of a second either way \
         (negative extras included) are noise. A lost worker costs mostly `retry-initial-delay` (1 s by \
         default) before the query runs again; an adopted query runs again from its start on the adopter \
         (its cost grows with how far it had got); a dead resource manager, even the admission leader, \
         costs a running query nothing.\n\n",
    );
    Ok(report)
}
