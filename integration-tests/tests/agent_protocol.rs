//! The agent stream protocol spoken by hand, message by message: register
//! first, atomic registration, credit-based delivery, fencing (a stale
//! result never cancels the agent's newer attempt of the task), and leases
//! returned the moment a stream closes.

use std::time::Duration;

use integration_tests::{
    Backend, TestServer, enqueue, enqueue_request, fast_queue, wait_status, wait_terminal,
};
use serde_json::json;
use taskplane_proto::v1::agent_message::Message as Agent;
use taskplane_proto::v1::server_message::Message as Server;
use taskplane_proto::v1::{
    AgentMessage, Assignment, Completed, Credit, DomainRegistration, GetTaskRequest, Heartbeat,
    ListTaskTypesRequest, Register, ServerMessage, TaskResult, TaskStatus, TaskTypeRegistration,
    task_result,
};
use taskplane_server::QueueConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

fn register(agent_name: &str, domains: &[(&str, &[&str])], slots: u32) -> AgentMessage {
    AgentMessage {
        message: Some(Agent::Register(Register {
            max_prefetch: 0,
            feature_flags: Default::default(),
            agent_name: agent_name.into(),
            domains: domains
                .iter()
                .map(|(domain, types)| DomainRegistration {
                    schedules: Vec::new(),
                    domain: (*domain).into(),
                    task_types: types
                        .iter()
                        .map(|t| TaskTypeRegistration {
                            task_type: (*t).into(),
                            versions: vec!["v1".into()],
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
            max_concurrency: slots,
            labels: Default::default(),
        })),
    }
}

/// A hand-driven agent stream.
struct RawAgent {
    outbound: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ServerMessage>,
}

impl RawAgent {
    /// Opens a stream whose first message is `first`; returns the server's
    /// answer to opening it.
    async fn open(server: &TestServer, first: AgentMessage) -> Result<RawAgent, tonic::Status> {
        let (outbound, receiver) = mpsc::channel(64);
        outbound.send(first).await.unwrap();
        let inbound = server
            .agents()
            .await
            .connect(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        Ok(RawAgent { outbound, inbound })
    }

    async fn next(&mut self) -> Server {
        let message = tokio::time::timeout(integration_tests::PATIENCE, self.inbound.message())
            .await
            .expect("a message in time");
        message
            .expect("stream ok")
            .expect("stream open")
            .message
            .expect("message set")
    }

    async fn next_assignment(&mut self) -> Assignment {
        match self.next().await {
            Server::Assignment(assignment) => assignment,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    /// Whether another message arrives within `wait`.
    async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.inbound.message())
            .await
            .is_err()
    }

    async fn complete(&self, assignment: &Assignment) {
        self.send_result(&assignment.task_id, assignment.attempt)
            .await;
    }

    async fn send_result(&self, task_id: &str, attempt: u32) {
        let result = TaskResult {
            ran_for: None,
            task_id: task_id.into(),
            attempt,
            outcome: Some(task_result::Outcome::Completed(Completed { result: None })),
        };
        self.outbound
            .send(AgentMessage {
                message: Some(Agent::Result(result)),
            })
            .await
            .unwrap();
    }
}

async fn registered_types(server: &TestServer) -> Vec<String> {
    let listed = server
        .registry()
        .await
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner();
    listed.task_types.into_iter().map(|t| t.task_type).collect()
}

async fn the_first_message_must_be_register(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let heartbeat = AgentMessage {
        message: Some(Agent::Heartbeat(Heartbeat::default())),
    };
    let err = RawAgent::open(&server, heartbeat)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("must be `register`, not `heartbeat`"),
        "{}",
        err.message()
    );

    let empty = AgentMessage { message: None };
    let err = RawAgent::open(&server, empty).await.err().expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(registered_types(&server).await.is_empty());
}

async fn registration_is_atomic(backend: Backend) {
    let server = TestServer::start(&backend).await;

    // One bad name among good ones: nothing is written.
    let bad = register("a", &[("billing", &["invoice_generation", "Bad Type"])], 4);
    let err = RawAgent::open(&server, bad).await.err().expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("'Bad Type' is not a valid name"),
        "{}",
        err.message()
    );
    assert!(registered_types(&server).await.is_empty());

    // A type owned by another domain: ALREADY_EXISTS, and the other new
    // type of the same registration is not written either.
    let mut billing = RawAgent::open(
        &server,
        register("billing", &[("billing", &["invoice_generation"])], 4),
    )
    .await
    .unwrap();
    assert!(matches!(billing.next().await, Server::Registered(_)));
    let conflicting = register(
        "users",
        &[("user_management", &["welcome_email", "invoice_generation"])],
        4,
    );
    let err = RawAgent::open(&server, conflicting)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message()
            .contains("'invoice_generation' belongs to domain 'billing'"),
        "{}",
        err.message()
    );
    assert_eq!(registered_types(&server).await, ["invoice_generation"]);

    // The same type twice in one registration is refused too.
    let twice = register(
        "dup",
        &[("billing", &["refund"]), ("billing", &["refund"])],
        1,
    );
    assert_eq!(
        RawAgent::open(&server, twice).await.err().unwrap().code(),
        Code::InvalidArgument
    );
    assert_eq!(registered_types(&server).await, ["invoice_generation"]);
}

async fn delivery_never_exceeds_the_agents_credit(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut agent = RawAgent::open(&server, register("slow", &[("reports", &["render"])], 2))
        .await
        .unwrap();
    let Server::Registered(registered) = agent.next().await else {
        panic!("registered first")
    };
    assert!(!registered.session_id.is_empty() && registered.lease_duration.is_some());

    let mut tasks = server.tasks().await;
    for i in 0..5 {
        tasks
            .enqueue_task(enqueue_request("render", json!({"page": i})))
            .await
            .unwrap();
    }
    let first = agent.next_assignment().await;
    let second = agent.next_assignment().await;
    assert_ne!(first.task_id, second.task_id);
    assert!(
        agent.quiet_for(Duration::from_millis(300)).await,
        "a third assignment arrived with both slots busy"
    );

    // Each result frees one slot: exactly one more assignment follows.
    agent.complete(&first).await;
    let third = agent.next_assignment().await;
    assert!(
        agent.quiet_for(Duration::from_millis(300)).await,
        "more than one slot was freed"
    );

    // Credit 0 pauses delivery even when slots free up; credit 3 resumes it.
    agent
        .outbound
        .send(AgentMessage {
            message: Some(Agent::Credit(Credit { slots: 0 })),
        })
        .await
        .unwrap();
    agent.complete(&second).await;
    agent.complete(&third).await;
    assert!(
        agent.quiet_for(Duration::from_millis(300)).await,
        "delivered with zero credit"
    );
    agent
        .outbound
        .send(AgentMessage {
            message: Some(Agent::Credit(Credit { slots: 3 })),
        })
        .await
        .unwrap();
    let fourth = agent.next_assignment().await;
    let fifth = agent.next_assignment().await;
    let done = [
        first.task_id,
        second.task_id,
        third.task_id,
        fourth.task_id,
        fifth.task_id,
    ];
    let unique: std::collections::BTreeSet<_> = done.iter().collect();
    assert_eq!(unique.len(), 5, "each task is assigned once");
}

async fn stale_results_are_fenced_and_the_agent_is_told(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut agent = RawAgent::open(&server, register("fenced", &[("reports", &["render"])], 1))
        .await
        .unwrap();
    agent.next().await;
    let mut tasks = server.tasks().await;
    tasks
        .enqueue_task(enqueue_request("render", json!({})))
        .await
        .unwrap();
    let assignment = agent.next_assignment().await;

    // A result for an attempt that is not the current lease changes nothing.
    agent
        .send_result(&assignment.task_id, assignment.attempt + 1)
        .await;
    match agent.next().await {
        Server::Cancel(cancel) => {
            assert_eq!(cancel.task_id, assignment.task_id);
            assert!(
                cancel.reason.contains("no longer the current lease"),
                "{}",
                cancel.reason
            );
        }
        other => panic!("expected a cancel notice, got {other:?}"),
    }
    let task = tasks
        .get_task(GetTaskRequest {
            id: assignment.task_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        task.status(),
        TaskStatus::Running,
        "the stale result must not finish the task"
    );
}

/// An attempt timed out comes back to the same agent as a new attempt;
/// the old attempt's late result is stale, and the server must not answer
/// it with a cancel, which names only the task and would stop the new one.
async fn a_stale_result_leaves_the_agents_newer_attempt_alone(backend: Backend) {
    let queue = QueueConfig {
        timeout_grace: Duration::from_millis(50),
        ..fast_queue()
    };
    let server = TestServer::start_with(&backend, queue).await;
    let mut agent = RawAgent::open(&server, register("slow", &[("reports", &["render"])], 3))
        .await
        .unwrap();
    agent.next().await;
    let mut tasks = server.tasks().await;
    let mut request = enqueue_request("render", json!({}));
    request.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 100_000_000,
    });
    let id = enqueue(&mut tasks, request).await.id;
    let first = agent.next_assignment().await;
    assert_eq!(first.attempt, 1);
    // The agent sits on attempt 1 past its timeout: the server ends it,
    // tells the agent, and the retry comes back to this agent.
    let second = loop {
        match agent.next().await {
            Server::Assignment(assignment) => break assignment,
            Server::Cancel(cancel) => assert!(
                cancel.reason.contains("timed out") || cancel.reason.contains("timeout"),
                "{}",
                cancel.reason
            ),
            other => panic!("expected the retry's assignment, got {other:?}"),
        }
    };
    assert_eq!((second.task_id.as_str(), second.attempt), (id.as_str(), 2));
    // Another task, whose result is written after the stale one: once it
    // is seen COMPLETED, the stale result has been dealt with.
    let other = enqueue(&mut tasks, enqueue_request("render", json!({})))
        .await
        .id;
    let marker = agent.next_assignment().await;
    assert_eq!(marker.task_id, other);
    agent.send_result(&id, 1).await;
    agent.complete(&marker).await;
    assert_eq!(
        wait_terminal(&mut tasks, &other).await.status(),
        TaskStatus::Completed
    );
    // Whatever the stale result made the server send, while the agent
    // still runs attempt 2, is queued before the answer to this heartbeat.
    agent
        .outbound
        .send(AgentMessage {
            message: Some(Agent::Heartbeat(Heartbeat {
                running_task_ids: Vec::new(),
                handler_health: Vec::new(),
            })),
        })
        .await
        .unwrap();
    loop {
        match agent.next().await {
            Server::HeartbeatAck(_) => break,
            Server::Cancel(cancel) => panic!("attempt 2 was cancelled: {}", cancel.reason),
            _ => {}
        }
    }
    agent.complete(&second).await;
    let done = wait_terminal(&mut tasks, &id).await;
    assert_eq!((done.status(), done.attempts), (TaskStatus::Completed, 2));
}

async fn a_closed_stream_returns_its_leased_tasks_at_once(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut agent = RawAgent::open(&server, register("doomed", &[("reports", &["render"])], 4))
        .await
        .unwrap();
    agent.next().await;
    let mut tasks = server.tasks().await;
    let id = enqueue(&mut tasks, enqueue_request("render", json!({})))
        .await
        .id;
    let assignment = agent.next_assignment().await;
    assert_eq!(
        (assignment.task_id.as_str(), assignment.attempt),
        (id.as_str(), 1)
    );
    drop(agent);

    // Back to PENDING long before the 5 s lease could expire, attempt counted.
    let task = wait_status(&tasks, &id, TaskStatus::Pending).await;
    assert_eq!(task.attempts, 1);
    assert!(
        task.last_error.contains("stream closed"),
        "{}",
        task.last_error
    );

    // Another agent picks it up as attempt 2 and completes it.
    let mut rescuer = RawAgent::open(&server, register("rescuer", &[("reports", &["render"])], 1))
        .await
        .unwrap();
    rescuer.next().await;
    let retry = rescuer.next_assignment().await;
    assert_eq!((retry.task_id.as_str(), retry.attempt), (id.as_str(), 2));
    rescuer.complete(&retry).await;
    let task = integration_tests::wait_terminal(&mut tasks, &id).await;
    assert_eq!((task.status(), task.attempts), (TaskStatus::Completed, 2));
}

async fn assignments_queued_at_an_agent_that_leaves_go_back_at_once(backend: Backend) {
    let server = TestServer::start_with(
        &backend,
        taskplane_server::QueueConfig {
            // Only the stream's end can return the tasks within the test.
            lease_duration: Duration::from_secs(120),
            ..integration_tests::fast_queue()
        },
    )
    .await;
    let mut first = register("queueing", &[("reports", &["render"])], 1);
    if let Some(Agent::Register(register)) = &mut first.message {
        register.max_prefetch = 8;
    }
    let mut agent = RawAgent::open(&server, first).await.unwrap();
    agent.next().await;
    let mut tasks = server.tasks().await;
    // One fast result opens the window.
    enqueue(&mut tasks, enqueue_request("render", json!({}))).await;
    let warm_up = agent.next_assignment().await;
    agent
        .outbound
        .send(AgentMessage {
            message: Some(Agent::Result(TaskResult {
                task_id: warm_up.task_id.clone(),
                attempt: warm_up.attempt,
                outcome: Some(task_result::Outcome::Completed(Completed { result: None })),
                ran_for: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_000,
                }),
            })),
        })
        .await
        .unwrap();
    wait_status(&tasks, &warm_up.task_id, TaskStatus::Completed).await;

    let batch = taskplane_proto::v1::EnqueueTasksRequest {
        tasks: (0..4)
            .map(|_| enqueue_request("render", json!({})))
            .collect(),
    };
    tasks.enqueue_tasks(batch).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(agent.next_assignment().await.task_id);
    }
    // One slot: one runs, three wait in the agent's queue. It leaves.
    drop(agent);
    for id in &held {
        let task = wait_status(&tasks, id, TaskStatus::Pending).await;
        assert!(task.last_error.contains("stream closed"), "{task:?}");
    }
}

