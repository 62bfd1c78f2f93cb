//! `flotilla sql`: a terminal client for the Trino client protocol (works against Flotilla
//! and against Trino).
//!
//! ```text
//!  readline / --execute / -f ──▶ split_statements ──▶ Client::run (POST, then GET nextUri)
//!                                                        │ progress line on stderr
//!                                                        ▼
//!                                        output::render (ALIGNED, CSV, TSV, JSON, ...)
//! ```
//!
//! Entry point: [`run`]. The protocol client is [`client::Client`]; Ctrl-C while a query
//! runs cancels it with `DELETE nextUri`.

pub mod client;
mod output;
mod split;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

pub use client::{Client, ClientError, QueryOutcome};
pub use output::OutputFormat;
pub use split::split_statements;

/// Options of `flotilla sql`.
#[derive(Debug, Clone, clap::Args)]
pub struct SqlArgs {
    /// Server URL.
    #[arg(long, default_value = "http://localhost:8080", env = "FLOTILLA_SERVER")]
    pub server: String,
    /// User name sent as X-Trino-User.
    #[arg(long, env = "USER", default_value = "flotilla")]
    pub user: String,
    /// Default catalog.
    #[arg(long)]
    pub catalog: Option<String>,
    /// Default schema.
    #[arg(long)]
    pub schema: Option<String>,
    /// Source name sent as X-Trino-Source.
    #[arg(long, default_value = "flotilla-sql")]
    pub source: String,
    /// Session property NAME=VALUE (repeatable).
    #[arg(long = "session", value_name = "NAME=VALUE")]
    pub session: Vec<String>,
    /// Run these statements (separated by ';') and exit.
    #[arg(short = 'e', long)]
    pub execute: Option<String>,
    /// Run the statements of this file and exit.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Output format: ALIGNED, VERTICAL, CSV, CSV_HEADER, TSV, TSV_HEADER, JSON, NULL.
    #[arg(long, default_value = "ALIGNED")]
    pub output_format: String,
    /// Keep going after a failed statement in batch mode.
    #[arg(long)]
    pub ignore_errors: bool,
    /// Show no progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs the client; returns the process exit code.
pub fn run(args: SqlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("failed to start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let format = match OutputFormat::parse(&args.output_format) {
        Ok(format) => format,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut client = match Client::new(&args.server, &args.user) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    client.session.catalog = args.catalog.clone();
    client.session.schema = args.schema.clone();
    client.session.source = Some(args.source.clone());
    for property in &args.session {
        let Some((name, value)) = property.split_once('=') else {
            eprintln!("--session takes NAME=VALUE, got '{property}'");
            return ExitCode::from(2);
        };
        client.session.properties.insert(name.trim().to_string(), value.trim().to_string());
    }
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();

    let batch = match (&args.execute, &args.file) {
        (Some(sql), _) => Some(sql.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) => {
                eprintln!("failed to read {}: {error}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => None,
    };
    match batch {
        Some(text) => {
            let mut failed = false;
            for statement in split_statements(&text) {
                if !runtime.block_on(run_one(&mut client, &statement, format, show_progress)) {
                    failed = true;
                    if !args.ignore_errors {
                        break;
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        None => interactive(&runtime, &mut client, format, show_progress),
    }
}

/// Runs one statement and prints its result; false when it failed.
async fn run_one(client: &mut Client, sql: &str, format: OutputFormat, show_progress: bool) -> bool {
    let mut progress = output::Progress::new(show_progress);
    let outcome = tokio::select! {
        outcome = client.run(sql, |stats| progress.update(stats)) => outcome,
        _ = tokio::signal::ctrl_c() => {
            progress.clear();
            client.cancel_current().await;
            eprintln!("Query aborted by user");
            return false;
        }
    };
    progress.clear();
    match outcome {
        Ok(result) => {
            let mut stdout = std::io::stdout().lock();
            if let Err(error) = output::render(&mut stdout, &result, format) {
                eprintln!("failed to write output: {error}");
                return false;
            }
            true
        }
        Err(error) => {
            eprintln!("{error}");
            false
        }
    }
}

fn interactive(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    format: OutputFormat,
    show_progress: bool,
) -> ExitCode {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("failed to start the line editor: {error}");
            return ExitCode::FAILURE;
        }
    };
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".flotilla_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            format!("flotilla{}> ", client.session.schema.as_deref().map(|s| format!(":{s}")).unwrap_or_default())
        } else {
            "      -> ".to_string()
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if pending.is_empty()
                    && matches!(trimmed.to_ascii_lowercase().as_str(), "quit" | "exit" | "quit;" | "exit;")
                {
                    break;
                }
                pending.push_str(&line);
                pending.push('\n');
                if !split::is_complete(&pending) {
                    continue;
                }
                let text = std::mem::take(&mut pending);
                let _ = editor.add_history_entry(text.trim());
                for statement in split_statements(&text) {
                    runtime.block_on(run_one(client, &statement, format, show_progress));
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => pending.clear(),
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    ExitCode::SUCCESS
}
