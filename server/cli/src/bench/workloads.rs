//! The workloads: W1 throughput, W2 latency, W3 latency and throughput over
//! a large backlog, W4 two replicas on one PostgreSQL database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskplane_agent::ConnectOptions;

use super::backlog::w3;
use super::harness::*;
use super::limit::{self, Limits};
use super::probe::{NOOP_TYPE, Probe};
use super::usage::Usage;
use super::{BenchArgs, BenchBackend, Measurement, OutputFormat};
use crate::client_cli::ClientError;

/// W1: enqueue N (batched), then drain with the agents; one-by-one enqueue separately.
pub(super) async fn w1(
    args: &BenchArgs,
    servers: &Servers,
    limits: Option<Limits>,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let probe = Arc::new(Probe::default());
    let bar = progress(args, args.tasks as u64, "W1 enqueue (batched)");
    let enqueue_batched_rate =
        enqueue_batched(servers, NOOP_TYPE, args.tasks, args.batch_size, &bar).await?;
    bar.finish_and_clear();
    let started = Instant::now();
    let before = Usage::now();
    let agents = Agents::start(servers, args.agents, args.concurrency, &probe).await?;
    let bar = progress(args, args.tasks as u64, "W1 process");
    wait_drained(servers, &probe, args.tasks, &bar).await?;
    let processed_rate = args.tasks as f64 / started.elapsed().as_secs_f64();
    let cpu = Usage::now().cpu - before.cpu;
    // Milliseconds per 1,000 tasks: seconds × 1,000 × 1,000 / tasks.
    let cpu_per_thousand = cpu.as_secs_f64() * 1e6 / args.tasks as f64;
    bar.finish_and_clear();
    let duplicates = probe.duplicates();
    let lost = args.tasks - probe.distinct();
    probe.reset();
    let enqueue_single_rate = enqueue_single(servers, args.single_tasks, args.clients).await?;
    let bar = progress(args, args.single_tasks as u64, "W1 process one-by-one");
    wait_drained(servers, &probe, args.single_tasks, &bar).await?;
    bar.finish_and_clear();
    let duplicates = duplicates + probe.duplicates();
    agents.stop().await;
    let mut figures = serde_json::Map::new();
    figures.insert("tasks".into(), json!(args.tasks));
    figures.insert("slots_per_agent".into(), json!(args.concurrency));
    figures.insert(
        "enqueue_batched_per_sec".into(),
        json!(enqueue_batched_rate.round()),
    );
    figures.insert(
        "enqueue_single_per_sec".into(),
        json!(enqueue_single_rate.round()),
    );
    figures.insert("processed_per_sec".into(), json!(processed_rate.round()));
    figures.insert(
        "cpu_ms_per_1000_tasks".into(),
        json!((cpu_per_thousand * 10.0).round() / 10.0),
    );
    figures.insert("lost".into(), json!(lost));
    figures.insert("duplicated".into(), json!(duplicates));
    if let Some(limits) = limits {
        figures.insert(
            "limit_enqueue_per_sec".into(),
            json!(limits.enqueue_per_sec.round()),
        );
        figures.insert(
            "limit_process_per_sec".into(),
            json!(limits.process_per_sec.round()),
        );
        figures.insert(
            "enqueue_fraction_of_limit".into(),
            json!((enqueue_batched_rate / limits.enqueue_per_sec * 100.0).round() / 100.0),
        );
        figures.insert(
            "processed_fraction_of_limit".into(),
            json!((processed_rate / limits.process_per_sec * 100.0).round() / 100.0),
        );
    }
    Ok(figures)
}

/// How far `after` is from `before`, in percent of `before`, to 0.1.
pub(super) fn change_percent(before: f64, after: f64) -> f64 {
    ((after / before - 1.0) * 1000.0).round() / 10.0
}

