//! [`ProgressReports`]: how a handler tells the server how far it is, over
//! its agent's stream. Reports are kept on the task and shown by `GetTask`
//! and `WatchTask` (and the CLI's `--wait`). At most one report per
//! [`MIN_INTERVAL`] goes out per attempt — a handler may report in a tight
//! loop — except the last, at 1.0; a report that finds the stream full is
//! dropped rather than hold up the handler.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use taskplane_proto::limits::{MAX_PROGRESS_MESSAGE_BYTES, bounded_text};
use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::{AgentMessage, Progress};

/// The least time between two reports of one attempt that go out.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Sends one attempt's progress reports.
#[derive(Debug, Clone)]
pub struct ProgressReports {
    outbound: mpsc::Sender<AgentMessage>,
    task_id: String,
    attempt: u32,
    last_sent: Arc<Mutex<Option<Instant>>>,
}

impl ProgressReports {
    /// Reports for attempt `attempt` of `task_id`, sent on `outbound`.
    pub(crate) fn new(outbound: mpsc::Sender<AgentMessage>, task_id: &str, attempt: u32) -> Self {
        ProgressReports {
            outbound,
            task_id: task_id.to_owned(),
            attempt,
            last_sent: Arc::default(),
        }
    }

    /// Reports `fraction` (clamped to 0..=1; NaN is ignored) and `message`,
    /// unless a report went out less than [`MIN_INTERVAL`] ago and this is
    /// not the last (1.0).
    pub(crate) fn report(&self, fraction: f64, message: String) {
        if fraction.is_nan() {
            return;
        }
        let fraction = fraction.clamp(0.0, 1.0);
        {
            let mut last = self.last_sent.lock().expect("progress lock poisoned");
            let now = Instant::now();
            if fraction < 1.0 && last.is_some_and(|at| now - at < MIN_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let report = AgentMessage {
            message: Some(AgentMessageKind::Progress(Progress {
                task_id: self.task_id.clone(),
                attempt: self.attempt,
                fraction,
                message: bounded_text(message, MAX_PROGRESS_MESSAGE_BYTES),
            })),
        };
        // A full stream is busy with results; progress can wait for the next.
        let _ = self.outbound.try_send(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(receiver: &mut mpsc::Receiver<AgentMessage>) -> Vec<(f64, String)> {
        let mut reports = Vec::new();
        while let Ok(message) = receiver.try_recv() {
            if let Some(AgentMessageKind::Progress(progress)) = message.message {
                reports.push((progress.fraction, progress.message));
            }
        }
        reports
    }

    #[test]
    fn reports_are_clamped_spaced_out_and_the_last_always_goes() {
        let (outbound, mut receiver) = mpsc::channel(16);
        let reports = ProgressReports::new(outbound, "t", 2);
        reports.report(0.1, "reading".into());
        reports.report(0.2, "too soon".into());
        reports.report(f64::NAN, "ignored".into());
        reports.report(7.0, "done".into());
        assert_eq!(
            sent(&mut receiver),
            [(0.1, "reading".to_owned()), (1.0, "done".to_owned())]
        );
        std::thread::sleep(MIN_INTERVAL);
        reports.report(-1.0, "again".into());
        assert_eq!(sent(&mut receiver), [(0.0, "again".to_owned())]);
    }
}
