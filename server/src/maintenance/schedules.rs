//! The scheduler's loop: fires due schedules (`engine::scheduler`), then
//! sleeps until the earliest next fire time, at most [`MAX_SLEEP`], or
//! until a schedule changes on this replica. The cap bounds how late a
//! schedule created on another replica is noticed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::engine::plane::ControlPlane;
use crate::engine::scheduler::{NextRound, fire_due};

/// The longest the loop sleeps between rounds.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Fires due schedules until the plane shuts down.
pub async fn fire_schedules(plane: Arc<ControlPlane>) {
    loop {
        let sleep = match fire_due(&plane).await {
            Ok(NextRound::AtOnce) => Duration::ZERO,
            Ok(NextRound::At(Some(next))) => (next - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            Ok(NextRound::At(None)) => MAX_SLEEP,
            Err(error) => {
                plane.storage_faults.note(&error);
                tracing::warn!(%error, "firing schedules failed; the next round retries");
                MAX_SLEEP
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = plane.schedules_changed.notified() => {}
            () = plane.shutdown.cancelled() => return,
        }
    }
}
