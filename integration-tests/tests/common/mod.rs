//! Real processes for fault tests: `taskplane serve` (built into this package
//! as `taskplane-under-test`) and `test-agent`, started with test-sized
//! timings, signalled and killed.

#![allow(
    dead_code,
    reason = "each test file uses a different part of these helpers"
)]

use std::path::Path;
use std::time::Duration;

use integration_tests::{PATIENCE, spawn_listening};
use serde_json::json;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{EnqueueTaskRequest, EnqueueTasksRequest, GetTaskRequest, TaskStatus};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A `taskplane serve` process with short, test-sized timings.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    port: u16,
}

impl ServerProcess {
    pub async fn start(database_url: &str, port: u16) -> Self {
        Self::start_polling(database_url, port, "50ms").await
    }

    /// Starts with the given delayed-task poll interval (a long one proves
    /// that wake-ups arrive by notification).
    pub async fn start_polling(database_url: &str, port: u16, poll_interval: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .args(["--lease", "1s", "--poll-interval", poll_interval])
            .args([
                "--retry-initial-backoff",
                "20ms",
                "--retry-max-backoff",
                "100ms",
            ])
            .env("RUST_LOG", "warn");
        let (child, _) = spawn_listening(command).await;
        ServerProcess { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A `TaskService` client.
    pub async fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(
            Channel::from_shared(self.url())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Sends `signal` (such as `-STOP`) to the process.
    pub async fn signal(&self, signal: &str) {
        send_signal(&self.child, signal).await;
    }
}

/// Sends `signal` (such as `-TERM`) to a running child process.
async fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().expect("running").to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
}

/// A `test-agent` process serving task type `work`.
pub struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    pub fn start(server_url: &str, name: &str, slots: u32, journal: &Path) -> Self {
        Self::start_with_grace(server_url, name, slots, journal, Duration::from_secs(5))
    }

    /// Starts an agent whose drain waits up to `grace` for running handlers.
    pub fn start_with_grace(
        server_url: &str,
        name: &str,
        slots: u32,
        journal: &Path,
        grace: Duration,
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_test-agent"))
            .env("TEST_AGENT_DRAIN_GRACE_MS", grace.as_millis().to_string())
            .env("TASKPLANE_SERVER", server_url)
            .env("TEST_AGENT_NAME", name)
            .env("TEST_AGENT_SLOTS", slots.to_string())
            .env("TEST_AGENT_JOURNAL", journal)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("agent starts");
        AgentProcess { child }
    }

    pub async fn signal(&self, signal: &str) {
        send_signal(&self.child, signal).await;
    }

    /// The process id, as the journal names it.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Waits (up to [`PATIENCE`]) for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits in time")
            .unwrap()
    }

    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("-TERM").await;
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits in time")
            .unwrap()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn work(ms: u64) -> EnqueueTaskRequest {
    EnqueueTaskRequest {
        task_type: "work".into(),
        payload: Some(json_to_struct(json!({ "ms": ms }).as_object().unwrap())),
        max_attempts: 25,
        ..Default::default()
    }
}

/// Registers `work` ahead of any agent, as an operator would.
pub async fn register_work(server: &ServerProcess) {
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    taskplane_proto::v1::registry_service_client::RegistryServiceClient::new(channel)
        .register_task_type(taskplane_proto::v1::RegisterTaskTypeRequest {
            task_type: "work".into(),
            domain: "testing".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Where `url` names its `host:port`: the byte range after the user.
fn host_span(url: &str) -> std::ops::Range<usize> {
    let start = url.find('@').expect("a user in the URL") + 1;
    let end = start + url[start..].find('/').expect("a database in the URL");
    start..end
}

/// `url` with its `host:port` replaced by `address`.
pub fn through(url: &str, address: std::net::SocketAddr) -> String {
    let span = host_span(url);
    format!("{}{address}{}", &url[..span.start], &url[span.end..])
}

/// Where the database of `url` listens.
pub fn database_address(url: &str) -> std::net::SocketAddr {
    std::net::ToSocketAddrs::to_socket_addrs(&url[host_span(url)])
        .expect("a reachable host")
        .next()
        .expect("an address")
}

/// Enqueues `count` tasks of `work(ms)` in one batch; returns their ids.
pub async fn enqueue_work(
    client: &mut TaskServiceClient<Channel>,
    count: usize,
    ms: u64,
) -> Vec<String> {
    let request = EnqueueTasksRequest {
        tasks: (0..count).map(|_| work(ms)).collect(),
    };
    let results = client
        .enqueue_tasks(request)
        .await
        .unwrap()
        .into_inner()
        .results;
    results.into_iter().map(|r| r.task.unwrap().id).collect()
}

/// Waits until the task completed; panics if it died or takes longer than
/// [`PATIENCE`].
pub async fn wait_completed(client: &mut TaskServiceClient<Channel>, id: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let task = client
            .get_task(GetTaskRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        if task.status() == TaskStatus::Completed {
            return;
        }
        assert_ne!(task.status(), TaskStatus::Dead, "{task:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} is still {:?}",
            task.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
