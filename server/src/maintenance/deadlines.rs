//! Ending EXPIRED the tasks not started by their deadline.
//!
//! A task may carry `start_by`. Claims never lease one whose deadline has
//! passed (`claimable` in each backend's claim SQL), so it never runs; this
//! loop then gives it its terminal state, EXPIRED, within a poll interval
//! of the deadline, and tells those watching it. Every replica runs it; on
//! PostgreSQL the rows it ends are locked, so two replicas never end one
//! task twice.

use crate::engine::plane::ControlPlane;
use crate::error::Result;

/// The most tasks one transaction expires; a round repeats until fewer
/// are left.
const BATCH: u32 = 1_000;

/// Ends EXPIRED every PENDING task whose deadline to start by has passed.
pub async fn expire_overdue(plane: &ControlPlane) -> Result<()> {
    loop {
        let expired = plane
            .store
            .expire_overdue(chrono::Utc::now(), BATCH)
            .await?;
        if expired.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = expired.len(),
            "tasks expired: not started by their start_by"
        );
        plane
            .metrics
            .expired(expired.iter().map(|(_, task_type)| task_type.as_str()));
        plane.events.changed(expired.iter().map(|(id, _)| *id));
        if expired.len() < BATCH as usize {
            return Ok(());
        }
    }
}
