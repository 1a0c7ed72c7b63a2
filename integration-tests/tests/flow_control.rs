//! Flow control through real servers and agents: a per-key limit never
//! runs two tasks of one key at once and lets another key start beside it;
//! `max_running` holds across two agents, and across two PostgreSQL
//! replicas; a paused type holds new work while what runs finishes, and
//! `task get` says why a task waits; limits an agent declares in code hold
//! like an operator's, and one that does not work refuses the registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, http_get, metric_sample,
    on_every_backend, wait_for, wait_status, wait_terminal,
};
use serde_json::json;
use taskplane_agent::{FlowLimits, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::agent_service_client::AgentServiceClient;
use taskplane_proto::v1::{
    AgentMessage, DomainRegistration, EnqueueTasksRequest, FlowPolicy, GetTaskRequest,
    ListTaskTypesRequest, Register, SetTaskTypePolicyRequest, TaskStatus, TaskTypeRegistration,
};
use taskplane_server::testing::PostgresSchema;
use tokio::sync::watch;

/// What ran, as the handlers saw it.
#[derive(Default)]
struct Observed {
    running: HashMap<String, u32>,
    most_per_key: HashMap<String, u32>,
    total: u32,
    most_total: u32,
    started: Vec<String>,
    started_at: Vec<std::time::Instant>,
    by_agent: HashMap<String, u32>,
}

/// Sleeps `sleep_ms` (or, with `"hold": true`, until the gate opens),
/// recording how many tasks of each `customer` run at once.
struct Tracked {
    agent: &'static str,
    observed: Arc<Mutex<Observed>>,
    gate: watch::Receiver<bool>,
    limits: Option<FlowLimits>,
}

#[async_trait]
impl TaskHandler for Tracked {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let key = context.payload["customer"]
            .as_str()
            .unwrap_or("-")
            .to_owned();
        {
            let mut seen = self.observed.lock().unwrap();
            let running = seen.running.entry(key.clone()).or_default();
            *running += 1;
            let now = *running;
            let most = seen.most_per_key.entry(key.clone()).or_default();
            *most = (*most).max(now);
            seen.total += 1;
            seen.most_total = seen.most_total.max(seen.total);
            seen.started.push(key.clone());
            seen.started_at.push(std::time::Instant::now());
            *seen.by_agent.entry(self.agent.to_owned()).or_default() += 1;
        }
        if context.payload["hold"].as_bool() == Some(true) {
            let mut gate = self.gate.clone();
            gate.wait_for(|open| *open).await.unwrap();
        } else {
            let sleep = context.payload["sleep_ms"].as_u64().unwrap_or(30);
            tokio::time::sleep(Duration::from_millis(sleep)).await;
        }
        let mut seen = self.observed.lock().unwrap();
        *seen.running.get_mut(&key).unwrap() -= 1;
        seen.total -= 1;
        Ok(TaskResult::new(json!({})))
    }

    fn flow_limits(&self) -> Option<FlowLimits> {
        self.limits.clone()
    }
}

fn tracked(
    agent: &'static str,
    observed: &Arc<Mutex<Observed>>,
    gate: &watch::Receiver<bool>,
) -> TaskRegistry {
    declaring(agent, observed, gate, None)
}

/// [`tracked`], its handler declaring `limits`.
fn declaring(
    agent: &'static str,
    observed: &Arc<Mutex<Observed>>,
    gate: &watch::Receiver<bool>,
    limits: Option<FlowLimits>,
) -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_handler(
        "charge",
        Box::new(Tracked {
            agent,
            observed: observed.clone(),
            gate: gate.clone(),
            limits,
        }),
    );
    registry
}

/// The `charge` type's policy as `ListTaskTypes` shows it.
async fn listed_policy(server: &TestServer) -> FlowPolicy {
    let listed = server
        .registry()
        .await
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    listed[0].flow.clone().unwrap()
}

async fn set_policy(server: &TestServer, request: SetTaskTypePolicyRequest) {
    server
        .registry()
        .await
        .set_task_type_policy(SetTaskTypePolicyRequest {
            task_type: "charge".into(),
            ..request
        })
        .await
        .unwrap();
}

/// Enqueues `count` charges of each customer on `server`, in that order,
/// in one batch; returns their ids.
async fn charges(server: &TestServer, customers: &[&str], count: usize) -> Vec<String> {
    let requests = customers
        .iter()
        .flat_map(|customer| {
            (0..count).map(move |_| enqueue_request("charge", json!({"customer": customer})))
        })
        .collect();
    server
        .tasks()
        .await
        .enqueue_tasks(EnqueueTasksRequest { tasks: requests })
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|result| result.task.unwrap().id)
        .collect()
}

