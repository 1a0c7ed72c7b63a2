//! Handing new tasks to idle agents as they are enqueued.
//!
//! When a new task is ready at once and a session serving its type is caught
//! up (its last claim found nothing of its types waiting) with a free slot,
//! the enqueue stores the task already leased to that session, its first
//! attempt started, and the assignment goes out as soon as the insert
//! commits. That takes the wake-up, the dispatcher's turn and the claim —
//! one more statement, a round trip on PostgreSQL — off the path from
//! enqueue to handler. Tasks no session can take at once are stored PENDING
//! and claimed as before.
//!
//! A slot is reserved before the insert, so the session's dispatcher does not
//! fill it meanwhile. A reservation whose task was not stored (the batch
//! failed, or its idempotency key was taken) is given back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::convert::assignment;
use crate::model::{Enqueued, Lease, Task, TaskStatus};
use crate::plane::ControlPlane;
use crate::sessions::Session;

/// The slots reserved for one enqueue's hand-offs.
pub struct HandOffs<'a> {
    plane: &'a ControlPlane,
    reserved: Mutex<Vec<Reservation>>,
}

struct Reservation {
    task_id: Uuid,
    session: Arc<Session>,
    expires_at: DateTime<Utc>,
}

impl<'a> HandOffs<'a> {
    /// No reservations yet, on this replica's sessions.
    pub fn new(plane: &'a ControlPlane) -> Self {
        HandOffs {
            plane,
            reserved: Mutex::new(Vec::new()),
        }
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, Vec<Reservation>> {
        self.reserved
            .lock()
            .expect("hand-off reservations lock poisoned")
    }

    /// The lease to store `task` under: a slot reserved on the caught-up
    /// session serving its type with the most free slots. `None` when no
    /// session can take it at once.
    pub fn choose(&self, task: &Task) -> Option<Lease> {
        let session = self.plane.sessions.reserve_for(&task.task_type)?;
        let lease_length = chrono::Duration::from_std(self.plane.config.lease_duration)
            .unwrap_or(chrono::Duration::MAX);
        let lease = Lease {
            session_id: session.id,
            agent_id: session.agent_id,
            expires_at: Utc::now() + lease_length,
        };
        self.reserved().push(Reservation {
            task_id: task.id,
            session,
            expires_at: lease.expires_at,
        });
        Some(lease)
    }

    /// Sends the handed-off tasks among `enqueued`, now committed, to their
    /// sessions, and gives back the slots of tasks that were not stored.
    pub async fn deliver(self, enqueued: &[Enqueued]) {
        let reserved = std::mem::take(&mut *self.reserved());
        if reserved.is_empty() {
            return;
        }
        let handed_off: HashMap<Uuid, &Task> = enqueued
            .iter()
            .filter(|e| e.created && e.task.status == TaskStatus::Running)
            .map(|e| (e.task.id, &e.task))
            .collect();
        let now = Utc::now();
        let mut sessions: Vec<Arc<Session>> = Vec::new();
        for reservation in reserved {
            let session = reservation.session;
            let Some(task) = handed_off.get(&reservation.task_id) else {
                session.unreserve();
                continue;
            };
            session.place(task.id, task.attempts);
            self.plane.metrics.assigned(task, now);
            tracing::debug!(task_id = %task.id, session_id = %session.id, "handed off at enqueue");
            // A closed stream is dealt with below, as its session closes.
            let _ = session
                .outbound
                .send(Ok(assignment(task, reservation.expires_at)))
                .await;
            if !sessions.iter().any(|s| Arc::ptr_eq(s, &session)) {
                sessions.push(session);
            }
        }
        for session in sessions {
            if session.closed.is_cancelled() {
                // The stream closed while the insert committed, perhaps after
                // the session returned its leases: return these too.
                if let Err(error) = self.plane.release(&session).await {
                    tracing::error!(session_id = %session.id, %error, "could not release tasks handed to a closed session; lease expiry will");
                }
            }
        }
    }
}

impl Drop for HandOffs<'_> {
    /// Gives back the slots of an enqueue that failed before delivering.
    fn drop(&mut self) {
        for reservation in self.reserved().drain(..) {
            reservation.session.unreserve();
        }
    }
}
