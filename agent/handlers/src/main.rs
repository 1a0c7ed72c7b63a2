//! `taskplane-agent`: serves the example domains enabled by
//! `TASK_ENABLED_DOMAINS` against the control plane at `TASKPLANE_SERVER`,
//! configured by the environment ([`taskplane_handlers::environment`];
//! `--help` lists every variable).

use std::sync::Arc;

use anyhow::Context;
use taskplane_agent::Agent;
use taskplane_common::logging::init_logging;
use taskplane_common::metrics_endpoint::{Render, encode, serve_metrics};
use taskplane_common::shutdown::shutdown_signal;
use taskplane_handlers::environment::{AgentSettings, help};
use taskplane_handlers::setup_registry_with_config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args()
        .skip(1)
        .any(|arg| arg == "--help" || arg == "-h")
    {
        print!("{}", help());
        return Ok(());
    }
    let settings = AgentSettings::from_env()?;
    init_logging(settings.log_format, "info");
    let (registry, unknown) =
        setup_registry_with_config(&settings.registry, settings.services.clone());
    settings.registry.check_unknown_domains(&unknown)?;
    settings.check_served(&registry)?;
    let server = settings.servers.clone();
    tracing::info!(%server, domains = ?registry.list_domains(), task_types = registry.handler_count(), "starting agent");
    let agent = settings
        .configure(Agent::builder().registry(registry).server(&server))
        .build()?;
    if let Some(address) = settings.metrics_listen {
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("TASKPLANE_METRICS_LISTEN={address}: cannot listen there"))?;
        tracing::info!(%address, "metrics at /metrics");
        let registry = Arc::new(agent.metrics().registry());
        let render: Render = Arc::new(move || {
            let text = encode(&registry);
            Box::pin(async move { text })
        });
        tokio::spawn(serve_metrics(listener, render, CancellationToken::new()));
    }
    agent.run(shutdown_signal()).await?;
    Ok(())
}
