//! `flotilla`: one binary for every role. This file only parses the command line and hands
//! over to the role crates.

mod allocator;
mod tpch_gen;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flotilla::etc;
use flotilla::local_cluster::{LocalCluster, LocalClusterSpec, Role, READY_MARKER, SECRET_ENV};
use tokio_util::sync::CancellationToken;

/// Flotilla: a distributed SQL engine that speaks the Trino client protocol.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster as separate processes (resource managers, coordinators,
    /// workers, a gateway in front) and serve clients at http://localhost:8080 until Ctrl-C.
    Up {
        /// Port for clients (Trino's default is 8080): the gateway's, or the first
        /// coordinator's with --gateways 0.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// A Trino-style etc/ directory, used by every process.
        #[arg(long)]
        etc_dir: Option<PathBuf>,
        /// Address every process listens on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Number of resource managers.
        #[arg(long, default_value_t = 2)]
        resource_managers: usize,
        /// Number of workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Number of coordinators.
        #[arg(long, default_value_t = 2)]
        coordinators: usize,
        /// Number of gateways (the first takes --port, the others free ports; 0: clients
        /// talk to the first coordinator directly).
        #[arg(long, default_value_t = 1)]
        gateways: usize,
        /// How the gateway picks a coordinator for a new query.
        #[arg(long, default_value = "round-robin")]
        routing_policy: flotilla_gateway::RoutingPolicy,
        /// Directory for the cluster's logs, its `etc/` when --etc-dir is not given, and the
        /// `lake` catalog's files (kept across restarts); created if missing.
        #[arg(long, default_value = ".flotilla")]
        data_dir: PathBuf,
    },
    /// Run a coordinator: the Trino REST API, planning and execution. Without
    /// discovery.uri it runs its own embedded resource manager.
    Coordinator(NodeArgs),
    /// Run a resource manager: discovery and the cluster's shared view.
    ResourceManager(NodeArgs),
    /// Run a worker: joins the cluster and reports its load.
    Worker(NodeArgs),
    /// Run a gateway: routes new queries to healthy coordinators and follow-ups to the
    /// coordinator that owns the query (needs discovery.uri and the shared secret).
    Gateway(NodeArgs),
    /// Terminal client for the Trino protocol (works against Flotilla and Trino).
    Sql(flotilla_cli::SqlArgs),
    /// Check a node for a container probe: exit 0 when it answers (with --ready: and
    /// takes work, i.e. is ACTIVE, not draining), else 1 with the reason.
    HealthCheck {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Also require the node to be ACTIVE (a readiness probe; a draining node fails it).
        #[arg(long)]
        ready: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Drain a node (a Kubernetes preStop hook): ask it to shut down gracefully, signed with
    /// the cluster's secret (FLOTILLA_SHARED_SECRET), and with --wait until it has stopped.
    Drain {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Wait until the node stops answering (at most --timeout).
        #[arg(long)]
        wait: bool,
        /// How long to wait at most.
        #[arg(long, default_value = "5m", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Write the TPC-H tables as Parquet files, generated with tpchgen (for tests and benchmarks).
    TpchGen {
        /// Scale factor (0.01 is Trino's `tiny`).
        #[arg(long, default_value_t = 0.01)]
        scale: f64,
        /// Directory to write TABLE.parquet files into (created if missing).
        #[arg(long)]
        output: PathBuf,
    },
}

/// Options every role takes; they override `etc/`.
#[derive(Debug, Args)]
struct NodeArgs {
    /// A Trino-style etc/ directory (config.properties, node.properties, catalog/*.properties).
    #[arg(long)]
    etc_dir: Option<PathBuf>,
    /// Port to listen on; overrides http-server.http.port (0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Overrides node.id.
    #[arg(long)]
    node_id: Option<String>,
    /// Overrides discovery.uri (comma-separated resource manager URLs).
    #[arg(long)]
    discovery_uri: Option<String>,
    /// Overrides node.warehouse.
    #[arg(long)]
    warehouse: Option<String>,
    /// Overrides node.worker-group.
    #[arg(long)]
    worker_group: Option<String>,
    /// Sets any configuration property, as if in config.properties (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Shut down when stdin closes (used by `flotilla up`, so no node outlives it).
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    flotilla_proto::parse_duration(text)
}

/// `flotilla health-check`: `GET /v1/info/state` (answered by every role; a gateway relays
/// it to a coordinator).
fn health_check(url: &str, ready: bool, timeout: std::time::Duration) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        let url = format!("{}/v1/info/state", url.trim_end_matches('/'));
        let response = client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}"));
        }
        let state: String = response.json().await.map_err(|e| format!("{url}: {e}"))?;
        match (state.as_str(), ready) {
            ("ACTIVE", _) | (_, false) => Ok(state),
            (other, true) => Err(format!("{url}: {other}, not ready for work")),
        }
    })
}

