//! Hostile input against a real server: random agent-message sequences
//! (out of order, malformed, results for tasks never leased), raw bytes that
//! are not protobuf, and payloads too large or too deep. The server must
//! never panic, never change a task it did not lease, and keep serving.

use std::sync::atomic::{AtomicUsize, Ordering};

use integration_tests::raw::{RawCodec, raw_stream, raw_unary};
use integration_tests::{Backend, PATIENCE, TestAgent, TestServer, enqueue_request, fast_queue};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::json;
use taskplane_agent::{
    DomainRegistry, TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult,
};
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

/// Counts panics anywhere in this process (the server runs in it).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

fn name() -> impl Strategy<Value = String> {
    // Valid and invalid names alike: empty, upper case, odd characters.
    prop_oneof!["[a-z]{1,6}", ".{0,6}"]
}

fn message(task_ids: Vec<String>) -> impl Strategy<Value = AgentMessage> {
    let id = prop_oneof![prop::sample::select(task_ids), ".{0,40}"];
    let kind = prop_oneof![
        (
            name(),
            prop::collection::vec((name(), prop::collection::vec(name(), 0..3)), 0..3),
            any::<u32>()
        )
            .prop_map(|(agent_name, domains, max_concurrency)| {
                AgentMessageKind::Register(Register {
                    max_prefetch: 0,
                    feature_flags: Default::default(),
                    agent_name,
                    domains: domains
                        .into_iter()
                        .map(|(domain, types)| DomainRegistration {
                            schedules: Vec::new(),
                            domain,
                            task_types: types
                                .into_iter()
                                .map(|task_type| TaskTypeRegistration {
                                    task_type,
                                    ..Default::default()
                                })
                                .collect(),
                        })
                        .collect(),
                    max_concurrency,
                    labels: Default::default(),
                })
            }),
        prop::collection::vec(id.clone(), 0..3).prop_map(|running_task_ids| {
            AgentMessageKind::Heartbeat(Heartbeat {
                running_task_ids,
                handler_health: vec![],
            })
        }),
        (id, any::<u32>(), any::<Option<bool>>(), ".{0,20}").prop_map(
            |(task_id, attempt, outcome, text)| {
                AgentMessageKind::Result(taskplane_proto::v1::TaskResult {
                    ran_for: None,
                    task_id,
                    attempt,
                    outcome: outcome.map(|completed| {
                        if completed {
                            task_result::Outcome::Completed(Completed {
                                result: Some(json_to_struct(
                                    json!({ "forged": text }).as_object().unwrap(),
                                )),
                            })
                        } else {
                            task_result::Outcome::Failed(Failed {
                                error: text,
                                retryable: false,
                                retry_after: None,
                            })
                        }
                    }),
                })
            }
        ),
        any::<u32>().prop_map(|slots| AgentMessageKind::Credit(Credit { slots })),
        Just(AgentMessageKind::Drain(Drain {})),
    ];
    prop::option::weighted(0.95, kind).prop_map(|message| AgentMessage { message })
}

/// A sequence, half of the time after a valid registration.
fn session(task_ids: Vec<String>) -> impl Strategy<Value = Vec<AgentMessage>> {
    (
        any::<bool>(),
        prop::collection::vec(message(task_ids), 0..10),
    )
        .prop_map(|(registered, mut messages)| {
            if registered {
                let register = AgentMessage {
                    message: Some(AgentMessageKind::Register(Register {
                        max_prefetch: 0,
                        feature_flags: Default::default(),
                        agent_name: "fuzzer".into(),
                        domains: vec![DomainRegistration {
                            schedules: Vec::new(),
                            domain: "fuzz".into(),
                            task_types: vec![TaskTypeRegistration {
                                task_type: "fuzz_target".into(),
                                ..Default::default()
                            }],
                        }],
                        max_concurrency: 2,
                        labels: Default::default(),
                    })),
                };
                messages.insert(0, register);
            }
            messages
        })
}

struct Finish;

#[async_trait::async_trait]
impl TaskHandler for Finish {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(json!({ "seen": context.payload })))
    }
}

struct Vault;

impl DomainRegistry for Vault {
    fn register_handlers(&self, registry: &mut TaskRegistry) -> Vec<String> {
        registry.register_handler("guarded", Box::new(Finish));
        vec!["guarded".into()]
    }

