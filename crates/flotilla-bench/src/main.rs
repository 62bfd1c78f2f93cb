//! `flotilla-bench`: measures Flotilla through its client protocol and compares it with
//! DataFusion run in-process on the same data, in the same run, on the same machine.
//!
//! - trivial-query latency (`SELECT 1`, sequential, p50/p99) and throughput (concurrent
//!   clients), end to end over loopback HTTP with the Rust protocol client;
//! - the 22 TPC-H queries at the given scale factors: Flotilla through the protocol vs a
//!   plain DataFusion `SessionContext` over the same `tpch` tables.
//!
//! Run: `cargo run --release -p flotilla-bench -- --queries ../shared/tpch/queries --output BENCHMARKS.md`

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_bench::{datafusion_tpch, millis, read_queries};
use flotilla_cli::Client;
use flotilla_coordinator::{Coordinator, CoordinatorConfig};
use flotilla_sql::catalog::tpch::scale_factor_of;
use flotilla_sql::catalog::{parse_properties, Catalogs};
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
struct Args {
    /// Directory with q01.sql .. q22.sql.
    #[arg(long, default_value = "../shared/tpch/queries")]
    queries: PathBuf,
    /// tpch schemas to run the TPC-H queries on.
    #[arg(long, value_delimiter = ',', default_value = "tiny,sf1")]
    schemas: Vec<String>,
    /// Sequential `SELECT 1` round trips for the latency figures.
    #[arg(long, default_value_t = 2000)]
    latency_queries: usize,
    /// Concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds the throughput run lasts.
    #[arg(long, default_value_t = 10)]
    throughput_seconds: u64,
    /// Runs of each TPC-H query per engine; the best is reported.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Markdown file to write the results into (replaced).
    #[arg(long)]
    output: Option<PathBuf>,
}

