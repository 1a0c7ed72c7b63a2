//! What every workload runs on: the database and servers it starts, the
//! no-op agents, and the enqueue and drain loops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskplane_agent::Agent;
use taskplane_agent::ConnectOptions;
use taskplane_client::{Client, NewTask, Schedule, TaskFilter, TaskStatus};
use taskplane_common::AuthChannel;
use taskplane_proto::v1::RegisterTaskTypeRequest;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::probe::{BACKLOG_TYPE, NOOP_TYPE, PRODUCERS_TYPE, Probe, SLOW_TYPE, Serves, registry};
use super::{BenchArgs, BenchBackend, OutputFormat};
use taskplane_server::Server;
use taskplane_server::config::{QueueConfig, ServerConfig};
use taskplane_server::testing::PostgresSchema;

/// A database the benchmark owns for one backend, dropped afterwards.
pub(super) struct Database {
    pub(super) url: String,
    pub(super) _dir: Option<tempfile::TempDir>,
    pub(super) schema: Option<PostgresSchema>,
}

impl Database {
    pub(super) async fn create(backend: BenchBackend, postgres_url: &str) -> anyhow::Result<Self> {
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

    pub(super) async fn drop(self) {
        if let Some(schema) = self.schema {
            schema.drop().await;
        }
    }
}

/// A server the benchmark started in this process.
pub(super) struct RunningServer {
    pub(super) url: String,
    /// Its web console (W11).
    pub(super) console: std::net::SocketAddr,
    pub(super) stop: CancellationToken,
    pub(super) task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    pub(super) async fn start(
        database_url: &str,
        sqlite_durability: taskplane_server::SqliteDurability,
    ) -> anyhow::Result<Self> {
        let config = ServerConfig {
            security: Default::default(),
            metrics_listen: None,
            console_listen: Some("127.0.0.1:0".parse()?),
            listen: "127.0.0.1:0".parse()?,
            database_url: database_url.to_owned(),
            queue: QueueConfig {
                sqlite_durability,
                ..QueueConfig::default()
            },
        };
        let server = Server::bind(config).await?;
        let url = format!("http://{}", server.local_addr());
        let console = server
            .console_addr()
            .ok_or_else(|| anyhow::anyhow!("the console was asked for"))?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(server.serve(async move { token.cancelled().await }));
        Ok(RunningServer {
            url,
            console,
            stop,
            task,
        })
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// Agents running the no-op handler.
pub(super) struct Agents {
    pub(super) stop: CancellationToken,
    pub(super) tasks: Vec<JoinHandle<Result<(), taskplane_agent::AgentError>>>,
}

impl Agents {
    /// `count` agents of `concurrency` slots serving the no-op and slow
    /// types, each on its own connection.
    pub(super) async fn start(
        servers: &Servers,
        count: usize,
        concurrency: u32,
        probe: &Arc<Probe>,
    ) -> anyhow::Result<Self> {
        Self::start_serving(servers, count, concurrency, probe, Serves::Bench).await
    }

    /// One agent of `concurrency` slots serving W6's many types.
    pub(super) async fn start_many_types(
        servers: &Servers,
        concurrency: u32,
        probe: &Arc<Probe>,
    ) -> anyhow::Result<Self> {
        Self::start_serving(servers, 1, concurrency, probe, Serves::ManyTypes).await
    }

    async fn start_serving(
        servers: &Servers,
        count: usize,
        concurrency: u32,
        probe: &Arc<Probe>,
        serves: Serves,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for i in 0..count {
            let agent = Agent::builder()
                .registry(registry(probe, i, serves))
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

    pub(super) async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The servers a workload runs against and how to reach them.
#[derive(Clone)]
pub(super) struct Servers {
    pub(super) urls: Vec<String>,
    pub(super) options: ConnectOptions,
}

impl Servers {
    /// A new connection to the first server.
    pub(super) async fn channel(&self) -> anyhow::Result<AuthChannel> {
        Ok(self.options.connect(&self.urls[0]).await?)
    }

    /// A client of the first server, on a new connection: how the
    /// workloads enqueue, as a user's service would.
    pub(super) async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::builder()
            .server(self.urls[0].clone())
            .connect_options(self.options.clone())
            .connect()
            .await?)
    }
}

pub(super) async fn register_types(servers: &Servers) -> anyhow::Result<()> {
    let mut registry = RegistryServiceClient::new(servers.channel().await?);
    for task_type in [NOOP_TYPE, BACKLOG_TYPE, SLOW_TYPE, PRODUCERS_TYPE] {
        let request = RegisterTaskTypeRequest {
            task_type: task_type.into(),
            domain: "bench".into(),
            ..Default::default()
        };
        registry.register_task_type(request).await?;
    }
    Ok(())
}

/// The task type the `--schedules` schedules enqueue: no agent serves it,
/// so their tasks stay out of every workload's counts.
const SCHEDULED_TYPE: &str = "bench_scheduled";

/// Defines `count` active schedules, as a deployment with many would have:
/// daily, at times spread over the day, so a few fire during a run.
pub(super) async fn define_schedules(servers: &Servers, count: usize) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    RegistryServiceClient::new(servers.channel().await?)
        .register_task_type(RegisterTaskTypeRequest {
            task_type: SCHEDULED_TYPE.into(),
            domain: "bench".into(),
            ..Default::default()
        })
        .await?;
    let client = servers.client().await?;
    for i in 0..count {
        let cron = format!("{} {} * * *", i % 60, (i / 60) % 24);
        client
            .create_schedule(Schedule::cron(&format!("bench-{i}"), SCHEDULED_TYPE, &cron))
            .await?;
    }
    Ok(())
}

/// A no-op task of `task_type`: an empty payload.
pub(super) fn noop(task_type: &str) -> NewTask {
    NewTask::new(task_type, serde_json::json!({}))
}

/// Where progress bars that run at the same time draw: the terminal, or
/// nowhere with `--output json`.
pub(super) fn progress_group(args: &BenchArgs) -> indicatif::MultiProgress {
    if args.output == OutputFormat::Json {
        return indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    indicatif::MultiProgress::new()
}

/// A progress bar of `length` steps named `label`, hidden with
/// `--output json`.
pub(super) fn progress(args: &BenchArgs, length: u64, label: &str) -> indicatif::ProgressBar {
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

/// Enqueues `count` no-op tasks of `task_type` in batches; returns tasks/s.
pub(super) async fn enqueue_batched(
    servers: &Servers,
    task_type: &str,
    count: usize,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<f64> {
    enqueue_spread(servers, |_| noop(task_type), count, batch, bar).await
}

/// Enqueues `count` no-op tasks in batches, the `i`th of type
/// `type_of(i)`; returns tasks/s.
pub(super) async fn enqueue_spread(
    servers: &Servers,
    request_of: impl Fn(usize) -> NewTask,
    count: usize,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<f64> {
    let client = servers.client().await?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < count {
        let size = batch.min(count - sent);
        client
            .enqueue_batch((sent..sent + size).map(&request_of).collect())
            .await?;
        sent += size;
        bar.set_position(sent as u64);
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Enqueues `count` tasks one RPC each from `clients` concurrent clients; returns tasks/s.
pub(super) async fn enqueue_single(
    servers: &Servers,
    count: usize,
    clients: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..clients {
        let client = servers.client().await?;
        let share = count / clients + usize::from(worker < count % clients);
        workers.push(tokio::spawn(async move {
            for _ in 0..share {
                client.enqueue_task(noop(NOOP_TYPE)).await?;
            }
            Ok::<_, taskplane_client::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Waits until the probe saw `expected` distinct tasks.
pub(super) async fn wait_ran(
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
    Ok(())
}

/// Waits until the probe saw `expected` distinct tasks and the store has no
/// PENDING or RUNNING no-op task left.
pub(super) async fn wait_drained(
    servers: &Servers,
    probe: &Probe,
    expected: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    wait_ran(probe, expected, bar).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let client = servers.client().await?;
    for status in [TaskStatus::Pending, TaskStatus::Running] {
        let filter = TaskFilter {
            task_type: Some(NOOP_TYPE.into()),
            status: Some(status),
            limit: Some(1),
            ..TaskFilter::default()
        };
        loop {
            if client.list(&filter).await?.is_empty() {
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
