//! Lease maintenance: this replica's live sessions keep their leases, silent
//! agents lose their sessions, and expired leases (of silent agents or dead
//! replicas) go back to the queue. Each round also refreshes which handler versions
//! the live agents of every replica serve (`engine::routing`), and drains
//! the sessions here that an operator drained through another replica.
//!
//! A stalled database is nobody's fault but its own. While it stalls, no
//! replica can extend its sessions' leases, so once it answers again every
//! lease may look expired. Reaping then would run the tasks of live,
//! heartbeating agents a second time. So a replica reaps only once its
//! store has answered every round promptly for a whole heartbeat interval:
//! by then every live replica has refreshed its own sessions' leases. And a
//! lease is reaped only one heartbeat interval after it expired, so that an
//! agent cut off from its replica has stopped before its task runs again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use crate::engine::plane::ControlPlane;
use crate::engine::sessions::ToAgent;
use crate::error::{Error, Result};
use crate::model::{AttemptResult, SessionStatus};

/// What lease maintenance remembers between rounds.
#[derive(Debug, Default)]
pub struct LeaseKeeper {
    /// Since when every round reached the store promptly; `None` after a
    /// round that failed or stalled.
    store_answering_since: Mutex<Option<Instant>>,
}

impl LeaseKeeper {
    /// One round, run every heartbeat interval: ends the sessions whose
    /// agent has been silent for a whole lease (a frozen or partitioned
    /// agent whose TCP stream still looks open), extends the leases of
    /// every other live session here in one statement, and reaps expired
    /// leases once reaping is fair (see the module's documentation).
    pub async fn round(&self, plane: &ControlPlane) -> Result<()> {
        let started = Instant::now();
        let answered = self.refresh_and_reap(plane, started).await;
        let interval = plane.config.heartbeat_interval;
        let mut since = self.store_answering_since.lock().expect("never poisoned");
        if answered.is_err() || started.elapsed() > interval {
            if since.take().is_some() {
                tracing::warn!(
                    "the database failed or stalled; expired leases are kept until it has \
                     answered promptly for a heartbeat interval"
                );
            }
        } else {
            since.get_or_insert(started);
        }
        answered
    }

    async fn refresh_and_reap(&self, plane: &ControlPlane, started: Instant) -> Result<()> {
        end_overdue_attempts(plane).await;
        let live = speaking_sessions(plane);
        if !live.is_empty() {
            plane
                .store
                .refresh_sessions(&live, plane.config.lease_length())
                .await?;
        }
        // Agents of other replicas come and go without a word to this one,
        // and another replica may have been asked to drain one here.
        plane.refresh_routing().await?;
        plane.drain_as_requested().await?;
        if !self.reaping_is_fair(plane.config.heartbeat_interval, started) {
            return Ok(());
        }
        // A lease is reaped one heartbeat interval after it expired: an
        // agent cut off from this replica (frozen, partitioned) stops its
        // handlers when the replica has been silent for a lease less one
        // interval, so they have stopped before another agent starts again.
        let cutoff = Utc::now()
            - chrono::Duration::from_std(plane.config.heartbeat_interval).unwrap_or_default();
        let reaped = plane.store.reap_expired_leases(cutoff).await?;
        if !reaped.is_empty() {
            tracing::warn!(tasks = reaped.len(), "expired leases returned to the queue");
            plane.metrics.leases_expired(reaped.len());
            plane.sessions.wake_all();
            plane.events.changed(reaped);
        }
        Ok(())
    }

    /// Whether the store has answered promptly for a whole `interval`
    /// before this round `started`.
    fn reaping_is_fair(&self, interval: Duration, started: Instant) -> bool {
        self.store_answering_since
            .lock()
            .expect("never poisoned")
            .is_some_and(|since| started.saturating_duration_since(since) >= interval)
    }
}

/// Ends the attempts this replica's agents hold past their timeout and the
/// grace (`QueueConfig::timeout_grace`) without answering: each fails as
/// timed out (retried or DEAD by its policy, as a failure the agent
/// reported would be), its slot is freed, and its agent is told to stop it.
/// A heartbeating agent cannot hold a task forever.
async fn end_overdue_attempts(plane: &ControlPlane) {
    let now = Instant::now();
    for session in plane.sessions.list() {
        for (task_id, attempt) in session.overdue(now) {
            tracing::warn!(%task_id, attempt, session_id = %session.id, "an attempt ran past its timeout unanswered; ending it");
            let reason = format!(
                "the attempt ran past its timeout and {:?} more without the agent reporting; the server ended it",
                plane.config.timeout_grace
            );
            let _ = session.outbound.try_send(ToAgent::Cancel {
                task_id,
                reason: reason.clone(),
            });
            plane
                .record_result(
                    session.clone(),
                    task_id,
                    attempt,
                    AttemptResult::failed(reason, true),
                    None,
                )
                .await;
        }
    }
}

/// This replica's sessions whose agents still speak, with their status.
/// Ends the others, silent for a whole lease: their streams may look open,
/// but closing them returns their tasks to the queue.
fn speaking_sessions(plane: &ControlPlane) -> Vec<(Uuid, SessionStatus)> {
    let silence_limit = plane.config.lease_length();
    let now = Utc::now();
    let mut speaking = Vec::new();
    for session in plane.sessions.list() {
        let status = session.status();
        if now - status.last_seen_at > silence_limit {
            tracing::warn!(session_id = %session.id, agent = %session.agent_name, "agent silent past its lease; closing its session");
            session.close(Error::DeadlineExceeded(
                "the agent was silent for longer than its lease: reconnect".into(),
            ));
        } else {
            speaking.push((session.id, status));
        }
    }
    speaking
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaping_waits_for_a_whole_interval_of_prompt_answers() {
        let interval = Duration::from_millis(100);
        let now = Instant::now();
        let fresh = LeaseKeeper::default();
        assert!(
            !fresh.reaping_is_fair(interval, now),
            "no round answered yet"
        );
        let recent = LeaseKeeper {
            store_answering_since: Mutex::new(Some(now)),
        };
        assert!(!recent.reaping_is_fair(interval, now + interval / 2));
        assert!(recent.reaping_is_fair(interval, now + interval));
    }
}
