//! `docs/operations.md`'s schedule examples cannot rot: every command
//! between its `schedules` markers runs, in order, against a live server
//! with the example domains' agent (the real `taskplane` binary for the CLI
//! lines, grpcurl for the rest), and the outcomes they promise hold.

use std::sync::Arc;

use integration_tests::{
    Backend, TestAgent, TestServer, documented_commands, grpcurl_available, run_documented,
    wait_status,
};
use taskplane_agent::RegistryConfig;
use taskplane_handlers::egress::{Egress, LOOPBACK};
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::v1::{ListSchedulesRequest, ListTasksRequest, TaskStatus};

async fn the_schedule_examples_work_against_a_live_server(backend: Backend) {
    let commands = documented_commands("docs/operations.md", "schedules");
    assert_eq!(commands.len(), 12, "the examples changed: update this test");
    let with_grpcurl = grpcurl_available();
    if !with_grpcurl {
        println!("grpcurl is not installed: running the CLI examples only (.ci/run installs it)");
    }
    let server = TestServer::start(&backend).await;
    let data = tempfile::tempdir().unwrap();
    let services = AppServices {
        // As in `taskplane dev`: the health check may reach loopback.
        egress: Egress::trusting(LOOPBACK),
        ..AppServices::new(data.path())
    };
    let config = RegistryConfig::from_lookup(|_| None).unwrap();
    let (registry, _) = setup_registry_with_config(&config, Arc::new(services));
    let agent = TestAgent::start(&server, "dev-agent", registry).await;
    let cli = env!("CARGO_BIN_EXE_taskplane-under-test");

    let mut outputs = Vec::new();
    for command in &commands {
        if command.starts_with("grpcurl ") && !with_grpcurl {
            continue;
        }
        let output = run_documented(command, cli, server.address).await;
        outputs.push((command.clone(), output));
    }

    // `get --from` shows Berlin's move to summer time on 29 March 2026:
    // 02:00 falls in the gap and fires at 03:00 CEST.
    let (_, shown) = outputs
        .iter()
        .find(|(command, _)| command.contains("--from"))
        .unwrap();
    for fire_time in [
        "2026-03-28T01:00:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:00:00Z",
    ] {
        assert!(shown.contains(fire_time), "{shown}");
    }

    let mut schedules = server.schedules().await;
    let listed: Vec<String> = schedules
        .list_schedules(ListSchedulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .schedules
        .iter()
        .map(|s| s.spec.as_ref().unwrap().name.clone())
        .collect();
    assert!(
        listed.contains(&"nightly-invoices".to_owned()),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&"report-every-30s".to_owned()),
        "{listed:?}"
    );
    // The example domain's own schedules are listed too.
    assert!(
        listed.contains(&"nightly-database-backup".to_owned()),
        "{listed:?}"
    );

    // Each trigger's task runs to COMPLETED.
    let mut triggered = vec![("invoice_generation", "nightly-invoices")];
    if with_grpcurl {
        assert!(listed.contains(&"hourly-probe".to_owned()), "{listed:?}");
        triggered.push(("health_check", "hourly-probe"));
    }
    let client = server.tasks().await;
    for (task_type, schedule) in triggered {
        let tasks = client
            .clone()
            .list_tasks(ListTasksRequest {
                task_type: task_type.to_owned(),
                ..ListTasksRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        let task = tasks
            .iter()
            .find(|t| t.metadata.get("taskplane.schedule").map(String::as_str) == Some(schedule))
            .unwrap_or_else(|| panic!("no task of {schedule}: {tasks:?}"));
        wait_status(&client, &task.id, TaskStatus::Completed).await;
    }
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(the_schedule_examples_work_against_a_live_server,);
