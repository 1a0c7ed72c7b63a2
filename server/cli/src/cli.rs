//! The `taskplane` command line: the control plane (`serve`), the control
//! plane with an agent of the example domains in one process (`dev`), the
//! benchmark (`bench`), the client commands (`enqueue`, `task`, `types`,
//! `agents`, `domains`; see [`crate::client_cli`]) and token management
//! (`token`; see [`crate::token_cli`]). It lives in the library
//! so that test harnesses run exactly what the binary runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::client_cli::{
    self, AgentsCommand, ClientArgs, EnqueueArgs, ScheduleCommand, TaskCommand, TypesCommand,
};
use crate::dev_services::{self, DEV_DATA_DIR, LocalServices};
use crate::token_cli::{TokenCommand, TokenStoreArgs};
use clap::{Args, Parser, Subcommand};
use taskplane_agent::{Agent, ConnectionState};
use taskplane_common::logging::{LogFormat, init_logging};
use taskplane_common::shutdown::shutdown_signal;
use taskplane_handlers::egress::{Egress, LOOPBACK};
use taskplane_handlers::environment::AgentSettings;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_server::config::{AuthConfig, SecurityConfig, TlsFiles};
use taskplane_server::model::RetryPolicy;
use taskplane_server::{QueueConfig, Server, ServerConfig, SqliteDurability};
use tokio_util::sync::CancellationToken;

/// Where `taskplane dev` serves the web console unless told otherwise.
const DEV_CONSOLE_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7070);

/// What `taskplane --version` prints: the release and the commit built.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TASKPLANE_COMMIT"),
    ")"
);

