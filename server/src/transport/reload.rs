//! Re-reading configuration files while serving: on SIGHUP, and whenever a
//! watched file's modification time or size changes (checked every few
//! seconds, so replaced Kubernetes secrets are picked up without a signal).
//! A file that fails to load leaves the previous settings in force.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// Something that re-reads its files.
pub struct Reloadable {
    /// What it is, for the log.
    pub name: &'static str,
    /// The files it reads.
    pub paths: Vec<PathBuf>,
    /// Re-reads them.
    pub reload: Box<dyn Fn() -> crate::error::Result<()> + Send + Sync>,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reloads each item on SIGHUP and when its files change, until `stop`.
pub async fn watch_and_reload(items: Vec<Reloadable>, interval: Duration, stop: CancellationToken) {
    if items.is_empty() {
        return;
    }
    let mut stamps: Vec<Vec<Stamp>> = items
        .iter()
        .map(|item| item.paths.iter().map(stamp).collect())
        .collect();
    let mut hangup = hangup_signals();
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
    loop {
        let forced = tokio::select! {
            _ = ticks.tick() => false,
            Some(()) = next_hangup(&mut hangup) => true,
            () = stop.cancelled() => return,
        };
        for (item, stamps) in items.iter().zip(stamps.iter_mut()) {
            let now: Vec<Stamp> = item.paths.iter().map(stamp).collect();
            if forced || now != *stamps {
                *stamps = now;
                if let Err(error) = (item.reload)() {
                    tracing::error!(what = item.name, %error, "reload failed; the previous settings stay in force");
                }
            }
        }
    }
}

#[cfg(unix)]
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(unix)]
async fn next_hangup(signals: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signals {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
fn hangup_signals() -> Option<()> {
    None
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}
