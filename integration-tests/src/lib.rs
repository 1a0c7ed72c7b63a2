//! Shared harness of the integration tests: a real control plane on an
//! ephemeral loopback port over a real SQLite file, real gRPC clients, and
//! real SDK agents, all stopped when the test ends.

#![warn(missing_docs)]

pub mod browser;
pub mod conformance;
pub mod pki;
pub mod proxy;
pub mod raw;

use std::net::SocketAddr;
use std::time::Duration;

use taskplane_agent::ConnectOptions;
use taskplane_agent::{Agent, AgentBuilder, AgentError, Concurrency, TaskRegistry};
use taskplane_common::connect::AuthChannel;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::agent_service_client::AgentServiceClient;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::schedule_service_client::ScheduleServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    EnqueueTaskRequest, GetTaskRequest, ListTaskAttemptsRequest, Task, TaskAttempt, TaskStatus,
    WatchTaskRequest,
};
use taskplane_server::config::SecurityConfig;
use taskplane_server::model::RetryPolicy;
use taskplane_server::{QueueConfig, Server, ServerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long a test waits for something that should happen promptly before
/// it fails instead of hanging (a guard, not a speed assertion).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Queue settings with short timings, so time-dependent paths run fast.
pub fn fast_queue() -> QueueConfig {
    QueueConfig {
        lease_duration: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(500),
        poll_interval: Duration::from_millis(50),
        default_retry_policy: RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            backoff_factor: 2.0,
            max_backoff: Duration::from_millis(200),
        },
        ..QueueConfig::default()
    }
}

pub use taskplane_server::on_every_backend;
pub use taskplane_server::testing::Backend;

/// A control plane running in this process on a real socket and database.
pub struct TestServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// Holds the database file.
    pub data_dir: tempfile::TempDir,
    /// The database the server uses.
    pub database_url: String,
    /// Where its Prometheus metrics are served.
    pub metrics_address: SocketAddr,
    /// Where its web console is served.
    pub console_address: SocketAddr,
    tls: bool,
    config: ServerConfig,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Starts a server with [`fast_queue`] settings.
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, fast_queue()).await
    }

    /// Starts a server with the given queue settings on a fresh database.
    pub async fn start_with(backend: &Backend, queue: QueueConfig) -> Self {
        Self::start_secured(backend, queue, SecurityConfig::default()).await
    }

    /// Starts a server with TLS and token settings on a fresh database.
    pub async fn start_secured(
        backend: &Backend,
        queue: QueueConfig,
        security: SecurityConfig,
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let database_url = backend.database_url(data_dir.path());
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url,
            queue,
            security,
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            console_listen: Some("127.0.0.1:0".parse().unwrap()),
        };
        Self::serve(config, data_dir).await
    }

    /// Serves `config` (whose database lives in `data_dir`).
    async fn serve(config: ServerConfig, data_dir: tempfile::TempDir) -> Self {
        let database_url = config.database_url.clone();
        let tls = config.security.tls.is_some();
        let server = Server::bind(config.clone()).await.expect("server binds");
        let address = server.local_addr();
        let metrics_address = server.metrics_addr().expect("metrics bound");
        let console_address = server.console_addr().expect("console bound");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(server.serve(async move { token.cancelled().await }));
        TestServer {
            address,
            data_dir,
            database_url,
            metrics_address,
            console_address,
            tls,
            config,
            stop,
            task,
        }
    }

    /// Stops the server, leaves it down for `downtime`, and starts it again
    /// on the same database and settings (on a new port).
    pub async fn restart_after(self, downtime: Duration) -> Self {
        let TestServer {
            data_dir,
            config,
            stop,
            task,
            ..
        } = self;
        stop.cancel();
        task.await
            .expect("server task")
            .expect("server stops cleanly");
        tokio::time::sleep(downtime).await;
        Self::serve(config, data_dir).await
    }

    /// The server's URL (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// A channel carrying these credentials, or why it could not connect.
    pub async fn connect_as(
        &self,
        options: &ConnectOptions,
    ) -> Result<AuthChannel, taskplane_common::connect::ConnectError> {
        options.connect(&self.url()).await
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connects")
    }

    /// A `TaskService` client.
    pub async fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel().await)
    }

    /// A `RegistryService` client.
    pub async fn registry(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel().await)
    }

    /// The live agent named `name`, as `ListAgents` shows it (panics when
    /// none is).
    pub async fn listed_agent(&self, name: &str) -> taskplane_proto::v1::AgentInfo {
        self.registry()
            .await
            .list_agents(taskplane_proto::v1::ListAgentsRequest {})
            .await
            .expect("list agents")
            .into_inner()
            .agents
            .into_iter()
            .find(|a| a.agent_name == name)
            .unwrap_or_else(|| panic!("no live agent is named {name}"))
    }

    /// Registers a task type of `domain`, as an operator would, ahead of any agent.
    pub async fn register_type(&self, task_type: &str, domain: &str) {
        self.registry()
            .await
            .register_task_type(taskplane_proto::v1::RegisterTaskTypeRequest {
                task_type: task_type.to_owned(),
                domain: domain.to_owned(),
                ..Default::default()
            })
            .await
            .expect("the task type is registered");
    }

    /// A `ScheduleService` client.
    pub async fn schedules(&self) -> ScheduleServiceClient<Channel> {
        ScheduleServiceClient::new(self.channel().await)
    }

    /// An `AgentService` client, for speaking the stream protocol by hand.
    pub async fn agents(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel().await)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }
}