/// `flotilla drain`: `PUT /v1/info/state "SHUTTING_DOWN"`, signed as a node of the cluster.
fn drain(url: &str, wait: bool, timeout: std::time::Duration) -> Result<(), String> {
    let secret = std::env::var(SECRET_ENV)
        .map_err(|_| format!("{SECRET_ENV} is not set: the cluster's secret signs the request"))?;
    let auth = flotilla_proto::InternalAuth::new(&secret, "flotilla-drain")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let state = format!("{}/v1/info/state", url.trim_end_matches('/'));
        let response = client
            .put(&state)
            .header(flotilla_proto::INTERNAL_BEARER_HEADER, auth.token())
            .json(&"SHUTTING_DOWN")
            .send()
            .await
            .map_err(|e| format!("{state}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(format!("{state}: HTTP {status}: {}", response.text().await.unwrap_or_default()));
        }
        if !wait {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + timeout;
        while client.get(&state).send().await.is_ok() {
            if std::time::Instant::now() > deadline {
                return Err(format!("{url} still answers after {timeout:?}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Ok(())
    })
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got '{text}'"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

/// Which events are logged: `RUST_LOG` as `level` and `target=level` directives
/// (`warn,flotilla_coordinator=debug`), else `info`. Parsed by `Targets`, not `EnvFilter`:
/// EnvFilter's span and field matchers pull in regex-automata's full DFA builder, which the
/// regex crate then uses for every small pattern, and SQL `LIKE` compiles a pattern per batch
/// (it made q13 of TPC-H half again as slow).
fn log_filter(directives: Option<&str>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    let default = || tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    match directives.map(str::trim).filter(|d| !d.is_empty()) {
        None => (default(), None),
        Some(directives) => match directives.parse() {
            Ok(targets) => (targets, None),
            Err(error) => (default(), Some(format!("RUST_LOG={directives} ignored ({error}): logging at info"))),
        },
    }
}

/// Logs to stderr, as text or (`log.format=json`) one JSON object per event.
fn init_logging(json: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, problem) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match json {
        true => builder.json().finish().with(filter).init(),
        false => builder.finish().with(filter).init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The stack of every runtime thread of a node.
const RUNTIME_STACK_BYTES: usize = 16 << 20;

/// The CPU features this binary was compiled to use (`.cargo/config.toml`) that this CPU
/// lacks. The compiler uses them anywhere (vectorised loops), so a CPU without them would
/// stop with SIGILL in the middle of some query; this is asked first thing in `main` (only
/// Rust's own start-up and the allocator's initialisation run before it; no Tokio runtime
/// exists yet).
#[cfg(target_arch = "x86_64")]
fn missing_cpu_features() -> Vec<&'static str> {
    let mut missing = Vec::new();
    macro_rules! require {
        ($($feature:tt),*) => {
            $(if cfg!(target_feature = $feature) && !std::arch::is_x86_feature_detected!($feature) {
                missing.push($feature);
            })*
        };
    }
    require!("avx", "avx2", "fma", "bmi1", "bmi2", "lzcnt", "movbe", "aes");
    missing
}

#[cfg(not(target_arch = "x86_64"))]
fn missing_cpu_features() -> Vec<&'static str> {
    Vec::new()
}

fn main() -> ExitCode {
    let missing = missing_cpu_features();
    if !missing.is_empty() {
        eprintln!(
            "flotilla: this binary was built for x86-64 CPUs with {}, which this CPU lacks; \
             build it for this CPU with RUSTFLAGS=\"-C target-cpu=native\" cargo build --release",
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Sql(args) => flotilla_cli::run(args),
        Command::HealthCheck { url, ready, timeout } => match health_check(&url, ready, timeout) {
            Ok(state) => {
                println!("{state}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("unhealthy: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Drain { url, wait, timeout } => match drain(&url, wait, timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("drain failed: {error}");
                ExitCode::FAILURE
            }
        },
        Command::TpchGen { scale, output } => match tpch_gen::write_parquet(scale, &output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tpch-gen failed: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Up {
            port,
            etc_dir,
            bind,
            resource_managers,
            workers,
            coordinators,
            gateways,
            routing_policy,
            data_dir,
        } => {
            let etc_dir = match etc_dir {
                Some(dir) => Some(std::path::absolute(&dir).unwrap_or(dir)),
                None => match default_etc(&data_dir) {
                    Ok(dir) => Some(dir),
                    Err(error) => {
                        eprintln!("flotilla up: {error}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let spec = LocalClusterSpec {
                resource_managers,
                coordinators: coordinators.max(1),
                workers,
                gateways,
                routing_policy,
                client_port: port,
                bind,
                etc_dir,
                log_dir: data_dir.join("logs"),
                one_resource_manager_each: false,
                worker_labels: Vec::new(),
                env: Vec::new(),
            };
            up(spec)
        }
        Command::Coordinator(args) => run_role(Role::Coordinator, args),
        Command::ResourceManager(args) => run_role(Role::ResourceManager, args),
        Command::Worker(args) => run_role(Role::Worker, args),
        Command::Gateway(args) => run_role(Role::Gateway, args),
    }
}

/// The `etc/` of a `flotilla up` without --etc-dir: the `tpch` catalog and a writable
/// `lake` catalog (the `files` connector) under `data_dir/lake`, kept across restarts.
fn default_etc(data_dir: &std::path::Path) -> Result<PathBuf, String> {
    let data_dir = std::path::absolute(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let etc = data_dir.join("etc");
    let catalogs = etc.join("catalog");
    let lake = data_dir.join("lake");
    for dir in [&catalogs, &lake] {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let files = [
        ("tpch.properties", "connector.name=tpch\n".to_string()),
        ("lake.properties", format!("connector.name=files\nfiles.root={}\n", lake.display())),
    ];
    for (name, text) in files {
        let path = catalogs.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(etc)
}

/// How a process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Ctrl-C, or the launcher went away: stop now.
    Now,
    /// SIGTERM or `PUT /v1/info/state` `"SHUTTING_DOWN"`: finish what is running first.
    Drain,
}

/// Resolves when the process should stop: Ctrl-C, SIGTERM, (with `--exit-with-stdin`)
/// stdin closing, or `drain` resolving.
async fn stop_requested(exit_with_stdin: bool, drain: impl std::future::Future<Output = ()>) -> Stop {
    let stdin_closed = CancellationToken::new();
    if exit_with_stdin {
        let token = stdin_closed.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            token.cancel();
        });
    }
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Now,
        _ = terminate => Stop::Drain,
        _ = stdin_closed.cancelled() => Stop::Now,
        _ = drain => Stop::Drain,
    }
}

fn run_role(role: Role, args: NodeArgs) -> ExitCode {
    let mut setup = match etc::load(args.etc_dir.as_deref()) {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let mut flags = std::collections::BTreeMap::new();
    for (key, value) in args.set {
        match flotilla_sql::catalog::environment_substituted(&value) {
            Ok(value) => flags.insert(key, value),
            Err(error) => {
                eprintln!("invalid configuration: --set {key}: {error}");
                return ExitCode::from(2);
            }
        };
    }
    if let Err(error) = setup.apply_all("--set", &flags) {
        eprintln!("invalid configuration: {error}");
        return ExitCode::from(2);
    }
    init_logging(setup.node.json_logs);
    let node = &mut setup.node;
    if let Some(port) = args.port {
        node.http_port = port;
    }
    // Flags and the secret's environment variable go through the same checks as etc/.
    let overrides = [
        ("--node-id", "node.id", args.node_id),
        ("--discovery-uri", "discovery.uri", args.discovery_uri),
        ("--warehouse", "node.warehouse", args.warehouse),
        ("--worker-group", "node.worker-group", args.worker_group),
        (SECRET_ENV, "internal-communication.shared-secret", std::env::var(SECRET_ENV).ok()),
    ];
    for (source, key, value) in overrides {
        let Some(value) = value else { continue };
        if let Err(error) = node.apply(source, key, &value) {
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    }
    allocator::set_purge_delay(node.allocator_purge_delay);
    if matches!(role, Role::Coordinator) && node.coordinator_flag == Some(false) {
        eprintln!("invalid configuration: coordinator=false in config.properties, but this is `flotilla coordinator`");
        return ExitCode::from(2);
    }
    // Planning and running a query recurse over its plan; statements are bounded in depth
    // (flotilla-sql's MAX_NESTING_DEPTH, views' MAX_VIEW_DEPTH), and the threads get a stack
    // with room to spare for what those bounds allow (address space; only what is used is
    // touched).
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(RUNTIME_STACK_BYTES).build() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("failed to start the runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
    runtime.block_on(async move {
        let address = SocketAddr::new(args.bind, setup.node.http_port);
        let started = match role {
            Role::Coordinator => {
                let mut config = setup.coordinator;
                config.node = setup.node;
                config.resource_manager = setup.resource_manager;
                config.worker = setup.worker;
                flotilla_coordinator::Coordinator::start(config, setup.catalogs, address)
                    .await
                    .map(Running::Coordinator)
            }
            Role::ResourceManager => {
                flotilla_resource_manager::start_resource_manager(setup.node, setup.resource_manager, address)
                    .await
                    .map(Running::Node)
            }
            Role::Worker => {
                let stores = setup.catalogs.object_stores();
                flotilla_worker::start(setup.node, setup.worker, stores, address).await.map(Running::Node)
            }
            Role::Gateway => {
                let mut config = setup.gateway;
                config.node = setup.node;
                flotilla_gateway::start(config, address).await.map(Running::Gateway)
            }
        };
        let running = match started {
            Ok(running) => running,
            Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
                eprintln!("invalid configuration: {error}");
                return ExitCode::from(2);
            }
            Err(error) => {
                eprintln!("failed to listen on {address}: {error}");
                return ExitCode::FAILURE;
            }
        };
        let https = match &running {
            Running::Coordinator(coordinator) => coordinator.https_address,
            Running::Gateway(gateway) => gateway.https_address,
            _ => None,
        };
        if let Some(address) = https {
            eprintln!("Flotilla is serving Trino clients over HTTPS at https://{address}");
        }
        if let Running::Coordinator(coordinator) = &running {
            eprintln!("Flotilla is serving Trino clients at {}", coordinator.url());
        }
        let (node_id, url) = running.describe();
        eprintln!("flotilla {} {node_id}{READY_MARKER}{url}", role.subcommand());
        let stop = match running.local() {
            Some(local) => stop_requested(args.exit_with_stdin, local.drain_requested()).await,
            None => stop_requested(args.exit_with_stdin, std::future::pending()).await,
        };
        match stop {
            Stop::Drain => {
                eprintln!("draining: finishing the work in hand, then shutting down");
                running.drain().await;
            }
            Stop::Now => {
                eprintln!("shutting down");
                running.shutdown().await;
            }
        }
        ExitCode::SUCCESS
    })
}

/// A started role.
enum Running {
    Coordinator(flotilla_coordinator::RunningCoordinator),
    Node(flotilla_node::RunningNode),
    Gateway(flotilla_gateway::RunningGateway),
}

impl Running {
    /// (node id, URL)
    fn describe(&self) -> (String, String) {
        match self {
            Running::Coordinator(c) => (c.coordinator.local.node_id.clone(), c.url()),
            Running::Node(n) => (n.local.node_id.clone(), n.url()),
            Running::Gateway(g) => (g.name.clone(), g.url()),
        }
    }

    /// The node as the cluster knows it (a gateway is not a member).
    fn local(&self) -> Option<std::sync::Arc<flotilla_node::LocalNode>> {
        match self {
            Running::Coordinator(c) => Some(c.coordinator.local.clone()),
            Running::Node(n) => Some(n.local.clone()),
            Running::Gateway(_) => None,
        }
    }

    async fn shutdown(self) {
        match self {
            Running::Coordinator(c) => c.shutdown().await,
            Running::Node(n) => n.shutdown().await,
            Running::Gateway(g) => g.shutdown().await,
        }
    }

    /// A graceful stop: a coordinator finishes its queries first, a worker its tasks;
    /// resource managers and gateways hold no such work and stop at once.
    async fn drain(self) {
        match self {
            Running::Coordinator(c) => c.drain().await,
            Running::Node(n) => n.drain().await,
            other => other.shutdown().await,
        }
    }
}

/// Waits until the coordinator's `/v1/node` lists `expected` live nodes (asked as a node of
/// the cluster, with its secret: clients may have to authenticate).
async fn wait_until_listed(coordinator: &str, secret: &str, expected: usize, within: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let auth = flotilla_proto::InternalAuth::new(secret, "flotilla-up")?;
    let deadline = std::time::Instant::now() + within;
    let mut listed = 0;
    while std::time::Instant::now() < deadline {
        let request =
            client.get(format!("{coordinator}/v1/node")).header(flotilla_proto::INTERNAL_BEARER_HEADER, auth.token());
        if let Ok(response) = request.send().await {
            if let Ok(nodes) = response.json::<Vec<serde_json::Value>>().await {
                listed = nodes.len();
                if listed >= expected {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("the coordinator lists {listed} of {expected} nodes after {within:?}"))
}

/// `flotilla up`: starts the processes, prints the endpoints, and stops them all on Ctrl-C
/// or SIGTERM.
fn up(spec: LocalClusterSpec) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(error) => {
            eprintln!("cannot find the flotilla binary: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "starting {} resource manager(s), {} coordinator(s), {} worker(s), {} gateway(s); logs in {}",
        spec.resource_managers,
        spec.coordinators,
        spec.workers,
        spec.gateways,
        spec.log_dir.display()
    );
    let mut cluster = match LocalCluster::start(&binary, &spec) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("failed to start the local cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    for (kind, processes) in [
        ("resource manager", &cluster.resource_managers),
        ("coordinator", &cluster.coordinators),
        ("worker", &cluster.workers),
        ("gateway", &cluster.gateways),
    ] {
        for process in processes {
            eprintln!("  {kind:<17} {:<20} {:<24} pid {}", process.spec.node_id, process.url, process.pid());
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("failed to start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let client_url = cluster.client_url().to_string();
    let expected = spec.resource_managers + spec.coordinators + spec.workers;
    let coordinator = cluster.coordinators.first().map(|p| p.url.clone()).unwrap_or_else(|| client_url.clone());
    let listed = wait_until_listed(&coordinator, &cluster.secret, expected, Duration::from_secs(30));
    if let Err(error) = runtime.block_on(listed) {
        eprintln!("the cluster did not come together: {error}");
        return ExitCode::FAILURE;
    }
    eprintln!("Flotilla is serving Trino clients at {client_url}");
    eprintln!("Try: flotilla sql --server {client_url} --execute 'SELECT * FROM system.runtime.nodes'");
    runtime.block_on(async {
        // A node that exits on its own is reported, not restarted: losing one is something
        // the cluster should ride out, and a local cluster is where people try that.
        let mut reported = std::collections::BTreeSet::new();
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for process in cluster.all() {
                    if !process.is_running() && reported.insert(process.spec.node_id.clone()) {
                        eprintln!("{} exited (log: {})", process.spec.node_id, process.log_path.display());
                    }
                }
            }
        };
        tokio::select! {
            _ = stop_requested(false, std::future::pending()) => eprintln!("stopping the local cluster"),
            _ = watch => {}
        }
    });
    cluster.stop(Duration::from_secs(10));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    fn would_log(targets: &Targets, target: &str, level: Level) -> bool {
        targets.would_enable(target, &level)
    }

    #[test]
    fn rust_log_takes_levels_and_per_target_directives() {
        let (info, problem) = log_filter(None);
        assert!(problem.is_none());
        assert!(would_log(&info, "flotilla_coordinator", Level::INFO));
        assert!(!would_log(&info, "flotilla_coordinator", Level::DEBUG));
        let (warn, _) = log_filter(Some("warn"));
        assert!(!would_log(&warn, "anything", Level::INFO) && would_log(&warn, "anything", Level::WARN));
        let (mixed, problem) = log_filter(Some("warn,flotilla_worker=debug"));
        assert!(problem.is_none());
        assert!(would_log(&mixed, "flotilla_worker::execution", Level::DEBUG));
        assert!(!would_log(&mixed, "datafusion", Level::INFO));
        let (blank, problem) = log_filter(Some("  "));
        assert!(problem.is_none() && would_log(&blank, "x", Level::INFO));
        for bad in ["flotilla=loud", "warn,flotilla_worker=chatty"] {
            let (fallback, problem) = log_filter(Some(bad));
            assert!(problem.is_some_and(|p| p.contains("ignored")), "{bad}");
            assert!(would_log(&fallback, "x", Level::INFO) && !would_log(&fallback, "x", Level::DEBUG), "{bad}");
        }
    }
}
