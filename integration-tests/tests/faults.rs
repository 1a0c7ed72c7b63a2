//! Fault tests with real processes: a control plane (`taskplane serve`) and
//! test agents, killed with SIGKILL, stopped with SIGSTOP, drained with
//! SIGTERM, while tasks are in flight. Every accepted task must end exactly
//! once, as the store and the agents' journals both show.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::{AgentProcess, ServerProcess, enqueue_work, free_port, register_work};
use integration_tests::{Backend, PATIENCE};
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::{
    GetTaskRequest, ListAgentsRequest, ListTaskAttemptsRequest, ListTasksRequest, TaskStatus,
};
use tokio::process::Command;
use tonic::transport::Channel;

/// Journal lines by event, then by task id: how many times each happened.
fn journal(path: &Path) -> BTreeMap<String, BTreeMap<String, usize>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut events: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(event), Some(id)) = (parts.next(), parts.next()) else {
            continue;
        };
        *events
            .entry(event.to_owned())
            .or_default()
            .entry(id.to_owned())
            .or_default() += 1;
    }
    events
}

/// Waits until every task is terminal, then checks each completed exactly
/// once in the store: status COMPLETED and exactly one completed attempt.
async fn audit_all_completed_once(client: &mut TaskServiceClient<Channel>, ids: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let task = client
                .get_task(GetTaskRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            if task.status() == TaskStatus::Completed {
                break;
            }
            assert_ne!(
                task.status(),
                TaskStatus::Dead,
                "task {id} died: {}",
                task.last_error
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} still {:?}",
                task.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let attempts = client
            .list_task_attempts(ListTaskAttemptsRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .attempts;
        let completed = attempts.iter().filter(|a| a.outcome == "completed").count();
        assert_eq!(
            completed, 1,
            "task {id} completed {completed} times: {attempts:?}"
        );
        assert!(
            attempts.iter().all(|a| !a.outcome.is_empty()),
            "an attempt of {id} never ended: {attempts:?}"
        );
    }
}

/// Waits until at least `count` tasks are RUNNING.
async fn wait_running(client: &mut TaskServiceClient<Channel>, count: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while running_count(client).await < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {count} tasks started in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn running_count(client: &mut TaskServiceClient<Channel>) -> usize {
    let request = ListTasksRequest {
        status: TaskStatus::Running as i32,
        page_size: 500,
        ..Default::default()
    };
    client
        .list_tasks(request)
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len()
}

struct Scene {
    dir: tempfile::TempDir,
    backend: Backend,
}

impl Scene {
    /// A scene with a server on `port` that knows task type `work`, and a client of it.
    async fn start(
        backend: Backend,
        port: u16,
    ) -> (Self, ServerProcess, TaskServiceClient<Channel>) {
        let scene = Scene {
            dir: tempfile::tempdir().unwrap(),
            backend,
        };
        let server = ServerProcess::start(&scene.database(), port).await;
        register_work(&server).await;
        let client = server.tasks().await;
        (scene, server, client)
    }
    fn database(&self) -> String {
        self.backend.database_url(self.dir.path())
    }
    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal.log")
    }
}

async fn kill_9_of_an_agent_holding_leases_loses_nothing(backend: Backend) {
    let (scene, server, mut client) = Scene::start(backend, free_port()).await;
    let victim = AgentProcess::start(&server.url(), "victim", 8, &scene.journal());
    let ids = enqueue_work(&mut client, 24, 400).await;

    // Kill it while it holds leases.
    wait_running(&mut client, 8).await;
    victim.kill9().await;
    let rescuer = AgentProcess::start(&server.url(), "rescuer", 8, &scene.journal());
    audit_all_completed_once(&mut client, &ids).await;

    let runs = journal(&scene.journal());
    let done: usize = runs.get("done").map_or(0, |d| d.values().sum());
    assert_eq!(
        done,
        ids.len(),
        "each task finished once on the agents' side too"
    );
    let lost_attempts: usize = {
        let mut lost = 0;
        for id in &ids {
            let attempts = client
                .list_task_attempts(ListTaskAttemptsRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner()
                .attempts;
            lost += attempts.iter().filter(|a| a.outcome == "lost").count();
        }
        lost
    };
    assert!(
        lost_attempts >= 8,
        "the killed agent's attempts are recorded as lost ({lost_attempts})"
    );
    assert!(rescuer.terminate().await.success());
    server.kill9().await;
}

async fn kill_9_of_the_server_loses_nothing_and_agents_reconnect_by_themselves(backend: Backend) {
    let port = free_port();
    let (scene, server, mut client) = Scene::start(backend, port).await;
    let agent = AgentProcess::start(&server.url(), "survivor", 4, &scene.journal());
    let ids = enqueue_work(&mut client, 40, 100).await;

    // Let some complete, then kill the server mid-stream.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let completed_before: BTreeSet<String> = loop {
        let request = ListTasksRequest {
            status: TaskStatus::Completed as i32,
            page_size: 500,
            ..Default::default()
        };
        let done = client.list_tasks(request).await.unwrap().into_inner().tasks;
        if done.len() >= 8 {
            break done.into_iter().map(|t| t.id).collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill9().await;

    // Same database, same address: the agent finds it again on its own.
    let server = ServerProcess::start(&scene.database(), port).await;
    let mut client = server.tasks().await;
    audit_all_completed_once(&mut client, &ids).await;
    let runs = journal(&scene.journal());
    for id in &completed_before {
        assert_eq!(
            runs["start"].get(id),
            Some(&1),
            "task {id} completed before the crash and ran again"
        );
    }
    assert!(agent.terminate().await.success());
    server.kill9().await;
}

async fn a_frozen_agent_loses_its_lease_and_its_late_work_is_fenced_out(backend: Backend) {
    let (scene, server, mut client) = Scene::start(backend, free_port()).await;
    let frozen = AgentProcess::start(&server.url(), "frozen", 1, &scene.journal());
    let id = enqueue_work(&mut client, 1, 1500).await.remove(0);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while journal(&scene.journal())
        .get("start")
        .is_none_or(|s| !s.contains_key(&id))
    {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Freeze it mid-task: no heartbeats, the 1 s lease runs out.
    frozen.signal("-STOP").await;
    let rescuer = AgentProcess::start(&server.url(), "rescuer", 1, &scene.journal());
    audit_all_completed_once(&mut client, std::slice::from_ref(&id)).await;
    frozen.signal("-CONT").await;
    // The frozen agent wakes, finishes its stale attempt, and cannot report it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let attempts = client
        .list_task_attempts(ListTaskAttemptsRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .attempts;
    let outcomes: Vec<(u32, &str)> = attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [(1, "lost"), (2, "completed")]);
    let task = client
        .get_task(GetTaskRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((task.status(), task.attempts), (TaskStatus::Completed, 2));
    frozen.kill9().await;
    rescuer.kill9().await;
    server.kill9().await;
}

async fn sigterm_drains_an_agent_it_finishes_its_work_and_takes_no_more(backend: Backend) {
    let (scene, server, mut client) = Scene::start(backend, free_port()).await;
    let agent = AgentProcess::start(&server.url(), "draining", 2, &scene.journal());
    let running = enqueue_work(&mut client, 2, 600).await;
    wait_running(&mut client, 2).await;
    let waiting = enqueue_work(&mut client, 3, 0).await;
    let exit = agent.terminate().await;
    assert!(exit.success(), "a drained agent exits 0: {exit:?}");
    for id in &running {
        let task = client
            .get_task(GetTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (task.status(), task.attempts),
            (TaskStatus::Completed, 1),
            "finished during the drain"
        );
    }
    for id in &waiting {
        let task = client
            .get_task(GetTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (task.status(), task.attempts),
            (TaskStatus::Pending, 0),
            "a draining agent takes no new task"
        );
    }
    server.kill9().await;
}

async fn soak_agents_killed_and_restarted_at_random_lose_and_duplicate_nothing(backend: Backend) {
    let (scene, server, mut client) = Scene::start(backend, free_port()).await;
    let mut agents: Vec<AgentProcess> = (0..3)
        .map(|i| AgentProcess::start(&server.url(), &format!("soak-{i}"), 16, &scene.journal()))
        .collect();
    let mut ids = Vec::new();
    // A fixed seed: a failure replays the same schedule.
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20 {
        ids.extend(enqueue_work(&mut client, 100, next() % 20).await);
        let victim = (next() % agents.len() as u64) as usize;
        let replaced = std::mem::replace(
            &mut agents[victim],
            AgentProcess::start(
                &server.url(),
                &format!("soak-r{round}"),
                16,
                &scene.journal(),
            ),
        );
        replaced.kill9().await;
        tokio::time::sleep(Duration::from_millis(next() % 150)).await;
    }
    audit_all_completed_once(&mut client, &ids).await;
    assert_eq!(ids.len(), 2000);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    for agent in agents {
        assert!(agent.terminate().await.success());
    }
    server.kill9().await;
}

async fn sigterm_stops_the_server_cleanly_and_a_restart_finishes_everything(backend: Backend) {
    let port = free_port();
    let (scene, mut server, mut client) = Scene::start(backend, port).await;
    let agent = AgentProcess::start(&server.url(), "patient", 4, &scene.journal());
    let ids = enqueue_work(&mut client, 12, 300).await;
    wait_running(&mut client, 1).await;
    let pid = server.child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(PATIENCE, server.child.wait())
        .await
        .expect("stops in time")
        .unwrap();
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");

    // A restart on the same database finishes every task exactly once.
    let server = ServerProcess::start(&scene.database(), port).await;
    let mut client = server.tasks().await;
    audit_all_completed_once(&mut client, &ids).await;
    assert!(agent.terminate().await.success());
    server.kill9().await;
}

/// A second SIGTERM ends an agent whose drain is still waiting for a long
/// handler at once, with the forced-exit code, instead of after the grace
/// period; its task goes back to the queue like any lost lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_a_draining_agent_at_once() {
    let (scene, server, mut client) = Scene::start(Backend::Sqlite, free_port()).await;
    let grace = Duration::from_secs(120);
    let mut agent =
        AgentProcess::start_with_grace(&server.url(), "stubborn", 1, &scene.journal(), grace);
    enqueue_work(&mut client, 1, 120_000).await;
    wait_running(&mut client, 1).await;
    agent.signal("-TERM").await;
    let mut registry = RegistryServiceClient::new(server.channel().await);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let agents = registry
            .list_agents(ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents;
        if agents
            .iter()
            .any(|a| a.agent_name == "stubborn" && a.draining)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.signal("-TERM").await;
    // Without the second signal the drain would wait for the grace period,
    // far longer than `wait` waits.
    let exit = agent.wait().await;
    assert_eq!(
        exit.code(),
        Some(taskplane_common::shutdown::FORCED_EXIT_CODE)
    );
    server.kill9().await;
}

integration_tests::on_every_backend!(
    kill_9_of_an_agent_holding_leases_loses_nothing,
    kill_9_of_the_server_loses_nothing_and_agents_reconnect_by_themselves,
    a_frozen_agent_loses_its_lease_and_its_late_work_is_fenced_out,
    sigterm_drains_an_agent_it_finishes_its_work_and_takes_no_more,
    soak_agents_killed_and_restarted_at_random_lose_and_duplicate_nothing,
    sigterm_stops_the_server_cleanly_and_a_restart_finishes_everything,
);
