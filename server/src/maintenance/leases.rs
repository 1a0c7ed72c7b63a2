//! Lease maintenance: this replica's live sessions keep their leases, silent
//! agents lose their sessions, and expired leases (of silent agents or dead
//! replicas) go back to the queue.

use chrono::Utc;

use crate::engine::plane::ControlPlane;
use crate::error::{Error, Result};

/// One round, run every heartbeat interval: ends the sessions whose agent
/// has been silent for a whole lease (a frozen or partitioned agent whose
/// TCP stream still looks open), extends the leases of every other live
/// session here in one statement, and reaps expired leases.
pub async fn maintain_leases(plane: &ControlPlane) -> Result<()> {
    let silence_limit = plane.config.lease_length();
    let now = Utc::now();
    let mut live = Vec::new();
    for session in plane.sessions.list() {
        let status = session.status();
        if now - status.last_seen_at > silence_limit {
            // Its stream may look open, but the agent stopped speaking:
            // end the session, which returns its tasks to the queue.
            tracing::warn!(session_id = %session.id, agent = %session.agent_name, "agent silent past its lease; closing its session");
            session.close(Error::DeadlineExceeded(
                "the agent was silent for longer than its lease: reconnect".into(),
            ));
        } else {
            live.push((session.id, status));
        }
    }
    if !live.is_empty() {
        plane
            .store
            .refresh_sessions(&live, now + silence_limit)
            .await?;
    }
    let reaped = plane.store.reap_expired_leases(Utc::now()).await?;
    if !reaped.is_empty() {
        tracing::warn!(tasks = reaped.len(), "expired leases returned to the queue");
        plane.metrics.leases_expired(reaped.len());
        plane.sessions.wake_all();
        plane.events.changed(reaped);
    }
    Ok(())
}
