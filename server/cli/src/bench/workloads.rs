//! The workloads: W1 throughput, W2 latency, W3 latency and throughput over
//! a large backlog, W4 two replicas on one PostgreSQL database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::ConnectOptions as _;
use taskplane_agent::Agent;
use taskplane_agent::ConnectOptions;
use taskplane_common::AuthChannel;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    EnqueueTaskRequest, EnqueueTasksRequest, ListTasksRequest, RegisterTaskTypeRequest, TaskStatus,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::limit::{self, Limits};
use super::probe::{BACKLOG_TYPE, NOOP_TYPE, Probe, registry};
use super::usage::Usage;
use super::{BenchArgs, BenchBackend, Measurement, OutputFormat};
use crate::client_cli::ClientError;
use taskplane_server::Server;
use taskplane_server::config::{QueueConfig, ServerConfig};
use taskplane_server::testing::PostgresSchema;

/// A database the benchmark owns for one backend, dropped afterwards.
struct Database {
    url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<PostgresSchema>,
}

impl Database {
    async fn create(backend: BenchBackend, postgres_url: &str) -> anyhow::Result<Self> {
        Ok(match backend {
            BenchBackend::Sqlite => {
                let dir = tempfile::tempdir()?;
                Database {
                    url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                    _dir: Some(dir),
                    schema: None,
                }
            }
            BenchBackend::Postgres => {
                let schema = PostgresSchema::create_in(postgres_url).await.map_err(|e| {
                    anyhow::anyhow!("PostgreSQL at {postgres_url} is unreachable: {e}")
                })?;
                Database {
                    url: schema.url.clone(),
                    _dir: None,
                    schema: Some(schema),
                }
            }
        })
    }

    async fn drop(self) {
        if let Some(schema) = self.schema {
            schema.drop().await;
        }
    }
}

