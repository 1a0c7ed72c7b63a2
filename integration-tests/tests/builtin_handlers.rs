//! The example domains' task types, wired to the built-in handlers through
//! factories and injected services, run end to end through a real server:
//! logs are cleaned, history becomes a report, a database is backed up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use integration_tests::{Backend, TestAgent, TestServer, result_json, run_task};
use serde_json::json;
use taskplane_agent::RegistryConfig;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::v1::TaskStatus;

async fn example_domains_do_real_work_through_their_built_ins(backend: Backend) {
    let server = TestServer::start(&backend).await;
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

    let cleanup = run_task(
        &mut tasks,
        "log_cleanup",
        json!({"pattern": "*.log", "older_than_secs": 3600}),
    )
    .await;
    assert_eq!(
        result_json(&cleanup)["deleted"],
        json!(["app.1.log"]),
        "{cleanup:?}"
    );
    assert!(!logs.join("app.1.log").exists() && logs.join("app.log").exists());

    let history = json!({"format": "csv", "name": "cleanups", "history": {"task_type": "log_cleanup", "status": "completed"}});
    let report = run_task(&mut tasks, "report_generation", history).await;
    assert_eq!(report.status(), TaskStatus::Completed, "{report:?}");
    let csv = std::fs::read_to_string(result_json(&report)["path"].as_str().unwrap()).unwrap();
    assert!(
        csv.starts_with("id,status,attempts") && csv.contains(&cleanup.id),
        "{csv}"
    );

    let backup = run_task(&mut tasks, "database_backup", json!({})).await;
    assert_eq!(backup.status(), TaskStatus::Completed, "{backup:?}");
    assert!(std::path::Path::new(result_json(&backup)["path"].as_str().unwrap()).exists());

    let invoice = run_task(&mut tasks, "invoice_generation", json!({"items": [{"description": "plan", "quantity": 2, "unit_price_cents": 1500}], "tax_rate_percent": 20})).await;
    let markdown =
        std::fs::read_to_string(result_json(&invoice)["file"]["path"].as_str().unwrap()).unwrap();
    assert!(markdown.contains("| total |  | 3600 |"), "{markdown}");
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(example_domains_do_real_work_through_their_built_ins);
