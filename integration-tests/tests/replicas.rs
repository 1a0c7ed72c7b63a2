//! Several `taskplane serve` replicas on one PostgreSQL database: work
//! enqueued on one replica wakes agents on another by LISTEN/NOTIFY, every
//! replica sees every agent, and a replica killed with SIGKILL loses nothing.
//! PostgreSQL only: an SQLite file belongs to one process.

use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::PATIENCE;
use serde_json::json;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    EnqueueTaskRequest, EnqueueTasksRequest, GetTaskRequest, ListAgentsRequest,
    ListTaskAttemptsRequest, RegisterTaskTypeRequest, TaskStatus,
};
use taskplane_server::testing::PostgresSchema;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    /// A replica whose poll interval is so long that only notifications can
    /// wake its agents in time.
    async fn start(database_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskplane-under-test"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
            ])
            .args(["--lease", "1s", "--poll-interval", "60s"])
            .args([
                "--retry-initial-backoff",
                "20ms",
                "--retry-max-backoff",
                "100ms",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert!(line.is_some_and(|l| l.contains("listening on")));
        Replica {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

fn agent(servers: &str, name: &str, journal: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_test-agent"))
        .env("TASKPLANE_SERVER", servers)
        .env("TEST_AGENT_NAME", name)
        .env("TEST_AGENT_SLOTS", "8")
        .env("TEST_AGENT_JOURNAL", journal)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn work(ms: u64) -> EnqueueTaskRequest {
    EnqueueTaskRequest {
        task_type: "work".into(),
        payload: Some(json_to_struct(json!({ "ms": ms }).as_object().unwrap())),
        max_attempts: 25,
        ..Default::default()
    }
}

async fn register_work(replica: &Replica) {
    RegistryServiceClient::new(replica.channel().await)
        .register_task_type(RegisterTaskTypeRequest {
            task_type: "work".into(),
            domain: "testing".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn wait_agents(replica: &Replica, count: usize) {
    let mut registry = RegistryServiceClient::new(replica.channel().await);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let agents = registry
            .list_agents(ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents;
        if agents.len() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} agents, saw {}",
            agents.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_completed(client: &mut TaskServiceClient<Channel>, id: &str) {
    let deadline = Instant::now() + PATIENCE;
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
            Instant::now() < deadline,
            "task {id} is still {:?}",
            task.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_enqueued_on_one_replica_wakes_an_agent_on_another_all_agents_are_listed_and_keys_stay_unique()
 {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::start(&schema.url).await;
    let b = Replica::start(&schema.url).await;
    register_work(&a).await;
    let mut on_a = agent(&a.url, "on-a", &dir.path().join("a.log"));
    wait_agents(&a, 1).await;
    let _on_b = agent(&b.url, "on-b", &dir.path().join("b.log"));
    // Each replica lists the agents of both.
    wait_agents(&a, 2).await;
    wait_agents(&b, 2).await;

    // Stop the agent on A so only B's agent can run the tasks; enqueue on A.
    // With a 60 s poll interval, only a notification wakes B in time.
    on_a.start_kill().unwrap();
    on_a.wait().await.unwrap();
    wait_agents(&a, 1).await;
    let mut client_a = TaskServiceClient::new(a.channel().await);
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let id = client_a
            .enqueue_task(work(0))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
            .id;
        wait_completed(&mut client_a, &id).await;
        ids.push(id);
    }
    let per_task = started.elapsed() / 20;
    println!("enqueue on replica A → completed by the agent on replica B: {per_task:?} per task");
    let ran_on_b = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    for id in &ids {
        assert!(
            ran_on_b.contains(&format!("done {id} 1")),
            "task {id} did not run on B's agent"
        );
    }

    // Idempotency holds across replicas: 50 concurrent enqueues of one key,
    // half on each replica, make one task.
    let mut handles = Vec::new();
    for i in 0..50 {
        let channel = if i % 2 == 0 {
            a.channel().await
        } else {
            b.channel().await
        };
        handles.push(tokio::spawn(async move {
            let mut request = work(0);
            request.idempotency_key = "invoice-7".into();
            TaskServiceClient::new(channel)
                .enqueue_task(request)
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut created = 0;
    let mut distinct = std::collections::BTreeSet::new();
    for handle in handles {
        let response = handle.await.unwrap();
        created += usize::from(response.created);
        distinct.insert(response.task.unwrap().id);
    }
    assert_eq!((created, distinct.len()), (1, 1));
    a.kill9().await;
    b.kill9().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_loses_nothing_its_agents_move_to_the_other() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::start(&schema.url).await;
    let b = Replica::start(&schema.url).await;
    register_work(&a).await;
    let both = format!("{},{}", a.url, b.url);
    let journal = dir.path().join("journal.log");
    let mut agents = vec![
        agent(&both, "first-a", &journal),
        agent(&format!("{},{}", b.url, a.url), "first-b", &journal),
    ];
    wait_agents(&b, 2).await;

    let mut clients = [
        TaskServiceClient::new(a.channel().await),
        TaskServiceClient::new(b.channel().await),
    ];
    let mut ids = Vec::new();
    for round in 0..4 {
        let request = EnqueueTasksRequest {
            tasks: (0..50).map(|_| work(30)).collect(),
        };
        let results = clients[round % 2]
            .enqueue_tasks(request)
            .await
            .unwrap()
            .into_inner()
            .results;
        ids.extend(results.into_iter().map(|r| r.task.unwrap().id));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill9().await;
    agents.push(agent(&b.url, "late", &journal));

    let mut client = TaskServiceClient::new(b.channel().await);
    for id in &ids {
        wait_completed(&mut client, id).await;
        let attempts = client
            .list_task_attempts(ListTaskAttemptsRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .attempts;
        let completed = attempts.iter().filter(|a| a.outcome == "completed").count();
        assert_eq!(completed, 1, "task {id}: {attempts:?}");
    }
    for mut child in agents {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    b.kill9().await;
    schema.drop().await;
}
