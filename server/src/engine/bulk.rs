//! Bulk operations: retry, cancel or purge every task a selector matches,
//! a page of ids at a time, each page changed in its own transaction, so a
//! million-task retry never holds a long transaction or a long lock. A dry
//! run pages through the same selection and only counts.

use crate::engine::plane::ControlPlane;
use crate::error::Result;
use crate::model::TaskSelector;

/// The most tasks one transaction of a bulk operation changes.
pub const BATCH: u32 = 500;

/// What a bulk operation does to the tasks it selects.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkAction {
    /// Back to the queue with fresh attempts (DEAD or CANCELLED tasks).
    Retry,
    /// Cancelled with this reason (PENDING or RUNNING tasks).
    Cancel(String),
    /// Deleted with their attempts (finished tasks).
    Purge,
}

/// What a bulk operation found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// The tasks the selector matched.
    pub matched: u64,
    /// Those changed; fewer when some changed state meanwhile.
    pub changed: u64,
    /// The transactions it took.
    pub batches: u32,
}

impl ControlPlane {
    /// Applies `action` to every task `selector` matches, [`BATCH`] at a
    /// time; with `dry_run`, only counts them.
    pub async fn bulk(
        &self,
        action: &BulkAction,
        selector: &TaskSelector,
        dry_run: bool,
    ) -> Result<BulkOutcome> {
        let mut outcome = BulkOutcome::default();
        let mut after = None;
        loop {
            let ids = self.store.select_task_ids(selector, after, BATCH).await?;
            let Some(last) = ids.last() else {
                return Ok(outcome);
            };
            after = Some(*last);
            outcome.matched += ids.len() as u64;
            if dry_run {
                continue;
            }
            outcome.batches += 1;
            let changed = match action {
                BulkAction::Retry => {
                    let retried = self.store.retry_many(&ids).await?;
                    self.sessions.wake_for([selector.task_type.as_str()]);
                    self.events.changed(retried.iter().map(|task| task.id));
                    retried.len() as u64
                }
                BulkAction::Cancel(reason) => {
                    let cancelled = self.store.cancel_many(&ids, reason).await?;
                    for (before, _) in &cancelled {
                        self.stop_attempt(before, reason);
                    }
                    self.events
                        .changed(cancelled.iter().map(|(task, _)| task.id));
                    cancelled.len() as u64
                }
                BulkAction::Purge => self.store.purge_many(&ids).await?,
            };
            outcome.changed += changed;
        }
    }
}