integration_tests::on_every_backend!(
    assignments_queued_at_an_agent_that_leaves_go_back_at_once,
    the_first_message_must_be_register,
    registration_is_atomic,
    delivery_never_exceeds_the_agents_credit,
    stale_results_are_fenced_and_the_agent_is_told,
    a_stale_result_leaves_the_agents_newer_attempt_alone,
    a_closed_stream_returns_its_leased_tasks_at_once,
);

/// A handler that does nothing: an agent needs one to start.
struct Idle;

#[async_trait::async_trait]
impl taskplane_agent::TaskHandler for Idle {
    async fn handle(
        &self,
        _: taskplane_agent::TaskContext,
    ) -> Result<taskplane_agent::TaskResult, taskplane_agent::TaskError> {
        Ok(taskplane_agent::TaskResult::new(json!({})))
    }
}

#[tokio::test]
async fn an_agent_that_reaches_no_server_gives_up_when_told_to() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = nobody.local_addr().unwrap();
    drop(nobody);
    let mut registry = taskplane_agent::TaskRegistry::new();
    registry.register_handler("idle", Box::new(Idle));
    let agent = taskplane_agent::Agent::builder()
        .registry(registry)
        .server(format!("http://{address}"))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .give_up_after(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        integration_tests::PATIENCE,
        agent.run(std::future::pending()),
    )
    .await
    .expect("the agent gives up in time");
    assert!(
        matches!(&outcome, Err(taskplane_agent::AgentError::Unreachable { last, .. }) if last.contains(&address.to_string())),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}