/// A server the benchmark started in this process.
struct RunningServer {
    url: String,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    async fn start(database_url: &str) -> anyhow::Result<Self> {
        let config = ServerConfig {
            security: Default::default(),
            metrics_listen: None,
            listen: "127.0.0.1:0".parse()?,
            database_url: database_url.to_owned(),
            queue: QueueConfig::default(),
        };
        let server = Server::bind(config).await?;
        let url = format!("http://{}", server.local_addr());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(server.serve(async move { token.cancelled().await }));
        Ok(RunningServer { url, stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// Agents running the no-op handler.
struct Agents {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), taskplane_agent::AgentError>>>,
}

impl Agents {
    async fn start(
        servers: &Servers,
        count: usize,
        concurrency: u32,
        probe: &Arc<Probe>,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for i in 0..count {
            let agent = Agent::builder()
                .registry(registry(probe))
                .server(&servers.urls[i % servers.urls.len()])
                .connect_options(servers.options.clone())
                .name(format!("bench-{i}"))
                .max_concurrency(concurrency)
                .build()?;
            let mut state = agent.connection_state();
            let token = stop.clone();
            tasks.push(tokio::spawn(
                agent.run(async move { token.cancelled().await }),
            ));
            state
                .wait_for(|s| matches!(s, taskplane_agent::ConnectionState::Registered { .. }))
                .await?;
        }
        Ok(Agents { stop, tasks })
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The servers a workload runs against and how to reach them.
#[derive(Clone)]
struct Servers {
    urls: Vec<String>,
    options: ConnectOptions,
}

impl Servers {
    /// A new connection to the first server, where clients enqueue.
    async fn channel(&self) -> anyhow::Result<AuthChannel> {
        Ok(self.options.connect(&self.urls[0]).await?)
    }
}

async fn register_types(servers: &Servers) -> anyhow::Result<()> {
    let mut registry = RegistryServiceClient::new(servers.channel().await?);
    for task_type in [NOOP_TYPE, BACKLOG_TYPE] {
        let request = RegisterTaskTypeRequest {
            task_type: task_type.into(),
            domain: "bench".into(),
            ..Default::default()
        };
        registry.register_task_type(request).await?;
    }
    Ok(())
}

fn noop(task_type: &str) -> EnqueueTaskRequest {
    EnqueueTaskRequest {
        task_type: task_type.into(),
        payload: Some(Default::default()),
        ..Default::default()
    }
}

/// Where progress bars that run at the same time draw: the terminal, or
/// nowhere with `--output json`.
fn progress_group(args: &BenchArgs) -> indicatif::MultiProgress {
    if args.output == OutputFormat::Json {
        return indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    indicatif::MultiProgress::new()
}

/// A progress bar of `length` steps named `label`, hidden with
/// `--output json`.
fn progress(args: &BenchArgs, length: u64, label: &str) -> indicatif::ProgressBar {
    if args.output == OutputFormat::Json {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>28} {bar:40} {pos}/{len} {per_sec}")
            .expect("a valid template"),
    );
    bar.set_message(label.to_owned());
    bar
}

/// Enqueues `count` no-op tasks in batches; returns tasks/s.
async fn enqueue_batched(
    servers: &Servers,
    task_type: &str,
    count: usize,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<f64> {
    let mut client = TaskServiceClient::new(servers.channel().await?);
    let started = Instant::now();
    let mut sent = 0;
    while sent < count {
        let size = batch.min(count - sent);
        client
            .enqueue_tasks(EnqueueTasksRequest {
                tasks: (0..size).map(|_| noop(task_type)).collect(),
            })
            .await?;
        sent += size;
        bar.set_position(sent as u64);
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Enqueues `count` tasks one RPC each from `clients` concurrent clients; returns tasks/s.
async fn enqueue_single(servers: &Servers, count: usize, clients: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..clients {
        let mut client = TaskServiceClient::new(servers.channel().await?);
        let share = count / clients + usize::from(worker < count % clients);
        workers.push(tokio::spawn(async move {
            for _ in 0..share {
                client.enqueue_task(noop(NOOP_TYPE)).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Waits until the probe saw `expected` distinct tasks and the store has no
/// PENDING or RUNNING no-op task left.
async fn wait_drained(
    servers: &Servers,
    probe: &Probe,
    expected: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while probe.distinct() < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {expected} tasks ran within 10 minutes",
            probe.distinct()
        );
        bar.set_position(probe.distinct() as u64);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bar.set_position(expected as u64);
    let mut client = TaskServiceClient::new(servers.channel().await?);
    for status in [TaskStatus::Pending, TaskStatus::Running] {
        loop {
            let request = ListTasksRequest {
                task_type: NOOP_TYPE.into(),
                status: status as i32,
                page_size: 1,
                ..Default::default()
            };
            if client
                .list_tasks(request)
                .await?
                .into_inner()
                .tasks
                .is_empty()
            {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "tasks still {status:?} after 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// W1: enqueue N (batched), then drain with the agents; one-by-one enqueue separately.
async fn w1(
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
fn change_percent(before: f64, after: f64) -> f64 {
    ((after / before - 1.0) * 1000.0).round() / 10.0
}

/// How many tasks W2 enqueues: its rate for its duration.
fn w2_tasks(args: &BenchArgs) -> usize {
    (f64::from(args.rate) * args.duration.as_secs_f64()) as usize
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
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
async fn w2(
    args: &BenchArgs,
    servers: &Servers,
    bar: indicatif::ProgressBar,
    limit: Option<&[f64]>,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let probe = Arc::new(Probe::default());
    let agents = Agents::start(servers, args.agents, args.concurrency, &probe).await?;
    let mut client = TaskServiceClient::new(servers.channel().await?);
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
        let id = client
            .enqueue_task(noop(NOOP_TYPE))
            .await?
            .into_inner()
            .task
            .map(|t| t.id)
            .unwrap_or_default();
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

/// Counts the `count` COMPLETED tasks seeded straight into the database, as
/// the completions that would have made them would have (queue statistics
/// read finished tasks from `task_counts`).
async fn count_seeded<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, count: usize) -> anyhow::Result<()>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    &'static str: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    sqlx::query("INSERT INTO task_counts (task_type, status, second, count) VALUES ($1, 'completed', 0, $2)")
        .bind(BACKLOG_TYPE)
        .bind(count as i64)
        .execute(&mut *pool.acquire().await?)
        .await?;
    Ok(())
}

/// Seeds W3's backlog straight into the database: `count` PENDING tasks of a
/// type no agent serves and `count` COMPLETED ones.
async fn seed_backlog(database_url: &str, count: usize) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    // One statement per 100,000 rows keeps each transaction short.
    let chunk = 100_000;
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                taskplane_server::store::SqliteStore::connect_options(database_url)?
                    .disable_statement_logging(),
            )
            .await?;
        for status in ["pending", "completed"] {
            for start in (0..count).step_by(chunk) {
                let rows = chunk.min(count - start);
                sqlx::query(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                     INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts, max_attempts, timeout_ms,
                         retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at, finished_at)
                     SELECT printf('00000000-0000-7000-8%03d-%012d', ?4, ?5 + i), ?2, 'bench', '{}', ?3, 0, 0, 3, 1000, 1000, 2.0, 1000, ?6, ?6, ?6,
                         CASE ?3 WHEN 'completed' THEN ?6 END FROM n",
                )
                .bind(rows as i64)
                .bind(BACKLOG_TYPE)
                .bind(status)
                .bind(i64::from(status == "completed"))
                .bind(start as i64)
                .bind(now)
                .execute(&pool)
                .await?;
            }
        }
        count_seeded(&pool, count).await?;
        // Let the backlog settle as one that built up over time would
        // have: the seeding's write-ahead log copied into the database,
        // not left for the checkpointer to copy during the measurement.
        // PASSIVE copies it without holding off the server's writer; a
        // TRUNCATE alone blocked writers while it copied, and the server's
        // lease refresh gave up behind it ("database is locked").
        for checkpoint in [
            "PRAGMA wal_checkpoint(PASSIVE)",
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ] {
            sqlx::query(checkpoint).execute(&pool).await?;
        }
        return Ok(());
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            taskplane_server::store::PostgresStore::connect_options(database_url)?
                .disable_statement_logging(),
        )
        .await?;
    for status in ["pending", "completed"] {
        for start in (0..count).step_by(chunk) {
            let rows = chunk.min(count - start);
            sqlx::query(
                "INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts, max_attempts, timeout_ms,
                     retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at, finished_at)
                 SELECT gen_random_uuid(), $1, 'bench', '{}'::jsonb, $2, 0, 0, 3, 1000, 1000, 2.0, 1000, $3, $3, $3,
                     CASE $2 WHEN 'completed' THEN $3 END
                 FROM generate_series(1, $4)",
            )
            .bind(BACKLOG_TYPE)
            .bind(status)
            .bind(now)
            .bind(rows as i64)
            .execute(&pool)
            .await?;
        }
    }
    count_seeded(&pool, count).await?;
    // Let the backlog settle as one that built up over time would have:
    // vacuumed (visibility map and hint bits set, as autovacuum leaves a
    // table; the measurement must not pay for the seeding's first visit),
    // analysed, and written to disk (as SQLite's checkpoint above), not
    // left for the checkpointer and the kernel to flush while the
    // measurement waits on its own fsyncs.
    sqlx::query("VACUUM ANALYZE tasks").execute(&pool).await?;
    if let Err(error) = sqlx::query("CHECKPOINT").execute(&pool).await {
        tracing::warn!(%error, "cannot checkpoint after seeding the backlog (needs a superuser or the pg_checkpoint role); W3 may pay for writing the seed");
    }
    Ok(())
}

/// The rounds W3 measured on one side: each round's W2 figures with its
/// W1 figures laid over them (only `tasks` is in both, and W3 reads it from
/// neither).
#[derive(Default)]
struct Rounds(Vec<serde_json::Map<String, Value>>);

/// The figures W3 compares between its two sides.
const COMPARED: [&str; 3] = ["p99_ms", "processed_per_sec", "cpu_ms_per_1000_tasks"];

impl Rounds {
    /// Records one round's W2 (`latency`) and W1 (`throughput`) figures.
    fn push(
        &mut self,
        mut latency: serde_json::Map<String, Value>,
        throughput: serde_json::Map<String, Value>,
    ) {
        latency.extend(throughput);
        self.0.push(latency);
    }

    /// One figure of every round, in round order.
    fn each(&self, name: &str) -> Vec<f64> {
        self.0.iter().filter_map(|r| r[name].as_f64()).collect()
    }

    /// This side's figures, each name prefixed with `prefix`: the median
    /// round's latency percentiles, throughput and CPU per task, the worst
    /// latency of all rounds, how many tasks started, and every round's
    /// compared figures.
    fn figures(&self, prefix: &str) -> serde_json::Map<String, Value> {
        let mut figures = serde_json::Map::new();
        for name in ["p50_ms", "p95_ms"].into_iter().chain(COMPARED) {
            figures.insert(format!("{prefix}{name}"), json!(median(self.each(name))));
        }
        let worst = self.each("max_ms").into_iter().fold(0.0, f64::max);
        figures.insert(format!("{prefix}max_ms"), json!(worst));
        let started: f64 = self.each("started").iter().sum();
        figures.insert(format!("{prefix}started"), json!(started));
        for name in COMPARED {
            figures.insert(format!("{prefix}{name}_rounds"), json!(self.each(name)));
        }
        figures
    }
}

/// The median of `values` (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}

/// W3: W2's latency and W1's throughput over a seeded backlog, against the
/// same measurements on an empty control queue (a database and server of
/// its own), so the machine's drift during the run falls on both sides
/// alike. In each round the two W2 windows run at the same time, then W1
/// runs on each side in turn (control first in odd rounds). Each side's
/// figure is the median of its rounds (`max_ms` the worst of all); each
/// change is the median of the rounds' changes.
async fn w3(
    args: &BenchArgs,
    backend: BenchBackend,
    database: &Database,
    servers: &Servers,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let seeded = Instant::now();
    seed_backlog(&database.url, args.backlog).await?;
    let seed_seconds = seeded.elapsed().as_secs_f64().round();
    let control_database = Database::create(backend, &args.postgres_url).await?;
    let control_server = RunningServer::start(&control_database.url).await?;
    let control = Servers {
        urls: vec![control_server.url.clone()],
        options: ConnectOptions::default(),
    };
    register_types(&control).await?;
    let (mut backlog, mut empty) = (Rounds::default(), Rounds::default());
    let bars = progress_group(args);
    for round in 0..args.rounds {
        // Both sides' W2 windows run at once, so a stall of the machine
        // delays the tasks of both alike instead of one side's window.
        let window = |side: &str| {
            let label = format!("W3 round {} {side}", round + 1);
            bars.add(progress(args, w2_tasks(args) as u64, &label))
        };
        let (empty_latency, backlog_latency) = tokio::try_join!(
            w2(args, &control, window("empty"), None),
            w2(args, servers, window("backlog"), None),
        )?;
        // W1 takes the machine for itself, so the sides take turns.
        let mut sides = [
            (&control, &mut empty, empty_latency),
            (servers, &mut backlog, backlog_latency),
        ];
        if round % 2 == 1 {
            sides.reverse();
        }
        for (servers, rounds, latency) in sides {
            rounds.push(latency, w1(args, servers, None).await?);
        }
    }
    control_server.stop().await?;
    control_database.drop().await;
    let mut figures = serde_json::Map::new();
    figures.insert("backlog_pending".into(), json!(args.backlog));
    figures.insert("backlog_completed".into(), json!(args.backlog));
    figures.insert("seed_seconds".into(), json!(seed_seconds));
    figures.insert("rounds".into(), json!(args.rounds));
    figures.insert("tasks".into(), json!(w2_tasks(args)));
    figures.insert("rate_per_sec".into(), json!(args.rate));
    figures.insert("warmup_calls".into(), json!(limit::WARMUP_CALLS));
    figures.extend(backlog.figures(""));
    figures.extend(empty.figures("empty_"));
    // Each round's change sets the backlog against the control measured
    // just before or after it; the median of those changes is reported.
    for name in COMPARED {
        let changes: Vec<f64> = backlog
            .each(name)
            .into_iter()
            .zip(empty.each(name))
            .map(|(backlog, empty)| change_percent(empty, backlog))
            .collect();
        let stem = name.split('_').next().unwrap_or(name);
        figures.insert(format!("{stem}_change_percent_rounds"), json!(changes));
        figures.insert(format!("{stem}_change_percent"), json!(median(changes)));
    }
    for name in ["lost", "duplicated"] {
        let total: f64 = [&backlog, &empty]
            .iter()
            .flat_map(|side| side.each(name))
            .sum();
        figures.insert(name.into(), json!(total));
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
    let wants = |name: &str| args.workloads.iter().any(|w| w.eq_ignore_ascii_case(name));
    for &backend in &args.backend {
        let database = match &args.server {
            Some(_) => None,
            None => Some(Database::create(backend, &args.postgres_url).await?),
        };
        let server = match &database {
            Some(database) => Some(RunningServer::start(&database.url).await?),
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
        let mut record = |workload: &str, figures: serde_json::Map<String, Value>| {
            measurements.push(Measurement {
                backend,
                workload: workload.into(),
                figures,
            });
        };
        let limits = match (&args.server, wants("w1")) {
            (None, true) => {
                let scratch = Database::create(backend, &args.postgres_url).await?;
                let limits = match backend {
                    BenchBackend::Sqlite => limit::sqlite(&scratch.url, args.tasks).await?,
                    BenchBackend::Postgres => limit::postgres(&scratch.url, args.tasks).await?,
                };
                scratch.drop().await;
                Some(limits)
            }
            _ => None,
        };
        let latency_limit = match (&args.server, wants("w2")) {
            (None, true) => {
                let scratch = Database::create(backend, &args.postgres_url).await?;
                let count = w2_tasks(&args);
                let latencies = match backend {
                    BenchBackend::Sqlite => {
                        limit::sqlite_latency(&scratch.url, count, args.rate).await?
                    }
                    BenchBackend::Postgres => {
                        limit::postgres_latency(&scratch.url, count, args.rate).await?
                    }
                };
                scratch.drop().await;
                Some(latencies)
            }
            _ => None,
        };
        if wants("w1") {
            record("W1 throughput", w1(&args, &servers, limits).await?);
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
        if let (true, Some(database), BenchBackend::Postgres) = (wants("w4"), &database, backend) {
            let second = RunningServer::start(&database.url).await?;
            let mut replicas = servers.clone();
            replicas.urls.push(second.url.clone());
            let agents_args = BenchArgs {
                agents: args.agents.max(2),
                ..args.clone()
            };
            record("W4 two replicas", w1(&agents_args, &replicas, None).await?);
            second.stop().await?;
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