/// An SDK agent running in this process.
pub struct TestAgent {
    stop: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
    concurrency: Concurrency,
}

impl TestAgent {
    /// Connects an agent serving `registry` and waits until the server lists
    /// it, so tasks enqueued next are pushed to it.
    pub async fn start(server: &TestServer, name: &str, registry: TaskRegistry) -> Self {
        Self::start_configured(server, name, registry, |agent| agent).await
    }

    /// [`TestAgent::start`] with the builder's settings changed by
    /// `configure` (8 slots unless it says otherwise).
    pub async fn start_configured(
        server: &TestServer,
        name: &str,
        registry: TaskRegistry,
        configure: impl FnOnce(AgentBuilder) -> AgentBuilder,
    ) -> Self {
        let agent = Agent::builder()
            .registry(registry)
            .server(server.url())
            .name(name)
            .max_concurrency(8)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .drain_grace(Duration::from_secs(5));
        let agent = configure(agent).build().expect("valid agent");
        let concurrency = agent.concurrency();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(agent.run(async move { token.cancelled().await }));
        wait_for_agent(&server.registry().await, name).await;
        TestAgent {
            stop,
            task,
            concurrency,
        }
    }

    /// The agent's slots, to change while it runs.
    pub fn concurrency(&self) -> &Concurrency {
        &self.concurrency
    }

    /// Drains the agent and waits for it to exit; returns how it ended.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.stop.cancel();
        self.task.await.expect("agent task")
    }
}

/// Spawns a `taskplane` process (stdout is piped here) and waits for the
/// line saying where it listens; returns the process and that address. The
/// rest of stdout is drained so the process never blocks on it.
pub async fn spawn_listening(
    mut command: tokio::process::Command,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the process starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("it prints in time")
        .expect("stdout is readable")
        .unwrap_or_default();
    assert!(line.contains("listening on"), "it did not start: {line:?}");
    let address = line.rsplit(' ').next().expect("an address").to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

/// Waits until the server lists an agent named `name`, so tasks enqueued
/// next are pushed to it.
pub async fn wait_for_agent<T: Transport + Clone>(registry: &RegistryServiceClient<T>, name: &str) {
    wait_for(|| {
        let mut registry = registry.clone();
        async move {
            let agents = registry
                .list_agents(taskplane_proto::v1::ListAgentsRequest {})
                .await
                .expect("list agents")
                .into_inner()
                .agents;
            agents.iter().any(|a| a.agent_name == name)
        }
    })
    .await;
}

/// Polls `condition` every 20 ms until it holds; panics after [`PATIENCE`].
pub async fn wait_for<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `python3` can run the Python package's tests (`grpcio`,
/// `protobuf` and `pytest` installed; `.ci/run` installs them). Without
/// them the Python tests are skipped with a note, unless
/// `TASKPLANE_REQUIRE_PYTHON=1` (as in CI) makes that a failure.
pub fn python_sdk_available() -> bool {
    let available = std::process::Command::new("python3")
        .args(["-c", "import grpc, google.protobuf, pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("TASKPLANE_REQUIRE_PYTHON").is_err(),
            "python3 with grpcio, protobuf and pytest is required: pip install './agent/python[test]'"
        );
        eprintln!(
            "skipped: python3 lacks grpcio, protobuf or pytest (pip install './agent/python[test]')"
        );
    }
    available
}

/// The Python package's directory.
pub fn python_package_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/python")
}