async fn run_protocol(client: &mut Client, sql: &str) -> Result<usize, String> {
    client.run(sql, |_| {}).await.map(|outcome| outcome.rows.len()).map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    // The server gets its own runtime so the load generator does not steal its workers.
    let server_runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let path = PathBuf::from("etc/catalog/tpch.properties");
    let properties =
        parse_properties(&path, "connector.name=tpch\ntpch.column-naming=STANDARD\n").map_err(|e| e.to_string())?;
    let mut catalogs = Catalogs::default();
    catalogs.insert(Catalogs::build(&path, "tpch", properties).map_err(|e| e.to_string())?);
    let running = server_runtime
        .block_on(Coordinator::start(
            CoordinatorConfig::default(),
            catalogs,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ))
        .map_err(|e| e.to_string())?;
    let url = running.url();
    let mut report = String::new();
    let machine = format!(
        "{} CPUs, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        std::env::consts::ARCH
    );
    report.push_str(&format!(
        "Machine: {machine}. Server and load generator in one process, separate runtimes, loopback HTTP.\n\n"
    ));

    // Trivial-query latency, sequential.
    let latency = client_runtime.block_on(async {
        let mut client = Client::new(&url, "bench").map_err(|e| e.to_string())?;
        for _ in 0..50 {
            run_protocol(&mut client, "SELECT 1").await?;
        }
        let mut histogram = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
        let started = Instant::now();
        for _ in 0..args.latency_queries {
            let start = Instant::now();
            run_protocol(&mut client, "SELECT 1").await?;
            histogram.record(start.elapsed().as_micros() as u64).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>((histogram, started.elapsed()))
    })?;
    let (histogram, total) = latency;
    let p50 = histogram.value_at_quantile(0.5) as f64 / 1000.0;
    let p99 = histogram.value_at_quantile(0.99) as f64 / 1000.0;
    let sequential_qps = args.latency_queries as f64 / total.as_secs_f64();
    println!("SELECT 1 sequential: p50 {p50:.2} ms, p99 {p99:.2} ms, {sequential_qps:.0} queries/s");

    // Throughput with concurrent clients.
    let concurrent = client_runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(args.throughput_seconds);
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::new(&url, "bench").map_err(|e| e.to_string())?;
                let mut done = 0u64;
                while Instant::now() < deadline {
                    run_protocol(&mut client, "SELECT 1").await?;
                    done += 1;
                }
                Ok::<u64, String>(done)
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.map_err(|e| e.to_string())??;
        }
        Ok::<u64, String>(total)
    })?;
    let concurrent_qps = concurrent as f64 / args.throughput_seconds as f64;
    println!("SELECT 1 with {} clients: {concurrent_qps:.0} queries/s", args.clients);
    report.push_str("## Trivial query through the protocol\n\n| measure | value |\n|---|---|\n");
    report.push_str(&format!("| `SELECT 1` p50 (sequential, {} queries) | {p50:.2} ms |\n", args.latency_queries));
    report.push_str(&format!("| `SELECT 1` p99 | {p99:.2} ms |\n"));
    report.push_str(&format!("| sequential throughput (1 client) | {sequential_qps:.0} queries/s |\n"));
    report.push_str(&format!(
        "| throughput ({} clients, {} s) | {concurrent_qps:.0} queries/s |\n\n",
        args.clients, args.throughput_seconds
    ));

    // TPC-H: Flotilla through the protocol vs DataFusion in-process.
    let queries = read_queries(&args.queries)?;
    for schema in &args.schemas {
        let scale = scale_factor_of(schema).ok_or_else(|| format!("not a tpch schema: {schema}"))?;
        let context = datafusion_tpch(scale)?;
        report.push_str(&format!(
            "## TPC-H `{schema}` (scale {scale}): best of {} runs, milliseconds\n\n| query | rows | Flotilla (protocol) | DataFusion (in-process) | ratio |\n|---|---|---|---|---|\n",
            args.runs
        ));
        let (mut total_flotilla, mut total_datafusion) = (0.0, 0.0);
        for (name, sql) in &queries {
            let (flotilla_best, rows) = client_runtime.block_on(async {
                let mut client = Client::new(&url, "bench").map_err(|e| e.to_string())?;
                client.session.catalog = Some("tpch".into());
                client.session.schema = Some(schema.clone());
                let mut best = Duration::MAX;
                let mut rows = 0;
                for _ in 0..args.runs {
                    let start = Instant::now();
                    rows = run_protocol(&mut client, sql).await?;
                    best = best.min(start.elapsed());
                }
                Ok::<_, String>((best, rows))
            })?;
            let datafusion_best = server_runtime.block_on(async {
                let mut best = Duration::MAX;
                for _ in 0..args.runs {
                    let start = Instant::now();
                    let frame = context.sql(sql).await.map_err(|e| e.to_string())?;
                    frame.collect().await.map_err(|e| e.to_string())?;
                    best = best.min(start.elapsed());
                }
                Ok::<_, String>(best)
            })?;
            let (f, d) = (millis(flotilla_best), millis(datafusion_best));
            total_flotilla += f;
            total_datafusion += d;
            println!("{schema} {name}: Flotilla {f:.1} ms, DataFusion {d:.1} ms, ratio {:.2}", f / d);
            report.push_str(&format!("| {name} | {rows} | {f:.1} | {d:.1} | {:.2} |\n", f / d));
        }
        report.push_str(&format!(
            "| **total** | | {total_flotilla:.1} | {total_datafusion:.1} | {:.2} |\n\n",
            total_flotilla / total_datafusion
        ));
    }
    server_runtime.block_on(running.shutdown());
    if let Some(output) = &args.output {
        let header = "Produced by `cargo run --release -p flotilla-bench -- --output BENCHMARKS.md` \
            (a release build; the shared machines are noisy, so compare the ratios within one run, \
            not absolute figures across runs). Ratio = Flotilla time / DataFusion time: the cost of \
            the protocol (JSON encoding, HTTP round trips) and of Flotilla's layers over the same engine.\n\n";
        flotilla_bench::write_section(output, "queries", &format!("{header}{report}"))?;
        println!("wrote {}", output.display());
    }
    Ok(())
}
