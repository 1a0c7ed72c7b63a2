//! The agent conformance suite: checks, from outside, that an agent
//! implementation speaks the protocol `docs/protocol.md` states. It starts
//! real control planes (SQLite, loopback) and runs the agent under test as
//! a process from the command it is given, with `TASKPLANE_SERVER` (the
//! URLs to try, in order) and `CONFORMANCE_SLOTS` in its environment. The
//! agent serves the domain `conformance` with the task types `echo`,
//! `fail`, `sleep` and `progress` (see `docs/protocol.md`).
//!
//! Each check gets a fresh server and agent, so one failure tells one thing.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use taskplane_proto::v1::{
    CancelTaskRequest, GetTaskRequest, ListAgentsRequest, ListTaskTypesRequest, Task, TaskStatus,
};
use taskplane_server::QueueConfig;
use taskplane_server::testing::Backend;
use tokio::process::{Child, Command};

use crate::{
    PATIENCE, TestServer, attempts_of, enqueue, enqueue_request, fast_queue, result_json, wait_for,
    wait_status, wait_terminal,
};

/// Slots the agent under test is given.
const SLOTS: u32 = 2;

/// The task types the agent under test serves, all of domain `conformance`.
const TASK_TYPES: [&str; 4] = ["echo", "fail", "progress", "sleep"];

/// The largest message the suite's servers accept: small, so a result over
/// it is cheap to make.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One check: its name and why it failed, if it did.
#[derive(Debug)]
pub struct Outcome {
    /// What the check proves, in words.
    pub check: &'static str,
    /// `Err` with what went wrong, and the agent's output.
    pub result: Result<(), String>,
}

/// The agent under test: a program and its arguments.
#[derive(Debug, Clone)]
pub struct AgentCommand {
    /// The program and its arguments, e.g. `["python3", "conformance_agent.py"]`.
    pub argv: Vec<String>,
    /// Extra environment for it.
    pub env: Vec<(String, String)>,
}

type Check = fn(AgentCommand) -> Pin<Box<dyn Future<Output = ()>>>;

/// Every check, in the order `docs/protocol.md` lists them.
fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("registration is atomic and comes first", |a| {
            Box::pin(registers_every_type_at_once(a))
        }),
        ("results carry the right attempt", |a| {
            Box::pin(results_carry_the_right_attempt(a))
        }),
        (
            "the agent never runs more than its slots, and fills them",
            |a| Box::pin(runs_at_most_its_slots(a)),
        ),
        ("cancellation stops the handler and frees its slot", |a| {
            Box::pin(cancellation_stops_the_handler(a))
        }),
        ("heartbeats keep leases", |a| {
            Box::pin(heartbeats_keep_leases(a))
        }),
        ("a lost stream returns its tasks", |a| {
            Box::pin(a_lost_stream_returns_its_tasks(a))
        }),
        ("drain finishes in-flight work and takes no more", |a| {
            Box::pin(drain_finishes_and_takes_no_more(a))
        }),
        ("reconnect goes to the next server", |a| {
            Box::pin(reconnect_goes_to_the_next_server(a))
        }),
        (
            "a result over the message limit fails its attempt cleanly",
            |a| Box::pin(oversized_results_fail_cleanly(a)),
        ),
    ]
}

/// Runs every check against `agent`; each in its own task, so a failing
/// assertion fails that check alone.
pub async fn run(agent: AgentCommand) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (check, body) in checks() {
        let local = tokio::task::LocalSet::new();
        let handle = local.spawn_local(body(agent.clone()));
        let ran = local.run_until(handle).await;
        let result = ran.map_err(|error| {
            let panic = error.into_panic();
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the check panicked".into())
        });
        outcomes.push(Outcome { check, result });
    }
    outcomes
}

/// The queue settings of the suite's servers: short leases (1.5 s, a
/// heartbeat every 0.5 s) and a small message limit.
fn suite_queue() -> QueueConfig {
    QueueConfig {
        lease_duration: Duration::from_millis(1500),
        heartbeat_interval: Duration::from_millis(500),
        max_message_bytes: MAX_MESSAGE_BYTES,
        ..fast_queue()
    }
}

