//! `tpch-memory`: the 22 TPC-H queries on a cluster (one resource manager, one coordinator,
//! two workers, as `flotilla up` starts them) twice: first with the default memory pools,
//! sampling each worker's reserved memory while every query runs, then with every worker's
//! pool at 25% of the largest per-node peak seen. Reports per query: the unlimited time and
//! per-node peak, and in the small pool whether it finished (and how much slower) or which
//! memory error it failed with.
//!
//! Run (after `cargo build --release -p flotilla -p flotilla-bench`):
//! `target/release/tpch-memory --output BENCHMARKS.md`

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla::local_cluster::LocalCluster;
use flotilla_bench::{flotilla_binary, millis, read_queries, tpch_cluster, wait_for_workers};
use flotilla_cli::Client;
use serde_json::Value;

#[derive(Debug, Parser)]
struct Args {
    /// Directory with q01.sql .. q22.sql.
    #[arg(long, default_value = "../shared/tpch/queries")]
    queries: PathBuf,
    /// The tpch schema to run on.
    #[arg(long, default_value = "sf1")]
    schema: String,
    /// The small pool as a fraction of the largest per-node peak.
    #[arg(long, default_value_t = 0.25)]
    fraction: f64,
    /// Markdown file to write the results into (its `tpch-memory` section).
    #[arg(long)]
    output: Option<PathBuf>,
}

const WORKERS: usize = 2;

/// How to read the figures (written under the table).
const READ_WITH_CARE: &str = "Read with care: the queries run one at a time, so no reservation ever waits for another query's memory and the low-memory killer never acts here (the integration tests cover those). The failures are hash-join build sides, which DataFusion cannot spill: q07 and q18 reach the query's per-node limit (the pool size), q21 and q22 the pool's own accounting (FairSpillPool gives spilling operators a fair share, and the query's joins hold the rest). The times are single runs on a shared 2-CPU machine (ratios below 1 are noise).";

fn start(binary: &Path, work: &Path, pool: Option<u64>) -> Result<LocalCluster, String> {
    let config = pool.map(|bytes| format!("memory.pool-size={bytes}B\n")).unwrap_or_default();
    tpch_cluster(binary, &work.join(if pool.is_some() { "small" } else { "default" }), WORKERS, &config)
}

/// How one query went.
#[derive(Debug, Clone)]
enum Outcome {
    Finished { millis: f64, peak: u64 },
    Failed { error: String },
}

