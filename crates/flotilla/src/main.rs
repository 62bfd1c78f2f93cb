//! `flotilla`: one binary for every role. This file only parses the command line and hands
//! over to the role crates.

mod etc;
mod tpch_gen;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Flotilla: a distributed SQL engine that speaks the Trino client protocol.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Flotilla locally with no configuration, serving clients at http://localhost:8080.
    Up {
        /// Port for clients (Trino's default is 8080).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// A Trino-style etc/ directory (config.properties, node.properties, catalog/*.properties).
        #[arg(long)]
        etc_dir: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
    },
    /// Run a coordinator: the Trino REST API, planning and execution.
    Coordinator {
        /// A Trino-style etc/ directory (config.properties, node.properties, catalog/*.properties).
        #[arg(long)]
        etc_dir: Option<PathBuf>,
        /// Port for clients; overrides http-server.http.port.
        #[arg(long)]
        port: Option<u16>,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: IpAddr,
    },
    /// Terminal client for the Trino protocol (works against Flotilla and Trino).
    Sql(flotilla_cli::SqlArgs),
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sql(args) => flotilla_cli::run(args),
        Command::TpchGen { scale, output } => match tpch_gen::write_parquet(scale, &output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tpch-gen failed: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Up { port, etc_dir, bind } => serve(etc_dir, Some(port), bind),
        Command::Coordinator { etc_dir, port, bind } => serve(etc_dir, port, bind),
    }
}

fn serve(etc_dir: Option<PathBuf>, port: Option<u16>, bind: IpAddr) -> ExitCode {
    init_logging();
    let setup = match etc::load(etc_dir.as_deref()) {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let mut config = setup.coordinator;
    if let Some(port) = port {
        config.http_port = port;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("failed to start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let address = SocketAddr::new(bind, config.http_port);
        let running = match flotilla_coordinator::Coordinator::start(config, setup.catalogs, address).await {
            Ok(running) => running,
            Err(error) => {
                eprintln!("failed to listen on {address}: {error}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("Flotilla is serving Trino clients at {}", running.url());
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}