/// Whether grpcurl is installed (`.ci/run` installs it; doc tests that
/// run grpcurl examples skip those lines without it).
pub fn grpcurl_available() -> bool {
    std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `command` with `sh -c` and returns its stdout; panics, printing
/// both outputs, when it fails.
pub async fn run_shell(command: &str) -> String {
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await
        .expect("sh runs");
    assert!(
        output.status.success(),
        "`{command}` failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The address the documentation's examples name: `taskplane dev`'s.
pub const DOC_ADDRESS: &str = "127.0.0.1:50051";

/// The `taskplane` and `grpcurl` command lines between the
/// `<!-- {marker}:start -->` and `<!-- {marker}:end -->` comments of a
/// document (a path from the repository's root), in order.
pub fn documented_commands(document: &str, marker: &str) -> Vec<String> {
    let path = format!("{}/../{document}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let start = text
        .find(&format!("<!-- {marker}:start -->"))
        .unwrap_or_else(|| panic!("{document} has no {marker}:start marker"));
    let end = text
        .find(&format!("<!-- {marker}:end -->"))
        .unwrap_or_else(|| panic!("{document} has no {marker}:end marker"));
    text[start..end]
        .lines()
        .filter(|line| line.starts_with("taskplane ") || line.starts_with("grpcurl "))
        .map(str::to_owned)
        .collect()
}

/// Runs a documented command against the server at `address`: a
/// `taskplane …` line with the CLI binary `cli`, a `grpcurl …` line as
/// written; the documented address and port become `address`'s. Returns
/// what it printed (panics when it fails).
pub async fn run_documented(command: &str, cli: &str, address: SocketAddr) -> String {
    let command = command
        .replace(DOC_ADDRESS, &address.to_string())
        .replace("\"port\": 50051", &format!("\"port\": {}", address.port()));
    match command.strip_prefix("taskplane ") {
        Some(rest) => run_shell(&format!("{cli} {rest} --server http://{address}")).await,
        None => run_shell(&command).await,
    }
}

/// `GET path` over plain HTTP/1.1: the status line and the body.
pub async fn http_get(address: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the Prometheus sample named exactly `series` (name and
/// labels) in a scrape's `text`.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

/// An enqueue request with a JSON payload.
pub fn enqueue_request(task_type: &str, payload: serde_json::Value) -> EnqueueTaskRequest {
    EnqueueTaskRequest {
        task_type: task_type.to_owned(),
        payload: Some(json_to_struct(
            payload.as_object().expect("payload is an object"),
        )),
        ..EnqueueTaskRequest::default()
    }
}

/// What a generated client needs of its connection: a plain `Channel`, or
/// one that carries a token (`AuthChannel`).
pub trait Transport:
    tonic::client::GrpcService<
        tonic::body::Body,
        Error: Into<tonic::codegen::StdError>,
        ResponseBody: tonic::codegen::Body<
            Data = tonic::codegen::Bytes,
            Error: Into<tonic::codegen::StdError> + Send,
        > + Send
                          + 'static,
    >
{
}

impl<T> Transport for T where
    T: tonic::client::GrpcService<
            tonic::body::Body,
            Error: Into<tonic::codegen::StdError>,
            ResponseBody: tonic::codegen::Body<
                Data = tonic::codegen::Bytes,
                Error: Into<tonic::codegen::StdError> + Send,
            > + Send
                              + 'static,
        >
{
}

/// Enqueues one task and returns it as stored (panics on an error status).
pub async fn enqueue<T: Transport>(
    client: &mut TaskServiceClient<T>,
    request: impl tonic::IntoRequest<EnqueueTaskRequest>,
) -> Task {
    client
        .enqueue_task(request)
        .await
        .expect("enqueue accepted")
        .into_inner()
        .task
        .expect("the stored task")
}

/// Polls a task every 20 ms until it reaches `status`; returns it then
/// (panics after [`PATIENCE`]).
pub async fn wait_status<T: Transport + Clone>(
    client: &TaskServiceClient<T>,
    id: &str,
    status: TaskStatus,
) -> Task {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let task = client
            .clone()
            .get_task(GetTaskRequest { id: id.to_owned() })
            .await
            .expect("get task")
            .into_inner();
        if task.status() == status {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} is still {:?}, not {status:?}, after {PATIENCE:?}",
            task.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every attempt of a task, oldest first.
pub async fn attempts_of<T: Transport>(
    client: &mut TaskServiceClient<T>,
    id: &str,
) -> Vec<TaskAttempt> {
    client
        .list_task_attempts(ListTaskAttemptsRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
        .attempts
}

/// Enqueues a task of `task_type` with `payload` and follows it until it
/// is terminal; returns its final state.
pub async fn run_task<T: Transport>(
    client: &mut TaskServiceClient<T>,
    task_type: &str,
    payload: serde_json::Value,
) -> Task {
    let id = enqueue(client, enqueue_request(task_type, payload))
        .await
        .id;
    wait_terminal(client, &id).await
}

/// A task's result as JSON (panics when it has none).
pub fn result_json(task: &Task) -> serde_json::Value {
    serde_json::Value::Object(taskplane_proto::json::struct_to_json(
        task.result.as_ref().expect("a result"),
    ))
}

/// Follows a task with `WatchTask` until it is terminal; returns its final state.
pub async fn wait_terminal<T: Transport>(client: &mut TaskServiceClient<T>, id: &str) -> Task {
    let watch = async {
        let mut stream = client
            .watch_task(WatchTaskRequest { id: id.to_owned() })
            .await
            .expect("watch")
            .into_inner();
        let mut last = None;
        while let Some(task) = stream.message().await.expect("watch stream") {
            last = Some(task);
        }
        last.expect("at least one state")
    };
    let task = tokio::time::timeout(PATIENCE, watch)
        .await
        .expect("task reached a terminal state in time");
    assert!(
        matches!(
            task.status(),
            TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled | TaskStatus::Expired
        ),
        "watch ended on a non-terminal state: {task:?}"
    );
    task
}

/// Waits (up to [`PATIENCE`]) until the server behind `channel` reports
/// `status` for itself on `grpc.health.v1`.
pub async fn wait_health(
    channel: Channel,
    status: tonic_health::pb::health_check_response::ServingStatus,
) {
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    wait_for(|| {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok_and(|answer| answer.into_inner().status() == status)
        }
    })
    .await;
}