/// How many tasks W2 enqueues: its rate for its duration.
pub(super) fn w2_tasks(args: &BenchArgs) -> usize {
    (f64::from(args.rate) * args.duration.as_secs_f64()) as usize
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Puts the p50, p95, p99 and max of `sorted` milliseconds into `figures`,
/// each name prefixed with `prefix`.
fn insert_percentiles(
    figures: &mut serde_json::Map<String, Value>,
    prefix: &str,
    sorted: &[f64],
    which: &[(&str, f64)],
) {
    for (name, p) in which {
        figures.insert(
            format!("{prefix}{name}"),
            json!((percentile(sorted, *p) * 1000.0).round() / 1000.0),
        );
    }
}

/// W2: enqueue at a steady rate with idle agents; enqueue → handler start
/// latency, beside the latency limit row's (`limit`, sorted milliseconds)
/// and the transport's (a health check round trip at the same rate).
/// `bar` counts the enqueued tasks (see [`progress`]).
pub(super) async fn w2(
    args: &BenchArgs,
    servers: &Servers,
    bar: indicatif::ProgressBar,
    limit: Option<&[f64]>,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let probe = Arc::new(Probe::default());
    let agents = Agents::start(servers, args.agents, args.concurrency, &probe).await?;
    let client = servers.client().await?;
    let total = w2_tasks(args);
    let round_trips =
        limit::rpc_round_trips(servers.channel().await?, total.min(1000), args.rate).await?;
    // The bar was drawn before the round trips; its rate counts from here.
    bar.reset();
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..limit::WARMUP_CALLS {
        ticker.tick().await;
        client.enqueue_task(noop(NOOP_TYPE)).await?;
    }
    let mut sent = Vec::with_capacity(total);
    // How long each enqueue RPC took (its commit included): the part of
    // the latency spent before the task could be dispatched.
    let mut accepted = Vec::with_capacity(total);
    for _ in 0..total {
        ticker.tick().await;
        let at = Instant::now();
        let id = client.enqueue_task(noop(NOOP_TYPE)).await?.task.id;
        accepted.push(at.elapsed().as_secs_f64() * 1000.0);
        sent.push((id, at));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe.distinct() < limit::WARMUP_CALLS + total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            probe
                .started(id)
                .map(|started| started.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    accepted.sort_by(f64::total_cmp);
    agents.stop().await;
    let mut figures = serde_json::Map::new();
    figures.insert("tasks".into(), json!(total));
    figures.insert("rate_per_sec".into(), json!(args.rate));
    figures.insert("warmup_calls".into(), json!(limit::WARMUP_CALLS));
    figures.insert("started".into(), json!(latencies.len()));
    let all = [
        ("p50_ms", 50.0),
        ("p95_ms", 95.0),
        ("p99_ms", 99.0),
        ("max_ms", 100.0),
    ];
    let tail = [("p50_ms", 50.0), ("p99_ms", 99.0)];
    insert_percentiles(&mut figures, "", &latencies, &all);
    insert_percentiles(&mut figures, "enqueue_rpc_", &accepted, &tail);
    insert_percentiles(&mut figures, "rpc_floor_", &round_trips, &tail);
    if let Some(limit) = limit {
        insert_percentiles(&mut figures, "limit_", limit, &tail);
    }
    Ok(figures)
}

/// Runs the chosen workloads on each backend and prints the report. A
/// server's refusal reads as the client commands print it (`CODE: message`).
pub async fn run_benchmarks(args: BenchArgs) -> anyhow::Result<()> {
    run_workloads(args)
        .await
        .map_err(|error| match error.downcast::<tonic::Status>() {
            Ok(status) => ClientError::Status(status).into(),
            Err(error) => error,
        })
}

async fn run_workloads(args: BenchArgs) -> anyhow::Result<()> {
    let mut measurements: Vec<Measurement> = Vec::new();
    let durability = args.sqlite_synchronous.into();
    let wants = |name: &str| args.workloads.iter().any(|w| w.eq_ignore_ascii_case(name));
    for &backend in &args.backend {
        let database = match &args.server {
            Some(_) => None,
            None => Some(Database::create(backend, &args.postgres_url).await?),
        };
        let server = match &database {
            Some(database) => Some(RunningServer::start(&database.url, durability).await?),
            None => None,
        };
        // The token and TLS settings are for `--server`; a server the
        // benchmark starts itself checks no token and serves plain TCP.
        let servers = match &server {
            Some(server) => Servers {
                urls: vec![server.url.clone()],
                options: ConnectOptions::default(),
            },
            None => Servers {
                urls: vec![args.server.clone().unwrap_or_default()],
                options: args.connect.options(),
            },
        };
        register_types(&servers).await?;
        define_schedules(&servers, args.schedules).await?;
        let mut record = |workload: &str, mut figures: serde_json::Map<String, Value>| {
            figures.insert("durability".into(), json!(durability_of(&args, backend)));
            if args.schedules > 0 {
                figures.insert("schedules".into(), json!(args.schedules));
            }
            measurements.push(Measurement {
                backend,
                workload: workload.into(),
                figures,
            });
        };
        let limits = match (&args.server, wants("w1")) {
            (None, true) => Some(throughput_limits(&args, backend).await?),
            _ => None,
        };
        let latency_limit = match (&args.server, wants("w2")) {
            (None, true) => Some(latency_limits(&args, backend).await?),
            _ => None,
        };
        if wants("w1") {
            record("W1 throughput", w1(&args, &servers, limits).await?);
            if args.wide_concurrency > 0 && args.wide_concurrency != args.concurrency {
                let wide = BenchArgs {
                    concurrency: args.wide_concurrency,
                    ..args.clone()
                };
                record("W1 throughput (wide)", w1(&wide, &servers, limits).await?);
            }
        }
        if wants("w1x") {
            record(
                "W1x external agent",
                super::external::w1_external(&args, &servers).await?,
            );
        }
        if wants("w2") {
            let limit = latency_limit.as_deref();
            let bar = progress(&args, w2_tasks(&args) as u64, "W2 steady rate");
            let figures = w2(&args, &servers, bar, limit).await?;
            record("W2 latency", figures);
        }
        if let (true, Some(database)) = (wants("w3"), &database) {
            record("W3 backlog", w3(&args, backend, database, &servers).await?);
        }
        if wants("w5") {
            record("W5 many agents", super::scale::w5(&args, &servers).await?);
        }
        if wants("w6") {
            record(
                "W6 many task types",
                super::scale::w6(&args, &servers).await?,
            );
        }
        if wants("w7") {
            record("W7 slow handlers", super::scale::w7(&args, &servers).await?);
        }
        if wants("w10") {
            record("W10 flow control", super::flow::w10(&args, &servers).await?);
        }
        if wants("w8") {
            record(
                "W8 many producers",
                super::scale::w8(&args, &servers).await?,
            );
        }
        if let (true, Some(_)) = (wants("w9"), &database) {
            let scratch = Database::create(backend, &args.postgres_url).await?;
            let figures = super::scale::w9(&args, &scratch.url).await;
            scratch.drop().await;
            record("W9 idle agents", figures?);
        }
        if let (true, Some(database), BenchBackend::Postgres) = (wants("w4"), &database, backend) {
            let second = RunningServer::start(&database.url, durability).await?;
            let mut replicas = servers.clone();
            replicas.urls.push(second.url.clone());
            let agents_args = BenchArgs {
                agents: args.agents.max(2),
                ..args.clone()
            };
            record("W4 two replicas", w1(&agents_args, &replicas, None).await?);
            second.stop().await?;
        }
        // Last: it leaves the store seeded with the backlog.
        if let (true, Some(database), Some(server)) = (wants("w11"), &database, &server) {
            let seeded = wants("w3");
            let figures =
                super::console::w11(&args, &servers, server.console, database, seeded).await?;
            record("W11 console open", figures);
        }
        if let Some(server) = server {
            server.stop().await?;
        }
        if let Some(database) = database {
            database.drop().await;
        }
    }
    print_report(&args, &measurements);
    Ok(())
}

/// How the rows of `backend` commit, as a report prints it.
fn durability_of(args: &BenchArgs, backend: BenchBackend) -> String {
    match (&args.server, backend) {
        (Some(_), _) => "as the server is configured".into(),
        (None, BenchBackend::Sqlite) => format!(
            "synchronous={}",
            taskplane_server::SqliteDurability::from(args.sqlite_synchronous).pragma()
        ),
        (None, BenchBackend::Postgres) => {
            "synchronous_commit=on (claims: off; a lost claim only reruns a task)".into()
        }
    }
}

/// W1's limit rows on a scratch database of `backend`.
async fn throughput_limits(args: &BenchArgs, backend: BenchBackend) -> anyhow::Result<Limits> {
    let scratch = Database::create(backend, &args.postgres_url).await?;
    let limits = match backend {
        BenchBackend::Sqlite => {
            limit::sqlite(&scratch.url, args.tasks, args.sqlite_synchronous.into()).await?
        }
        BenchBackend::Postgres => limit::postgres(&scratch.url, args.tasks).await?,
    };
    scratch.drop().await;
    Ok(limits)
}

/// W2's latency limit row on a scratch database of `backend`: one durable
/// insert per task at W2's rate, each latency in milliseconds.
async fn latency_limits(args: &BenchArgs, backend: BenchBackend) -> anyhow::Result<Vec<f64>> {
    let scratch = Database::create(backend, &args.postgres_url).await?;
    let count = w2_tasks(args);
    let latencies = match backend {
        BenchBackend::Sqlite => {
            let durability = args.sqlite_synchronous.into();
            limit::sqlite_latency(&scratch.url, count, args.rate, durability).await?
        }
        BenchBackend::Postgres => limit::postgres_latency(&scratch.url, count, args.rate).await?,
    };
    scratch.drop().await;
    Ok(latencies)
}

fn print_report(args: &BenchArgs, measurements: &[Measurement]) {
    let peak = Usage::now().peak_rss_mib;
    if args.output == OutputFormat::Json {
        let report = json!({
            "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
            "peak_rss_mib": peak,
            "results": measurements,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON serializes")
        );
        return;
    }
    println!("{:<10} {:<18} figures", "backend", "workload");
    for measurement in measurements {
        let figures: Vec<String> = measurement
            .figures
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<10} {:<18} {}",
            format!("{:?}", measurement.backend).to_lowercase(),
            measurement.workload,
            figures.join("  ")
        );
    }
    println!("peak RSS of this process (server, agents and clients): {peak} MiB");
}
