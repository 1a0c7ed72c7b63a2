//! Routing through real servers and agents: a handler version gated by a
//! feature flag goes only to the agent with the flag on (and to the others
//! by fallback once it leaves), an unknown version is refused at enqueue,
//! a task requiring labels waits PENDING, saying why, until an agent with
//! those labels connects, and a drained agent (through any replica) gets no
//! new task but finishes what it holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use integration_tests::{
    Backend, TestAgent, TestServer, attempts_of, enqueue, enqueue_request, wait_for, wait_status,
    wait_terminal,
};
use serde_json::json;
use taskplane_agent::handler::{TaskContext, TaskError, TaskHandler, TaskResult};
use taskplane_agent::{RegistryConfig, TaskRegistry};
use taskplane_handlers::domains::billing::test_gateway::TestModeGateway;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::json::struct_to_json;
use taskplane_proto::v1::{
    DrainAgentRequest, EnqueueTaskRequest, EnqueueTasksRequest, GetTaskRequest, GetTaskTypeRequest,
    TaskStatus,
};
use taskplane_server::testing::PostgresSchema;
use tonic::Code;

/// The billing domain with the gateway at `gateway`, and these flags.
fn billing(gateway: &str, flags: &str, data: &std::path::Path) -> TaskRegistry {
    let config = RegistryConfig::from_lookup(|name| match name {
        "TASK_ENABLED_DOMAINS" => Some("billing".to_owned()),
        "TASK_FEATURE_FLAGS" => Some(flags.to_owned()),
        _ => None,
    })
    .unwrap();
    let services = AppServices {
        payment_gateway_url: Some(gateway.to_owned()),
        ..AppServices::new(data)
    };
    setup_registry_with_config(&config, Arc::new(services)).0
}

/// The handler versions the server lists for the agent named `name`.
async fn versions_of(server: &TestServer, name: &str, task_type: &str) -> Vec<String> {
    server
        .listed_agent(name)
        .await
        .handler_versions
        .into_iter()
        .find(|v| v.task_type == task_type)
        .map(|v| v.versions)
        .unwrap_or_default()
}

/// A payment a version 1 handler charges by its amount, a version 2 one
/// by its items.
fn payment(version: &str) -> EnqueueTaskRequest {
    let payload = json!({
        "customer_id": "cus_1", "currency": "EUR", "amount_cents": 500,
        "items": [{"description": "plan", "quantity": 2, "unit_price_cents": 300}],
    });
    EnqueueTaskRequest {
        handler_version: version.into(),
        ..enqueue_request("payment_processing", payload)
    }
}