/// taskplane: durable background tasks over gRPC.
#[derive(Parser)]
#[command(name = "taskplane", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: text or json (one object per line).
    #[arg(
        long,
        global = true,
        env = "TASKPLANE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane.
    Serve {
        #[command(flatten)]
        args: ServeArgs,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Runs the control plane and an agent of the example domains in one process.
    Dev(DevArgs),
    /// Measures throughput and latency with no-op handlers (see docs/performance.md).
    Bench(crate::bench::BenchArgs),
    /// Enqueues a task (--wait follows it to the end).
    Enqueue {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: EnqueueArgs,
    },
    /// Shows, lists, cancels, retries or watches tasks.
    Task {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Lists, shows or registers task types.
    Types {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TypesCommand,
    },
    /// Creates, lists, shows, pauses, resumes, deletes or triggers schedules.
    Schedule {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Counts tasks per type and status, the last minute's completions, and
    /// lists the schedules.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Lists or drains the connected agents.
    Agents {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Lists the domains.
    Domains {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Exits 0 when the server reports SERVING (for container health checks).
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Creates, revokes and lists bearer tokens (in the database or a tokens file).
    Token {
        #[command(flatten)]
        store: TokenStoreArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// A command group whose only action is `list`.
#[derive(Subcommand)]
enum ListOnly {
    /// Lists them.
    List,
}

#[derive(Args)]
struct DevArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Where the local stand-ins listen: the test-mode payment gateway,
    /// the webhook inbox and a health endpoint (see `dev_services`).
    #[arg(
        long,
        env = "TASKPLANE_LOCAL_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    local_listen: SocketAddr,
}

#[derive(Args)]
struct ServeArgs {
    /// The gRPC listen address.
    #[arg(long, env = "TASKPLANE_LISTEN", default_value_t = ServerConfig::default().listen)]
    listen: SocketAddr,
    /// The database: sqlite://path/to/file.db (created if missing).
    #[arg(long, env = "TASKPLANE_DATABASE_URL", default_value_t = ServerConfig::default().database_url)]
    database_url: String,
    /// How long an assignment's lease lasts; a silent agent loses its tasks
    /// after this long. Agents heartbeat three times per lease.
    #[arg(long, env = "TASKPLANE_LEASE", default_value_t = queue_default(|q| q.lease_duration))]
    lease: humantime::Duration,
    /// How often idle agents' queues are checked for delayed tasks coming due.
    #[arg(long, env = "TASKPLANE_POLL_INTERVAL", default_value_t = queue_default(|q| q.poll_interval))]
    poll_interval: humantime::Duration,
    /// The first retry's delay, for task types registered without their own.
    #[arg(long, env = "TASKPLANE_RETRY_INITIAL_BACKOFF", default_value_t = queue_default(|q| q.default_retry_policy.initial_backoff))]
    retry_initial_backoff: humantime::Duration,
    /// The longest retry delay, for task types registered without their own.
    #[arg(long, env = "TASKPLANE_RETRY_MAX_BACKOFF", default_value_t = queue_default(|q| q.default_retry_policy.max_backoff))]
    retry_max_backoff: humantime::Duration,
    /// The largest task payload accepted, in bytes of JSON.
    #[arg(long, env = "TASKPLANE_MAX_PAYLOAD_BYTES", default_value_t = QueueConfig::default().max_payload_bytes)]
    max_payload_bytes: usize,
    /// The largest result a handler may report, in encoded bytes; a larger
    /// one fails its attempt for good.
    #[arg(long, env = "TASKPLANE_MAX_RESULT_BYTES", default_value_t = QueueConfig::default().max_result_bytes)]
    max_result_bytes: usize,
    /// The largest gRPC message accepted, in bytes.
    #[arg(long, env = "TASKPLANE_MAX_MESSAGE_BYTES", default_value_t = QueueConfig::default().max_message_bytes)]
    max_message_bytes: usize,
    /// How long finished tasks and their attempts are kept (0: forever).
    #[arg(long, env = "TASKPLANE_RETENTION", default_value_t = queue_default(|q| q.retention.unwrap_or_default()))]
    retention: humantime::Duration,
    /// Serve without tokens on an address other than loopback (e.g. `dev`
    /// in a container, or behind a proxy that authenticates).
    #[arg(long, env = "TASKPLANE_INSECURE")]
    insecure: bool,
    /// Serve Prometheus metrics at http://ADDRESS/metrics (e.g. 0.0.0.0:9090).
    #[arg(long, env = "TASKPLANE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the web console at http://ADDRESS/ (https with --tls-cert);
    /// beyond loopback only with --auth. `dev` serves it on
    /// 127.0.0.1:7070 unless told otherwise.
    #[arg(long, env = "TASKPLANE_CONSOLE_LISTEN")]
    console_listen: Option<SocketAddr>,
    /// How long past its timeout an attempt may go unanswered before the
    /// server ends it as timed out and tells its agent to stop.
    #[arg(long, env = "TASKPLANE_TIMEOUT_GRACE", default_value_t = queue_default(|q| q.timeout_grace))]
    timeout_grace: humantime::Duration,
    /// A schedule's fire time reached later than this (no server was
    /// running) counts as missed, and the schedule's catch-up policy
    /// decides what it makes.
    #[arg(long, env = "TASKPLANE_SCHEDULE_GRACE", default_value_t = queue_default(|q| q.schedule_grace))]
    schedule_grace: humantime::Duration,
    /// How often tasks past their retention are purged.
    #[arg(long, env = "TASKPLANE_PURGE_INTERVAL", default_value_t = queue_default(|q| q.purge_interval))]
    purge_interval: humantime::Duration,
    /// When an SQLite commit reaches the disk: `full` syncs every commit, so
    /// an acknowledged enqueue or result survives power loss; `normal` syncs
    /// at checkpoints only, and power loss or an OS crash can lose the last
    /// few hundred milliseconds of them (a process crash loses nothing).
    #[arg(long, env = "TASKPLANE_SQLITE_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Full)]
    sqlite_synchronous: Synchronous,
}

/// `--sqlite-synchronous`: SQLite's `synchronous` setting.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Synchronous {
    /// Sync every commit (durable through power loss).
    Full,
    /// Sync at checkpoints (durable through a process crash only).
    Normal,
}

impl From<Synchronous> for SqliteDurability {
    fn from(synchronous: Synchronous) -> Self {
        match synchronous {
            Synchronous::Full => SqliteDurability::Full,
            Synchronous::Normal => SqliteDurability::Normal,
        }
    }
}

/// A default of the queue's configuration, as a flag's default.
fn queue_default(value: impl Fn(&QueueConfig) -> Duration) -> humantime::Duration {
    value(&QueueConfig::default()).into()
}

/// TLS, tokens and per-token limits (`serve` only; `dev` stays plaintext
/// on loopback).
#[derive(Args)]
struct SecurityArgs {
    /// Require bearer tokens (created with `taskplane token create`).
    #[arg(long, env = "TASKPLANE_AUTH")]
    auth: bool,
    /// Also accept the tokens in this TOML file (implies --auth).
    #[arg(long, env = "TASKPLANE_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// How long a token looked up in the database is trusted before it is
    /// looked up again; a revocation takes effect within this time.
    #[arg(long, env = "TASKPLANE_TOKEN_CACHE_TTL", default_value_t = AuthConfig::default().cache_ttl.into())]
    token_cache_ttl: humantime::Duration,
    /// The server's certificate chain (PEM); with --tls-key, serves TLS.
    #[arg(long, env = "TASKPLANE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "TASKPLANE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long, env = "TASKPLANE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// How often the TLS and tokens files are checked for changes (SIGHUP
    /// re-reads them at once).
    #[arg(long, env = "TASKPLANE_RELOAD_INTERVAL", default_value_t = SecurityConfig::default().reload_interval.into())]
    reload_interval: humantime::Duration,
    /// The most agent streams one token may hold open (0: no limit).
    #[arg(long, env = "TASKPLANE_MAX_STREAMS_PER_TOKEN", default_value_t = QueueConfig::default().max_streams_per_token)]
    max_streams_per_token: usize,
    /// The most tasks one token may enqueue per second (0: no limit).
    #[arg(long, env = "TASKPLANE_ENQUEUE_RATE_PER_TOKEN", default_value_t = QueueConfig::default().enqueue_rate_per_token)]
    enqueue_rate_per_token: u32,
}

impl SecurityArgs {
    fn apply(&self, config: &mut ServerConfig) {
        config.security = SecurityConfig {
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsFiles {
                    cert,
                    key,
                    client_ca: self.tls_client_ca.clone(),
                }),
            auth: (self.auth || self.tokens_file.is_some()).then(|| AuthConfig {
                tokens_file: self.tokens_file.clone(),
                cache_ttl: self.token_cache_ttl.into(),
            }),
            insecure: config.security.insecure,
            reload_interval: self.reload_interval.into(),
        };
        config.queue.max_streams_per_token = self.max_streams_per_token;
        config.queue.enqueue_rate_per_token = self.enqueue_rate_per_token;
    }
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            database_url: self.database_url.clone(),
            queue: QueueConfig {
                lease_duration: self.lease.into(),
                heartbeat_interval: *self.lease / 3,
                poll_interval: self.poll_interval.into(),
                default_retry_policy: RetryPolicy {
                    initial_backoff: self.retry_initial_backoff.into(),
                    max_backoff: (*self.retry_max_backoff).max(*self.retry_initial_backoff),
                    ..RetryPolicy::default()
                },
                max_payload_bytes: self.max_payload_bytes,
                max_result_bytes: self.max_result_bytes,
                max_message_bytes: self.max_message_bytes,
                retention: Some(*self.retention).filter(|r| !r.is_zero()),
                purge_interval: self.purge_interval.into(),
                timeout_grace: self.timeout_grace.into(),
                sqlite_durability: self.sqlite_synchronous.into(),
                schedule_grace: self.schedule_grace.into(),
                ..QueueConfig::default()
            },
            security: SecurityConfig {
                insecure: self.insecure,
                ..SecurityConfig::default()
            },
            metrics_listen: self.metrics_listen,
            console_listen: self.console_listen,
        }
    }
}

/// Parses the process arguments and runs the chosen subcommand.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log_format =
        || -> anyhow::Result<LogFormat> { cli.log_format.parse().map_err(anyhow::Error::msg) };
    if matches!(cli.command, Command::Serve { .. } | Command::Dev(_)) {
        init_logging(log_format()?, "info");
    }
    if matches!(cli.command, Command::Bench(_)) {
        // Quiet, so the report stays readable, but a failed write shows.
        init_logging(log_format()?, "warn");
    }
    match cli.command {
        Command::Serve { args, security } => serve(args, security).await,
        Command::Dev(args) => dev(args).await,
        Command::Bench(args) => crate::bench::run_benchmarks(args).await,
        Command::Enqueue { client, args } => finish(client_cli::enqueue(&client, args).await),
        Command::Task { client, command } => finish(client_cli::task(&client, command).await),
        Command::Types { client, command } => finish(client_cli::types(&client, command).await),
        Command::Schedule { client, command } => {
            finish(client_cli::schedule(&client, command).await)
        }
        Command::Stats { client, domain } => finish(client_cli::stats(&client, domain).await),
        Command::Agents { client, command } => finish(client_cli::agents(&client, command).await),
        Command::Domains {
            client,
            command: ListOnly::List,
        } => finish(client_cli::domains(&client).await),
        Command::Health { client } => finish(client_cli::health(&client).await),
        Command::Token { store, command } => crate::token_cli::token(&store, command).await,
    }
}

