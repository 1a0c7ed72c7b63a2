//! The finished-task counts behind queue statistics and the metrics scrape.
//! The database counts each task as it finishes, per type, status and
//! second (see the `task_counts` migrations and `docs/architecture.md`);
//! this loop folds the seconds that are no longer recent into one row per
//! type and status, so reading the counts stays a sum over a few hundred
//! rows at most, however long the history.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::plane::ControlPlane;

/// The window `GetQueueStats` reports recent completions and deaths over.
pub const RECENT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// How often the counts are folded.
const FOLD_INTERVAL: Duration = Duration::from_secs(30);

/// Folds the counts of seconds older than twice the recent window, every
/// fold interval, until `stop`.
pub async fn fold_periodically(plane: Arc<ControlPlane>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLD_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
        let before = Utc::now() - RECENT_WINDOW * 2;
        if let Err(error) = plane.store.fold_task_counts(before).await {
            tracing::warn!(%error, "folding the finished-task counts failed; the next fold retries");
        }
    }
}