/// Runs every query once, sampling the workers' reserved memory every 20 ms meanwhile.
async fn run_all(cluster: &LocalCluster, schema: &str, queries: &[(String, String)]) -> Result<Vec<Outcome>, String> {
    let url = cluster.coordinators[0].url.clone();
    let workers: Vec<String> = cluster.workers.iter().map(|w| w.url.clone()).collect();
    let mut client = Client::new(&url, "bench").map_err(|e| e.to_string())?;
    wait_for_workers(&mut client, WORKERS).await?;
    client.session.catalog = Some("tpch".into());
    client.session.schema = Some(schema.to_string());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let mut outcomes = Vec::new();
    for (name, sql) in queries {
        let peak = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done, http, workers) = (peak.clone(), done.clone(), http.clone(), workers.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    for worker in &workers {
                        if let Ok(response) = http.get(format!("{worker}/v1/status")).send().await {
                            if let Ok(status) = response.json::<Value>().await {
                                let reserved = status["memoryReservedBytes"].as_u64().unwrap_or(0);
                                peak.fetch_max(reserved, Ordering::Relaxed);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let start = Instant::now();
        let result = client.run(sql, |_| {}).await;
        let elapsed = start.elapsed();
        done.store(true, Ordering::Relaxed);
        let _ = sampler.await;
        let outcome = match result {
            Ok(_) => Outcome::Finished { millis: millis(elapsed), peak: peak.load(Ordering::Relaxed) },
            Err(flotilla_cli::ClientError::Query { error, .. }) => {
                Outcome::Failed { error: format!("{}: {}", error.error_name, error.message) }
            }
            Err(error) => Outcome::Failed { error: error.to_string() },
        };
        println!("{name}: {outcome:?}");
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let binary = flotilla_binary()?;
    let queries = read_queries(&args.queries)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let work = std::env::temp_dir().join(format!("flotilla-tpch-memory-{}", std::process::id()));

    let cluster = start(&binary, &work, None)?;
    let unlimited = runtime.block_on(run_all(&cluster, &args.schema, &queries));
    drop(cluster);
    let unlimited = unlimited?;
    let largest = unlimited
        .iter()
        .filter_map(|o| match o {
            Outcome::Finished { peak, .. } => Some(*peak),
            Outcome::Failed { .. } => None,
        })
        .max()
        .unwrap_or(0);
    let pool = ((largest as f64 * args.fraction) as u64).max(4 << 20);
    println!("largest per-node peak {}; small pool {}", mb(largest), mb(pool));

    let cluster = start(&binary, &work, Some(pool))?;
    let small = runtime.block_on(run_all(&cluster, &args.schema, &queries));
    let mut cluster = cluster;
    let workers_alive = cluster.workers.iter_mut().all(|w| w.is_running());
    drop(cluster);
    let _ = std::fs::remove_dir_all(&work);
    let small = small?;

    let mut report = format!(
        "Produced by `target/release/tpch-memory --output BENCHMARKS.md` (release build; 1 \
         coordinator, {WORKERS} workers, `{}`). First run: default pools, each worker's reserved \
         memory sampled every 20 ms; the largest per-node peak was {}. Second run: every \
         worker's `memory.pool-size` = {} ({:.0}% of it), spilling on (the defaults). Workers \
         still alive after the second run: {}.\n\n\
         | query | unlimited ms | per-node peak | small pool: outcome | ms | ratio |\n|---|---|---|---|---|---|\n",
        args.schema,
        mb(largest),
        mb(pool),
        args.fraction * 100.0,
        if workers_alive { "all" } else { "NOT all" },
    );
    let (mut finished, mut spilled_or_squeezed, mut failed) = (0, 0, 0);
    for (((name, _), before), after) in queries.iter().zip(&unlimited).zip(&small) {
        let (before_ms, peak) = match before {
            Outcome::Finished { millis, peak } => (format!("{millis:.0}"), *peak),
            Outcome::Failed { error } => (format!("failed: {error}"), 0),
        };
        let line = match after {
            Outcome::Finished { millis, .. } => {
                finished += 1;
                let how = if peak > pool {
                    spilled_or_squeezed += 1;
                    "finished below its unlimited peak (spilling or sharing)"
                } else {
                    "finished (fits)"
                };
                let ratio = before_ms.parse::<f64>().map(|b| format!("{:.2}", millis / b)).unwrap_or_default();
                format!("| {name} | {before_ms} | {} | {how} | {millis:.0} | {ratio} |\n", mb(peak))
            }
            Outcome::Failed { error } => {
                failed += 1;
                let name_of_error = error.split(':').next().unwrap_or(error).trim().to_string();
                format!("| {name} | {before_ms} | {} | failed: {name_of_error} | | |\n", mb(peak))
            }
        };
        report.push_str(&line);
    }
    report.push_str(&format!(
        "\n{finished} of {} finished in the small pool ({spilled_or_squeezed} of them needed more than the pool at their unlimited peak); {failed} failed.\n\n",
        queries.len()
    ));
    report.push_str(READ_WITH_CARE);
    report.push_str("\n\n");
    print!("{report}");
    if let Some(output) = &args.output {
        flotilla_bench::write_section(
            output,
            "tpch-memory",
            &format!("## TPC-H in a quarter of the memory\n\n{report}"),
        )?;
        println!("wrote {}", output.display());
    }
    Ok(())
}