    fn domain_name(&self) -> &'static str {
        "vault"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_agent_streams_never_panic_the_server_or_touch_tasks_they_do_not_hold() {
    count_panics();
    let server = TestServer::start(&Backend::Sqlite).await;
    let mut tasks = server.tasks().await;
    server.register_type("guarded", "vault").await;
    let guarded = integration_tests::enqueue(
        &mut tasks,
        enqueue_request("guarded", json!({"amount": 42})),
    )
    .await;
    let ids = vec![guarded.id.clone(), uuid_like(&guarded.id)];

    // A fixed seed: the same sequences on every run, so a failure repeats.
    let mut runner = TestRunner::deterministic();
    let strategy = session(ids);
    let mut refused = 0;
    for case in 0..64 {
        let messages = strategy.new_tree(&mut runner).unwrap().current();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        for message in messages.iter().cloned() {
            sender.send(message).await.unwrap();
        }
        drop(sender);
        let outcome = tokio::time::timeout(PATIENCE, async {
            let mut stream = server
                .agents()
                .await
                .connect(ReceiverStream::new(receiver))
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        })
        .await
        .unwrap_or_else(|_| panic!("case {case} hung: {messages:?}"));
        if let Err(status) = outcome {
            refused += 1;
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists
                ),
                "case {case}: unexpected {status:?} for {messages:?}"
            );
        }
    }
    assert!(refused > 0, "some sequences are malformed and refused");

    // Raw bytes that are not protobuf, on a unary and a streaming method.
    for bytes in [
        vec![0xff; 7],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0x12; 64],
    ] {
        let status = raw_unary(
            server.channel().await,
            "/taskplane.v1.TaskService/EnqueueTask",
            bytes.clone(),
        )
        .await
        .expect_err("not a message");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("EnqueueTaskRequest"),
            "{status:?}"
        );
        let status = raw_stream(
            server.channel().await,
            "/taskplane.v1.AgentService/Connect",
            bytes,
        )
        .await
        .expect_err("not a message");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("AgentMessage"), "{status:?}");
    }

    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
    let untouched = tasks
        .get_task(GetTaskRequest {
            id: guarded.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(untouched.status(), TaskStatus::Pending);
    assert_eq!(untouched.attempts, 0);
    assert_eq!(untouched.payload, guarded.payload);

    // And it still serves: a real agent finishes the guarded task.
    let mut registry = TaskRegistry::new();
    registry.register_domain("vault", Box::new(Vault));
    let agent = TestAgent::start(&server, "vault-agent", registry).await;
    let done = integration_tests::wait_terminal(&mut tasks, &guarded.id).await;
    assert_eq!(done.status(), TaskStatus::Completed);
    agent.stop().await.unwrap();
    server.stop().await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
}

/// Another well-formed id: the guarded task's with its last digit changed.
fn uuid_like(id: &str) -> String {
    let mut id = id.to_owned();
    let last = if id.ends_with('0') { "1" } else { "0" };
    id.replace_range(id.len() - 1.., last);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_deep_requests_are_refused_and_store_nothing() {
    let queue = taskplane_server::QueueConfig {
        max_payload_bytes: 16 * 1024,
        max_message_bytes: 64 * 1024,
        max_batch_size: 3,
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    server.register_type("sized", "limits").await;
    let mut tasks = server.tasks().await;

    let over_payload = tasks
        .enqueue_task(enqueue_request(
            "sized",
            json!({"blob": "x".repeat(20 * 1024)}),
        ))
        .await
        .unwrap_err();
    assert_eq!(over_payload.code(), Code::InvalidArgument);
    assert!(over_payload.message().contains("limit"), "{over_payload:?}");

    let over_message = tasks
        .enqueue_task(enqueue_request(
            "sized",
            json!({"blob": "x".repeat(100 * 1024)}),
        ))
        .await
        .unwrap_err();
    assert_eq!(over_message.code(), Code::OutOfRange, "{over_message:?}");
    assert!(over_message.message().contains("limit"));

    let mut deep = json!({"leaf": 1});
    for _ in 0..200 {
        deep = json!({ "child": deep });
    }
    let too_deep = tasks
        .enqueue_task(enqueue_request("sized", deep))
        .await
        .unwrap_err();
    assert_eq!(too_deep.code(), Code::InvalidArgument, "{too_deep:?}");

    let mut crowded = enqueue_request("sized", json!({}));
    crowded.metadata = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let crowded = tasks.enqueue_task(crowded).await.unwrap_err();
    assert_eq!(crowded.code(), Code::InvalidArgument);
    assert!(crowded.message().contains("the limit is 64"), "{crowded:?}");

    let big_batch = tasks
        .enqueue_tasks(EnqueueTasksRequest {
            tasks: (0..4)
                .map(|_| enqueue_request("sized", json!({})))
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(big_batch.code(), Code::InvalidArgument);
    assert!(
        big_batch.message().contains("the limit is 3"),
        "{big_batch:?}"
    );

    let stored = tasks
        .list_tasks(ListTasksRequest {
            task_type: "sized".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(stored.is_empty(), "nothing was stored: {stored:?}");
    integration_tests::enqueue(&mut tasks, enqueue_request("sized", json!({"ok": true}))).await;
    server.stop().await;
}

struct Huge;

#[async_trait::async_trait]
impl TaskHandler for Huge {
    async fn handle(&self, _: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(json!({ "blob": "y".repeat(8 * 1024) })))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_fails_its_task_for_good_with_the_reason() {
    let queue = taskplane_server::QueueConfig {
        max_result_bytes: 1024,
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("huge_result", Box::new(Huge));
    let agent = TestAgent::start(&server, "huge", registry).await;
    let mut tasks = server.tasks().await;
    let task =
        integration_tests::enqueue(&mut tasks, enqueue_request("huge_result", json!({}))).await;
    let done = integration_tests::wait_terminal(&mut tasks, &task.id).await;
    assert_eq!(done.status(), TaskStatus::Dead);
    assert_eq!(
        done.attempts, 1,
        "not retried: the same result would fail again"
    );
    assert!(
        done.last_error.contains("limit is 1024"),
        "{}",
        done.last_error
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_message_limit_fails_its_attempt_and_keeps_the_stream() {
    let queue = taskplane_server::QueueConfig {
        max_message_bytes: 6 * 1024,
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("huge_result", Box::new(Huge));
    registry.register_handler("plain", Box::new(Finish));
    let agent = TestAgent::start(&server, "huge", registry).await;
    let mut tasks = server.tasks().await;
    let huge =
        integration_tests::enqueue(&mut tasks, enqueue_request("huge_result", json!({}))).await;
    let done = integration_tests::wait_terminal(&mut tasks, &huge.id).await;
    assert_eq!(done.status(), TaskStatus::Dead);
    let attempts = integration_tests::attempts_of(&mut tasks, &huge.id).await;
    assert_eq!(attempts.len(), 1, "not retried: {attempts:?}");
    assert_eq!(
        attempts[0].outcome, "failed",
        "the agent reported a failure, its stream did not break: {attempts:?}"
    );
    assert!(
        attempts[0].error.contains("message limit of 6144 bytes"),
        "{attempts:?}"
    );
    // The same stream carries the next task.
    let plain = integration_tests::enqueue(&mut tasks, enqueue_request("plain", json!({}))).await;
    let plain = integration_tests::wait_terminal(&mut tasks, &plain.id).await;
    assert_eq!(plain.status(), TaskStatus::Completed);
    assert_eq!(plain.attempts, 1);
    agent.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_of_a_task_is_bounded_so_that_it_reaches_its_agent() {
    let queue = taskplane_server::QueueConfig {
        max_message_bytes: 64 * 1024,
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    server.register_type("bounded", "limits").await;
    let mut tasks = server.tasks().await;
    let refused = |request: EnqueueTaskRequest| {
        let mut tasks = tasks.clone();
        async move { tasks.enqueue_task(request).await.unwrap_err() }
    };

    let mut bloated = enqueue_request("bounded", json!({}));
    bloated.metadata = [("note".to_owned(), "m".repeat(17 * 1024))].into();
    let status = refused(bloated).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("metadata is"), "{status:?}");

    let mut versioned = enqueue_request("bounded", json!({}));
    versioned.handler_version = "v".repeat(65);
    let status = refused(versioned).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("handler_version"), "{status:?}");

    let mut keyed = enqueue_request("bounded", json!({}));
    keyed.idempotency_key = "é".repeat(129);
    let status = refused(keyed).await;
    assert!(status.message().contains("258 bytes"), "{status:?}");

    // A request that fits the message limit, whose assignment would not.
    let status = refused(enqueue_request(
        "bounded",
        json!({ "blob": "x".repeat(64 * 1024 - 600) }),
    ))
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("delivered to an agent"),
        "{status:?}"
    );

    let mut infinite = enqueue_request("bounded", json!({}));
    infinite.payload.as_mut().unwrap().fields.insert(
        "ratio".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
        },
    );
    let status = refused(infinite).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("payload.ratio"), "{status:?}");

    let listed = tasks
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(listed.is_empty(), "a refused task was stored: {listed:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_beyond_the_size_limit_are_refused_whole() {
    let queue = taskplane_server::QueueConfig {
        max_registered_types: 2,
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(AgentMessage {
            message: Some(AgentMessageKind::Register(Register {
                max_prefetch: 0,
                feature_flags: Default::default(),
                agent_name: "big".into(),
                domains: vec![DomainRegistration {
                    schedules: Vec::new(),
                    domain: "big".into(),
                    task_types: ["one", "two", "three"]
                        .iter()
                        .map(|t| TaskTypeRegistration {
                            task_type: t.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                }],
                max_concurrency: 1,
                labels: Default::default(),
            })),
        })
        .await
        .unwrap();
    let status = server
        .agents()
        .await
        .connect(ReceiverStream::new(receiver))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("the limit is 2"), "{status:?}");
    let types = server
        .registry()
        .await
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    assert!(types.is_empty());
    server.stop().await;
}

/// A stream to `AgentService.Connect`, registered as an agent of
/// `task_type` with `slots` slots that answers nothing: the sender of raw
/// messages and the stream of answers.
async fn raw_agent(
    server: &TestServer,
    task_type: &str,
    slots: u32,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tonic::Streaming<Vec<u8>>,
) {
    use prost::Message as _;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let register = AgentMessage {
        message: Some(AgentMessageKind::Register(Register {
            agent_name: "raw".into(),
            domains: vec![DomainRegistration {
                schedules: Vec::new(),
                domain: "hostile".into(),
                task_types: vec![TaskTypeRegistration {
                    task_type: task_type.into(),
                    ..Default::default()
                }],
            }],
            max_concurrency: slots,
            ..Default::default()
        })),
    };
    sender.send(register.encode_to_vec()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let stream = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(receiver)),
            PathAndQuery::from_static("/taskplane.v1.AgentService/Connect"),
            RawCodec,
        )
        .await
        .unwrap()
        .into_inner();
    (sender, stream)
}

/// The next assignment or cancel on a raw agent's stream (skipping the
/// rest), or `None` when nothing comes within `wait`.
async fn next_order(
    stream: &mut tonic::Streaming<Vec<u8>>,
    wait: std::time::Duration,
) -> Option<server_message::Message> {
    use prost::Message as _;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let bytes = tokio::time::timeout_at(deadline, stream.message())
            .await
            .ok()?
            .unwrap()
            .expect("the stream is open");
        let message = ServerMessage::decode(bytes.as_slice()).unwrap().message;
        if let Some(
            order @ (server_message::Message::Assignment(_) | server_message::Message::Cancel(_)),
        ) = message
        {
            return Some(order);
        }
    }
}

/// A raw agent of `task_type` with one slot, and a task of that type
/// assigned to it: the sender, the stream and the task's id.
async fn raw_agent_with_a_task(
    server: &TestServer,
    task_type: &str,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tonic::Streaming<Vec<u8>>,
    String,
) {
    let (sender, mut stream) = raw_agent(server, task_type, 1).await;
    let mut tasks = server.tasks().await;
    let id = tasks
        .enqueue_task(enqueue_request(task_type, json!({})))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .id;
    match next_order(&mut stream, PATIENCE).await {
        Some(server_message::Message::Assignment(assignment)) => assert_eq!(assignment.task_id, id),
        other => panic!("expected the assignment, got {other:?}"),
    }
    (sender, stream, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_heartbeats_but_never_answers_loses_the_attempt_at_its_timeout() {
    use prost::Message as _;
    let queue = taskplane_server::QueueConfig {
        timeout_grace: std::time::Duration::from_millis(200),
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    let (sender, mut stream) = raw_agent(&server, "stuck", 1).await;
    // It heartbeats, so it never looks silent.
    let heartbeat = AgentMessage {
        message: Some(AgentMessageKind::Heartbeat(Heartbeat::default())),
    }
    .encode_to_vec();
    let beating = sender.clone();
    tokio::spawn(async move {
        while beating.send(heartbeat.clone()).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let mut tasks = server.tasks().await;
    let task = tasks
        .enqueue_task(EnqueueTaskRequest {
            timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            max_attempts: 1,
            ..enqueue_request("stuck", json!({}))
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    match next_order(&mut stream, PATIENCE).await {
        Some(server_message::Message::Assignment(assignment)) => {
            assert_eq!(assignment.task_id, task.id)
        }
        other => panic!("expected the assignment, got {other:?}"),
    }
    match next_order(&mut stream, PATIENCE).await {
        Some(server_message::Message::Cancel(cancel)) => {
            assert_eq!(cancel.task_id, task.id);
            assert!(cancel.reason.contains("past its timeout"), "{cancel:?}");
        }
        other => panic!("expected a cancel, got {other:?}"),
    }
    let done = integration_tests::wait_terminal(&mut tasks, &task.id).await;
    assert_eq!(done.status(), TaskStatus::Dead, "{done:?}");
    let attempts = integration_tests::attempts_of(&mut tasks, &task.id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].outcome, "failed", "{attempts:?}");
    assert!(
        attempts[0].error.contains("past its timeout"),
        "{attempts:?}"
    );
    drop(sender);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_never_holds_more_unanswered_assignments_than_its_slots() {
    // A 1 ms poll makes claims race hand-offs at enqueue for the same slots.
    let queue = taskplane_server::QueueConfig {
        poll_interval: std::time::Duration::from_millis(1),
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    let tasks = server.tasks().await;
    for round in 0..20 {
        let task_type = format!("slotted_{round}");
        let (_sender, mut stream) = raw_agent(&server, &task_type, 2).await;
        let enqueues = (0..6).map(|_| {
            let mut tasks = tasks.clone();
            let request = enqueue_request(&task_type, json!({}));
            async move { tasks.enqueue_task(request).await.unwrap() }
        });
        futures::future::join_all(enqueues).await;
        let mut assigned = 0;
        while let Some(order) = next_order(&mut stream, std::time::Duration::from_millis(200)).await
        {
            assert!(matches!(order, server_message::Message::Assignment(_)));
            assigned += 1;
        }
        assert_eq!(
            assigned, 2,
            "round {round}: {assigned} assignments for 2 slots"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_be_decoded_ends_with_its_reason_recorded_on_the_attempt() {
    let queue = taskplane_server::QueueConfig {
        max_message_bytes: 64 * 1024,
        ..fast_queue()
    };
    let server = TestServer::start_with(&Backend::Sqlite, queue).await;
    let mut tasks = server.tasks().await;
    let not_protobuf = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
    let too_large = vec![0x12; 100 * 1024];
    for (task_type, bytes, code, reason) in [
        (
            "garbled",
            not_protobuf,
            Code::InvalidArgument,
            "not a valid AgentMessage",
        ),
        ("bloated", too_large, Code::ResourceExhausted, "too large"),
    ] {
        let (sender, mut stream, id) = raw_agent_with_a_task(&server, task_type).await;
        sender.send(bytes).await.unwrap();
        let ended = loop {
            match tokio::time::timeout(PATIENCE, stream.message())
                .await
                .expect("the stream ends in time")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{task_type}: the stream ended OK without a reason"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), code, "{task_type}: {ended:?}");
        assert!(ended.message().contains(reason), "{task_type}: {ended:?}");
        let attempts = integration_tests::attempts_of(&mut tasks, &id).await;
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0].outcome, "lost", "{attempts:?}");
        assert!(
            attempts[0].error.contains(reason),
            "{task_type}: the attempt does not say why: {attempts:?}"
        );
    }
    server.stop().await;
}
