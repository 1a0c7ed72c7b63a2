//! Stalls, not crashes, with real processes: PostgreSQL that stops
//! answering for longer than a lease while every connection stays open (a
//! TCP proxy the test freezes), and a replica stopped with SIGSTOP. Nothing
//! is lost, no task of a live agent runs twice, and agents leave a frozen
//! replica by themselves. And a database cut off is not a revoked token.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{
    AgentProcess, ServerProcess, database_address, enqueue_work, free_port, register_work, through,
    wait_completed,
};
use integration_tests::proxy::FaultProxy;
use integration_tests::{
    Backend, PATIENCE, TestServer, attempts_of, fast_queue, wait_for, wait_health,
};
use taskplane_agent::{
    Agent, ConnectOptions, ConnectionState, TaskContext, TaskError, TaskHandler, TaskRegistry,
    TaskResult,
};
use taskplane_proto::v1::ListAgentsRequest;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_server::QueueConfig;
use taskplane_server::auth::Role;
use taskplane_server::auth::tokens::issue;
use taskplane_server::config::{AuthConfig, SecurityConfig};
use taskplane_server::testing::PostgresSchema;
use tonic_health::pb::health_check_response::ServingStatus;

/// The lease the server runs with; the stall lasts three of them.
const LEASE: Duration = Duration::from_secs(1);

/// How many times each task started, by the agent's journal.
fn starts(journal: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut starts = BTreeMap::new();
    for line in text.lines() {
        if let Some(id) = line
            .strip_prefix("start ")
            .and_then(|l| l.split(' ').next())
        {
            *starts.entry(id.to_owned()).or_default() += 1;
        }
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stall_longer_than_the_lease_runs_no_task_of_a_live_agent_twice() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let proxy = FaultProxy::start(database_address(&schema.url)).await;
    let server = ServerProcess::start(&through(&schema.url, proxy.address()), free_port()).await;
    register_work(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.log");
    let _agent = AgentProcess::start(&server.url(), "steady", 4, &journal);
    let mut client = server.tasks().await;
    let ids = enqueue_work(&mut client, 12, 1500).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while starts(&journal).len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no task started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Three leases of silence from the database, while the agent keeps
    // heartbeating and finishes what it runs.
    proxy.freeze();
    tokio::time::sleep(3 * LEASE).await;
    proxy.restore();

    for id in &ids {
        wait_completed(&mut client, id).await;
    }
    let twice: Vec<_> = starts(&journal)
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "tasks of a live agent ran again: {twice:?}"
    );
    for id in &ids {
        let attempts = attempts_of(&mut client, id).await;
        assert_eq!(attempts.len(), 1, "task {id}: {attempts:?}");
    }
    server.kill9().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_leave_a_frozen_replica_for_a_live_one_within_a_lease() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let frozen = ServerProcess::start(&schema.url, free_port()).await;
    let live = ServerProcess::start(&schema.url, free_port()).await;
    register_work(&frozen).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.log");
    // The agent lists the replica about to freeze first, so it starts there.
    let servers = format!("{},{}", frozen.url(), live.url());
    let _agent = AgentProcess::start(&servers, "mover", 4, &journal);
    let registry = RegistryServiceClient::new(live.channel().await);
    wait_for(|| {
        let mut registry = registry.clone();
        async move {
            let agents = registry.list_agents(ListAgentsRequest {}).await.unwrap();
            !agents.into_inner().agents.is_empty()
        }
    })
    .await;

    frozen.signal("-STOP").await;
    let frozen_at = tokio::time::Instant::now();
    let mut client = live.tasks().await;
    let ids = enqueue_work(&mut client, 8, 10).await;
    for id in &ids {
        wait_completed(&mut client, id).await;
    }
    println!(
        "work enqueued on the live replica completed {:?} after the other froze (lease {LEASE:?})",
        frozen_at.elapsed()
    );
    let twice: Vec<_> = starts(&journal)
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .collect();
    assert!(twice.is_empty(), "tasks ran twice: {twice:?}");
    frozen.signal("-CONT").await;
    frozen.kill9().await;
    live.kill9().await;
    schema.drop().await;
}

/// An agent handler that finishes at once.
struct Done;

#[async_trait::async_trait]
impl TaskHandler for Done {
    async fn handle(&self, _: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(serde_json::json!({})))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_its_stream_while_the_database_that_holds_its_token_is_cut_off() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let proxy = FaultProxy::start(database_address(&schema.url)).await;
    let queue = fast_queue();
    let heartbeat = queue.heartbeat_interval;
    let security = SecurityConfig {
        auth: Some(AuthConfig {
            tokens_file: None,
            cache_ttl: Duration::from_millis(50),
        }),
        ..SecurityConfig::default()
    };
    let backend = Backend::Postgres(through(&schema.url, proxy.address()));
    let server = TestServer::start_secured(&backend, queue, security).await;
    let store = taskplane_server::store::open(&schema.url, &QueueConfig::default())
        .await
        .unwrap();
    let token = issue("worker", Role::Agent, vec![]).unwrap();
    store.create_token(&token).await.unwrap();

    let mut registry = TaskRegistry::new();
    registry.register_handler("steady_work", Box::new(Done));
    let agent = Agent::builder()
        .registry(registry)
        .server(server.url())
        .name("token-holder")
        .connect_options(ConnectOptions {
            token: Some(token.token.clone()),
            ..ConnectOptions::default()
        })
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let mut state = agent.connection_state();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let running = tokio::spawn(agent.run(async move { stopped.cancelled().await }));
    let registered = tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| matches!(s, ConnectionState::Registered { .. })),
    )
    .await
    .expect("registers in time")
    .unwrap()
    .clone();
    let mut seen = Vec::new();
    let watching = tokio::spawn(async move {
        while state.changed().await.is_ok() {
            seen.push(state.borrow().clone());
        }
        seen
    });

    // Token checks run every heartbeat interval; six of them fail.
    proxy.cut();
    wait_health(server.channel().await, ServingStatus::NotServing).await;
    tokio::time::sleep(6 * heartbeat).await;
    proxy.restore();
    wait_health(server.channel().await, ServingStatus::Serving).await;
    tokio::time::sleep(2 * heartbeat).await;

    stop.cancel();
    running.await.unwrap().expect("the agent stops cleanly");
    let seen = watching.await.unwrap();
    assert_eq!(
        seen,
        [ConnectionState::Stopped],
        "the agent lost its stream ({registered:?} first)"
    );
    server.stop().await;
    schema.drop().await;
}