/// Ends a client command: errors go to stderr with the gRPC status in words,
/// and the process exits 1.
fn finish(result: Result<(), client_cli::ClientError>) -> anyhow::Result<()> {
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    Ok(())
}

async fn serve(args: ServeArgs, security: SecurityArgs) -> anyhow::Result<()> {
    let mut config = args.config();
    security.apply(&mut config);
    let tls = config.security.tls.is_some();
    let server = Server::bind(config).await?;
    tracing::info!(address = %server.local_addr(), database = %args.database_url, "taskplane control plane listening");
    println!("taskplane listening on {}", server.local_addr());
    if let Some(console) = server.console_addr() {
        let scheme = if tls { "https" } else { "http" };
        tracing::info!(address = %console, "web console listening");
        println!("web console on {scheme}://{console}/");
    }
    server.serve(shutdown_signal()).await
}

async fn dev(dev: DevArgs) -> anyhow::Result<()> {
    let args = dev.serve;
    let mut config = args.config();
    config.console_listen.get_or_insert(DEV_CONSOLE_LISTEN);
    let server = Server::bind(config).await?;
    let address = server.local_addr();
    let console = server.console_addr();
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    let server_task = tokio::spawn(server.serve(async move { server_stop.cancelled().await }));

    let settings = AgentSettings::from_env()?;
    let mut services = AppServices {
        control_plane: format!("http://{address}"),
        ..AppServices::clone(&settings.services)
    };
    if taskplane_handlers::environment::lookup("TASKPLANE_TRUSTED_HOSTS").is_none() {
        // Everything in dev runs on this machine: its webhooks and probes
        // may reach loopback.
        services.egress = Egress::trusting(LOOPBACK);
    }
    let local = dev_services::start(
        &mut services,
        std::path::Path::new(DEV_DATA_DIR),
        dev.local_listen,
        &args.database_url,
        stop.clone(),
    )
    .await?;
    let (registry, unknown) = setup_registry_with_config(&settings.registry, Arc::new(services));
    settings.registry.check_unknown_domains(&unknown)?;
    settings.check_served(&registry)?;
    let agent = Agent::builder()
        .registry(registry)
        .server(format!("http://{address}"))
        .name("dev-agent")
        .build()?;
    // Print the welcome once the agent is registered: what it invites the
    // user to do works from that moment.
    let mut connection = agent.connection_state();
    tokio::spawn(async move {
        if connection
            .wait_for(|state| matches!(state, ConnectionState::Registered { .. }))
            .await
            .is_ok()
        {
            print_welcome(address, console, &local);
        }
    });
    let agent_stop = stop.clone();
    let agent_result = agent.run(async move {
        shutdown_signal().await;
        agent_stop.cancel();
    });
    let agent_result = agent_result.await;
    stop.cancel();
    server_task.await??;
    Ok(agent_result?)
}

