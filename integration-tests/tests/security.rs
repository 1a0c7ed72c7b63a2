//! Authentication, roles, domain scopes, per-token quotas and limits, over
//! real gRPC against a real server whose tokens live in a real tokens file
//! or database.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{
    Backend, PATIENCE, TestServer, enqueue, fast_queue, wait_for, wait_status,
};
use serde_json::json;
use taskplane_agent::ConnectOptions;
use taskplane_common::connect::AuthChannel;
use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::agent_service_client::AgentServiceClient;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;
use taskplane_proto::v1::schedule_service_client::ScheduleServiceClient;
use taskplane_proto::v1::server_message::Message as ServerMessageKind;
use taskplane_proto::v1::task_service_client::TaskServiceClient;
use taskplane_proto::v1::*;
use taskplane_server::QueueConfig;
use taskplane_server::auth::Role;
use taskplane_server::auth::tokens::{IssuedToken, TokensFile, issue};
use taskplane_server::config::{AuthConfig, SecurityConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

/// Tokens written to a tokens file, by name.
struct Tokens {
    path: PathBuf,
    issued: Vec<IssuedToken>,
    _dir: tempfile::TempDir,
}

impl Tokens {
    fn write(specs: &[(&str, Role, &[&str])]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let mut file = TokensFile::default();
        let issued: Vec<IssuedToken> = specs
            .iter()
            .map(|(name, role, domains)| {
                let issued =
                    issue(name, *role, domains.iter().map(|d| d.to_string()).collect()).unwrap();
                file.add(&issued);
                issued
            })
            .collect();
        file.save(&path).unwrap();
        Tokens {
            path,
            issued,
            _dir: dir,
        }
    }

    fn token(&self, name: &str) -> String {
        self.issued
            .iter()
            .find(|t| t.record.name == name)
            .unwrap()
            .token
            .clone()
    }

    fn security(&self) -> SecurityConfig {
        SecurityConfig {
            auth: Some(AuthConfig {
                tokens_file: Some(self.path.clone()),
                cache_ttl: Duration::from_millis(100),
            }),
            ..SecurityConfig::default()
        }
    }
}

async fn channel(server: &TestServer, token: Option<String>) -> AuthChannel {
    server
        .connect_as(&ConnectOptions {
            token,
            ..ConnectOptions::default()
        })
        .await
        .expect("connects")
}

fn payload(value: serde_json::Value) -> Option<prost_types::Struct> {
    Some(json_to_struct(value.as_object().unwrap()))
}

fn task_type_request(task_type: &str, domain: &str) -> RegisterTaskTypeRequest {
    RegisterTaskTypeRequest {
        task_type: task_type.into(),
        domain: domain.into(),
        ..Default::default()
    }
}

fn register_message(agent: &str, domains: &[(&str, &[&str])]) -> AgentMessage {
    AgentMessage {
        message: Some(AgentMessageKind::Register(Register {
            max_prefetch: 0,
            feature_flags: Default::default(),
            agent_name: agent.into(),
            domains: domains
                .iter()
                .map(|(domain, types)| DomainRegistration {
                    schedules: Vec::new(),
                    domain: domain.to_string(),
                    task_types: types
                        .iter()
                        .map(|t| TaskTypeRegistration {
                            task_type: t.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
            max_concurrency: 4,
            labels: Default::default(),
        })),
    }
}

/// An agent stream spoken by hand.
struct Stream {
    outbound: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ServerMessage>,
}

/// Opens `Connect` and sends `register`; returns the stream once the
/// server answers `registered`, or the status it refused with.
async fn open_stream(channel: AuthChannel, register: AgentMessage) -> Result<Stream, Status> {
    let (outbound, receiver) = mpsc::channel(16);
    outbound.send(register).await.unwrap();
    let mut inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    match inbound.message().await? {
        Some(ServerMessage {
            message: Some(ServerMessageKind::Registered(_)),
        }) => Ok(Stream { outbound, inbound }),
        other => panic!("expected `registered`, got {other:?}"),
    }
}

impl Stream {
    /// The next assignment (panics after PATIENCE).
    async fn assignment(&mut self) -> Assignment {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(ServerMessageKind::Assignment(assignment)) = self
                    .inbound
                    .message()
                    .await
                    .unwrap()
                    .expect("stream open")
                    .message
                {
                    return assignment;
                }
            }
        })
        .await
        .expect("an assignment in time")
    }

    async fn complete(&self, task_id: &str, attempt: u32, result: serde_json::Value) {
        self.outbound
            .send(AgentMessage {
                message: Some(AgentMessageKind::Result(TaskResult {
                    ran_for: None,
                    task_id: task_id.into(),
                    attempt,
                    outcome: Some(task_result::Outcome::Completed(Completed {
                        result: payload(result),
                    })),
                })),
            })
            .await
            .unwrap();
    }
}

/// The methods and, independently of the server's own table, who may call them.
const MATRIX: &[(&str, [bool; 3])] = &[
    // method                  client agent  admin
    ("EnqueueTask", [true, true, true]),
    ("EnqueueTasks", [true, true, true]),
    ("GetTask", [true, true, true]),
    ("ListTasks", [true, true, true]),
    ("WatchTask", [true, true, true]),
    ("ListTaskAttempts", [true, true, true]),
    ("GetQueueStats", [true, true, true]),
    ("CancelTask", [true, false, true]),
    ("RetryTask", [true, false, true]),
    ("RegisterTaskType", [false, false, true]),
    ("ListTaskTypes", [true, true, true]),
    ("GetTaskType", [true, true, true]),
    ("ValidateTaskType", [true, true, true]),
    ("ListDomains", [true, true, true]),
    ("ListAgents", [true, true, true]),
    ("DrainAgent", [false, false, true]),
    ("Connect", [false, true, true]),
    ("ListSchedules", [true, true, true]),
    ("GetSchedule", [true, true, true]),
    ("CreateSchedule", [false, false, true]),
    ("PauseSchedule", [false, false, true]),
    ("TriggerSchedule", [false, false, true]),
];

/// Calls one method with a sensible request; what matters is whether the
/// call got past authorization.
async fn call(channel: AuthChannel, method: &str, task_id: &str) -> Result<(), Status> {
    let mut tasks = TaskServiceClient::new(channel.clone());
    let mut registry = RegistryServiceClient::new(channel.clone());
    let mut schedules = ScheduleServiceClient::new(channel.clone());
    let id = task_id.to_owned();
    let enqueue = EnqueueTaskRequest {
        task_type: "probe".into(),
        payload: payload(json!({"n": 1})),
        ..Default::default()
    };
    match method {
        "EnqueueTask" => tasks.enqueue_task(enqueue).await.map(drop),
        "EnqueueTasks" => tasks
            .enqueue_tasks(EnqueueTasksRequest {
                tasks: vec![enqueue],
            })
            .await
            .map(drop),
        "GetTask" => tasks.get_task(GetTaskRequest { id }).await.map(drop),
        "ListTasks" => tasks
            .list_tasks(ListTasksRequest::default())
            .await
            .map(drop),
        "WatchTask" => {
            let mut stream = tasks
                .watch_task(WatchTaskRequest { id })
                .await?
                .into_inner();
            stream.message().await.map(drop)
        }
        "ListTaskAttempts" => tasks
            .list_task_attempts(ListTaskAttemptsRequest { id })
            .await
            .map(drop),
        "GetQueueStats" => tasks
            .get_queue_stats(GetQueueStatsRequest::default())
            .await
            .map(drop),
        "CancelTask" => tasks
            .cancel_task(CancelTaskRequest {
                id,
                reason: String::new(),
            })
            .await
            .map(drop),
        "RetryTask" => tasks.retry_task(RetryTaskRequest { id }).await.map(drop),
        "ListSchedules" => schedules
            .list_schedules(ListSchedulesRequest::default())
            .await
            .map(drop),
        "GetSchedule" => schedules
            .get_schedule(GetScheduleRequest {
                name: "probe-schedule".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "CreateSchedule" => schedules
            .create_schedule(CreateScheduleRequest {
                schedule: Some(ScheduleSpec {
                    name: "probe-schedule".into(),
                    task_type: "probe".into(),
                    cron: "@daily".into(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        "PauseSchedule" => schedules
            .pause_schedule(PauseScheduleRequest {
                name: "probe-schedule".into(),
            })
            .await
            .map(drop),
        "TriggerSchedule" => schedules
            .trigger_schedule(TriggerScheduleRequest {
                name: "probe-schedule".into(),
            })
            .await
            .map(drop),
        "RegisterTaskType" => registry
            .register_task_type(task_type_request("probe", "probes"))
            .await
            .map(drop),
        "ListTaskTypes" => registry
            .list_task_types(ListTaskTypesRequest::default())
            .await
            .map(drop),
        "GetTaskType" => registry
            .get_task_type(GetTaskTypeRequest {
                task_type: "probe".into(),
            })
            .await
            .map(drop),
        "ValidateTaskType" => registry
            .validate_task_type(ValidateTaskTypeRequest {
                task_type: "probe".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ListDomains" => registry
            .list_domains(ListDomainsRequest::default())
            .await
            .map(drop),
        "ListAgents" => registry
            .list_agents(ListAgentsRequest::default())
            .await
            .map(drop),
        "DrainAgent" => registry
            .drain_agent(DrainAgentRequest {
                agent: "no-such-agent".into(),
            })
            .await
            .map(drop),
        "Connect" => open_stream(
            channel,
            register_message("probe-agent", &[("probes", &["probe_run"])]),
        )
        .await
        .map(drop),
        other => panic!("no call for {other}"),
    }
}

fn is_denial(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::PermissionDenied | Code::Unauthenticated
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_allowed_exactly_its_methods_and_others_are_denied() {
    let tokens = Tokens::write(&[
        ("client", Role::Client, &[]),
        ("agent", Role::Agent, &[]),
        ("admin", Role::Admin, &[]),
    ]);
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), tokens.security()).await;
    let admin = channel(&server, Some(tokens.token("admin"))).await;
    RegistryServiceClient::new(admin.clone())
        .register_task_type(task_type_request("probe", "probes"))
        .await
        .unwrap();
    let task = enqueue(
        &mut TaskServiceClient::new(admin.clone()),
        EnqueueTaskRequest {
            task_type: "probe".into(),
            payload: payload(json!({"secret": "payload-text"})),
            ..Default::default()
        },
    )
    .await;

    for (role_index, role) in ["client", "agent", "admin"].iter().enumerate() {
        let channel = channel(&server, Some(tokens.token(role))).await;
        for (method, allowed) in MATRIX {
            let result = call(channel.clone(), method, &task.id).await;
            match (allowed[role_index], result) {
                (true, Err(status)) if is_denial(&status) => {
                    panic!("{role} was denied {method}: {status:?}")
                }
                (false, Ok(())) => panic!("{role} was allowed {method}"),
                (false, Err(status)) => {
                    assert_eq!(
                        status.code(),
                        Code::PermissionDenied,
                        "{role} {method}: {status:?}"
                    );
                    assert!(
                        status.message().contains(role)
                            && !status.message().contains("payload-text"),
                        "the denial names the role and leaks nothing: {}",
                        status.message()
                    );
                }
                (true, _) => {}
            }
        }
    }

    // Without a token, or with a made-up one, nothing but health and reflection.
    let anonymous = channel(&server, None).await;
    let forged = channel(&server, Some("tp_000000000000_forged".into())).await;
    for (method, _) in MATRIX {
        for (who, channel) in [("anonymous", &anonymous), ("forged", &forged)] {
            let status = call(channel.clone(), method, &task.id)
                .await
                .expect_err("refused");
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{who} {method}: {status:?}"
            );
            assert!(!status.message().contains("payload-text"));
        }
    }
    let health = tonic_health::pb::health_client::HealthClient::new(anonymous)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health checks need no token");
    assert_eq!(health.into_inner().status, 1, "SERVING");

    // The denied calls changed nothing: the one task is as the admin left it
    // after its own cancel and retry, and only the admin's schedule exists.
    let listed = TaskServiceClient::new(admin)
        .list_tasks(ListTasksRequest {
            task_type: "probe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let enqueued_by_allowed_roles = 2 /* client */ + 2 /* agent */ + 2 /* admin */;
    let triggered_by_the_admin = 1;
    assert_eq!(
        listed.len(),
        1 + enqueued_by_allowed_roles + triggered_by_the_admin
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_scopes_hold_for_registration_assignment_results_enqueue_and_reads() {
    let tokens = Tokens::write(&[
        ("admin", Role::Admin, &[]),
        ("billing-admin", Role::Admin, &["billing"]),
        ("billing-agent", Role::Agent, &["billing"]),
        ("users-agent", Role::Agent, &["user_management"]),
        ("billing-client", Role::Client, &["billing"]),
    ]);
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), tokens.security()).await;
    let admin = channel(&server, Some(tokens.token("admin"))).await;
    let billing_agent = channel(&server, Some(tokens.token("billing-agent"))).await;
    let users_agent = channel(&server, Some(tokens.token("users-agent"))).await;
    let billing_client = channel(&server, Some(tokens.token("billing-client"))).await;
    let mut registry = RegistryServiceClient::new(admin.clone());
    let mut admin_tasks = TaskServiceClient::new(admin.clone());

    // Registration: a billing agent cannot register user_management, and a
    // refused registration writes none of its types.
    let refused = open_stream(
        billing_agent.clone(),
        register_message(
            "billing",
            &[
                ("billing", &["invoice_new"]),
                ("user_management", &["welcome_email"]),
            ],
        ),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("user_management"));
    let types: BTreeSet<String> = registry
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types
        .into_iter()
        .map(|t| t.task_type)
        .collect();
    assert!(types.is_empty(), "nothing registered: {types:?}");

    // An admin scoped to billing registers billing's types, and no other
    // domain's.
    let billing_admin = channel(&server, Some(tokens.token("billing-admin"))).await;
    let mut billing_registry = RegistryServiceClient::new(billing_admin);
    let outside = billing_registry
        .register_task_type(task_type_request("welcome_email", "user_management"))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied, "{outside:?}");
    assert!(outside.message().contains("user_management"), "{outside:?}");
    billing_registry
        .register_task_type(task_type_request("refund", "billing"))
        .await
        .expect("in scope");
    let types: Vec<String> = registry
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types
        .into_iter()
        .map(|t| t.task_type)
        .collect();
    assert_eq!(types, ["refund"], "only the in-scope type was written");

    // Each agent registers its own domain.
    let mut users = open_stream(
        users_agent,
        register_message("users", &[("user_management", &["welcome_email"])]),
    )
    .await
    .unwrap();
    let mut billing = open_stream(
        billing_agent.clone(),
        register_message("billing", &[("billing", &["invoice_new"])]),
    )
    .await
    .unwrap();
    // Nor can it claim a user_management type by naming it under billing.
    let stolen = open_stream(
        billing_agent,
        register_message("billing-2", &[("billing", &["welcome_email"])]),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(stolen.code(), Code::AlreadyExists, "{stolen:?}");

    // Assignment and results: the welcome task goes to the users agent only,
    // and a billing agent's result for it changes nothing.
    let welcome = enqueue(
        &mut admin_tasks,
        EnqueueTaskRequest {
            task_type: "welcome_email".into(),
            payload: payload(json!({"to": "ada@example.com"})),
            ..Default::default()
        },
    )
    .await;
    let assignment = users.assignment().await;
    assert_eq!(assignment.task_id, welcome.id);
    billing
        .complete(&welcome.id, assignment.attempt, json!({"forged": true}))
        .await;
    let invoice = enqueue(
        &mut admin_tasks,
        EnqueueTaskRequest {
            task_type: "invoice_new".into(),
            payload: payload(json!({})),
            ..Default::default()
        },
    )
    .await;
    // The billing stream is still served (its forged result was ignored,
    // not fatal), and its next assignment is its own domain's task.
    assert_eq!(billing.assignment().await.task_id, invoice.id);
    let still = admin_tasks
        .get_task(GetTaskRequest {
            id: welcome.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.status(), TaskStatus::Running);
    users
        .complete(&welcome.id, assignment.attempt, json!({"sent": true}))
        .await;
    let done = wait_status(&admin_tasks, &welcome.id, TaskStatus::Completed).await;
    assert_eq!(
        taskplane_proto::json::struct_to_json(done.result.as_ref().unwrap()),
        *json!({"sent": true}).as_object().unwrap()
    );

    // Enqueue: a billing client enqueues billing work only; a mixed batch
    // is refused whole.
    let mut client = TaskServiceClient::new(billing_client);
    let before = count_tasks(&mut admin_tasks, "invoice_new").await;
    client
        .enqueue_task(EnqueueTaskRequest {
            task_type: "invoice_new".into(),
            payload: payload(json!({})),
            ..Default::default()
        })
        .await
        .expect("billing work is in scope");
    let denied = client
        .enqueue_task(EnqueueTaskRequest {
            task_type: "welcome_email".into(),
            payload: payload(json!({})),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mixed = client
        .enqueue_tasks(EnqueueTasksRequest {
            tasks: ["invoice_new", "welcome_email"]
                .iter()
                .map(|t| EnqueueTaskRequest {
                    task_type: t.to_string(),
                    payload: payload(json!({})),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(mixed.code(), Code::PermissionDenied);
    assert_eq!(
        count_tasks(&mut admin_tasks, "invoice_new").await,
        before + 1
    );
    assert_eq!(count_tasks(&mut admin_tasks, "welcome_email").await, 1);

    // Reads: another domain's task is refused without saying what it is.
    let hidden = client
        .get_task(GetTaskRequest {
            id: welcome.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::PermissionDenied);
    assert!(!hidden.message().contains("user_management") && !hidden.message().contains("ada@"));
    let unscoped = client
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unscoped.code(), Code::PermissionDenied);
    let own = client
        .list_tasks(ListTasksRequest {
            domain: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(!own.is_empty() && own.iter().all(|t| t.domain == "billing"));

    // Cancel and retry: its own domain's tasks, not another's.
    let cancelled = client
        .cancel_task(CancelTaskRequest {
            id: own[0].id.clone(),
            reason: "no longer needed".into(),
        })
        .await
        .expect("a client cancels its own domain's task")
        .into_inner();
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
    let retried = client
        .retry_task(RetryTaskRequest {
            id: own[0].id.clone(),
        })
        .await
        .expect("and retries it")
        .into_inner();
    assert_eq!(retried.status(), TaskStatus::Pending);
    let foreign = client
        .cancel_task(CancelTaskRequest {
            id: welcome.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
    let untouched = admin_tasks
        .clone()
        .get_task(GetTaskRequest {
            id: welcome.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(untouched.status(), TaskStatus::Completed);
    server.stop().await;
}

async fn count_tasks(client: &mut TaskServiceClient<AuthChannel>, task_type: &str) -> usize {
    client
        .list_tasks(ListTasksRequest {
            task_type: task_type.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len()
}

/// Enqueues a `ship` follow-up, then tries one in a domain outside its
/// agent's token; answers with both outcomes.
struct PlaceOrder;

#[async_trait::async_trait]
impl taskplane_agent::TaskHandler for PlaceOrder {
    async fn handle(
        &self,
        context: taskplane_agent::TaskContext,
    ) -> Result<taskplane_agent::TaskResult, taskplane_agent::TaskError> {
        let child = context.enqueue("ship", json!({"order": 42})).await?;
        let refused = context.enqueue("audit", json!({})).await.unwrap_err();
        Ok(taskplane_agent::TaskResult::new(
            json!({"child": child, "refused": refused.to_string()}),
        ))
    }
}

/// Ships: nothing to do.
struct Ship;

#[async_trait::async_trait]
impl taskplane_agent::TaskHandler for Ship {
    async fn handle(
        &self,
        _context: taskplane_agent::TaskContext,
    ) -> Result<taskplane_agent::TaskResult, taskplane_agent::TaskError> {
        Ok(taskplane_agent::TaskResult::new(json!({"shipped": true})))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_enqueues_follow_ups_with_its_agents_token_and_within_its_domains() {
    let tokens = Tokens::write(&[
        ("admin", Role::Admin, &[]),
        ("shop-agent", Role::Agent, &["default"]),
    ]);
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), tokens.security()).await;
    let admin = channel(&server, Some(tokens.token("admin"))).await;
    RegistryServiceClient::new(admin.clone())
        .register_task_type(RegisterTaskTypeRequest {
            task_type: "audit".into(),
            domain: "compliance".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut registry = taskplane_agent::TaskRegistry::new();
    registry.register_handler("place_order", Box::new(PlaceOrder));
    registry.register_handler("ship", Box::new(Ship));
    let agent = taskplane_agent::Agent::builder()
        .registry(registry)
        .server(server.url())
        .name("shop")
        .connect_options(ConnectOptions {
            token: Some(tokens.token("shop-agent")),
            ..ConnectOptions::default()
        })
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let agent = tokio::spawn(agent.run(async move { stopped.cancelled().await }));
    integration_tests::wait_for_agent(&RegistryServiceClient::new(admin.clone()), "shop").await;
    let mut tasks = TaskServiceClient::new(admin);
    let order = enqueue(
        &mut tasks,
        integration_tests::enqueue_request("place_order", json!({})),
    )
    .await;
    let order = integration_tests::wait_terminal(&mut tasks, &order.id).await;
    assert_eq!(order.status(), TaskStatus::Completed, "{order:?}");
    let result = taskplane_proto::json::struct_to_json(order.result.as_ref().unwrap());
    let child_id = result["child"].as_str().unwrap();
    let child = integration_tests::wait_terminal(&mut tasks, child_id).await;
    assert_eq!(child.status(), TaskStatus::Completed);
    assert_eq!(child.parent_id, order.id, "the child records its parent");
    assert!(
        result["refused"]
            .as_str()
            .unwrap()
            .contains("may not enqueue tasks in domain 'compliance'"),
        "{result:?}"
    );
    stop.cancel();
    agent.await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_token_stream_counts_and_enqueue_rates_are_enforced() {
    let tokens = Tokens::write(&[
        ("admin", Role::Admin, &[]),
        ("agent", Role::Agent, &[]),
        ("client", Role::Client, &[]),
    ]);
    let queue = QueueConfig {
        max_streams_per_token: 1,
        enqueue_rate_per_token: 1,
        ..fast_queue()
    };
    let server = TestServer::start_secured(&Backend::Sqlite, queue, tokens.security()).await;
    let agent = channel(&server, Some(tokens.token("agent"))).await;
    let register = || register_message("limited", &[("limits", &["limited_run"])]);
    let first = open_stream(agent.clone(), register()).await.unwrap();
    let second = open_stream(agent.clone(), register())
        .await
        .err()
        .expect("one stream per token");
    assert_eq!(second.code(), Code::ResourceExhausted, "{second:?}");
    assert!(second.message().contains("limit"));
    // Another token is counted apart.
    open_stream(
        channel(&server, Some(tokens.token("admin"))).await,
        register(),
    )
    .await
    .expect("the admin token has its own count");
    // Closing the stream gives its slot back.
    drop(first);
    wait_for(|| {
        let agent = agent.clone();
        async move { open_stream(agent, register()).await.is_ok() }
    })
    .await;

    let mut client = TaskServiceClient::new(channel(&server, Some(tokens.token("client"))).await);
    let request = || EnqueueTaskRequest {
        task_type: "limited_run".into(),
        payload: payload(json!({})),
        ..Default::default()
    };
    let batch = client
        .enqueue_tasks(EnqueueTasksRequest {
            tasks: vec![request(), request()],
        })
        .await
        .unwrap_err();
    assert_eq!(batch.code(), Code::ResourceExhausted, "{batch:?}");
    client
        .enqueue_task(request())
        .await
        .expect("within the rate");
    let fast = client.enqueue_task(request()).await.unwrap_err();
    assert_eq!(fast.code(), Code::ResourceExhausted, "{fast:?}");
    assert!(fast.message().contains("1 tasks per second"));
    server.stop().await;
}

async fn revoked_database_tokens_are_refused(backend: Backend) {
    let server = TestServer::start_secured(
        &backend,
        fast_queue(),
        SecurityConfig {
            auth: Some(AuthConfig {
                tokens_file: None,
                cache_ttl: Duration::from_millis(50),
            }),
            ..SecurityConfig::default()
        },
    )
    .await;
    // Tokens are managed on the database the server uses, while it runs.
    let store = taskplane_server::store::open(&server.database_url, &QueueConfig::default())
        .await
        .unwrap();
    let issued = issue("ops", Role::Admin, vec![]).unwrap();
    store.create_token(&issued).await.unwrap();
    let agent_token = issue("worker", Role::Agent, vec![]).unwrap();
    store.create_token(&agent_token).await.unwrap();
    let mut registry =
        RegistryServiceClient::new(channel(&server, Some(issued.token.clone())).await);
    wait_for(|| {
        let mut registry = registry.clone();
        async move {
            registry
                .list_domains(ListDomainsRequest::default())
                .await
                .is_ok()
        }
    })
    .await;
    assert!(store.revoke_token(&issued.record.id).await.unwrap());
    wait_for(|| {
        let mut registry = registry.clone();
        async move {
            matches!(
                registry.list_domains(ListDomainsRequest::default()).await,
                Err(status) if status.code() == Code::Unauthenticated && status.message().contains("revoked")
            )
        }
    })
    .await;
    let status = registry
        .register_task_type(task_type_request("after_revoke", "ops"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // A revoked agent token loses the stream it already has.
    let mut stream = open_stream(
        channel(&server, Some(agent_token.token.clone())).await,
        register_message("worker", &[("ops", &["ops_run"])]),
    )
    .await
    .unwrap();
    assert!(store.revoke_token(&agent_token.record.id).await.unwrap());
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("revoked"));
    server.stop().await;
}

integration_tests::on_every_backend!(revoked_database_tokens_are_refused);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_tokens_file_takes_effect_while_serving() {
    let tokens = Tokens::write(&[("first", Role::Admin, &[])]);
    let security = SecurityConfig {
        reload_interval: Duration::from_millis(50),
        ..tokens.security()
    };
    let server = TestServer::start_secured(&Backend::Sqlite, fast_queue(), security).await;
    let mut first = RegistryServiceClient::new(channel(&server, Some(tokens.token("first"))).await);
    first
        .list_domains(ListDomainsRequest::default())
        .await
        .expect("listed in the file");
    let second = issue("second", Role::Admin, vec![]).unwrap();
    let mut file = TokensFile::load(&tokens.path).unwrap();
    file.revoke(&tokens.issued[0].record.id);
    file.add(&second);
    file.save(&tokens.path).unwrap();
    let mut second_client =
        RegistryServiceClient::new(channel(&server, Some(second.token.clone())).await);
    wait_for(|| {
        let mut client = second_client.clone();
        async move {
            client
                .list_domains(ListDomainsRequest::default())
                .await
                .is_ok()
        }
    })
    .await;
    let refused = first
        .list_domains(ListDomainsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    second_client
        .list_domains(ListDomainsRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn an_unauthenticated_server_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = taskplane_server::ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.path().join("t.db").display()),
        ..Default::default()
    };
    // Refused before anything is bound (the accepted cases are unit tests
    // of the same check, so no test listens beyond loopback).
    let refused = taskplane_server::Server::bind(config)
        .await
        .err()
        .expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("without authentication") && message.contains("--insecure"),
        "{message}"
    );
}

#[tokio::test]
async fn a_malformed_tokens_file_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("tokens.toml");
    std::fs::write(path, "[[token]]\nname = 'x'\n").unwrap();
    let config = taskplane_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.path().join("t.db").display()),
        queue: QueueConfig::default(),
        security: SecurityConfig {
            auth: Some(AuthConfig {
                tokens_file: Some(path.to_owned()),
                ..AuthConfig::default()
            }),
            ..SecurityConfig::default()
        },
        metrics_listen: None,
        console_listen: None,
    };
    let error = taskplane_server::Server::bind(config)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("tokens file"), "{error}");
}
