//! The billing domain through a real server, a real agent and the
//! test-mode gateway over HTTP: each payment charges once per task, a
//! renewal charges its plan's price once per period and returns the next,
//! and a failed payment is retried under its original key: a retryable
//! decline passes on a later attempt, a permanent one ends DEAD with the
//! gateway's reason.

use std::sync::Arc;

use integration_tests::{Backend, TestAgent, TestServer, attempts_of, result_json, run_task};
use serde_json::{Value, json};
use taskplane_agent::RegistryConfig;
use taskplane_handlers::domains::billing::test_gateway::TestModeGateway;
use taskplane_handlers::{AppServices, setup_registry_with_config};
use taskplane_proto::v1::TaskStatus;

/// The charges the gateway recorded: (key, charge).
fn ledger(dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut charges = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            charges.push((
                record["key"].as_str().unwrap().to_owned(),
                record["charge"].clone(),
            ));
        }
    }
    charges
}

async fn billing_charges_once_per_task_period_and_key(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let data = tempfile::tempdir().unwrap();
    let payments = data.path().join("payments");
    let gateway = TestModeGateway::open(&payments).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let services = AppServices {
        payment_gateway_url: Some(gateway.serve_alone(listener).unwrap()),
        ..AppServices::new(data.path().join("agent"))
    };
    let config = RegistryConfig::from_lookup(|name| {
        (name == "TASK_ENABLED_DOMAINS").then(|| "billing".to_owned())
    })
    .unwrap();
    let (registry, _) = setup_registry_with_config(&config, Arc::new(services));
    let agent = TestAgent::start(&server, "billing", registry).await;
    let mut tasks = server.tasks().await;

    let paid = run_task(
        &mut tasks,
        "payment_processing",
        json!({"customer_id": "cus_42", "amount_cents": 1999, "currency": "EUR"}),
    )
    .await;
    assert_eq!(paid.status(), TaskStatus::Completed, "{paid:?}");
    let charge = result_json(&paid);
    assert_eq!(charge["amount_cents"], 1999);
    assert_eq!(charge["status"], "succeeded");
    let charges = ledger(&payments);
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].0, paid.id, "the task id is the idempotency key");
    assert_eq!(charges[0].1["id"], charge["charge_id"]);

    let renewal = json!({
        "subscription_id": "sub_7", "customer_id": "cus_42", "plan": "pro",
        "current_period_end": "2026-12-01T00:00:00Z",
    });
    let renewed = run_task(&mut tasks, "subscription_renewal", renewal.clone()).await;
    assert_eq!(renewed.status(), TaskStatus::Completed, "{renewed:?}");
    let renewed = result_json(&renewed);
    assert_eq!(renewed["amount_cents"], 2900, "the pro plan's price");
    assert_eq!(renewed["next_period_end"], "2027-01-01T00:00:00+00:00");
    // Another task renewing the same period gets the same charge.
    let again = result_json(&run_task(&mut tasks, "subscription_renewal", renewal).await);
    assert_eq!(again["charge_id"], renewed["charge_id"]);
    assert_eq!(ledger(&payments).len(), 2, "one charge per period");

    // A retryable decline: the first attempt fails, the retry charges.
    let short = run_task(
        &mut tasks,
        "failed_payment_retry",
        json!({"original_key": "order-9", "customer_id": "cus_9_insufficient", "amount_cents": 500, "currency": "EUR"}),
    )
    .await;
    assert_eq!(short.status(), TaskStatus::Completed, "{short:?}");
    let attempts = attempts_of(&mut tasks, &short.id).await;
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0].error.contains("insufficient_funds"),
        "{attempts:?}"
    );
    // Retrying a payment that went through answers the same charge.
    let twice = run_task(
        &mut tasks,
        "failed_payment_retry",
        json!({"original_key": paid.id, "customer_id": "cus_42", "amount_cents": 1999, "currency": "EUR"}),
    )
    .await;
    assert_eq!(result_json(&twice)["charge_id"], charge["charge_id"]);
    assert_eq!(
        ledger(&payments).len(),
        3,
        "no second charge for a retried key"
    );

    let declined = run_task(
        &mut tasks,
        "failed_payment_retry",
        json!({"original_key": "order-10", "customer_id": "cus_10_declined", "amount_cents": 500, "currency": "EUR"}),
    )
    .await;
    assert_eq!(declined.status(), TaskStatus::Dead);
    assert_eq!(declined.attempts, 1, "a permanent decline is not retried");
    assert!(
        declined
            .last_error
            .contains("card_declined: the card was declined"),
        "{}",
        declined.last_error
    );
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(billing_charges_once_per_task_period_and_key);