async fn start_server() -> TestServer {
    TestServer::start_with(&Backend::Sqlite, suite_queue()).await
}

/// A running agent under test; killed when dropped. Its output goes to a
/// file, quoted when a check fails.
struct AgentUnderTest {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentUnderTest {
    fn start(command: &AgentCommand, servers: &[&TestServer]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("agent.log");
        let output = std::fs::File::create(&log).expect("agent log");
        let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
        let child = Command::new(&command.argv[0])
            .args(&command.argv[1..])
            .envs(command.env.iter().cloned())
            .env("TASKPLANE_SERVER", urls.join(","))
            .env("CONFORMANCE_SLOTS", SLOTS.to_string())
            .stdout(output.try_clone().expect("log handle"))
            .stderr(output)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the agent {:?}: {e}", command.argv));
        AgentUnderTest {
            child,
            log,
            _dir: dir,
        }
    }

    /// The agent's output so far, for a failure message.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    async fn terminate(&self) {
        let pid = self.child.id().expect("the agent runs").to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
    }
}

/// Starts the agent and waits until `server` lists it; returns it with its
/// listing.
async fn start_agent(
    command: &AgentCommand,
    servers: &[&TestServer],
) -> (AgentUnderTest, taskplane_proto::v1::AgentInfo) {
    let agent = AgentUnderTest::start(command, servers);
    let info = listed(servers[0], &agent).await;
    (agent, info)
}

