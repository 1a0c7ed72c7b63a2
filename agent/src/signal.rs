//! Shutdown on SIGTERM or Ctrl-C, and logging set-up, shared by the
//! taskplane binaries.

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
/// filters (default `info`, see [`init_logging_at`]); `TASKPLANE_LOG_FORMAT=json` writes one JSON
/// object per line (with the current span's fields, such as `task_id` and
/// `trace_id`), `text` (the default) lines for people. Logs go to stderr,
/// so stdout stays for what the command prints for people.
pub fn init_logging() -> Result<(), String> {
    init_logging_at("info")
}

/// Like [`init_logging`], with `default_filter` where `RUST_LOG` is unset
/// (a benchmark wants warnings and errors only, say).
pub fn init_logging_at(default_filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("TASKPLANE_LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "text") => builder.init(),
        Ok("json") => builder.json().with_current_span(true).init(),
        Ok(other) => {
            return Err(format!(
                "TASKPLANE_LOG_FORMAT='{other}' is not a log format: use text or json"
            ));
        }
    }
    Ok(())
}
