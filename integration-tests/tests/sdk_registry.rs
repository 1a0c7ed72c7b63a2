//! The agent SDK's registry as the design guide describes it, against a real
//! server: the guide's processor test, versioned handlers visible to
//! clients, handler health in heartbeats, and duplicates refused at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, wait_for, wait_terminal,
};
use serde_json::json;
use taskplane_agent::{
    Agent, AgentError, HandlerHealth, HandlerVersion, RegistryConfig, TaskContext, TaskError,
    TaskHandler, TaskRegistry, TaskResult, VersionedHandler,
};
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::json::struct_to_json;
use taskplane_proto::v1::{
    GetTaskTypeRequest, ListAgentsRequest, TaskStatus, ValidateTaskTypeRequest,
};

/// The guide's `test_registry_with_processor`, in this project's words: a
/// registry from configuration, served by an agent, processes a task to
/// COMPLETED. (The guide's `welcome_email` needs an SMTP server here, so the
/// task is an invoice.)
async fn test_registry_with_processor(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let exports = tempfile::tempdir().unwrap();
    let config = RegistryConfig::from_lookup(|_| None).unwrap();
    let (registry, _) =
        setup_registry_with_config(&config, Arc::new(AppServices::new(exports.path())));
    let agent = TestAgent::start(&server, "processor", registry).await;
    let mut tasks = server.tasks().await;
    let task_id = enqueue(
        &mut tasks,
        enqueue_request(
            "invoice_generation",
            json!({"items": [{"quantity": 1, "unit_price_cents": 999}]}),
        ),
    )
    .await
    .id;
    let task = wait_terminal(&mut tasks, &task_id).await;
    assert_eq!(task.status(), TaskStatus::Completed);
    agent.stop().await.unwrap();
    server.stop().await;
}

struct Report(&'static str);

#[async_trait::async_trait]
impl TaskHandler for Report {
    async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(json!({ "format": self.0 })))
    }
}

async fn served_versions_are_visible_to_clients_and_undeclared_ones_refused(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut registry = TaskRegistry::new();
    let versioned = VersionedHandler::new(HandlerVersion::V1)
        .with_version(HandlerVersion::V1, Box::new(Report("csv")))
        .with_version(HandlerVersion::V2, Box::new(Report("json")))
        .with_description("Renders a report");
    registry.register_handler("report", Box::new(versioned));
    let agent = TestAgent::start(&server, "reports", registry).await;

    let mut registry_api = server.registry().await;
    let info = registry_api
        .get_task_type(GetTaskTypeRequest {
            task_type: "report".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.versions, ["v1", "v2"]);
    let validate = |version: &str| ValidateTaskTypeRequest {
        task_type: "report".into(),
        version: version.into(),
    };
    assert!(
        registry_api
            .validate_task_type(validate("v2"))
            .await
            .unwrap()
            .into_inner()
            .valid
    );
    let v3 = registry_api
        .validate_task_type(validate("v3"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !v3.valid && v3.reason.contains("registered: v1, v2"),
        "{v3:?}"
    );

    let mut tasks = server.tasks().await;
    // A version no agent declared is refused at enqueue (routing.rs shows
    // a declared one falling back to an older agent's handler).
    let mut v3_request = enqueue_request("report", json!({}));
    v3_request.handler_version = "v3".into();
    let refused = tasks.enqueue_task(v3_request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("declared: v1, v2"),
        "{refused:?}"
    );
    let mut v2_request = enqueue_request("report", json!({}));
    v2_request.handler_version = "v2".into();

    let mut run = async |request: taskplane_proto::v1::EnqueueTaskRequest| {
        let id = enqueue(&mut tasks, request).await.id;
        wait_terminal(&mut tasks, &id).await
    };
    let done = run(v2_request).await;
    assert_eq!(
        struct_to_json(done.result.as_ref().unwrap())["format"],
        "json",
        "v2 runs the v2 handler"
    );

    let mut by_metadata = enqueue_request("report", json!({"version": "v2"}));
    by_metadata
        .metadata
        .insert("handler_version".into(), "v1".into());
    let done = run(by_metadata).await;
    assert_eq!(
        struct_to_json(done.result.as_ref().unwrap())["format"],
        "csv",
        "metadata wins over the payload"
    );

    let done = run(enqueue_request("report", json!({"version": "v9"}))).await;
    assert_eq!((done.status(), done.attempts), (TaskStatus::Dead, 1));
    assert!(
        done.last_error
            .contains("unsupported version: 'v9' is not a handler version"),
        "{}",
        done.last_error
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

struct Flippable(Arc<AtomicBool>);

#[async_trait::async_trait]
impl TaskHandler for Flippable {
    async fn handle(&self, _context: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::empty())
    }

    async fn health_check(&self) -> Option<HandlerHealth> {
        Some(if self.0.load(Ordering::SeqCst) {
            HandlerHealth::healthy("upstream reachable")
        } else {
            HandlerHealth::unhealthy("upstream refused the connection")
        })
    }
}

async fn handler_health_travels_in_heartbeats_to_list_agents_and_get_task_type(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let healthy = Arc::new(AtomicBool::new(true));
    let mut registry = TaskRegistry::new();
    registry.register_handler("sync_upstream", Box::new(Flippable(healthy.clone())));
    registry.register_handler("no_self_check", Box::new(Report("plain")));
    let agent = TestAgent::start(&server, "health-agent", registry).await;
    let registry_api = server.registry().await;

    let health_of = |expected: bool| {
        let mut api = registry_api.clone();
        async move {
            let info = api
                .get_task_type(GetTaskTypeRequest {
                    task_type: "sync_upstream".into(),
                })
                .await
                .unwrap()
                .into_inner();
            info.health
                .first()
                .is_some_and(|h| h.healthy == expected && h.agent_name == "health-agent")
        }
    };
    wait_for(|| health_of(true)).await;
    healthy.store(false, Ordering::SeqCst);
    wait_for(|| health_of(false)).await;

    let mut api = registry_api.clone();
    let agents = api
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let reported: Vec<(&str, bool, &str)> = agents[0]
        .handler_health
        .iter()
        .map(|h| (h.task_type.as_str(), h.healthy, h.message.as_str()))
        .collect();
    assert_eq!(
        reported,
        [("sync_upstream", false, "upstream refused the connection")],
        "handlers without a check send none"
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

#[test]
fn a_task_type_registered_twice_stops_the_agent_at_start_up() {
    let mut registry = TaskRegistry::new();
    registry.register_handler("report", Box::new(Report("first")));
    registry.register_handler("report", Box::new(Report("second")));
    assert_eq!(
        registry.handler_count(),
        1,
        "the first handler is kept, not overwritten"
    );
    let Err(error) = Agent::builder().registry(registry).build() else {
        panic!("a duplicate must not build")
    };
    assert!(matches!(error, AgentError::Registry(_)));
    assert!(
        error
            .to_string()
            .contains("task type 'report' is registered twice"),
        "{error}"
    );
}

integration_tests::on_every_backend!(
    test_registry_with_processor,
    served_versions_are_visible_to_clients_and_undeclared_ones_refused,
    handler_health_travels_in_heartbeats_to_list_agents_and_get_task_type,
);