/// Enqueues `count` charges on `server` that only the agent labelled
/// `replica` may run, each sleeping `sleep_ms`; returns their ids.
async fn labelled_charges(
    server: &TestServer,
    replica: &str,
    count: usize,
    sleep_ms: u64,
) -> Vec<String> {
    let mut tasks = server.tasks().await;
    let mut ids = Vec::new();
    for _ in 0..count {
        let mut request = enqueue_request("charge", json!({ "sleep_ms": sleep_ms }));
        request.required_labels = [("replica".to_owned(), replica.to_owned())].into();
        ids.push(enqueue(&mut tasks, request).await.id);
    }
    ids
}

async fn wait_all_completed(server: &TestServer, ids: &[String]) {
    let mut tasks = server.tasks().await;
    for id in ids {
        let task = wait_terminal(&mut tasks, id).await;
        assert_eq!(task.status(), TaskStatus::Completed, "{task:?}");
    }
}

async fn a_key_limit_never_runs_two_of_one_key_and_others_start_beside_it(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (_open, gate) = watch::channel(false);
    let agent = TestAgent::start_configured(&server, "a", tracked("a", &observed, &gate), |a| {
        a.max_concurrency(16)
    })
    .await;
    set_policy(
        &server,
        SetTaskTypePolicyRequest {
            concurrency_key: Some("payload.customer".into()),
            max_running_per_key: Some(1),
            ..Default::default()
        },
    )
    .await;
    // x's ten are enqueued before y's and z's.
    let ids = charges(&server, &["x", "y", "z"], 10).await;
    wait_all_completed(&server, &ids).await;
    {
        let seen = observed.lock().unwrap();
        assert_eq!(
            seen.most_per_key,
            HashMap::from([("x".into(), 1), ("y".into(), 1), ("z".into(), 1)]),
            "never two of one key at once"
        );
        assert_eq!(seen.most_total, 3, "the three keys ran side by side");
        let mut first: Vec<&String> = seen.started[..3].iter().collect();
        first.sort();
        assert_eq!(
            first,
            ["x", "y", "z"],
            "each key's first before any key's second: y and z did not wait for x's flood"
        );
    }
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn max_running_holds_across_two_agents(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (_open, gate) = watch::channel(false);
    let a = TestAgent::start(&server, "a", tracked("a", &observed, &gate)).await;
    let b = TestAgent::start(&server, "b", tracked("b", &observed, &gate)).await;
    set_policy(
        &server,
        SetTaskTypePolicyRequest {
            max_running: Some(5),
            ..Default::default()
        },
    )
    .await;
    let ids = charges(&server, &["-"], 40).await;
    wait_all_completed(&server, &ids).await;
    {
        let seen = observed.lock().unwrap();
        assert_eq!(seen.most_total, 5, "16 slots, never more than 5 at once");
        assert_eq!(seen.by_agent.values().sum::<u32>(), 40);
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    server.stop().await;
}

/// Two replicas on one fresh PostgreSQL schema, each with an agent whose
/// label (`replica` = `one` or `two`) names it, both watched by one
/// [`Observed`]. `None` without PostgreSQL.
struct Replicas {
    schema: PostgresSchema,
    one: TestServer,
    two: TestServer,
    agents: [TestAgent; 2],
    observed: Arc<Mutex<Observed>>,
    _gate: watch::Sender<bool>,
}

impl Replicas {
    async fn start() -> Option<Replicas> {
        let schema = PostgresSchema::create().await?;
        let backend = Backend::Postgres(schema.url.clone());
        let one = TestServer::start(&backend).await;
        let two = TestServer::start(&backend).await;
        let observed = Arc::new(Mutex::new(Observed::default()));
        let (open, gate) = watch::channel(false);
        let a = TestAgent::start_configured(&one, "a", tracked("a", &observed, &gate), |agent| {
            agent.label("replica", "one")
        })
        .await;
        let b = TestAgent::start_configured(&two, "b", tracked("b", &observed, &gate), |agent| {
            agent.label("replica", "two")
        })
        .await;
        Some(Replicas {
            schema,
            one,
            two,
            agents: [a, b],
            observed,
            _gate: open,
        })
    }

    async fn stop(self) {
        for agent in self.agents {
            agent.stop().await.unwrap();
        }
        self.one.stop().await;
        self.two.stop().await;
        self.schema.drop().await;
    }
}

/// Two replicas on one PostgreSQL database, an agent on each: the limit
/// set on one holds for both, which take turns through the type's row lock.
/// Each agent's tasks require its label, so both must run theirs side by
/// side (left alone, the agent that frees a slot claims it again first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_holds_across_two_postgres_replicas() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    let Replicas {
        one, two, observed, ..
    } = &replicas;
    set_policy(
        one,
        SetTaskTypePolicyRequest {
            max_running: Some(5),
            ..Default::default()
        },
    )
    .await;
    // Replica two enforces it once told (NOTIFY), as its metric shows.
    wait_for(|| async {
        let (_, text) = http_get(two.metrics_address, "/metrics").await;
        metric_sample(
            &text,
            "taskplane_task_type_max_running{task_type=\"charge\"}",
        ) == Some(5.0)
    })
    .await;
    // Long enough that tasks enqueued one by one pile up to the limit: with
    // 30 ms tasks each could finish before the next arrived, and the limit
    // was sometimes never reached (4 at most).
    let mut ids = labelled_charges(one, "one", 20, 300).await;
    ids.extend(labelled_charges(two, "two", 20, 300).await);
    wait_all_completed(one, &ids).await;
    {
        let seen = observed.lock().unwrap();
        assert_eq!(
            seen.most_total, 5,
            "16 slots on two replicas, never more than 5 at once"
        );
        assert_eq!(
            seen.by_agent,
            HashMap::from([("a".into(), 20), ("b".into(), 20)])
        );
    }
    replicas.stop().await;
}

