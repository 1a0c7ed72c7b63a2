//! Batched completions (group commit of results).
//!
//! Results reported on agent streams are queued here instead of each taking
//! its own transaction. One loop takes everything queued at that moment and
//! records it in a single transaction; while that commits, new results queue
//! up for the next one. Under load batches grow by themselves, and an idle
//! system adds no delay: a lone result is written at once.
//!
//! A result that was queued but not yet written when the process dies is
//! lost like an unreported one: the task stays RUNNING until its lease
//! expires and then runs again (delivery is at least once).

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::group_commit::{BatchQueue, next_batch};
use crate::engine::plane::ControlPlane;
use crate::engine::sessions::{Session, ToAgent};
use crate::error::Error;
use crate::model::{AttemptResult, ResultOutcome, TaskStatus};

/// The most results written in one transaction.
const MAX_BATCH: usize = 512;

/// How many times a batch is written before its sessions are given up on.
const WRITE_ATTEMPTS: u32 = 3;

/// The pause before writing a failed batch again; it doubles each time.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The longest pause between writes of a batch while the database is
/// unavailable.
const LONGEST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// One attempt's result, as reported on a session.
pub struct ReportedResult {
    /// The session that reported it (told if the result is stale).
    pub session: Arc<Session>,
    /// The task.
    pub task_id: Uuid,
    /// The attempt (the lease's fencing token).
    pub attempt: u32,
    /// How it ended.
    pub result: AttemptResult,
}

enum Command {
    Record(ReportedResult),
    Flush(oneshot::Sender<()>),
}

/// The sending side: where sessions hand their results.
pub struct Completer {
    queue: BatchQueue<Command>,
}

impl Default for Completer {
    fn default() -> Self {
        Completer {
            queue: BatchQueue::new(4 * MAX_BATCH),
        }
    }
}

impl Completer {
    /// Queues a result to be written with the next batch.
    pub async fn record(&self, result: ReportedResult) {
        if self
            .queue
            .sender
            .send(Command::Record(result))
            .await
            .is_err()
        {
            tracing::warn!(
                "the completer has stopped; the result is dropped and the lease will expire"
            );
        }
    }

    /// Waits until every result queued before this call is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.queue.sender.send(Command::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// Writes queued results in batches until `stop`, then writes what is left.
pub async fn run_completer(plane: Arc<ControlPlane>, stop: CancellationToken) {
    let Some(mut receiver) = plane.completer.queue.take_receiver("completer") else {
        return;
    };
    while let Some(batch) = next_batch(&mut receiver, &stop, |_| 1, MAX_BATCH).await {
        write_batch(&plane, batch).await;
    }
}

async fn write_batch(plane: &ControlPlane, batch: Vec<Command>) {
    let mut results = Vec::with_capacity(batch.len());
    let mut flushes = Vec::new();
    for command in batch {
        match command {
            Command::Record(result) => results.push(result),
            Command::Flush(ack) => flushes.push(ack),
        }
    }
    if !results.is_empty() {
        match write_results(plane, &results).await {
            Ok(outcomes) => {
                for (result, outcome) in results.iter().zip(outcomes) {
                    announce(plane, result, outcome);
                }
            }
            Err(error) => {
                // The sessions' leases would otherwise be extended forever
                // with the results never written: end the sessions, which
                // returns their tasks to the queue to run again.
                tracing::error!(%error, results = results.len(), "could not record results; closing the sessions that reported them");
                for result in &results {
                    result.session.close(Error::Unavailable(
                        "the server could not record your results: reconnect; the tasks run again"
                            .into(),
                    ));
                }
            }
        }
    }
    for ack in flushes {
        let _ = ack.send(());
    }
}

/// Writes a batch, trying again after a pause when the write fails. A
/// transient storage fault (the database unreachable, stalled or out of
/// disk) is waited out for as long as it lasts: the results are in memory,
/// the agents that reported them are live, and their leases are kept (see
/// `maintenance::leases`). Any other failure is tried [`WRITE_ATTEMPTS`]
/// times.
async fn write_results(
    plane: &ControlPlane,
    results: &[ReportedResult],
) -> crate::error::Result<Vec<ResultOutcome>> {
    let mut pause = RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let items = results
            .iter()
            .map(|c| (c.task_id, c.attempt, c.result.clone()))
            .collect();
        let written = plane.store.record_results(items).await;
        if let Err(error) = &written {
            plane.storage_faults.note(error);
        }
        match written {
            Err(error) if error.is_transient() && !plane.shutdown.is_cancelled() => {
                tracing::warn!(%error, results = results.len(), "the database is unavailable; the results are written once it is back");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_RETRY_PAUSE);
            }
            Err(error) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(%error, attempt, results = results.len(), "could not record results; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            written => return written,
        }
    }
}

/// Tells whoever cares what a written result did.
fn announce(plane: &ControlPlane, completion: &ReportedResult, outcome: ResultOutcome) {
    match outcome {
        ResultOutcome::Applied(task) => {
            plane.metrics.recorded(&task);
            tracing::debug!(task_id = %task.id, status = task.status.as_str(), trace = task.traceparent.as_deref(), "result recorded");
            if task.status == TaskStatus::Pending {
                plane.sessions.wake_for([task.task_type.as_str()]);
            }
            plane.events.changed([task.id]);
        }
        ResultOutcome::Stale => {
            let (task_id, attempt) = (completion.task_id, completion.attempt);
            tracing::warn!(task_id = %task_id, attempt, session_id = %completion.session.id, "stale result rejected");
            if completion.session.holds_newer(task_id, attempt) {
                // The agent runs a newer attempt of the task: a cancel
                // names only the task, and would stop that one.
                return;
            }
            let reason = format!(
                "attempt {attempt} of task {task_id} is no longer the current lease; its result was not recorded"
            );
            let _ = completion
                .session
                .outbound
                .try_send(ToAgent::Cancel { task_id, reason });
        }
    }
}
