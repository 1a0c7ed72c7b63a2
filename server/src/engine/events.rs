//! In-process notices that a task changed, for `WatchTask`.
//!
//! A notice carries only the task id; watchers re-read the task from the
//! store, so a missed notice costs a read, never a wrong state.

use tokio::sync::broadcast;
use uuid::Uuid;

/// Publishes and subscribes to task-change notices.
#[derive(Clone)]
pub struct TaskEvents {
    sender: broadcast::Sender<Uuid>,
}

impl Default for TaskEvents {
    fn default() -> Self {
        TaskEvents {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl TaskEvents {
    /// Announces that these tasks changed.
    pub fn changed(&self, ids: impl IntoIterator<Item = Uuid>) {
        for id in ids {
            // No receivers is normal: nobody is watching.
            let _ = self.sender.send(id);
        }
    }

    /// Subscribes to every later notice.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.sender.subscribe()
    }
}
