//! `callgate-tools`: measures a callgate from outside. None of this ships in the product.
//!
//! ```text
//! callgate-tools loadtest --calls 300 --seconds 20      # the media bridge, through a `callgate serve` child
//! callgate-tools bench-webhooks [--database-url postgres://..]   # the voice webhooks under load
//! callgate-tools echo-agent --listen 127.0.0.1:9000     # an ElevenLabs stand-in that echoes audio
//! ```

mod cpu;
mod loadtest;
mod webhook_bench;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The server runs in this process for `bench-webhooks`: the allocator `callgate` ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "callgate-tools",
    version,
    about = "Measure a callgate from outside"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the voice webhooks (incoming, code check, status) on SQLite or PostgreSQL:
    /// requests per second and latency quantiles, printed.
    BenchWebhooks {
        /// PostgreSQL to measure on (a schema is made and dropped); default: a temporary SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// Simulated callers sending requests at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
        concurrency: u32,
        /// Seconds each pass runs.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// Code checks a second the guessing pass sends, paced (latency counts from when each
        /// was due, so a server that falls behind shows it); 0 sends as fast as answers come back.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        rate: u32,
    },
    /// Measure the media bridge: concurrent simulated calls through a `callgate serve` child
    /// against a local echo agent, on loopback. Prints latency, CPU and memory per call.
    Loadtest {
        /// Concurrent calls.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=5000))]
        calls: u32,
        /// Seconds to hold all calls while measuring.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// Seconds over which the calls are started.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
        ramp_seconds: u64,
        /// The `callgate` binary to run (default: the one beside this program).
        #[arg(long, env = "CALLGATE_BIN")]
        callgate: Option<std::path::PathBuf>,
        /// Measure another bridge instead, already running: the callers open its media-stream
        /// WebSocket at this URL directly (no menu, no token), as Twilio would.
        #[arg(long, requires_all = ["peer_pid", "agent_listen"])]
        peer_url: Option<String>,
        /// The process id of that bridge, whose CPU and memory are read.
        #[arg(long)]
        peer_pid: Option<u32>,
        /// Where the echo agent listens (the other bridge must be pointed at it).
        #[arg(long)]
        agent_listen: Option<SocketAddr>,
    },
    /// Serve an ElevenLabs stand-in that plays every caller's audio back.
    EchoAgent {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("callgate-tools: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callgate-tools: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::BenchWebhooks {
            database_url,
            concurrency,
            seconds,
            rate,
        } => {
            callgate::telemetry::init_quiet();
            webhook_bench::run(webhook_bench::WebhookBench {
                database_url,
                concurrency: concurrency as usize,
                duration: std::time::Duration::from_secs(seconds),
                rate,
            })
            .await
        }
        Command::Loadtest {
            calls,
            seconds,
            ramp_seconds,
            callgate,
            peer_url,
            peer_pid,
            agent_listen,
        } => {
            callgate::telemetry::init(callgate::config::LogFormat::Text);
            let target = match (peer_url, peer_pid) {
                (Some(url), Some(pid)) => loadtest::Target::Peer { url, pid },
                _ => {
                    let callgate = match callgate {
                        Some(path) => path,
                        None => std::env::current_exe()?.with_file_name("callgate"),
                    };
                    anyhow::ensure!(
                        callgate.is_file(),
                        "no callgate binary at {} (build it with `cargo build --release`, or pass --callgate)",
                        callgate.display()
                    );
                    loadtest::Target::Callgate(callgate)
                }
            };
            loadtest::run(loadtest::LoadTest {
                calls: calls as usize,
                hold: std::time::Duration::from_secs(seconds),
                ramp: std::time::Duration::from_secs(ramp_seconds),
                target,
                agent_listen,
            })
            .await
        }
        Command::EchoAgent { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!(
                "echo agent on ws://{}/v1/convai/conversation",
                listener.local_addr()?
            );
            callgate_peers::agent::echo::serve(listener).await?;
            Ok(())
        }
    }
}
