//! Shutdown on SIGTERM or Ctrl-C, shared by the taskplane binaries.

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down gracefully"),
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received; shutting down gracefully"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Installs the `tracing` subscriber of the taskplane binaries: `RUST_LOG`
/// filters (default `info`); logs go to stderr, so stdout stays for what the
/// command prints for people.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
