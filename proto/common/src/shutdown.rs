//! Graceful shutdown of the taskplane binaries on SIGTERM or Ctrl-C, and a
//! way out when the graceful path hangs.

/// The exit code of a process whose second signal forced it to stop
/// (128 + SIGINT, as shells report an interrupted command).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C). From then
/// on a second signal ends the process at once with [`FORCED_EXIT_CODE`], so
/// an operator is never stuck behind a drain that does not finish.
pub async fn shutdown_signal() {
    next_signal().await;
    tokio::spawn(async {
        next_signal().await;
        eprintln!("second signal received: exiting without finishing the graceful shutdown");
        std::process::exit(FORCED_EXIT_CODE);
    });
}

/// The next SIGTERM or SIGINT.
async fn next_signal() {
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