/// Waits until `server` lists the agent under test; returns its listing.
async fn listed(server: &TestServer, agent: &AgentUnderTest) -> taskplane_proto::v1::AgentInfo {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(info) = live_agent(server).await {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not register within {PATIENCE:?}; its output:\n{}",
            agent.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn live_agent(server: &TestServer) -> Option<taskplane_proto::v1::AgentInfo> {
    server
        .registry()
        .await
        .list_agents(ListAgentsRequest {})
        .await
        .expect("list agents")
        .into_inner()
        .agents
        .into_iter()
        .next()
}

async fn get(server: &TestServer, id: &str) -> Task {
    server
        .tasks()
        .await
        .get_task(GetTaskRequest { id: id.to_owned() })
        .await
        .expect("get task")
        .into_inner()
}

/// Enqueues `count` tasks of `task_type`, with at most `max_attempts`.
async fn enqueue_many(
    server: &TestServer,
    task_type: &str,
    payload: serde_json::Value,
    count: usize,
    max_attempts: u32,
) -> Vec<String> {
    let mut tasks = server.tasks().await;
    let mut ids = Vec::new();
    for _ in 0..count {
        let mut request = enqueue_request(task_type, payload.clone());
        request.max_attempts = max_attempts;
        ids.push(enqueue(&mut tasks, request).await.id);
    }
    ids
}

/// Waits until each task runs a handler that has reported progress.
async fn wait_started(server: &TestServer, ids: &[String]) {
    for id in ids {
        wait_for(|| async { get(server, id).await.progress.is_some() }).await;
    }
}

async fn registers_every_type_at_once(command: AgentCommand) {
    let server = start_server().await;
    let (agent, info) = start_agent(&command, &[&server]).await;
    let listed: BTreeSet<&str> = info.task_types.iter().map(String::as_str).collect();
    assert_eq!(
        listed,
        BTreeSet::from(TASK_TYPES),
        "the agent's first listing has every type: registration is one message"
    );
    assert_eq!(info.domains, ["conformance"]);
    assert_eq!(info.max_concurrency, SLOTS, "the slots it was told");
    let types = server
        .registry()
        .await
        .list_task_types(ListTaskTypesRequest {
            domain: "conformance".into(),
        })
        .await
        .expect("list types")
        .into_inner()
        .task_types;
    assert_eq!(types.len(), TASK_TYPES.len(), "{types:?}");
    drop(agent);
}

async fn results_carry_the_right_attempt(command: AgentCommand) {
    let server = start_server().await;
    let (_agent, _) = start_agent(&command, &[&server]).await;
    let mut tasks = server.tasks().await;
    let payload = json!({ "nested": { "list": [1, "two", true, null] }, "n": 3 });
    let [echo] = &enqueue_many(&server, "echo", payload.clone(), 1, 1).await[..] else {
        unreachable!()
    };
    let echoed = wait_terminal(&mut tasks, echo).await;
    assert_eq!(echoed.status(), TaskStatus::Completed, "{echoed:?}");
    assert_eq!(result_json(&echoed), payload);

    let retried = &enqueue_many(&server, "fail", json!({ "retryable": true }), 1, 3).await[0];
    let dead = wait_terminal(&mut tasks, retried).await;
    assert_eq!(
        (dead.status(), dead.attempts),
        (TaskStatus::Dead, 3),
        "{dead:?}"
    );
    let attempts = attempts_of(&mut tasks, retried).await;
    assert_eq!(attempts.len(), 3);
    for attempt in &attempts {
        assert!(
            attempt
                .error
                .contains(&format!("failure of attempt {}", attempt.attempt)),
            "attempt {} ended with its own result, not a lease expiry: {:?}",
            attempt.attempt,
            attempt.error
        );
    }

    let permanent = &enqueue_many(&server, "fail", json!({ "retryable": false }), 1, 3).await[0];
    let dead = wait_terminal(&mut tasks, permanent).await;
    assert_eq!(
        (dead.status(), dead.attempts),
        (TaskStatus::Dead, 1),
        "a permanent failure is not retried: {dead:?}"
    );
}

async fn runs_at_most_its_slots(command: AgentCommand) {
    let server = start_server().await;
    let (_agent, _) = start_agent(&command, &[&server]).await;
    // Fast tasks first: the server learns the handlers are quick and fills
    // the agent's prefetch window beyond its slots, so the slow ones after
    // them arrive faster than slots free up.
    enqueue_many(&server, "echo", json!({}), 200, 1).await;
    let ids = enqueue_many(
        &server,
        "sleep",
        json!({ "ms": 300 }),
        4 * SLOTS as usize,
        1,
    )
    .await;
    let mut tasks = server.tasks().await;
    let mut edges = Vec::new();
    for id in &ids {
        let task = wait_terminal(&mut tasks, id).await;
        assert_eq!(task.status(), TaskStatus::Completed, "{task:?}");
        let ran = result_json(&task);
        edges.push((ran["started_us"].as_u64().expect("started_us"), 1i32));
        edges.push((ran["ended_us"].as_u64().expect("ended_us"), -1i32));
    }
    // Ends sort before starts at the same instant: a slot freed and reused.
    edges.sort();
    let (mut running, mut most) = (0, 0);
    for (_, change) in edges {
        running += change;
        most = most.max(running);
    }
    assert!(
        most <= SLOTS as i32,
        "{most} handlers ran at once on {SLOTS} slots"
    );
    assert_eq!(most, SLOTS as i32, "with work waiting, every slot runs");
}

async fn cancellation_stops_the_handler(command: AgentCommand) {
    let server = start_server().await;
    let (_agent, _) = start_agent(&command, &[&server]).await;
    let long = enqueue_many(
        &server,
        "progress",
        json!({ "ms": 600_000 }),
        SLOTS as usize,
        1,
    )
    .await;
    wait_started(&server, &long).await;
    let progress = get(&server, &long[0]).await.progress.expect("progress");
    assert_eq!(
        (progress.fraction, progress.message.as_str()),
        (0.5, "half way")
    );
    let mut tasks = server.tasks().await;
    for id in &long {
        tasks
            .cancel_task(CancelTaskRequest {
                id: id.clone(),
                reason: "conformance".into(),
            })
            .await
            .expect("cancel");
    }
    // Every slot held a ten-minute handler: these run only if cancelling
    // stopped them.
    for id in enqueue_many(&server, "echo", json!({}), SLOTS as usize, 1).await {
        let task = wait_terminal(&mut tasks, &id).await;
        assert_eq!(task.status(), TaskStatus::Completed, "{task:?}");
    }
    for id in &long {
        wait_for(|| async {
            let attempts = attempts_of(&mut server.tasks().await, id).await;
            attempts.iter().all(|a| a.finished_at.is_some())
        })
        .await;
    }
}

async fn heartbeats_keep_leases(command: AgentCommand) {
    let server = start_server().await;
    let (_agent, _) = start_agent(&command, &[&server]).await;
    // Three leases long: only heartbeats keep it.
    let id = &enqueue_many(&server, "sleep", json!({ "ms": 4500 }), 1, 3).await[0];
    let task = wait_terminal(&mut server.tasks().await, id).await;
    assert_eq!(
        (task.status(), task.attempts),
        (TaskStatus::Completed, 1),
        "{task:?}"
    );
}

async fn a_lost_stream_returns_its_tasks(command: AgentCommand) {
    let server = start_server().await;
    let (mut agent, _) = start_agent(&command, &[&server]).await;
    let id = &enqueue_many(&server, "progress", json!({ "ms": 600_000 }), 1, 3).await[0];
    wait_started(&server, std::slice::from_ref(id)).await;
    agent.child.kill().await.expect("kill -9");
    let tasks = server.tasks().await;
    wait_status(&tasks, id, TaskStatus::Pending).await;
    wait_for(|| async { live_agent(&server).await.is_none() }).await;
    let (_again, _) = start_agent(&command, &[&server]).await;
    wait_for(|| async {
        let task = get(&server, id).await;
        task.status() == TaskStatus::Running && task.attempts == 2 && task.progress.is_some()
    })
    .await;
}

async fn drain_finishes_and_takes_no_more(command: AgentCommand) {
    let server = start_server().await;
    let (mut agent, _) = start_agent(&command, &[&server]).await;
    let running = enqueue_many(
        &server,
        "progress",
        json!({ "ms": 1500 }),
        SLOTS as usize,
        1,
    )
    .await;
    wait_started(&server, &running).await;
    agent.terminate().await;
    wait_for(|| async { live_agent(&server).await.is_none_or(|a| a.draining) }).await;
    let later = enqueue_many(&server, "echo", json!({}), SLOTS as usize, 1).await;
    let exit = tokio::time::timeout(PATIENCE, agent.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the agent did not exit after SIGTERM; its output:\n{}",
                agent.output()
            )
        })
        .expect("wait");
    assert!(
        exit.success(),
        "the agent exits 0 after draining: {exit:?}\n{}",
        agent.output()
    );
    for id in &running {
        let task = get(&server, id).await;
        assert_eq!(
            (task.status(), task.attempts),
            (TaskStatus::Completed, 1),
            "{task:?}"
        );
    }
    for id in &later {
        let task = get(&server, id).await;
        assert_eq!(
            (task.status(), task.attempts),
            (TaskStatus::Pending, 0),
            "{task:?}"
        );
    }
}

