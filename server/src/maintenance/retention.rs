//! Data retention: finished tasks (completed, dead, cancelled), their
//! attempts and ended agent sessions are deleted once they are older than
//! the retention, in short batches so the queue never waits behind a purge.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::engine::plane::ControlPlane;

/// The pause between two batches of one purge, so claims and completions
/// get the writer in between.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// Purges what the retention no longer keeps, every purge interval, until
/// the plane shuts down. Does nothing when the retention is off.
pub async fn purge_expired(plane: Arc<ControlPlane>) {
    let stop = plane.shutdown.clone();
    let Some(retention) = plane.config.retention else {
        return;
    };
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut ticks =
        tokio::time::interval(plane.config.purge_interval.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let before = Utc::now() - retention;
        let mut purged = 0;
        loop {
            match plane
                .store
                .purge_finished(before, plane.config.purge_batch)
                .await
            {
                Ok(deleted) => {
                    purged += deleted;
                    if deleted < u64::from(plane.config.purge_batch) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "purging finished tasks failed; retrying next interval");
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(BATCH_PAUSE) => {}
                () = stop.cancelled() => return,
            }
        }
        if purged > 0 {
            tracing::info!(purged, %before, "purged finished tasks past their retention");
        }
    }
}
