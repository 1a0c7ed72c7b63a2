//! Waking idle agents when delayed tasks and retries come due.
//!
//! A task enqueued to run later, or a failed attempt's retry, becomes ready
//! with no enqueue to announce it. One round per poll interval asks the
//! store which task types served by caught-up sessions (those asleep until
//! work is announced) have a task ready now, and announces work of those
//! types: one query per replica, where each idle session used to claim on
//! its own timer (1,000 idle agents made 2,000 claims a second).

use crate::engine::plane::ControlPlane;
use crate::error::Result;

/// Announces work of every type an idle session serves that has a task
/// ready now.
pub async fn wake_for_due_tasks(plane: &ControlPlane) -> Result<()> {
    let mut idle_types: Vec<String> = plane
        .sessions
        .list()
        .iter()
        .filter(|session| session.is_caught_up())
        .flat_map(|session| session.task_types.iter().cloned())
        .collect();
    if idle_types.is_empty() {
        return Ok(());
    }
    idle_types.sort_unstable();
    idle_types.dedup();
    let due = plane
        .store
        .due_types(&idle_types, chrono::Utc::now())
        .await?;
    plane.sessions.wake_for(due.iter().map(String::as_str));
    Ok(())
}
