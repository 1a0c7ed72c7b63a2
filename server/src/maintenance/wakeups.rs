//! Wake-ups from other replicas: work enqueued or re-queued on one replica
//! wakes the idle agents of every other at once (PostgreSQL's
//! `LISTEN/NOTIFY`, see `store::postgres`).

use std::sync::Arc;

use futures::StreamExt;

use crate::engine::flow::policy_changed;
use crate::engine::plane::ControlPlane;

/// Wakes this replica's agents when another replica announces ready work of
/// their types, until shutdown. Without such announcements (SQLite), returns
/// at once.
pub async fn relay_ready_notifications(plane: Arc<ControlPlane>) {
    let mut notifications = match plane.store.ready_notifications().await {
        Ok(Some(notifications)) => notifications,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, "cannot listen for other replicas' work; relying on the poll interval");
            return;
        }
    };
    loop {
        tokio::select! {
            notification = notifications.next() => match notification {
                Some(notice) => match policy_changed(&notice) {
                    Some(task_type) => plane.refresh_flow(&[task_type]).await,
                    None => plane.sessions.wake_for([notice.as_str()]),
                },
                None => return,
            },
            () = plane.shutdown.cancelled() => return,
        }
    }
}
