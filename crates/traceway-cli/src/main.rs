//! `traceway`: the server (`serve`, from `traceway-server`) and the CLI client (`ls`, `show`,
//! `analyze`, `stats`, `tail`, `rm`, `cleanup`, `keys`, from this crate's library).

use clap::{Parser, Subcommand};

// The server allocates and frees many small buffers per request (decoding, JSON, store
// commands); mimalloc does that markedly faster than the system allocator (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use traceway_cli::{self as cli, analysis as cli_analysis, ClientArgs, LsArgs};
use traceway_server::{Config, ServeArgs};

#[derive(Parser)]
#[command(
    name = "traceway",
    version,
    about = "Tracing for AI agents: ingest, store, stream and analyse agent traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// List traces, newest first.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: LsArgs,
    },
    /// Show one trace and its span tree, or one of its formats.
    Show {
        /// The trace id.
        id: String,
        /// `compact` (one line per step) or `detailed` (every field kept) instead of the
        /// span tree.
        #[arg(long, value_parser = ["compact", "detailed"])]
        format: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Analyse one trace: critical path, bottlenecks, loops, error groups, cost.
    Analyze {
        /// The trace id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Figures across traces: count, error rate, latency percentiles, tokens and cost.
    Stats {
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Traces created within this long (90m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a trace live (or every trace of the tenant), one line per step.
    Tail {
        /// The trace id; without it, every trace of the tenant.
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a trace.
    Rm {
        /// The trace id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete finished traces that ended longer ago than --older-than (e.g. 7d, 12h).
    Cleanup {
        /// Age of the end of a trace, written like 90s, 30m, 24h, 7d.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Traces deleted per request; progress is shown between requests.
        #[arg(long, default_value_t = 500)]
        batch: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage the tenant's API keys (admin scope): create, list, revoke; or generate one
    /// offline for `serve --admin-key`.
    Keys {
        #[command(subcommand)]
        command: cli::keys::KeysCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::resolve(*args)?;
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
                .with_writer(std::io::stderr)
                .init();
            traceway_server::serve(config, traceway_server::shutdown_signal(), |addrs| {
                // Lines on stdout that scripts and tests can wait for; the gRPC line comes
                // first, so a reader that saw the HTTP line has both.
                println!("traceway otlp grpc on http://{}", addrs.grpc);
                println!("traceway listening on http://{}", addrs.http);
            })
            .await
        }
        Command::Ls { client, filter } => print(cli::ls(client, filter).await),
        Command::Show {
            id,
            format: None,
            client,
        } => print(cli::show(client, &id).await),
        Command::Show {
            id,
            format: Some(f),
            client,
        } => print(cli_analysis::show_format(client, &id, &f).await),
        Command::Analyze { id, client } => print(cli_analysis::analyze(client, &id).await),
        Command::Stats {
            agent,
            since,
            client,
        } => print(cli_analysis::stats(client, agent, since).await),
        Command::Rm { id, client } => print(cli::rm(client, &id).await),
        Command::Tail { id, client } => match cli::tail(client, id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        },
        Command::Cleanup {
            older_than,
            batch,
            client,
        } => print(cli::cleanup(client, older_than, batch).await),
        Command::Keys { command, client } => print(cli::keys::keys(client, command).await),
    }
}

/// Prints a client command's output, or its error as one line on stderr with exit code 1.
fn print(result: anyhow::Result<String>) -> anyhow::Result<()> {
    match result {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
