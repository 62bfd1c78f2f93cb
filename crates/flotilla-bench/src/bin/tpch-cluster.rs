//! `tpch-cluster`: the 22 TPC-H queries on a real Flotilla cluster (separate processes: one
//! resource manager, one coordinator, N workers, as `flotilla up` starts them) against
//! DataFusion in this process and DuckDB (its Python package, `scripts/tpch_reference.py`),
//! all in the same run on the same machine, plus the coordinator's CPU per 1,000 task
//! status updates.
//!
//! Flotilla and DataFusion read the `tpch` tables generated on the fly by tpchgen (the
//! same generator, the same rows); DuckDB reads Parquet files that `flotilla tpch-gen`
//! wrote from that generator beforehand (so its times include Parquet decoding and no
//! generation).
//!
//! Run (after `cargo build --release -p flotilla -p flotilla-bench`, and `./scripts/test`
//! once for the `.venv` with DuckDB):
//! `target/release/tpch-cluster --output BENCHMARKS.md`

use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_bench::{
    cpu_seconds, datafusion_tpch, flotilla_binary, get_json, millis, read_queries, reference_times, same_answer,
    tpch_cluster, tpch_gen, wait_for_workers, TpchArgs,
};
use flotilla_cli::Client;
use flotilla_sql::catalog::tpch::scale_factor_of;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    tpch: TpchArgs,
    /// Write the tables to Parquet first (`CREATE TABLE lake.SCHEMA.t AS SELECT * FROM
    /// tpch.SCHEMA.t`, on the workers), run Flotilla over those files, and DuckDB over the
    /// same files.
    #[arg(long)]
    parquet: bool,
}

const TABLES: [&str; 8] = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"];

