//! The attempts an agent is running, by task: what its heartbeats report,
//! what a `cancel` stops, and what a drain cancels when its grace runs out.
//!
//! Kept by task and attempt. Should a server hand out again a task this
//! agent still runs (a newer attempt, after the older one's lease was lost),
//! the older run is cancelled at once, and its end does not make the agent
//! forget the newer one: two attempts of a task never run here together for
//! longer than a handler takes to stop.

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;

/// The running attempts, one per task.
#[derive(Debug, Default)]
pub(crate) struct Running {
    by_task: HashMap<String, (u32, CancellationToken)>,
}

impl Running {
    /// Notes that `attempt` of the task starts, and returns its cancellation
    /// token; cancels an older attempt of the task still running.
    pub(crate) fn start(&mut self, task_id: &str, attempt: u32) -> CancellationToken {
        let token = CancellationToken::new();
        if let Some((older, stale)) = self
            .by_task
            .insert(task_id.to_owned(), (attempt, token.clone()))
        {
            tracing::warn!(%task_id, older, attempt, "a newer attempt of a running task arrived; cancelling the older one");
            stale.cancel();
        }
        token
    }

    /// Notes that `attempt` of the task ended; a newer attempt stays.
    pub(crate) fn finished(&mut self, task_id: &str, attempt: u32) {
        if self
            .by_task
            .get(task_id)
            .is_some_and(|(running, _)| *running == attempt)
        {
            self.by_task.remove(task_id);
        }
    }

    /// Cancels the task's running attempt; false if none runs.
    pub(crate) fn cancel(&self, task_id: &str) -> bool {
        self.by_task
            .get(task_id)
            .map(|(_, token)| token.cancel())
            .is_some()
    }

    /// Cancels every running attempt.
    pub(crate) fn cancel_all(&self) {
        for (_, token) in self.by_task.values() {
            token.cancel();
        }
    }

    /// The ids of the tasks running, for a heartbeat.
    pub(crate) fn task_ids(&self) -> Vec<String> {
        self.by_task.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_attempt_cancels_the_older_and_outlives_its_end() {
        let mut running = Running::default();
        let first = running.start("t", 1);
        let second = running.start("t", 2);
        assert!(first.is_cancelled(), "the older attempt was not cancelled");
        assert!(!second.is_cancelled());
        running.finished("t", 1);
        assert_eq!(
            running.task_ids(),
            ["t"],
            "the older end forgot the newer attempt"
        );
        assert!(running.cancel("t"));
        assert!(second.is_cancelled());
        running.finished("t", 2);
        assert!(running.task_ids().is_empty());
        assert!(!running.cancel("t"));
    }

    #[test]
    fn cancel_all_reaches_every_attempt() {
        let mut running = Running::default();
        let tokens = [running.start("a", 1), running.start("b", 3)];
        running.cancel_all();
        assert!(tokens.iter().all(CancellationToken::is_cancelled));
    }
}
