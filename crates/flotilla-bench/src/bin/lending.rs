//! `lending`: two workloads on one cluster, with and without elastic lending
//! (`warehouse.lending-enabled`).
//!
//! Two workers, one per warehouse, each pinned to its own CPU with `taskset` (standing for
//! two hosts; without pinning every worker would use every core of this one machine and
//! lending could not show anything): `bi` (a read warehouse) serves a steady stream of
//! dashboard queries from `--clients` clients; `etl` runs one batch query every
//! `--etl-every` seconds and is idle in between. Users pick the warehouse through routing
//! rules. The same load runs for `--seconds` without lending, then with it (a fresh
//! cluster each time); the figures are bi's queries per minute and median latency, etl's
//! median batch latency, and the ratios.
//!
//! Run (after `cargo build --release -p flotilla -p flotilla-bench`):
//! `target/release/lending --output BENCHMARKS.md`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_bench::{flotilla_binary, millis, runtime, tpch_cluster_labelled, wait_for_workers, write_section};
use flotilla_cli::Client;

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients of the bi workload.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long each configuration runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seconds between two etl batches.
    #[arg(long, default_value_t = 15)]
    etl_every: u64,
    #[arg(
        long,
        default_value = "SELECT l_returnflag, l_linestatus, sum(l_quantity), avg(l_discount), count(*) FROM tpch.sf1.lineitem GROUP BY 1, 2 ORDER BY 1, 2"
    )]
    bi_query: String,
    #[arg(long, default_value = "SELECT o_orderpriority, count(*) FROM tpch.sf1.orders GROUP BY 1 ORDER BY 1")]
    etl_query: String,
    /// Markdown file to write the results into (its `lending` section).
    #[arg(long)]
    output: Option<PathBuf>,
}

const WAREHOUSES: &str = r#"{"warehouses": [
    {"name": "bi", "type": "read", "workerGroups": [{"name": "g1"}]},
    {"name": "etl", "type": "write", "workerGroups": [{"name": "g1"}]}
 ],
 "routingRules": [
    {"user": "dash.*", "warehouse": "bi"},
    {"user": "etl.*", "warehouse": "etl"}
]}"#;

const LENDING: &str = "warehouse.lending-enabled=true\nwarehouse.lending-busy-tasks-per-worker=2\n\
    warehouse.lending-busy-time=2s\nwarehouse.lending-idle-time=2s\nwarehouse.lending-min-time=5s\n";

/// What one configuration measured.
#[derive(Debug, Default)]
struct Figures {
    bi: Vec<Duration>,
    etl: Vec<Duration>,
    failed: usize,
    loans_seen: usize,
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn pin(pid: u32, cpu: usize) -> Result<(), String> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if !status.success() {
        return Err(format!("taskset could not pin {pid} to CPU {cpu}"));
    }
    Ok(())
}

async fn measure(args: &Args, lending: bool) -> Result<Figures, String> {
    let binary = flotilla_binary()?;
    let work = std::env::temp_dir().join(format!("flotilla-lending-{}", flotilla_proto::random_hex(6)));
    std::fs::create_dir_all(work.join("etc")).map_err(|e| e.to_string())?;
    std::fs::write(work.join("etc/warehouses.json"), WAREHOUSES).map_err(|e| e.to_string())?;
    let labels = [("bi".to_string(), "g1".to_string()), ("etl".to_string(), "g1".to_string())];
    let config = format!("node-scheduler.include-coordinator=false\n{}", if lending { LENDING } else { "" });
    let mut cluster = tpch_cluster_labelled(&binary, &work, &labels, &config)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (index, worker) in cluster.workers.iter().enumerate() {
        pin(worker.pid(), index % cpus)?;
    }
    let url = cluster.coordinators[0].url.clone();
    let outcome = async {
        let mut probe = Client::new(&url, "probe").map_err(|e| e.to_string())?;
        wait_for_workers(&mut probe, 2).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for index in 0..args.clients {
            let (url, sql, stop) = (url.clone(), args.bi_query.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = Client::new(&url, &format!("dash{index}")).map_err(|e| e.to_string())?;
                let (mut done, mut failed) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    match client.run(&sql, |_| {}).await {
                        Ok(_) if Instant::now() <= deadline => done.push(start.elapsed()),
                        Ok(_) => {}
                        Err(_) => failed += 1,
                    }
                }
                Ok::<_, String>((done, failed, false))
            }));
        }
        let (etl_url, etl_sql, etl_stop, every) =
            (url.clone(), args.etl_query.clone(), stop.clone(), Duration::from_secs(args.etl_every));
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(&etl_url, "etl").map_err(|e| e.to_string())?;
            let (mut done, mut failed) = (Vec::new(), 0);
            while !etl_stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                match client.run(&etl_sql, |_| {}).await {
                    Ok(_) => done.push(start.elapsed()),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(every.saturating_sub(start.elapsed())).await;
            }
            Ok::<_, String>((done, failed, true))
        }));
        // Watch the loans while the load runs.
        let mut loans_seen = 0;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let lent = probe
                .run("SELECT count(*) FROM system.runtime.worker_groups WHERE kind = 'lent'", |_| {})
                .await
                .map_err(|e| e.to_string())?;
            if lent.rows[0][0].as_u64().unwrap_or(0) > 0 {
                loans_seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut figures = Figures { loans_seen, ..Figures::default() };
        for task in tasks {
            let (done, failed, etl) = task.await.map_err(|e| e.to_string())??;
            figures.failed += failed;
            match etl {
                true => figures.etl.extend(done),
                false => figures.bi.extend(done),
            }
        }
        Ok::<_, String>(figures)
    }
    .await;
    cluster.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&work);
    outcome
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = runtime()?;
    let without = runtime.block_on(measure(&args, false))?;
    let with = runtime.block_on(measure(&args, true))?;
    let per_minute = |f: &Figures| f.bi.len() as f64 * 60.0 / args.seconds as f64;
    let mut text = String::from("## Two workloads on one cluster: elastic lending\n\n");
    text.push_str(&format!(
        "Produced by `target/release/lending --output BENCHMARKS.md` (release; 1 resource manager, 1 coordinator, 2 \
         workers each pinned to its own CPU with taskset, standing for two hosts; warehouses `bi` and `etl`, one \
         worker each; {} bi clients in a loop of `{}`; one etl batch `{}` every {} s; {} s per configuration, a fresh \
         cluster each; lending: busy at 2 running tasks per worker for 2 s, idle for 2 s, loans of at least 5 s).\n\n",
        args.clients, args.bi_query, args.etl_query, args.etl_every, args.seconds
    ));
    text.push_str("| | bi queries / min | bi median ms | etl median ms | seconds with a loan | failed |\n|---|---:|---:|---:|---:|---:|\n");
    for (name, f) in [("without lending", &without), ("with lending", &with)] {
        text.push_str(&format!(
            "| {name} | {:.1} | {:.0} | {:.0} | {} | {} |\n",
            per_minute(f),
            millis(median(&f.bi)),
            millis(median(&f.etl)),
            f.loans_seen,
            f.failed
        ));
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    text.push_str(&format!(
        "\nWith lending: bi throughput {:.2}x, bi median latency {:.2}x, etl median latency {:.2}x of without.\n\n",
        ratio(per_minute(&with), per_minute(&without)),
        ratio(millis(median(&with.bi)), millis(median(&without.bi))),
        ratio(millis(median(&with.etl)), millis(median(&without.etl))),
    ));
    print!("{text}");
    if let Some(path) = &args.output {
        write_section(path, "lending", &text)?;
    }
    Ok(())
}
