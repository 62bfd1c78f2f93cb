//! `tpch-files`: the 22 TPC-H queries over the same Parquet files (tpchgen's rows, written
//! once by `flotilla tpch-gen`), in one run, on four engines:
//!
//! - DuckDB and DataFusion in-process, from their Python packages (`scripts/tpch_reference.py`,
//!   DataFusion's bindings being the same engine version as Flotilla's), each alone on the
//!   machine;
//! - Flotilla as one process: a coordinator without a resource manager or workers, running
//!   its own tasks (`flotilla coordinator` alone);
//! - Flotilla as `flotilla up` starts it: 2 resource managers, 2 coordinators (planning and
//!   gathering only), N workers and a gateway, every one its own process, queries through the
//!   gateway.
//!
//! Flotilla reads the files through a `files` catalog whose root is the data directory (a
//! table per file). Every answer is checked against DuckDB's. Figures are the best of
//! `--runs` runs of each query, after `--warmup` untimed passes over all of them (1) on every
//! engine; the ratios compare engines within the run. With `--rounds N` the engines take
//! turns N times (the order rotated each round, fresh Flotilla processes each round) and
//! each query's figure is its best over all rounds: on a shared machine a slow minute then
//! falls on every engine's turn alike instead of on whichever engine ran in it.
//!
//! Run (after `cargo build --release -p flotilla -p flotilla-bench` and `scripts/bench-setup`
//! for the Python packages): `target/release/tpch-files --output BENCHMARKS.md`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla::local_cluster::{LocalCluster, LocalClusterSpec};
use flotilla_bench::{
    flotilla_binary, local_spec, millis, read_queries, reference_times, resident_bytes, same_answer, tpch_gen,
    wait_for_active_nodes, Reference, TpchArgs,
};
use flotilla_cli::Client;
use flotilla_sql::catalog::tpch::scale_factor_of;
use serde_json::Value;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    tpch: TpchArgs,
    /// Only these queries (q05,q21), for profiling one.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The engines to run (duckdb, datafusion, one, cluster); DuckDB's answers are the
    /// reference the others are checked against.
    #[arg(long, value_delimiter = ',', default_value = "duckdb,datafusion,one,cluster")]
    engines: Vec<String>,
    /// config.properties for every Flotilla node, lines separated by `\n` (e.g.
    /// `memory.pool-size=6GB` for SF10 on a small machine).
    #[arg(long, default_value = "")]
    config: String,
    /// Untimed passes over every query before the timed runs, on every engine: the first
    /// run of a query in a fresh process pays for what later runs find ready (the
    /// allocator's memory, taken from the kernel and zeroed, caches of file footers), and
    /// a cluster's queries are spread over several fresh coordinators.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Times every engine takes its turn (the order rotated each round); each query's
    /// figure is its best over all rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

/// What one engine measured: best milliseconds and the rows of each query.
#[derive(Debug, Default)]
struct Measured {
    millis: BTreeMap<String, f64>,
    values: BTreeMap<String, Vec<Vec<Value>>>,
    failures: BTreeMap<String, String>,
    /// Flotilla's processes: the largest resident memory each reached (node id, bytes).
    peak_rss: Vec<(String, u64)>,
}

impl Measured {
    fn from_reference(reference: &Reference, queries: &[(String, String)]) -> Self {
        let mut measured = Measured::default();
        for (name, _) in queries {
            if let Some(ms) = reference.millis(name) {
                measured.millis.insert(name.clone(), ms);
            }
            if let Some(rows) = reference.rows(name) {
                measured.values.insert(name.clone(), rows);
            }
        }
        measured
    }

    /// Adds another round's measurements: each query's best time, the largest memory; an
    /// answer that differs from the engine's earlier rounds is a failure (only the first
    /// round's answers are compared with DuckDB's).
    fn merge(&mut self, other: Measured) {
        for (name, ms) in other.millis {
            let best = self.millis.entry(name).or_insert(ms);
            *best = best.min(ms);
        }
        for (name, rows) in other.values {
            match self.values.get(&name).map(|earlier| same_answer(&rows, earlier)) {
                Some(Some(difference)) => {
                    self.failures.insert(name, format!("its answer changed from an earlier round: {difference}"));
                }
                Some(None) => {}
                None => {
                    self.values.insert(name, rows);
                }
            }
        }
        self.failures.extend(other.failures);
        for (node, bytes) in other.peak_rss {
            match self.peak_rss.iter_mut().find(|(id, _)| *id == node) {
                Some((_, peak)) => *peak = (*peak).max(bytes),
                None => self.peak_rss.push((node, bytes)),
            }
        }
    }
}