/// A rate limit set on one replica is one bucket for both: each replica's
/// agent runs only its own labelled tasks, and together they start 100 in
/// 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_postgres_replicas() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    let Replicas {
        one, two, observed, ..
    } = &replicas;
    set_policy(
        one,
        SetTaskTypePolicyRequest {
            rate_limit: Some("20/second".into()),
            ..Default::default()
        },
    )
    .await;
    labelled_charges(one, "one", 75, 30).await;
    labelled_charges(two, "two", 75, 30).await;
    let started = starts_within(observed, Duration::from_secs(5)).await.len();
    assert!((95..=105).contains(&started), "{started} starts in 5 s");
    {
        let seen = observed.lock().unwrap();
        assert_eq!(seen.by_agent.len(), 2, "{:?}", seen.by_agent);
    }
    replicas.stop().await;
}

async fn a_paused_type_holds_new_work_while_what_runs_finishes(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (open, gate) = watch::channel(false);
    let agent = TestAgent::start(&server, "a", tracked("a", &observed, &gate)).await;
    let mut tasks = server.tasks().await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let request = enqueue_request("charge", json!({"hold": true}));
        held.push(enqueue(&mut tasks, request).await.id);
    }
    for id in &held {
        wait_status(&tasks, id, TaskStatus::Running).await;
    }
    set_policy(
        &server,
        SetTaskTypePolicyRequest {
            paused: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert!(listed_policy(&server).await.paused);
    let (_, text) = http_get(server.metrics_address, "/metrics").await;
    assert_eq!(
        metric_sample(&text, "taskplane_task_type_paused{task_type=\"charge\"}"),
        Some(1.0)
    );
    // Enqueues are accepted while paused.
    let later = charges(&server, &["-"], 3).await;
    open.send(true).unwrap();
    wait_all_completed(&server, &held).await;
    // The agent has free slots and the poll interval is 50 ms: only the
    // pause keeps these waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &later {
        let task = tasks
            .get_task(GetTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(task.status(), TaskStatus::Pending);
        assert!(
            task.waiting_for.contains("'charge' is paused")
                && task.waiting_for.contains("taskplane types resume charge"),
            "{}",
            task.waiting_for
        );
    }
    set_policy(
        &server,
        SetTaskTypePolicyRequest {
            paused: Some(false),
            ..Default::default()
        },
    )
    .await;
    wait_all_completed(&server, &later).await;
    agent.stop().await.unwrap();
    server.stop().await;
}

/// The keys of the tasks that started in `window` from the first start,
/// once a start came after it.
async fn starts_within(observed: &Arc<Mutex<Observed>>, window: Duration) -> Vec<String> {
    wait_for(|| async {
        let seen = observed.lock().unwrap();
        match (seen.started_at.first(), seen.started_at.last()) {
            (Some(first), Some(last)) => *last - *first >= window,
            _ => false,
        }
    })
    .await;
    let seen = observed.lock().unwrap();
    let first = seen.started_at[0];
    seen.started_at
        .iter()
        .zip(&seen.started)
        .filter(|(at, _)| **at - first < window)
        .map(|(_, key)| key.clone())
        .collect()
}

async fn a_rate_limit_of_20_per_second_starts_100_in_5_seconds(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (_open, gate) = watch::channel(false);
    let agent = TestAgent::start(&server, "a", tracked("a", &observed, &gate)).await;
    set_policy(
        &server,
        SetTaskTypePolicyRequest {
            rate_limit: Some("20/second".into()),
            ..Default::default()
        },
    )
    .await;
    charges(&server, &["-"], 150).await;
    let started = starts_within(&observed, Duration::from_secs(5)).await.len();
    assert!((95..=105).contains(&started), "{started} starts in 5 s");
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn a_rate_limit_per_key_holds_for_each_key(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (_open, gate) = watch::channel(false);
    let agent = TestAgent::start(&server, "a", tracked("a", &observed, &gate)).await;
    set_policy(
        &server,
        SetTaskTypePolicyRequest {
            rate_limit: Some("10/second".into()),
            rate_limit_key: Some("payload.customer".into()),
            ..Default::default()
        },
    )
    .await;
    // x floods first; y's tasks come after all of x's.
    charges(&server, &["x", "y"], 60).await;
    let started = starts_within(&observed, Duration::from_secs(3)).await;
    // Each key: its full bucket (a second's worth, 10), then 10 a second.
    for customer in ["x", "y"] {
        let count = started.iter().filter(|key| *key == customer).count();
        assert!(
            (36..=44).contains(&count),
            "{customer} started {count} in 3 s"
        );
    }
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn limits_an_agent_declares_hold_until_it_declares_others(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (_open, gate) = watch::channel(false);
    let two_at_once = Some(FlowLimits::new().max_running(2));
    let registry = declaring("a", &observed, &gate, two_at_once.clone());
    let agent = TestAgent::start(&server, "a", registry).await;
    assert_eq!(listed_policy(&server).await.max_running, 2);
    // The agent has 8 slots; the declared limit holds it to 2.
    let ids = charges(&server, &["-"], 8).await;
    wait_all_completed(&server, &ids).await;
    assert_eq!(observed.lock().unwrap().most_total, 2);

    // An operator's change holds until the agent registers again, which
    // brings the code's limit back; a pause survives that registration.
    set_policy(
        &server,
        SetTaskTypePolicyRequest {
            max_running: Some(3),
            paused: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed_policy(&server).await.max_running, 3);
    agent.stop().await.unwrap();
    let registry = declaring("a", &observed, &gate, two_at_once);
    let agent = TestAgent::start(&server, "a", registry).await;
    let policy = listed_policy(&server).await;
    assert_eq!((policy.max_running, policy.paused), (2, true));
    // An agent that declares nothing leaves the stored limits alone.
    agent.stop().await.unwrap();
    let agent = TestAgent::start(&server, "a", declaring("a", &observed, &gate, None)).await;
    assert_eq!(listed_policy(&server).await.max_running, 2);
    agent.stop().await.unwrap();
    server.stop().await;
}

async fn limits_that_do_not_work_refuse_the_registration(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let register = AgentMessage {
        message: Some(AgentMessageKind::Register(Register {
            agent_name: "a".into(),
            max_concurrency: 4,
            domains: vec![DomainRegistration {
                domain: "billing".into(),
                task_types: vec![TaskTypeRegistration {
                    task_type: "charge".into(),
                    flow: Some(FlowLimits::new().max_running_per_key(1).to_proto()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    let (outbound, receiver) = tokio::sync::mpsc::channel(1);
    outbound.send(register).await.unwrap();
    let answer = async {
        AgentServiceClient::new(server.channel().await)
            .connect(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await?
            .into_inner()
            .message()
            .await
    };
    let refused = answer.await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("task type 'charge' declares flow limits that do not work")
            && refused.message().contains("needs a concurrency_key"),
        "{}",
        refused.message()
    );
    let listed = server
        .registry()
        .await
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    assert!(listed.is_empty(), "nothing was registered: {listed:?}");
    server.stop().await;
}

on_every_backend!(
    limits_an_agent_declares_hold_until_it_declares_others,
    limits_that_do_not_work_refuse_the_registration,
    a_rate_limit_of_20_per_second_starts_100_in_5_seconds,
    a_rate_limit_per_key_holds_for_each_key,
    a_key_limit_never_runs_two_of_one_key_and_others_start_beside_it,
    max_running_holds_across_two_agents,
    a_paused_type_holds_new_work_while_what_runs_finishes,
);
