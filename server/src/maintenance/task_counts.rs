//! The finished-task counts behind queue statistics and the metrics scrape.
//! The database counts each task as it finishes, per type, status and
//! second (see the `task_counts` migrations and `docs/architecture.md`);
//! the fold (run by [`crate::maintenance`]) merges the seconds that are no longer recent into one row per
//! type and status, so reading the counts stays a sum over a few hundred
//! rows at most, however long the history.

use chrono::Utc;

use crate::engine::plane::ControlPlane;
use crate::error::Result;

/// The window `GetQueueStats` reports recent completions and deaths over.
pub const RECENT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Folds the counts of seconds older than twice the recent window.
pub async fn fold(plane: &ControlPlane) -> Result<()> {
    let before = Utc::now() - RECENT_WINDOW * 2;
    plane.store.fold_task_counts(before).await
}