async fn reconnect_goes_to_the_next_server(command: AgentCommand) {
    let first = start_server().await;
    let second = start_server().await;
    let (agent, _) = start_agent(&command, &[&first, &second]).await;
    first.stop().await;
    listed(&second, &agent).await;
    let id = &enqueue_many(&second, "echo", json!({ "on": "second" }), 1, 1).await[0];
    let task = wait_terminal(&mut second.tasks().await, id).await;
    assert_eq!(result_json(&task), json!({ "on": "second" }));
}

async fn oversized_results_fail_cleanly(command: AgentCommand) {
    let server = start_server().await;
    let (_agent, info) = start_agent(&command, &[&server]).await;
    let mut tasks = server.tasks().await;
    let big = &enqueue_many(
        &server,
        "echo",
        json!({ "pad_bytes": 2 * MAX_MESSAGE_BYTES }),
        1,
        1,
    )
    .await[0];
    let task = wait_terminal(&mut tasks, big).await;
    assert_eq!(
        (task.status(), task.attempts),
        (TaskStatus::Dead, 1),
        "{task:?}"
    );
    assert!(!task.last_error.is_empty(), "the failure says why");
    let after = live_agent(&server).await.expect("still listed");
    assert_eq!(
        after.session_id, info.session_id,
        "the stream survived: the result was never sent"
    );
    let small = &enqueue_many(&server, "echo", json!({ "small": true }), 1, 1).await[0];
    assert_eq!(
        wait_terminal(&mut tasks, small).await.status(),
        TaskStatus::Completed
    );
}
