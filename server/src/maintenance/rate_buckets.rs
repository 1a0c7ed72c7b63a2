//! Pruning the rate buckets of keys that have not started a task for a
//! while (see [`crate::engine::admission`]): a bucket that has had time to
//! fill again is as good as none, so its row goes, and the table holds only
//! the keys that started within a fill time.

use chrono::Utc;

use crate::engine::plane::ControlPlane;
use crate::error::Result;

/// Deletes the full buckets of every type with a rate limit per key.
pub async fn prune(plane: &ControlPlane) -> Result<()> {
    let now = Utc::now();
    for (task_type, policy) in plane.flow.current().iter() {
        let (Some(rate), Some(_)) = (policy.rate_limit, &policy.rate_limit_key) else {
            continue;
        };
        let full_since = now - rate.fill_time();
        plane
            .store
            .prune_rate_buckets(task_type, full_since)
            .await?;
    }
    Ok(())
}