fn main() -> Result<(), String> {
    let args = Args::parse();
    let scale = scale_factor_of(&args.tpch.schema).ok_or_else(|| format!("not a tpch schema: {}", args.tpch.schema))?;
    let binary = flotilla_binary()?;
    let queries = read_queries(&args.tpch.queries)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;

    // DuckDB first, alone on the machine (with --parquet, after Flotilla wrote the files).
    let work = std::env::temp_dir().join(format!("flotilla-tpch-cluster-{}", std::process::id()));
    let written = work.join("lake").join(&args.tpch.schema);
    let generated = args.tpch.data_dir.join(&args.tpch.schema);
    let mut duckdb = match args.parquet {
        true => Err("not run yet".to_string()),
        false => tpch_gen(&binary, scale, &generated).and_then(|()| {
            reference_times(&args.tpch.python, "duckdb", &generated, &args.tpch.queries, args.tpch.runs, 0)
        }),
    };
    if let (false, Err(error)) = (args.parquet, &duckdb) {
        println!("DuckDB skipped: {error}");
    }

    let cluster = tpch_cluster(&binary, &work, args.tpch.workers, "")?;
    let url = cluster.coordinators[0].url.clone();
    let coordinator_pid = cluster.coordinators[0].pid();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?;

    let context = datafusion_tpch(scale)?;

    let result = runtime.block_on(async {
        let mut client = Client::new(&url, "bench").map_err(|e| e.to_string())?;
        wait_for_workers(&mut client, args.tpch.workers).await?;
        client.session.catalog = Some("tpch".into());
        client.session.schema = Some(args.tpch.schema.clone());
        let mut written_tables = Vec::new();
        if args.parquet {
            client.run(&format!("CREATE SCHEMA lake.{}", args.tpch.schema), |_| {}).await.map_err(|e| e.to_string())?;
            for table in TABLES {
                let sql = format!("CREATE TABLE lake.{0}.{table} AS SELECT * FROM tpch.{0}.{table}", args.tpch.schema);
                let start = Instant::now();
                let outcome = client.run(&sql, |_| {}).await.map_err(|e| format!("{sql}: {e}"))?;
                let rows = outcome.update_count.unwrap_or_default();
                println!("{table}: {rows} rows written in {:.1} ms", millis(start.elapsed()));
                written_tables.push((table, rows, millis(start.elapsed())));
            }
            client.session.catalog = Some("lake".into());
        }
        let mut rows_out = Vec::new();
        let (mut coordinator_cpu, mut tasks) = (0.0, 0usize);
        for (name, sql) in &queries {
            let mut flotilla_best = Duration::MAX;
            let mut rows = 0;
            let mut values = Vec::new();
            for _ in 0..args.tpch.runs {
                let cpu_before = cpu_seconds(coordinator_pid);
                let start = Instant::now();
                let outcome = client.run(sql, |_| {}).await.map_err(|e| format!("{name}: {e}"))?;
                flotilla_best = flotilla_best.min(start.elapsed());
                coordinator_cpu += cpu_seconds(coordinator_pid) - cpu_before;
                rows = outcome.rows.len();
                values = outcome.rows;
                let info = get_json(&http, &format!("{url}/v1/query/{}", outcome.query_id)).await?;
                tasks += info["tasks"].as_array().map(Vec::len).unwrap_or(0);
            }
            let mut datafusion_best = Duration::MAX;
            for _ in 0..args.tpch.runs {
                let start = Instant::now();
                let frame = context.sql(sql).await.map_err(|e| e.to_string())?;
                frame.collect().await.map_err(|e| e.to_string())?;
                datafusion_best = datafusion_best.min(start.elapsed());
            }
            println!("{name}: Flotilla {:.1} ms, DataFusion {:.1} ms", millis(flotilla_best), millis(datafusion_best));
            rows_out.push((name.clone(), rows, millis(flotilla_best), millis(datafusion_best), values));
        }
        Ok::<_, String>((rows_out, coordinator_cpu, tasks, written_tables))
    });
    drop(cluster);
    if args.parquet && result.is_ok() {
        duckdb = reference_times(&args.tpch.python, "duckdb", &written, &args.tpch.queries, args.tpch.runs, 0);
        if let Err(error) = &duckdb {
            println!("DuckDB skipped: {error}");
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let (rows, coordinator_cpu, tasks, written_tables) = result?;

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (duck_threads, duck) = match &duckdb {
        Ok(reference) => (reference.threads.clone(), Some(reference)),
        Err(_) => ("-".into(), None),
    };
    let (flotilla_reads, duck_reads) = match args.parquet {
        true => (
            "over the Parquet tables it wrote first with CREATE TABLE AS (below)",
            "over the same Parquet files Flotilla wrote",
        ),
        false => ("over tpchgen's tables generated on the fly", "over Parquet written by `flotilla tpch-gen`"),
    };
    let mut report = String::new();
    if !written_tables.is_empty() {
        let total: f64 = written_tables.iter().map(|(_, _, ms)| ms).sum();
        let each: Vec<String> =
            written_tables.iter().map(|(table, rows, ms)| format!("{table} {rows} rows in {ms:.0} ms")).collect();
        report.push_str(&format!(
            "Written with `CREATE TABLE lake.{}.t AS SELECT * FROM tpch.{}.t` (Parquet, on the workers): {} \
             ({total:.0} ms in all).\n\n",
            args.tpch.schema,
            args.tpch.schema,
            each.join(", ")
        ));
    }
    report.push_str(&format!(
        "Machine: {cores} CPUs. Flotilla: 1 resource manager, 1 coordinator, {workers} workers, each its own \
         process on this machine (loopback), queries through the Trino protocol, {flotilla_reads}. DataFusion: one \
         `SessionContext` in the benchmark process over tpchgen's tables. DuckDB: Python package, {duck_threads} \
         threads, {duck_reads}. Best of {runs} runs, milliseconds.\n\n\
         | query | rows | same answer as DuckDB | Flotilla | DataFusion | DuckDB | Flotilla / DataFusion | Flotilla / DuckDB |\n|---|---|---|---|---|---|---|---|\n",
        workers = args.tpch.workers,
        runs = args.tpch.runs,
    ));
    let (mut total_f, mut total_d, mut total_k) = (0.0, 0.0, 0.0);
    let mut mismatches = Vec::new();
    for (name, count, f, d, values) in &rows {
        let k = duck.and_then(|reference| reference.millis(name));
        let same = match duck.and_then(|reference| reference.rows(name)).map(|theirs| same_answer(values, &theirs)) {
            Some(None) => "yes",
            Some(Some(difference)) => {
                mismatches.push(format!("{name} ({difference})"));
                "**no**"
            }
            None => "-",
        };
        total_f += f;
        total_d += d;
        total_k += k.unwrap_or(0.0);
        let (k_text, ratio_k) = match k {
            Some(k) => (format!("{k:.1}"), format!("{:.2}", f / k)),
            None => ("-".into(), "-".into()),
        };
        report.push_str(&format!(
            "| {name} | {count} | {same} | {f:.1} | {d:.1} | {k_text} | {:.2} | {ratio_k} |\n",
            f / d
        ));
    }
    let total_k_text = if duck.is_some() { format!("{total_k:.1}") } else { "-".into() };
    let total_ratio_k = if duck.is_some() { format!("{:.2}", total_f / total_k) } else { "-".into() };
    report.push_str(&format!(
        "| **total** | | | {total_f:.1} | {total_d:.1} | {total_k_text} | {:.2} | {total_ratio_k} |\n\n",
        total_f / total_d
    ));
    let per_thousand = if tasks > 0 { coordinator_cpu / tasks as f64 * 1000.0 } else { 0.0 };
    report.push_str(&format!(
        "Coordinator CPU: {coordinator_cpu:.2} s over {tasks} tasks in {n} query runs, {per_thousand:.2} s per 1,000 \
         task status updates. Each task's status reaches the coordinator once, pushed over the task's own stream \
         when it ends (no polling); the figure is an upper bound, as it also counts the coordinator's planning, its \
         head stages (final merges) and the client protocol.\n\n",
        n = rows.len() * args.tpch.runs,
    ));
    if !mismatches.is_empty() {
        report.push_str(&format!("Answers that differ from DuckDB's: {}.\n\n", mismatches.join("; ")));
    }
    println!("{report}");
    if let Some(output) = &args.tpch.output {
        let (flag, section, title) = match args.parquet {
            true => (" --parquet", "tpch-parquet", "## TPC-H over Parquet written by Flotilla\n\n"),
            false => ("", "tpch-cluster", ""),
        };
        let header = format!(
            "{title}Produced by `target/release/tpch-cluster --schema {} --workers {}{flag} --output BENCHMARKS.md` \
             (after `cargo build --release -p flotilla -p flotilla-bench`). The machines are shared and noisy: \
             compare the ratios within one run.\n\n",
            args.tpch.schema, args.tpch.workers
        );
        flotilla_bench::write_section(output, section, &format!("{header}{report}"))?;
        println!("wrote {}", output.display());
    }
    Ok(())
}