fn print_welcome(address: SocketAddr, console: Option<SocketAddr>, local: &LocalServices) {
    let console = console.map_or_else(String::new, |console| {
        format!("The web console: http://{console}/\n")
    });
    let local: String = local
        .described
        .iter()
        .map(|line| format!("  {line}\n"))
        .collect();
    println!(
        r#"taskplane dev listening on {address}
An agent serving user_management, billing, system_maintenance and platform is connected.
{console}Local stand-ins for outside services:
{local}
Try it (grpcurl lists every service through reflection):
  grpcurl -plaintext {address} list
  grpcurl -plaintext {address} taskplane.v1.RegistryService/ListTaskTypes
  grpcurl -plaintext -d '{{"task_type": "invoice_generation", "payload": {{"items": [{{"description": "plan", "quantity": 2, "unit_price_cents": 1500}}], "tax_rate_percent": 20}}}}' {address} taskplane.v1.TaskService/EnqueueTask
  grpcurl -plaintext -d '{{"id": "<id from EnqueueTask>"}}' {address} taskplane.v1.TaskService/GetTask
  grpcurl -plaintext -d '{{"status": "TASK_STATUS_COMPLETED"}}' {address} taskplane.v1.TaskService/ListTasks
The system_maintenance schedules (docs/operations.md, "Schedules"):
  taskplane schedule list --server http://{address}
Ctrl-C stops both."#
    );
}
