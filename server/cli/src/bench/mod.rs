//! `taskplane bench`: throughput and latency workloads with no-op handlers,
//! against an embedded server it starts (SQLite or PostgreSQL) or a running
//! one (`--server`), with "limit rows" — the minimum SQL a durable task
//! needs, on the same database — so figures can be read against what the
//! database allows on this machine: W1 as fractions of batched inserts,
//! leases and completions; W2 beside one durable insert per task at W2's
//! rate.
//!
//! - [`workloads`]: W1 throughput, W2 latency, W4 scale-out, and the run.
//! - [`backlog`]: W3, latency and throughput over a seeded backlog.
//! - [`scale`]: W5–W9, many agents, many types, slow handlers, many
//!   producers, idle agents.
//! - [`flow`]: W10, W1's work under a per-key limit and a rate limit.
//! - [`console`]: W11, W1 with the web console open, and its pages over a
//!   million tasks.
//! - [`harness`]: the database, servers and agents the workloads run on.
//! - [`limit`]: the limit rows.
//! - [`probe`]: the no-op agent that counts executions and start times.
//! - [`usage`]: this process's CPU time and peak memory.

mod backlog;
mod console;
mod external;
mod flow;
mod harness;
mod limit;
mod probe;
mod scale;
mod usage;
mod workloads;

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::client_cli::ConnectArgs;

pub use workloads::run_benchmarks;

/// Which database the embedded server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchBackend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in `--postgres-url`.
    Postgres,
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people, with progress bars on a terminal.
    Table,
    /// One JSON document, nothing else on stdout.
    Json,
}

/// `taskplane bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Databases to run against (repeat or comma-separate for several).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    pub backend: Vec<BenchBackend>,
    /// The PostgreSQL server for `--backend postgres` (a private schema is created and dropped).
    #[arg(
        long,
        env = "TASKPLANE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
    /// Benchmark a running server instead of starting one (no limit row, no W3 seeding, no W4).
    #[arg(long)]
    pub server: Option<String>,
    /// The token and TLS settings for `--server` (an admin token: the
    /// benchmark registers its task types, enqueues and serves them).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Workloads to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "w1,w2,w3,w4,w5,w6,w7,w8,w9,w10,w11"
    )]
    pub workloads: Vec<String>,
    /// W1: tasks to enqueue and process.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    /// W1: tasks per EnqueueTasks call.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// W1: tasks enqueued one RPC at a time (reported separately).
    #[arg(long, default_value_t = 2000)]
    pub single_tasks: usize,
    /// W1: concurrent clients for one-by-one enqueues.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Agents (each one stream).
    #[arg(long, default_value_t = 1)]
    pub agents: usize,
    /// Slots per agent (the SDK's default).
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// W1 again with this many slots per agent, reported beside the
    /// default's row (0: not run).
    #[arg(long, default_value_t = 512)]
    pub wide_concurrency: u32,
    /// SQLite's `synchronous` for the server and the limit rows: `full`
    /// (taskplane's default) or `normal`.
    #[arg(long, value_enum, default_value_t = crate::cli::Synchronous::Full)]
    pub sqlite_synchronous: crate::cli::Synchronous,
    /// W9: idle agents connected to a server of its own process.
    #[arg(long, default_value_t = 1000)]
    pub idle_agents: usize,
    /// W9: how long the idle agents are watched (the default lease sends
    /// a heartbeat every 10 s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_window: Duration,
    /// W7: tasks whose handler sleeps 50 ms.
    #[arg(long, default_value_t = 20_000)]
    pub slow_tasks: usize,
    /// W2/W3: tasks per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// W2/W3: how long to enqueue at that rate; W8: how long producers
    /// enqueue.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// W3: PENDING tasks of another type (and as many COMPLETED) seeded
    /// first; W11 times the console's pages over as many.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// W3: rounds, each measuring W2 over the backlog and on an empty
    /// control queue at the same time, then W1 on each in turn. W11: pairs
    /// of W1 runs, without and with the console open.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Active schedules defined before the workloads run (daily, spread
    /// over the day), to show that many schedules cost the queue nothing.
    #[arg(long, default_value_t = 0)]
    pub schedules: usize,
    /// W1x: the command that starts the agent draining W1 (run with
    /// `sh -c`; it gets `TASKPLANE_SERVER`, `BENCH_TASK_TYPE` and
    /// `BENCH_DOMAIN`), e.g. "python3 agent/python/examples/noop_agent.py".
    #[arg(long)]
    pub agent_command: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// One measured figure set of one workload on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The database.
    pub backend: BenchBackend,
    /// W1, W2, …
    pub workload: String,
    /// What was measured, e.g. "processed tasks/s".
    pub figures: serde_json::Map<String, serde_json::Value>,
}
