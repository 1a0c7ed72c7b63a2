//! The example domains' task types, wired to the built-in handlers through
//! factories and injected services, run end to end through a real server:
//! payments reach a real HTTP gateway signed, logs are cleaned, history
//! becomes a report, a database is backed up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use integration_tests::{
    Backend, TestAgent, TestServer, enqueue, enqueue_request, recording_gateway, wait_terminal,
};
use serde_json::{Value, json};
use taskplane_agent::RegistryConfig;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::json::struct_to_json;
use taskplane_proto::v1::TaskStatus;

async fn run(
    tasks: &mut taskplane_proto::v1::task_service_client::TaskServiceClient<
        tonic::transport::Channel,
    >,
    task_type: &str,
    payload: Value,
) -> taskplane_proto::v1::Task {
    let id = enqueue(tasks, enqueue_request(task_type, payload)).await.id;
    wait_terminal(tasks, &id).await
}

fn result(task: &taskplane_proto::v1::Task) -> Value {
    Value::Object(struct_to_json(task.result.as_ref().expect("a result")))
}

async fn example_domains_do_real_work_through_their_built_ins(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let (gateway_url, charges) = recording_gateway().await;
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for (name, age) in [("app.1.log", 7200), ("app.log", 0)] {
        std::fs::write(logs.join(name), "line\n").unwrap();
        let modified = SystemTime::now() - Duration::from_secs(age);
        std::fs::File::options()
            .write(true)
            .open(logs.join(name))
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }
    let database = root.path().join("app.db");
    std::fs::write(&database, "").unwrap();
    let services = AppServices {
        payment_gateway_url: Some(gateway_url),
        webhook_secret: Some("whsec_integration".into()),
        log_dir: Some(logs.clone()),
        backup_database_url: Some(format!("sqlite://{}", database.display())),
        control_plane: server.url(),
        ..AppServices::new(root.path().join("agent"))
    };
    let (registry, _) = setup_registry_with_config(
        &RegistryConfig::from_lookup(|_| None).unwrap(),
        Arc::new(services),
    );
    let agent = TestAgent::start(&server, "all-domains", registry).await;
    let mut tasks = server.tasks().await;

    let payment = run(
        &mut tasks,
        "payment_processing",
        json!({"amount_cents": 500, "currency": "EUR"}),
    )
    .await;
    assert_eq!(payment.status(), TaskStatus::Completed, "{payment:?}");
    let (headers, body) = charges
        .lock()
        .unwrap()
        .pop()
        .expect("the gateway was called");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"amount_cents": 500, "currency": "EUR"})
    );
    assert!(
        headers["x-taskplane-signature"]
            .to_str()
            .unwrap()
            .starts_with("sha256=")
    );
    assert_eq!(headers["x-taskplane-task-id"], payment.id.as_str());

    let cleanup = run(
        &mut tasks,
        "log_cleanup",
        json!({"pattern": "*.log", "older_than_secs": 3600}),
    )
    .await;
    assert_eq!(
        result(&cleanup)["deleted"],
        json!(["app.1.log"]),
        "{cleanup:?}"
    );
    assert!(!logs.join("app.1.log").exists() && logs.join("app.log").exists());

    let history = json!({"format": "csv", "name": "payments", "history": {"task_type": "payment_processing", "status": "completed"}});
    let report = run(&mut tasks, "report_generation", history).await;
    assert_eq!(report.status(), TaskStatus::Completed, "{report:?}");
    let csv = std::fs::read_to_string(result(&report)["path"].as_str().unwrap()).unwrap();
    assert!(
        csv.starts_with("id,status,attempts") && csv.contains(&payment.id),
        "{csv}"
    );

    let backup = run(&mut tasks, "database_backup", json!({})).await;
    assert_eq!(backup.status(), TaskStatus::Completed, "{backup:?}");
    assert!(std::path::Path::new(result(&backup)["path"].as_str().unwrap()).exists());

    let invoice = run(&mut tasks, "invoice_generation", json!({"items": [{"description": "plan", "quantity": 2, "unit_price_cents": 1500}], "tax_rate_percent": 20})).await;
    let markdown =
        std::fs::read_to_string(result(&invoice)["file"]["path"].as_str().unwrap()).unwrap();
    assert!(markdown.contains("| total |  | 3600 |"), "{markdown}");
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(example_domains_do_real_work_through_their_built_ins);