async fn a_flagged_version_runs_only_on_the_agent_with_the_flag(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let data = tempfile::tempdir().unwrap();
    let ledger = TestModeGateway::open(&data.path().join("payments"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = ledger.serve_alone(listener).unwrap();
    let plain = TestAgent::start(&server, "plain", billing(&gateway, "", data.path())).await;
    // One slot against the plain agent's eight: only routing keeps the
    // plain agent from taking most of a batch of v2 tasks.
    let flagged = TestAgent::start_configured(
        &server,
        "flagged",
        billing(&gateway, "new_payment_flow:true", data.path()),
        |agent| agent.max_concurrency(1),
    )
    .await;
    assert_eq!(
        versions_of(&server, "plain", "payment_processing").await,
        ["v1"]
    );
    assert_eq!(
        versions_of(&server, "flagged", "payment_processing").await,
        ["v1", "v2"]
    );
    let declared = server
        .registry()
        .await
        .get_task_type(GetTaskTypeRequest {
            task_type: "payment_processing".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(declared, ["v1", "v2"], "the union of the agents' versions");
    let flagged_id = server.listed_agent("flagged").await.agent_id;

    let mut tasks = server.tasks().await;
    let batch = EnqueueTasksRequest {
        tasks: (0..8).map(|_| payment("v2")).collect(),
    };
    let ids: Vec<String> = tasks
        .enqueue_tasks(batch)
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.task.unwrap().id)
        .collect();
    for id in &ids {
        let done = wait_terminal(&mut tasks, id).await;
        assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
        let attempts = attempts_of(&mut tasks, id).await;
        assert_eq!(
            attempts[0].agent_id, flagged_id,
            "v2 runs where the flag is on"
        );
        let charged = struct_to_json(done.result.as_ref().unwrap());
        assert_eq!(charged["amount_cents"], 600, "version 2 charges the items");
    }

    let refused = tasks.enqueue_task(payment("v9")).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("'v9'") && refused.message().contains("declared: v1, v2"),
        "{}",
        refused.message()
    );

    // Without the flagged agent, v1 serves v2 tasks as the SDK falls back.
    flagged.stop().await.unwrap();
    let late = enqueue(&mut tasks, payment("v2")).await;
    let done = wait_terminal(&mut tasks, &late.id).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    let attempts = attempts_of(&mut tasks, &late.id).await;
    assert_eq!(
        attempts[0].agent_id,
        server.listed_agent("plain").await.agent_id
    );
    let charged = struct_to_json(done.result.as_ref().unwrap());
    assert_eq!(charged["amount_cents"], 500, "version 1 charged the amount");
    plain.stop().await.unwrap();
    server.stop().await;
}

/// Answers with the name of the agent it runs in, after `sleep_ms` if the
/// payload asks.
struct Where(&'static str);

#[async_trait]
impl TaskHandler for Where {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        if let Some(ms) = context.payload["sleep_ms"].as_u64() {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Ok(TaskResult::new(json!({ "ran_in": self.0 })))
    }
}

/// Where each of `count` new tasks of `where` ran.
async fn where_tasks_run(server: &TestServer, count: usize) -> Vec<String> {
    let mut tasks = server.tasks().await;
    let mut ran_in = Vec::new();
    for _ in 0..count {
        let task = enqueue(&mut tasks, enqueue_request("where", json!({}))).await;
        let done = wait_terminal(&mut tasks, &task.id).await;
        ran_in.push(
            struct_to_json(done.result.as_ref().unwrap())["ran_in"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ran_in
}

/// Whether `server` lists the agent `name` as draining.
async fn draining(server: &TestServer, name: &str) -> bool {
    server.listed_agent(name).await.draining
}

async fn a_drained_agent_gets_no_new_task_and_finishes_what_it_holds(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let a = TestAgent::start_configured(&server, "a", serving_where("a"), |agent| {
        agent.label("name", "a")
    })
    .await;
    let b = TestAgent::start(&server, "b", serving_where("b")).await;
    let mut tasks = server.tasks().await;
    let held = EnqueueTaskRequest {
        required_labels: [("name".to_owned(), "a".to_owned())].into(),
        ..enqueue_request("where", json!({"sleep_ms": 300}))
    };
    let held = enqueue(&mut tasks, held).await;
    wait_status(&tasks, &held.id, TaskStatus::Running).await;

    let drained = server
        .registry()
        .await
        .drain_agent(DrainAgentRequest { agent: "a".into() })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(drained.len(), 1);
    assert!(drained[0].agent_name == "a" && drained[0].draining);
    assert!(draining(&server, "a").await);
    let done = wait_terminal(&mut tasks, &held.id).await;
    assert_eq!(
        done.status(),
        TaskStatus::Completed,
        "what it held finished"
    );
    assert!(
        where_tasks_run(&server, 6)
            .await
            .iter()
            .all(|name| name == "b"),
        "no new task for a drained agent"
    );
    let missing = server
        .registry()
        .await
        .drain_agent(DrainAgentRequest {
            agent: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("'nobody'"),
        "{}",
        missing.message()
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    server.stop().await;
}

/// An operator reaches one replica; the agent is on another, which drains
/// it at its next lease-maintenance round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_another_replica_is_drained_by_its_own() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let backend = Backend::Postgres(schema.url.clone());
    let one = TestServer::start(&backend).await;
    let two = TestServer::start(&backend).await;
    let a = TestAgent::start(&one, "a", serving_where("a")).await;
    let b = TestAgent::start(&two, "b", serving_where("b")).await;
    // Every replica lists every agent: replica two finds `a` in the store.
    two.registry()
        .await
        .drain_agent(DrainAgentRequest { agent: "a".into() })
        .await
        .unwrap();
    wait_for(|| draining(&one, "a")).await;
    assert!(
        where_tasks_run(&one, 6)
            .await
            .iter()
            .all(|name| name == "b"),
        "work enqueued beside the drained agent goes to the other replica's"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    one.stop().await;
    two.stop().await;
    schema.drop().await;
}

fn serving_where(region: &'static str) -> TaskRegistry {
    let mut registry = TaskRegistry::new();
    registry.register_handler("where", Box::new(Where(region)));
    registry
}

async fn a_task_requiring_labels_waits_for_an_agent_that_has_them(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let us = TestAgent::start_configured(&server, "us", serving_where("us"), |agent| {
        agent.label("region", "us")
    })
    .await;
    let mut tasks = server.tasks().await;
    let anywhere = enqueue(&mut tasks, enqueue_request("where", json!({}))).await;
    assert_eq!(
        wait_terminal(&mut tasks, &anywhere.id).await.status(),
        TaskStatus::Completed
    );

    let in_eu = EnqueueTaskRequest {
        required_labels: [("region".to_owned(), "eu".to_owned())].into(),
        ..enqueue_request("where", json!({}))
    };
    let task = enqueue(&mut tasks, in_eu).await;
    assert_eq!(
        task.required_labels.get("region").map(String::as_str),
        Some("eu")
    );
    // A freed slot and a poll interval later, it still waits, and says why.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiting = tasks
        .get_task(GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waiting.status(), TaskStatus::Pending);
    assert!(
        waiting.waiting_for.contains("has the labels region=eu"),
        "{}",
        waiting.waiting_for
    );

    let eu = TestAgent::start_configured(&server, "eu", serving_where("eu"), |agent| {
        agent.label("region", "eu").label("gpu", "true")
    })
    .await;
    let done = wait_terminal(&mut tasks, &task.id).await;
    assert_eq!(done.status(), TaskStatus::Completed);
    assert_eq!(
        struct_to_json(done.result.as_ref().unwrap())["ran_in"],
        "eu"
    );
    assert!(done.waiting_for.is_empty());

    let mut bad_labels = BTreeMap::new();
    bad_labels.insert(String::new(), "x".to_owned());
    let refused = tasks
        .enqueue_task(EnqueueTaskRequest {
            required_labels: bad_labels.into_iter().collect(),
            ..enqueue_request("where", json!({}))
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("required_labels"),
        "{}",
        refused.message()
    );
    us.stop().await.unwrap();
    eu.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(
    a_drained_agent_gets_no_new_task_and_finishes_what_it_holds,
    a_flagged_version_runs_only_on_the_agent_with_the_flag,
    a_task_requiring_labels_waits_for_an_agent_that_has_them,
);
