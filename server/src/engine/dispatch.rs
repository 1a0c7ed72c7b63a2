//! Pushing work to agents.
//!
//! Each session has one dispatcher: it claims ready tasks of the session's
//! types, as many as the agent has free slots and room in its prefetch
//! window (up to a batch), and sends them as assignments. It sleeps until
//! woken by new work, a freed slot, more credit, or a slow handler's slot
//! coming due a claim before its end (see [`crate::engine::prefetch`]). A claim that comes back
//! short leaves the session caught up, so new tasks can be handed to it at
//! enqueue (see [`crate::engine::handoff`]), and a caught-up session makes
//! no claim at all until work of its types is announced: by an enqueue,
//! another replica, a lease that expired, or `maintenance::due`, which
//! looks for delayed tasks and retries come due once per poll interval for
//! the whole replica. A session that is not caught up (its last claim
//! failed, say) claims again each poll interval.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::engine::plane::ControlPlane;
use crate::engine::sessions::{Session, ToAgent};
use crate::model::{Claimant, Lease, Task};
use taskplane_proto::trace::TRACEPARENT;

/// How long a busy session lets freed slots accumulate before claiming.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(1);

/// Feeds one session until it closes.
pub async fn dispatch_session(plane: Arc<ControlPlane>, session: Arc<Session>) {
    let lease_length = plane.config.lease_length();
    // Below this many free slots, a busy session waits a moment for more to
    // free up, so claims come in batches rather than one task at a time.
    let low_watermark = (session.status().slots / 4).clamp(1, plane.config.max_claim_batch);
    // A caught-up session woken only by a freed slot or more credit has
    // nothing to claim: no work of its types was announced since its last
    // claim came back short. The first claim is made regardless.
    let mut claim_anyway = true;
    loop {
        if claim_anyway || !session.is_caught_up() {
            match claim_and_assign(&plane, &session, low_watermark, lease_length).await {
                Claimed::Filled => continue,
                Claimed::Short => {}
                Claimed::StreamGone => return,
            }
        }
        let retry_after = if session.is_caught_up() {
            None
        } else {
            Some(plane.config.poll_interval)
        };
        claim_anyway = tokio::select! {
            () = session.wake.notified() => false,
            () = sleep_for(retry_after) => true,
            // A slow handler's slot, claimed for a claim before it ends.
            () = sleep_until(session.next_reclaim()) => false,
            () = session.closed.cancelled() => return,
        };
    }
}

/// Sleeps for `wait`; forever when there is none.
async fn sleep_for(wait: Option<Duration>) {
    sleep_until(wait.map(|wait| Instant::now() + wait)).await;
}

/// Sleeps until `deadline`; forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// How one round of [`claim_and_assign`] went.
enum Claimed {
    /// Every free slot got a task: there may be more.
    Filled,
    /// Fewer tasks than free slots (or none claimed, or the claim failed).
    Short,
    /// The agent's stream is gone (or the session closed).
    StreamGone,
}

/// Claims up to the session's free slots (after letting a busy session's
/// slots gather for a moment) and sends the assignments.
async fn claim_and_assign(
    plane: &ControlPlane,
    session: &Session,
    low_watermark: u32,
    lease_length: chrono::Duration,
) -> Claimed {
    let status = session.status();
    if status.running > 0 && session.free_slots() < low_watermark {
        tokio::select! {
            () = tokio::time::sleep(COALESCE) => {}
            () = session.closed.cancelled() => return Claimed::StreamGone,
        }
    }
    // Reserved, not read: a hand-off at enqueue may not fill these slots
    // while the claim waits for the database.
    let free = session.reserve_free(plane.config.max_claim_batch);
    if free == 0 {
        return Claimed::Short;
    }
    let announced = session.work_announced();
    let lease = Lease {
        session_id: session.id,
        agent_id: session.agent_id,
        expires_at: Utc::now() + lease_length,
    };
    let versions = plane.routing.claimable(&session.handler_versions);
    // Types under a flow-control policy are claimed apart, within their
    // limits; with none (the usual case) the session's list is used as is.
    let limited_types = plane.flow.current();
    let (free_types, limited): (Cow<'_, [String]>, Vec<String>) = if limited_types.is_empty() {
        (Cow::Borrowed(&session.task_types), Vec::new())
    } else {
        let (limited, free) = session
            .task_types
            .iter()
            .cloned()
            .partition(|task_type| limited_types.contains_key(task_type));
        (Cow::Owned(free), limited)
    };
    let claimant = Claimant {
        task_types: &free_types,
        versions: &versions,
        labels: &session.labels,
        limited: &limited,
    };
    let claim_began = Instant::now();
    let tasks = match plane.store.claim(&claimant, free, &lease).await {
        Ok(tasks) => {
            plane.claim_time.took(claim_began.elapsed());
            tasks
        }
        Err(error) => {
            tracing::error!(%error, session_id = %session.id, "claim failed");
            session.unreserve(free);
            return Claimed::Short;
        }
    };
    session.unreserve(free - tasks.len() as u32);
    let filled = tasks.len() as u32 == free;
    if !filled {
        session.caught_up(announced);
    }
    plane.events.changed(tasks.iter().map(|t| t.id));
    let now = Utc::now();
    for task in tasks {
        session.place(task.id, task.attempts, answer_within(plane, &task));
        if !send_assignment(plane, session, task, lease.expires_at, now).await {
            // The stream is gone; closing the session releases the leases.
            return Claimed::StreamGone;
        }
    }
    if filled {
        Claimed::Filled
    } else {
        Claimed::Short
    }
}

/// How long after it starts the server ends an attempt of `task` whose
/// agent has not answered: its timeout and the grace (see
/// `maintenance::leases`).
pub fn answer_within(plane: &ControlPlane, task: &Task) -> Duration {
    task.timeout + plane.config.timeout_grace
}

/// Counts, logs and sends the assignment of a task leased to `session`
/// (claimed, or handed off at enqueue) until `expires_at`. False when the
/// agent's stream is gone.
pub async fn send_assignment(
    plane: &ControlPlane,
    session: &Session,
    task: Task,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    plane.metrics.assigned(&task, now);
    tracing::debug!(task_id = %task.id, attempt = task.attempts, session_id = %session.id, trace = task.metadata.get(TRACEPARENT).map(String::as_str), "assigned");
    let assign = ToAgent::Assign {
        task: Box::new(task),
        lease_expires_at: expires_at,
    };
    session.outbound.send(assign).await.is_ok()
}
