//! Shared harness of the integration tests: a real control plane on an
//! ephemeral loopback port over a real SQLite file, real gRPC clients, and
//! real SDK agents, all stopped when the test ends.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use taskplane_agent::{Agent, AgentError, TaskRegistry};
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::agent_service_client::AgentServiceClient;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{EnqueueTaskRequest, Task, TaskStatus, WatchTaskRequest};
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

/// A control plane running in this process on a real socket and database file.
pub struct TestServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// Holds the database file.
    pub data_dir: tempfile::TempDir,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Starts a server with [`fast_queue`] settings.
    pub async fn start() -> Self {
        Self::start_with(fast_queue()).await
    }

    /// Starts a server with the given queue settings on a fresh SQLite file.
    pub async fn start_with(queue: QueueConfig) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: format!(
                "sqlite://{}",
                data_dir.path().join("taskplane.db").display()
            ),
            queue,
        };
        let server = Server::bind(config).await.expect("server binds");
        let address = server.local_addr();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(server.serve(async move { token.cancelled().await }));
        TestServer {
            address,
            data_dir,
            stop,
            task,
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
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
}

impl TestAgent {
    /// Connects an agent serving `registry` and waits until the server lists
    /// it, so tasks enqueued next are pushed to it.
    pub async fn start(server: &TestServer, name: &str, registry: TaskRegistry) -> Self {
        let agent = Agent::builder()
            .registry(registry)
            .server(server.url())
            .name(name)
            .max_concurrency(8)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .drain_grace(Duration::from_secs(5))
            .build()
            .expect("valid agent");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(agent.run(async move { token.cancelled().await }));
        let registry = server.registry().await;
        wait_for(|| {
            let mut registry = registry.clone();
            let name = name.to_owned();
            async move {
                let agents = registry
                    .list_agents(taskplane_proto::v1::ListAgentsRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .agents;
                agents.iter().any(|a| a.agent_name == name)
            }
        })
        .await;
        TestAgent { stop, task }
    }

    /// Drains the agent and waits for it to exit; returns how it ended.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.stop.cancel();
        self.task.await.expect("agent task")
    }
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

/// Follows a task with `WatchTask` until it is terminal; returns its final state.
pub async fn wait_terminal(client: &mut TaskServiceClient<Channel>, id: &str) -> Task {
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
            TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled
        ),
        "watch ended on a non-terminal state: {task:?}"
    );
    task
}
