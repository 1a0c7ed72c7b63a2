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

use crate::engine::dispatch::{answer_within, send_assignment};
use crate::engine::plane::ControlPlane;
use crate::engine::routing;
use crate::engine::sessions::Session;
use crate::model::{Enqueued, Lease, Task, TaskStatus};
use crate::store::Leases;

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
    /// session can take it at once, for a task that names a handler
    /// version or requires labels (claims route those, see
    /// [`crate::engine::routing`]), and for a type under a flow-control
    /// policy (claims count those against its limits, see
    /// [`crate::engine::flow`]).
    pub fn choose(&self, task: &Task) -> Option<Lease> {
        if !routing::unconstrained(task) || self.plane.flow.limits(&task.task_type) {
            return None;
        }
        let session = self.plane.sessions.reserve_for(&task.task_type)?;
        let lease = Lease {
            session_id: session.id,
            agent_id: session.agent_id,
            expires_at: Utc::now() + self.plane.config.lease_length(),
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
                session.unreserve(1);
                continue;
            };
            session.place(task.id, task.attempts, answer_within(self.plane, task));
            // A closed stream is dealt with below, as its session closes.
            let task = Task::clone(task);
            send_assignment(self.plane, &session, task, reservation.expires_at, now).await;
            if !sessions.iter().any(|s| Arc::ptr_eq(s, &session)) {
                sessions.push(session);
            }
        }
        for session in sessions {
            if session.closed.is_cancelled() {
                // The stream closed while the insert committed, perhaps after
                // the session returned its leases: return these too.
                if let Err(error) = self.plane.release(&session, Leases::STREAM_CLOSED).await {
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
            reservation.session.unreserve(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::QueueConfig;
    use crate::engine::sessions::NewSession;
    use crate::engine::sessions::ToAgent;
    use crate::model::NewTask;
    use crate::store::Store;
    use crate::store::suite::{new_task, spec, sqlite_store};

    /// A plane on a fresh SQLite file, its completer running, with type `a`
    /// registered and one caught-up session of two slots serving it.
    async fn plane_with_idle_session() -> (
        tempfile::TempDir,
        Arc<ControlPlane>,
        Arc<Session>,
        tokio::sync::mpsc::Receiver<ToAgent>,
    ) {
        let (dir, _url, store) = sqlite_store("t.db").await;
        store.register_task_types(&[spec("a", "d")]).await.unwrap();
        let plane = Arc::new(ControlPlane::new(
            Arc::new(store),
            QueueConfig::default(),
            None,
        ));
        tokio::spawn(crate::engine::completer::run_completer(
            plane.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
        let (outbound, receiver) = tokio::sync::mpsc::channel(8);
        let session = Arc::new(Session::new(NewSession {
            agent_id: Uuid::now_v7(),
            agent_name: "test".into(),
            domains: vec!["d".into()],
            task_types: vec!["a".into()],
            labels: BTreeMap::new(),
            feature_flags: BTreeMap::new(),
            handler_versions: BTreeMap::new(),
            max_concurrency: 2,
            max_prefetch: 0,
            claim_time: plane.claim_time.clone(),
            outbound,
        }));
        session.caught_up(session.work_announced());
        plane.sessions.insert(session.clone());
        (dir, plane, session, receiver)
    }

    #[tokio::test]
    async fn slots_come_back_when_the_enqueue_fails_or_the_key_is_taken() {
        let (_dir, plane, session, mut receiver) = plane_with_idle_session().await;
        // The batch names an unregistered type: nothing is stored, and the
        // slot reserved for its first task is given back.
        let error = plane
            .store_tasks(vec![new_task("a"), new_task("unheard_of")])
            .await
            .unwrap_err();
        assert!(error.to_string().contains("unheard_of"), "{error}");
        assert_eq!(session.free_slots(), 2);

        let keyed = || NewTask {
            idempotency_key: Some("k".into()),
            ..new_task("a")
        };
        let first = plane.store_tasks(vec![keyed()]).await.unwrap().remove(0);
        assert_eq!(first.task.status, TaskStatus::Running);
        assert!(session.holds(first.task.id));
        assert!(
            matches!(receiver.try_recv().unwrap(), ToAgent::Assign { .. }),
            "the assignment went out"
        );
        // The same key again: the existing task answers and the second
        // reservation is given back.
        let second = plane.store_tasks(vec![keyed()]).await.unwrap().remove(0);
        assert!(!second.created);
        assert_eq!(session.free_slots(), 1);
        assert!(receiver.try_recv().is_err(), "no second assignment");
    }

    #[tokio::test]
    async fn a_session_that_closed_while_the_insert_committed_gets_its_tasks_released() {
        let (_dir, plane, session, _receiver) = plane_with_idle_session().await;
        // The session's own release runs first and finds nothing; its stream
        // closes just after the slot is reserved, before the insert commits.
        plane
            .release(&session, Leases::STREAM_CLOSED)
            .await
            .unwrap();
        let hand_offs = HandOffs::new(&plane);
        let hand_off = |task: &Task| {
            let lease = hand_offs.choose(task);
            session.closed.cancel();
            lease
        };
        let enqueued = plane
            .store
            .enqueue_handing_off(vec![new_task("a")], &hand_off)
            .await
            .unwrap();
        let id = enqueued[0].task.id;
        assert_eq!(enqueued[0].task.status, TaskStatus::Running);

        hand_offs.deliver(&enqueued).await;
        let task = plane.store.get_task(id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Pending, "back in the queue");
        let attempts = plane.store.list_attempts(id).await.unwrap();
        assert_eq!(attempts[0].outcome.as_deref(), Some("lost"));
        assert!(!session.reserve(), "a closed session takes no more");
    }
}
