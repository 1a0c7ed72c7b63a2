//! W10 flow control: W1's work with a policy on its type — a limit of 4
//! running per key over 1,000 keys, then a rate limit set above what the
//! queue achieves — against the same work with none, run just before.
//! The policies are removed afterwards, so the workloads that follow run
//! as before.

use std::sync::Arc;

use serde_json::json;
use taskplane_client::NewTask;
use taskplane_proto::v1::SetTaskTypePolicyRequest;
use taskplane_proto::v1::registry_service_client::RegistryServiceClient;

use super::BenchArgs;
use super::harness::*;
use super::probe::{NOOP_TYPE, Probe};
use super::scale::{Figures, enqueue_and_run, insert_counts, insert_rates};

/// The keys W10 spreads its tasks over.
const KEYS: usize = 1_000;

/// W10: the rates of plain, per-key-limited and rate-limited W1 work.
pub(super) async fn w10(args: &BenchArgs, servers: &Servers) -> anyhow::Result<Figures> {
    let mut registry = RegistryServiceClient::new(servers.channel().await?);
    // Every run enqueues the same tasks, each naming its key, so the
    // policies are all that differs.
    let keyed_task = |i: usize| NewTask::new(NOOP_TYPE, json!({ "key": i % KEYS }));
    let plain = run(args, servers, "W10 no policy", keyed_task).await?;
    set(
        &mut registry,
        SetTaskTypePolicyRequest {
            concurrency_key: Some("payload.key".into()),
            max_running_per_key: Some(4),
            ..Default::default()
        },
    )
    .await?;
    let keyed = run(args, servers, "W10 4 per key", keyed_task).await?;
    set(
        &mut registry,
        SetTaskTypePolicyRequest {
            concurrency_key: Some(String::new()),
            max_running_per_key: Some(0),
            rate_limit: Some("1000000/second".into()),
            ..Default::default()
        },
    )
    .await?;
    let rated = run(args, servers, "W10 rate limit", keyed_task).await?;
    set(
        &mut registry,
        SetTaskTypePolicyRequest {
            rate_limit: Some(String::new()),
            ..Default::default()
        },
    )
    .await?;
    let mut figures = Figures::new();
    figures.insert("keys".into(), json!(KEYS));
    figures.insert("slots_per_agent".into(), json!(args.concurrency));
    insert_rates(&mut figures, keyed.0, "no_policy", plain.0);
    figures.insert("per_key_limit_per_sec".into(), json!(keyed.0.round()));
    figures.insert("rate_limited_per_sec".into(), json!(rated.0.round()));
    figures.insert(
        "rate_limited_fraction_of_no_policy".into(),
        json!((rated.0 / plain.0 * 100.0).round() / 100.0),
    );
    insert_counts(&mut figures, &rated.1, args.tasks);
    Ok(figures)
}

/// Enqueues and runs `args.tasks` tasks on one agent of the default slots;
/// returns the rate and what the agent saw.
async fn run(
    args: &BenchArgs,
    servers: &Servers,
    label: &str,
    request_of: impl Fn(usize) -> NewTask,
) -> anyhow::Result<(f64, Arc<Probe>)> {
    let probe = Arc::new(Probe::default());
    let agents = Agents::start(servers, 1, args.concurrency, &probe).await?;
    let rate = enqueue_and_run(args, servers, &probe, request_of, label).await?;
    agents.stop().await;
    Ok((rate, probe))
}

/// Sets the no-op type's policy.
async fn set(
    registry: &mut RegistryServiceClient<taskplane_common::AuthChannel>,
    request: SetTaskTypePolicyRequest,
) -> anyhow::Result<()> {
    registry
        .set_task_type_policy(SetTaskTypePolicyRequest {
            task_type: NOOP_TYPE.into(),
            ..request
        })
        .await?;
    Ok(())
}
