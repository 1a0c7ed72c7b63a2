//! `taskplane-agent`: serves the example domains enabled by
//! `TASK_ENABLED_DOMAINS` against the control plane at `TASKPLANE_SERVER`,
//! with the token in `TASKPLANE_TOKEN` and TLS files in `TASKPLANE_TLS_CA`,
//! `TASKPLANE_TLS_CERT` and `TASKPLANE_TLS_KEY`; Prometheus metrics on
//! `TASKPLANE_METRICS_LISTEN` (e.g. `0.0.0.0:9091`) when set.

use std::sync::Arc;

use anyhow::Context;
use taskplane_agent::metrics_endpoint::{Render, encode, serve_metrics};
use taskplane_agent::runtime::DEFAULT_SERVER;
use taskplane_agent::signal::{init_logging, shutdown_signal};
use taskplane_agent::{
    Agent, AppServices, ConnectOptions, RegistryConfig, setup_registry_with_config,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args()
        .skip(1)
        .any(|arg| arg == "--help" || arg == "-h")
    {
        print!("{}", taskplane_agent::environment::help());
        return Ok(());
    }
    init_logging().map_err(anyhow::Error::msg)?;
    let server = std::env::var("TASKPLANE_SERVER").unwrap_or_else(|_| DEFAULT_SERVER.to_owned());
    let name =
        std::env::var("TASKPLANE_AGENT_NAME").unwrap_or_else(|_| "taskplane-agent".to_owned());
    let max_concurrency = match std::env::var("TASKPLANE_MAX_CONCURRENCY") {
        Ok(value) => value.parse().with_context(|| {
            format!("TASKPLANE_MAX_CONCURRENCY='{value}' is not a whole number")
        })?,
        Err(_) => 16,
    };
    let config = RegistryConfig::from_env()?;
    let (registry, unknown) =
        setup_registry_with_config(&config, Arc::new(AppServices::from_env()));
    config.check_unknown_domains(&unknown)?;
    tracing::info!(%server, domains = ?registry.list_domains(), task_types = registry.handler_count(), "starting agent");
    let agent = Agent::builder()
        .registry(registry)
        .server(&server)
        .name(name)
        .max_concurrency(max_concurrency)
        .connect_options(ConnectOptions::from_env())
        .build()?;
    if let Ok(address) = std::env::var("TASKPLANE_METRICS_LISTEN") {
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("TASKPLANE_METRICS_LISTEN={address}: cannot listen there"))?;
        tracing::info!(%address, "metrics at /metrics");
        let registry = std::sync::Arc::new(agent.metrics().registry());
        let render: Render = Arc::new(move || {
            let text = encode(&registry);
            Box::pin(async move { text })
        });
        tokio::spawn(serve_metrics(listener, render, CancellationToken::new()));
    }
    agent.run(shutdown_signal()).await?;
    Ok(())
}