/// Writes `etc/` for every Flotilla node: the `bench` catalog over the data directory and
/// `config` as config.properties.
fn write_etc(work: &Path, data_dir: &Path, config: &str) -> Result<PathBuf, String> {
    let etc = work.join("etc");
    std::fs::create_dir_all(etc.join("catalog")).map_err(|e| e.to_string())?;
    let root = std::path::absolute(data_dir).map_err(|e| e.to_string())?;
    std::fs::write(
        etc.join("catalog/bench.properties"),
        format!("connector.name=files\nfiles.root={}\n", root.display()),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(etc.join("config.properties"), config.replace("\\n", "\n")).map_err(|e| e.to_string())?;
    Ok(etc)
}

/// Runs every query `runs` times through the Trino protocol at `url`, once every
/// coordinator (`coordinators`, their URLs) lists `nodes` active nodes: each has its own
/// view of the cluster, and a query the gateway sends to one that does not list the
/// workers yet fails.
async fn run_flotilla(
    url: &str,
    coordinators: &[String],
    schema: &str,
    nodes: usize,
    queries: &[(String, String)],
    runs: usize,
    warmup: usize,
) -> Measured {
    let mut measured = Measured::default();
    for coordinator in coordinators {
        let waited = match Client::new(coordinator, "bench") {
            Ok(mut client) => wait_for_active_nodes(&mut client, nodes).await,
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = waited {
            measured.failures.insert("all".into(), format!("{coordinator}: {error}"));
            return measured;
        }
    }
    let Ok(mut client) = Client::new(url, "bench") else {
        measured.failures.insert("all".into(), format!("bad URL {url}"));
        return measured;
    };
    client.session.catalog = Some("bench".into());
    client.session.schema = Some(schema.into());
    for _ in 0..warmup {
        for (_, sql) in queries {
            // A failure shows in the timed runs.
            let _ = client.run(sql, |_| {}).await;
        }
    }
    for (name, sql) in queries {
        let mut best = Duration::MAX;
        for _ in 0..runs {
            let start = Instant::now();
            match client.run(sql, |_| {}).await {
                Ok(outcome) => {
                    best = best.min(start.elapsed());
                    measured.values.insert(name.clone(), outcome.rows);
                }
                Err(error) => {
                    measured.failures.insert(name.clone(), error.to_string());
                    break;
                }
            }
        }
        if best != Duration::MAX {
            measured.millis.insert(name.clone(), millis(best));
            println!("  {name}: {:.1} ms", millis(best));
        }
    }
    measured
}

/// Starts `spec`, runs the queries on it, sampling its processes' memory, and stops it.
fn flotilla_engine(
    args: &Args,
    binary: &Path,
    spec: LocalClusterSpec,
    queries: &[(String, String)],
) -> Result<Measured, String> {
    let nodes = spec.resource_managers + spec.coordinators + spec.workers;
    let cluster = LocalCluster::start(binary, &spec)?;
    let url = cluster.client_url().to_string();
    let processes: Vec<(String, u32)> = [&cluster.resource_managers, &cluster.coordinators, &cluster.workers]
        .into_iter()
        .flatten()
        .map(|node| (node.spec.node_id.clone(), node.pid()))
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peaks = vec![0u64; processes.len()];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for (peak, (_, pid)) in peaks.iter_mut().zip(&processes) {
                    *peak = (*peak).max(resident_bytes(*pid));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            processes.into_iter().map(|(id, _)| id).zip(peaks).collect::<Vec<_>>()
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let coordinators: Vec<String> = cluster.coordinators.iter().map(|node| node.url.clone()).collect();
    let mut measured = runtime.block_on(run_flotilla(
        &url,
        &coordinators,
        &args.tpch.schema,
        nodes,
        queries,
        args.tpch.runs,
        args.warmup,
    ));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    measured.peak_rss = sampler.join().unwrap_or_default();
    drop(cluster);
    Ok(measured)
}

/// `n` times, in words.
fn times(n: usize) -> String {
    if n == 1 {
        "once".into()
    } else {
        format!("{n} times")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn cell(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// One line of the table: the four engines' times (in [`ENGINES`] order), then one process
/// and the cluster against DataFusion, and the cluster against DuckDB.
fn table_row(name: &str, rows: &str, same: &str, times: &[Option<f64>]) -> String {
    let [duckdb, datafusion, one, cluster] = [times[0], times[1], times[2], times[3]];
    format!(
        "| {name} | {rows} | {same} | {} | {} | {} | {} | {} | {} | {} |\n",
        cell(duckdb),
        cell(datafusion),
        cell(one),
        cell(cluster),
        ratio(one, datafusion),
        ratio(cluster, datafusion),
        ratio(cluster, duckdb),
    )
}

const ENGINES: [(&str, &str); 4] = [
    ("duckdb", "DuckDB"),
    ("datafusion", "DataFusion"),
    ("one", "Flotilla, one process"),
    ("cluster", "Flotilla cluster"),
];

fn main() -> Result<(), String> {
    let args = Args::parse();
    if let Some(unknown) = args.engines.iter().find(|e| !ENGINES.iter().any(|(key, _)| key == e)) {
        return Err(format!("unknown engine {unknown}: duckdb, datafusion, one, cluster"));
    }
    let scale = scale_factor_of(&args.tpch.schema).ok_or_else(|| format!("not a tpch schema: {}", args.tpch.schema))?;
    let binary = flotilla_binary()?;
    let mut queries = read_queries(&args.tpch.queries)?;
    if !args.only.is_empty() {
        queries.retain(|(name, _)| args.only.contains(name));
    }
    let data = args.tpch.data_dir.join(&args.tpch.schema);
    tpch_gen(&binary, scale, &data)?;
    let work = std::env::temp_dir().join(format!("flotilla-tpch-files-{}", std::process::id()));
    let etc = write_etc(&work, &args.tpch.data_dir, &args.config)?;
    let run = Run { args: &args, binary: &binary, data: &data, etc: &etc, work: &work, queries: &queries };

    let mut results: BTreeMap<&str, Measured> = BTreeMap::new();
    let mut versions = BTreeMap::new();
    let rounds = args.rounds as usize;
    for round in 0..rounds {
        let mut order = ENGINES;
        order.rotate_left(round % ENGINES.len());
        for (engine, title) in order {
            if !args.engines.iter().any(|e| e == engine) {
                continue;
            }
            match rounds {
                1 => println!("{title}"),
                _ => println!("{title} (round {} of {rounds})", round + 1),
            }
            let measured = run.engine(engine, title, &mut versions)?;
            for (name, error) in &measured.failures {
                println!("  {name} failed: {error}");
            }
            results.entry(engine).or_default().merge(measured);
        }
    }
    let _ = std::fs::remove_dir_all(&work);

    let report = report(&args, &queries, &results, &versions);
    println!("{report}");
    if let Some(output) = &args.tpch.output {
        let section = match args.tpch.schema.as_str() {
            "sf1" => "tpch-files".to_string(),
            other => format!("tpch-files-{other}"),
        };
        flotilla_bench::write_section(output, &section, &report)?;
        println!("wrote {}", output.display());
    }
    let failed: usize = results.values().map(|m| m.failures.len()).sum();
    match failed {
        0 => Ok(()),
        n => Err(format!("{n} queries failed")),
    }
}

/// What every engine's turn reads: the arguments, the `flotilla` binary, the data, the
/// nodes' `etc/`, the working directory and the queries.
struct Run<'a> {
    args: &'a Args,
    binary: &'a Path,
    data: &'a Path,
    etc: &'a Path,
    work: &'a Path,
    queries: &'a [(String, String)],
}

impl Run<'_> {
    /// One turn of `engine`: its timed runs of every query.
    fn engine(
        &self,
        engine: &'static str,
        title: &str,
        versions: &mut BTreeMap<&'static str, String>,
    ) -> Result<Measured, String> {
        let Run { args, binary, data, etc, work, queries } = *self;
        Ok(match engine {
            "duckdb" | "datafusion" => {
                let reference =
                    reference_times(&args.tpch.python, engine, data, &args.tpch.queries, args.tpch.runs, args.warmup)?;
                versions.insert(engine, format!("{} {} ({} threads)", title, reference.version, reference.threads));
                Measured::from_reference(&reference, queries)
            }
            // A coordinator alone: its own resource manager, and its own tasks.
            "one" => flotilla_engine(
                args,
                binary,
                local_spec(0, 1, 0, 0, etc.to_path_buf(), work.join("logs-one")),
                queries,
            )?,
            _ => {
                let spec = local_spec(2, 2, args.tpch.workers, 1, etc.to_path_buf(), work.join("logs-cluster"));
                flotilla_engine(args, binary, spec, queries)?
            }
        })
    }
}

fn report(
    args: &Args,
    queries: &[(String, String)],
    results: &BTreeMap<&str, Measured>,
    versions: &BTreeMap<&str, String>,
) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let time = |engine: &str, name: &str| results.get(engine).and_then(|m| m.millis.get(name).copied());
    let mut flags = format!("--schema {} --workers {}", args.tpch.schema, args.tpch.workers);
    if args.tpch.runs != 2 {
        flags.push_str(&format!(" --runs {}", args.tpch.runs));
    }
    if args.warmup != 1 {
        flags.push_str(&format!(" --warmup {}", args.warmup));
    }
    if args.rounds != 1 {
        flags.push_str(&format!(" --rounds {}", args.rounds));
    }
    if !args.config.is_empty() {
        flags.push_str(&format!(" --config '{}'", args.config));
    }
    let mut text = format!(
        "## TPC-H `{schema}` over Parquet: DuckDB, DataFusion and Flotilla on the same files\n\n\
         Produced by `target/release/tpch-files {flags} --output BENCHMARKS.md` \
         (after `cargo build --release -p flotilla -p flotilla-bench` and `scripts/bench-setup`). The machines are \
         shared and noisy: compare the ratios within one run.\n\n\
         Machine: {cores} CPUs. Data: the tpchgen tables as one Snappy Parquet file each (`flotilla tpch-gen`), \
         read by every engine. {references}. Flotilla reads them through a `files` catalog, queries through the \
         Trino protocol: *one process* is a coordinator alone running its own tasks; *cluster* is what `flotilla \
         up` starts (2 resource managers, 2 coordinators, {workers} workers, a gateway; each its own process on \
         this machine, loopback), queries through the gateway. {warmup}Each query runs {runs}{rounds}: the best, \
         in milliseconds; answers checked against DuckDB's.\n\n",
        schema = args.tpch.schema,
        workers = args.tpch.workers,
        runs = times(args.tpch.runs),
        rounds = match args.rounds {
            1 => String::new(),
            n => format!(
                " in each of {n} rounds (every engine takes its turn each round, warm-up included, in an order rotated from round to \
                 round, with fresh Flotilla processes: a slow minute of the shared machine falls on every engine \
                 alike)"
            ),
        },
        warmup = match args.warmup {
            0 => String::new(),
            passes => format!(
                "Every engine first runs the queries {} untimed (a fresh process's first runs pay for memory and \
                 caches later runs find ready). ",
                times(passes)
            ),
        },
        references = versions.values().cloned().collect::<Vec<_>>().join(", "),
    );
    text.push_str(
        "| query | rows | same answers | DuckDB | DataFusion | Flotilla one process | Flotilla cluster | one / DataFusion \
         | cluster / DataFusion | cluster / DuckDB |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut totals = [0.0f64; 4];
    let mut complete = [true; 4];
    let mut differences = Vec::new();
    for (name, _) in queries {
        let reference = results.get("duckdb").and_then(|m| m.values.get(name));
        let rows = reference
            .or_else(|| results.values().find_map(|m| m.values.get(name)))
            .map(|rows| rows.len().to_string())
            .unwrap_or_else(|| "-".into());
        let mut same = Vec::new();
        for (engine, title) in &ENGINES[1..] {
            let (Some(theirs), Some(ours)) = (reference, results.get(engine).and_then(|m| m.values.get(name))) else {
                continue;
            };
            match same_answer(ours, theirs) {
                None => same.push("yes"),
                Some(difference) => {
                    differences.push(format!("{name} on {title}: {difference}"));
                    same.push("**no**");
                }
            }
        }
        let same = if same.is_empty() {
            "-".to_string()
        } else if same.iter().all(|s| *s == "yes") {
            "yes".into()
        } else {
            "**no**".into()
        };
        let times: Vec<Option<f64>> = ENGINES.iter().map(|(engine, _)| time(engine, name)).collect();
        for (i, t) in times.iter().enumerate() {
            match t {
                Some(t) => totals[i] += t,
                None => complete[i] = false,
            }
        }
        text.push_str(&table_row(name, &rows, &same, &times));
    }
    let total: Vec<Option<f64>> =
        (0..4).map(|i| (complete[i] && results.contains_key(ENGINES[i].0)).then_some(totals[i])).collect();
    text.push_str(&table_row("**total**", "", "", &total));
    text.push('\n');
    let slowest = queries
        .iter()
        .filter_map(|(name, _)| Some((name, time("cluster", name)? / time("datafusion", name)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((name, worst)) = slowest {
        text.push_str(&format!("Slowest query relative to DataFusion on the cluster: {name} ({worst:.2}x).\n\n"));
    }
    for (engine, title) in &ENGINES[2..] {
        let Some(measured) = results.get(engine).filter(|m| !m.peak_rss.is_empty()) else { continue };
        let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let each: Vec<String> =
            measured.peak_rss.iter().map(|(node, bytes)| format!("{node} {:.0} MB", mb(*bytes))).collect();
        text.push_str(&format!("{title}, largest resident memory of each process: {}.\n\n", each.join(", ")));
    }
    for (engine, title) in ENGINES {
        if let Some(measured) = results.get(engine) {
            for (name, error) in &measured.failures {
                text.push_str(&format!("{title}: {name} failed: {error}\n\n"));
            }
        }
    }
    if !differences.is_empty() {
        text.push_str(&format!("Answers that differ from DuckDB's: {}.\n\n", differences.join("; ")));
    }
    text
}
