//! `RegistryService` answers from what agents registered: types, domains,
//! versions, live agents — with the guide's example domains on real agents.

use std::sync::Arc;

use integration_tests::{Backend, TestAgent, TestServer, enqueue, enqueue_request, wait_terminal};
use serde_json::json;
use taskplane_agent::RegistryConfig;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::json::struct_to_json;
use taskplane_proto::v1::{
    GetTaskTypeRequest, ListAgentsRequest, ListDomainsRequest, ListTaskTypesRequest, TaskStatus,
    ValidateTaskTypeRequest,
};
use tonic::Code;

fn example_registry(
    env: &[(&str, &str)],
    export_dir: &std::path::Path,
) -> taskplane_agent::TaskRegistry {
    let env: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = RegistryConfig::from_lookup(|name| env.get(name).cloned()).unwrap();
    let (registry, unknown) =
        setup_registry_with_config(&config, Arc::new(AppServices::new(export_dir)));
    assert!(unknown.is_empty());
    registry
}

async fn two_domain_agents_register_their_own_types_and_are_introspectable(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let exports = tempfile::tempdir().unwrap();
    let billing = TestAgent::start(
        &server,
        "billing-agent",
        example_registry(&[("TASK_ENABLED_DOMAINS", "billing")], exports.path()),
    )
    .await;
    let users = TestAgent::start(
        &server,
        "users-agent",
        example_registry(
            &[
                ("TASK_ENABLED_DOMAINS", "user_management"),
                ("TASK_DISABLED_TYPES", "password_reset"),
            ],
            exports.path(),
        ),
    )
    .await;
    let mut registry = server.registry().await;

    let types = registry
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    let names: Vec<&str> = types.iter().map(|t| t.task_type.as_str()).collect();
    assert_eq!(
        names,
        [
            "account_cleanup",
            "failed_payment_retry",
            "invoice_generation",
            "payment_processing",
            "profile_export",
            "subscription_renewal",
            "welcome_email"
        ],
        "password_reset was disabled by TASK_DISABLED_TYPES"
    );
    assert!(
        types
            .iter()
            .all(|t| t.live_agents == 1 && t.registered_at.is_some())
    );

    let invoice = registry
        .get_task_type(GetTaskTypeRequest {
            task_type: "invoice_generation".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(invoice.domain, "billing");
    assert!(
        invoice.description.contains("invoice"),
        "{}",
        invoice.description
    );
    let missing = registry
        .get_task_type(GetTaskTypeRequest {
            task_type: "password_reset".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let valid = registry
        .validate_task_type(ValidateTaskTypeRequest {
            task_type: "welcome_email".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid && valid.live_agents == 1);
    let invalid = registry
        .validate_task_type(ValidateTaskTypeRequest {
            task_type: "password_reset".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !invalid.valid && invalid.reason.contains("not registered"),
        "{invalid:?}"
    );

    let domains = registry
        .list_domains(ListDomainsRequest {})
        .await
        .unwrap()
        .into_inner()
        .domains;
    let summary: Vec<(&str, usize, u32)> = domains
        .iter()
        .map(|d| (d.domain.as_str(), d.task_types.len(), d.live_agents))
        .collect();
    assert_eq!(summary, [("billing", 4, 1), ("user_management", 3, 1)]);

    let agents = registry
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let mut by_name: Vec<(&str, Vec<String>)> = agents
        .iter()
        .map(|a| (a.agent_name.as_str(), a.domains.clone()))
        .collect();
    by_name.sort();
    assert_eq!(
        by_name,
        [
            ("billing-agent", vec!["billing".to_string()]),
            ("users-agent", vec!["user_management".to_string()])
        ]
    );

    // Each agent gets only its own domain's tasks: a billing task completes
    // on the billing agent, a user task on the user agent.
    let mut tasks = server.tasks().await;
    let invoice = enqueue(
        &mut tasks,
        enqueue_request(
            "invoice_generation",
            json!({"items": [{"quantity": 3, "unit_price_cents": 250}], "tax_rate_percent": 10}),
        ),
    )
    .await;
    let export = enqueue(
        &mut tasks,
        enqueue_request(
            "profile_export",
            json!({"rows": [{"user_id": 7, "name": "Ada"}], "format": "json"}),
        ),
    )
    .await;
    let invoice = wait_terminal(&mut tasks, &invoice.id).await;
    assert_eq!(invoice.status(), TaskStatus::Completed, "{invoice:?}");
    assert_eq!(
        struct_to_json(invoice.result.as_ref().unwrap())["total_cents"],
        json!(825)
    );
    let export = wait_terminal(&mut tasks, &export.id).await;
    assert_eq!(export.status(), TaskStatus::Completed, "{export:?}");
    let path = struct_to_json(export.result.as_ref().unwrap())["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["rows"], json!([{"user_id": 7, "name": "Ada"}]));

    // An email with no SMTP server configured fails honestly, never "sent".
    let email = enqueue(
        &mut tasks,
        enqueue_request(
            "welcome_email",
            json!({"to": "ada@example.com", "name": "Ada"}),
        ),
    )
    .await;
    let email = wait_terminal(&mut tasks, &email.id).await;
    assert_eq!(
        (email.status(), email.attempts),
        (TaskStatus::Dead, 1),
        "non-retryable"
    );
    assert!(
        email
            .last_error
            .contains("no SMTP server is configured: set TASKPLANE_SMTP_URL"),
        "{}",
        email.last_error
    );

    billing.stop().await.unwrap();
    users.stop().await.unwrap();
    let types = server
        .registry()
        .await
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    assert!(
        types.iter().all(|t| t.live_agents == 0),
        "stopped agents are no longer live"
    );
    server.stop().await;
}

async fn an_agent_claiming_another_domains_type_is_refused(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let exports = tempfile::tempdir().unwrap();
    let _billing = TestAgent::start(
        &server,
        "billing-agent",
        example_registry(&[("TASK_ENABLED_DOMAINS", "billing")], exports.path()),
    )
    .await;

    // A rogue domain that serves billing's invoice_generation next to a new type.
    struct Rogue;
    impl taskplane_agent::DomainRegistry for Rogue {
        fn register_handlers(&self, registry: &mut taskplane_agent::TaskRegistry) -> Vec<String> {
            registry.register_handler(
                "invoice_generation",
                Box::new(taskplane_handlers::builtin::invoice::InvoiceHandler::new(
                    std::env::temp_dir(),
                )),
            );
            registry.register_handler(
                "shiny_new_type",
                Box::new(taskplane_handlers::builtin::invoice::InvoiceHandler::new(
                    std::env::temp_dir(),
                )),
            );
            vec!["invoice_generation".into(), "shiny_new_type".into()]
        }
        fn domain_name(&self) -> &'static str {
            "marketing"
        }
    }
    let mut registry = taskplane_agent::TaskRegistry::new();
    registry.register_domain("marketing", Box::new(Rogue));
    let outcome = taskplane_agent::Agent::builder()
        .registry(registry)
        .server(server.url())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await;
    let Err(taskplane_agent::AgentError::Refused(status)) = outcome else {
        panic!("expected a refusal, got {outcome:?}")
    };
    assert_eq!(status.code(), Code::AlreadyExists);
    let types = server
        .registry()
        .await
        .list_task_types(ListTaskTypesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .task_types;
    assert!(
        types.iter().all(|t| t.task_type != "shiny_new_type"),
        "nothing of a refused registration is written"
    );
}

/// Answers whether the agent runs with `new_payment_flow` on.
struct FlagProbe;

#[async_trait::async_trait]
impl taskplane_agent::TaskHandler for FlagProbe {
    async fn handle(
        &self,
        context: taskplane_agent::TaskContext,
    ) -> Result<taskplane_agent::TaskResult, taskplane_agent::TaskError> {
        Ok(taskplane_agent::TaskResult::new(json!({
            "new_payment_flow": context.feature_enabled("new_payment_flow"),
            "unset": context.feature_enabled("never_set"),
        })))
    }
}

/// The agent binary's settings reach the server and the handlers:
/// `ListAgents` shows the labels (`TASKPLANE_LABELS`), the slots and the
/// feature flags (`TASK_FEATURE_FLAGS`), and a handler reads the flags from
/// its task context.
async fn the_agent_settings_labels_and_flags_are_listed(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let settings = taskplane_handlers::environment::AgentSettings::from_lookup(|name| match name {
        "TASKPLANE_LABELS" => Some("region=eu,gpu=true".to_owned()),
        "TASKPLANE_AGENT_NAME" => Some("labelled".to_owned()),
        "TASKPLANE_MAX_CONCURRENCY" => Some("4".to_owned()),
        "TASK_ENABLED_DOMAINS" => Some("billing".to_owned()),
        "TASK_FEATURE_FLAGS" => Some("new_payment_flow:true,dark_launch:false".to_owned()),
        _ => None,
    })
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut registry, _) =
        setup_registry_with_config(&settings.registry, Arc::new(AppServices::new(data.path())));
    registry.register_handler("flag_probe", Box::new(FlagProbe));
    let agent =
        TestAgent::start_configured(&server, "labelled", registry, |b| settings.configure(b)).await;
    let listed = server.listed_agent("labelled").await;
    assert_eq!(listed.labels.get("region").map(String::as_str), Some("eu"));
    assert_eq!(listed.labels.get("gpu").map(String::as_str), Some("true"));
    assert_eq!(listed.max_concurrency, 4);
    assert_eq!(listed.feature_flags.get("new_payment_flow"), Some(&true));
    assert_eq!(listed.feature_flags.get("dark_launch"), Some(&false));
    let mut tasks = server.tasks().await;
    let probe = enqueue(&mut tasks, enqueue_request("flag_probe", json!({}))).await;
    let done = wait_terminal(&mut tasks, &probe.id).await;
    assert_eq!(
        struct_to_json(done.result.as_ref().unwrap()),
        *json!({"new_payment_flow": true, "unset": false})
            .as_object()
            .unwrap()
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(
    the_agent_settings_labels_and_flags_are_listed,
    two_domain_agents_register_their_own_types_and_are_introspectable,
    an_agent_claiming_another_domains_type_is_refused,
);
