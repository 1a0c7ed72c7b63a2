//! Several `taskplane serve` replicas on one PostgreSQL database: work
//! enqueued on one replica wakes agents on another by LISTEN/NOTIFY, every
//! replica sees every agent, a replica killed with SIGKILL loses nothing,
//! and a schedule fired by both makes one task per fire time.
//! PostgreSQL only: an SQLite file belongs to one process.

use std::time::{Duration, Instant};

use integration_tests::{PATIENCE, enqueue};
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::schedule_service_client::ScheduleServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, EnqueueTasksRequest, ListAgentsRequest,
    ListTaskAttemptsRequest, ListTasksRequest, OverlapPolicy, ScheduleSpec,
};
use taskplane_server::testing::PostgresSchema;

mod common;

use common::{AgentProcess, ServerProcess, free_port, register_work, wait_completed, work};

/// A replica whose poll interval is so long that only notifications can wake
/// its agents in time.
async fn start_replica(database_url: &str) -> ServerProcess {
    ServerProcess::start_polling(database_url, free_port(), "60s").await
}

async fn wait_agents(replica: &ServerProcess, count: usize) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_enqueued_on_one_replica_wakes_an_agent_on_another_all_agents_are_listed_and_keys_stay_unique()
 {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = start_replica(&schema.url).await;
    let b = start_replica(&schema.url).await;
    register_work(&a).await;
    let on_a = AgentProcess::start(&a.url(), "on-a", 8, &dir.path().join("a.log"));
    wait_agents(&a, 1).await;
    let _on_b = AgentProcess::start(&b.url(), "on-b", 8, &dir.path().join("b.log"));
    // Each replica lists the agents of both.
    wait_agents(&a, 2).await;
    wait_agents(&b, 2).await;

    // Stop the agent on A so only B's agent can run the tasks; enqueue on A.
    // With a 60 s poll interval, only a notification wakes B in time.
    on_a.kill9().await;
    wait_agents(&a, 1).await;
    let mut client_a = TaskServiceClient::new(a.channel().await);
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let id = enqueue(&mut client_a, work(0)).await.id;
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
    let a = start_replica(&schema.url).await;
    let b = start_replica(&schema.url).await;
    register_work(&a).await;
    let journal = dir.path().join("journal.log");
    let mut agents = vec![
        AgentProcess::start(&format!("{},{}", a.url(), b.url()), "first-a", 8, &journal),
        AgentProcess::start(&format!("{},{}", b.url(), a.url()), "first-b", 8, &journal),
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
    agents.push(AgentProcess::start(&b.url(), "late", 8, &journal));

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
    for agent in agents {
        agent.kill9().await;
    }
    b.kill9().await;
    schema.drop().await;
}

/// Two replicas fire the same per-second schedule; one is killed with
/// SIGKILL partway. Every fire time from the first task to the last has
/// exactly one task: none doubled by the race, none lost to the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_each_fire_time_exactly_once_through_a_kill() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let a = start_replica(&schema.url).await;
    let b = start_replica(&schema.url).await;
    register_work(&a).await;
    let mut schedules_a = ScheduleServiceClient::new(a.channel().await);
    schedules_a
        .create_schedule(CreateScheduleRequest {
            schedule: Some(ScheduleSpec {
                name: "both-replicas".into(),
                task_type: "work".into(),
                interval: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                overlap: OverlapPolicy::Allow as i32,
                ..ScheduleSpec::default()
            }),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    a.kill9().await;
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let mut schedules_b = ScheduleServiceClient::new(b.channel().await);
    schedules_b
        .delete_schedule(DeleteScheduleRequest {
            name: "both-replicas".into(),
        })
        .await
        .unwrap();
    let mut client = TaskServiceClient::new(b.channel().await);
    let tasks = client
        .list_tasks(ListTasksRequest {
            task_type: "work".into(),
            page_size: 500,
            ..ListTasksRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let mut fire_times: Vec<String> = tasks
        .iter()
        .map(|t| t.metadata["taskplane.fire_at"].clone())
        .collect();
    fire_times.sort();
    let seconds: Vec<i64> = fire_times
        .iter()
        .map(|text| text.parse::<prost_types::Timestamp>().unwrap().seconds)
        .collect();
    assert!(
        seconds.len() >= 5,
        "only {} fire times: {fire_times:?}",
        seconds.len()
    );
    for pair in seconds.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1,
            "a doubled or lost fire time: {fire_times:?}"
        );
    }
    b.kill9().await;
    schema.drop().await;
}
