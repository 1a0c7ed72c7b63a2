//! One session's work: the handlers running, at most the agent's slots, and
//! the assignments queued behind them (its prefetch), the oldest started
//! the moment a handler returns. The server keeps the same queue in the
//! same order, so it knows which attempts have started.
//!
//! A queued assignment must not wait here while another agent could run
//! it: when every slot holds a handler that has been running for
//! [`QUEUE_PATIENCE`] and the queue has waited as long, every queued
//! assignment is given back unstarted (`given_back`), and so is every one
//! still queued when the agent drains. Only handlers that have begun count:
//! a process starved of CPU for a moment has handlers spawned but not yet
//! run, which return as soon as they are, and giving their queue away
//! would only move it back and forth between agents. The server
//! returns them to the queue, their attempts uncounted, and sends this
//! agent no more than its slots until its handlers prove fast again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskplane_proto::v1::agent_message::Message as AgentMessageKind;
use taskplane_proto::v1::{AgentMessage, Assignment, GivenBack, TaskResult, task_result};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::execution::{Reporting, run_assignment};
use crate::follow_up::FollowUps;
use crate::metrics::AgentMetrics;
use crate::registry::TaskRegistry;
use crate::running::Running;

use taskplane_proto::limits::QUEUE_PATIENCE;

/// What every handler of a session is run with.
pub(crate) struct Launcher {
    /// The handlers.
    pub registry: Arc<TaskRegistry>,
    /// Where runs are counted.
    pub metrics: Arc<AgentMetrics>,
    /// Where results go.
    pub outbound: mpsc::Sender<AgentMessage>,
    /// The largest message the server accepts.
    pub max_message_bytes: usize,
    /// How handlers enqueue follow-ups over this session's connection.
    pub follow_ups: FollowUps,
}

/// The running handlers and the queued assignments of one session.
pub(crate) struct Work {
    slots: usize,
    launcher: Launcher,
    running: Running,
    handlers: JoinSet<(String, u32)>,
    queued: VecDeque<Assignment>,
    /// Since when the queue has waited: its oldest assignment's arrival or
    /// the last start, whichever came later.
    waiting_since: Instant,
    begun: Arc<Begun>,
}

/// The handlers that have begun running and not returned, and when the
/// latest began.
#[derive(Debug)]
struct Begun {
    running: AtomicUsize,
    latest: Mutex<Instant>,
}

impl Begun {
    /// Counts a handler as running until the guard drops.
    fn enter(self: &Arc<Self>) -> BegunGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        *self.latest.lock().expect("begun lock poisoned") = Instant::now();
        BegunGuard(self.clone())
    }

    /// Whether `slots` handlers are running and none began in the last
    /// `patience`.
    fn all_running_for(&self, slots: usize, patience: Duration) -> bool {
        self.running.load(Ordering::SeqCst) >= slots
            && self.latest.lock().expect("begun lock poisoned").elapsed() >= patience
    }
}

struct BegunGuard(Arc<Begun>);

impl Drop for BegunGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Work {
    /// No work yet, for an agent with `slots` slots.
    pub(crate) fn new(slots: u32, launcher: Launcher) -> Self {
        Work {
            slots: slots as usize,
            launcher,
            running: Running::default(),
            handlers: JoinSet::new(),
            queued: VecDeque::new(),
            waiting_since: Instant::now(),
            begun: Arc::new(Begun {
                running: AtomicUsize::new(0),
                latest: Mutex::new(Instant::now()),
            }),
        }
    }

    /// Starts an assignment if a slot is free and none waits before it,
    /// else queues it.
    pub(crate) fn assign(&mut self, assignment: Assignment) {
        if self.handlers.len() < self.slots && self.queued.is_empty() {
            self.start(assignment);
        } else {
            if self.queued.is_empty() {
                self.waiting_since = Instant::now();
            }
            self.queued.push_back(assignment);
        }
    }

    fn start(&mut self, assignment: Assignment) {
        self.waiting_since = Instant::now();
        let cancel = self.running.start(&assignment.task_id, assignment.attempt);
        let launcher = &self.launcher;
        let (registry, metrics) = (launcher.registry.clone(), launcher.metrics.clone());
        let (outbound, max_message_bytes) = (launcher.outbound.clone(), launcher.max_message_bytes);
        let follow_ups = launcher.follow_ups.clone();
        let begun = self.begun.clone();
        self.handlers.spawn(async move {
            // Counted from its first poll until the handler returns: a
            // result waiting for room on the stream is not a handler
            // running long.
            let running = begun.enter();
            run_assignment(
                registry,
                metrics,
                assignment,
                cancel,
                Reporting {
                    outbound,
                    max_message_bytes,
                    follow_ups,
                },
                running,
            )
            .await
        });
    }

    /// Stops the task: cancels its running handler, or drops it from the
    /// queue before it starts (the server already stopped counting it).
    /// False if this session has no such task.
    pub(crate) fn cancel(&mut self, task_id: &str) -> bool {
        if self.running.cancel(task_id) {
            return true;
        }
        let queued = self.queued.len();
        self.queued
            .retain(|assignment| assignment.task_id != task_id);
        self.queued.len() < queued
    }

    /// Waits for a handler to return and starts the oldest queued
    /// assignment in its slot. `None` when nothing runs.
    pub(crate) async fn next_finished(&mut self) -> Option<()> {
        let finished = self.handlers.join_next().await?;
        if let Ok((task_id, attempt)) = finished {
            self.running.finished(&task_id, attempt);
        }
        self.start_queued();
        Some(())
    }

    /// Changes the slots to `slots` (0 starts nothing more) and starts the
    /// queued assignments the new ones have room for. Handlers already
    /// running beyond fewer slots finish.
    pub(crate) fn set_slots(&mut self, slots: u32) {
        self.slots = slots as usize;
        self.start_queued();
    }

    /// Starts the oldest queued assignments while a slot is free.
    fn start_queued(&mut self) {
        while self.handlers.len() < self.slots
            && let Some(next) = self.queued.pop_front()
        {
            self.start(next);
        }
    }

    /// When the queued assignments are to be given back if no slot frees
    /// first; `None` when none is queued.
    pub(crate) fn give_back_at(&self) -> Option<Instant> {
        (!self.queued.is_empty()).then(|| self.waiting_since + QUEUE_PATIENCE)
    }

    /// At [`Work::give_back_at`]: gives every queued assignment back if
    /// every slot's handler has been running for [`QUEUE_PATIENCE`], else
    /// waits another while.
    pub(crate) async fn give_back_if_stuck(&mut self) {
        if self.begun.all_running_for(self.slots, QUEUE_PATIENCE) {
            tracing::debug!(
                tasks = self.queued.len(),
                "every slot stayed busy; giving queued tasks back"
            );
            self.give_back_queued().await;
        } else {
            self.waiting_since = Instant::now();
        }
    }

    /// Gives every queued assignment back to the server unstarted.
    async fn give_back_queued(&mut self) {
        for assignment in std::mem::take(&mut self.queued) {
            let given_back = AgentMessage {
                message: Some(AgentMessageKind::Result(TaskResult {
                    task_id: assignment.task_id,
                    attempt: assignment.attempt,
                    outcome: Some(task_result::Outcome::GivenBack(GivenBack {})),
                    ran_for: None,
                })),
            };
            // A closed stream returns them anyway.
            let _ = self.launcher.outbound.send(given_back).await;
        }
    }

    /// The ids of the tasks running, for a heartbeat.
    pub(crate) fn running_task_ids(&self) -> Vec<String> {
        self.running.task_ids()
    }

    /// Handlers running and assignments queued.
    pub(crate) fn len(&self) -> usize {
        self.handlers.len() + self.queued.len()
    }

    /// Gives back what is queued, so that other agents run it at once, and
    /// lets the running handlers finish within `grace`; then cancels what
    /// still runs.
    pub(crate) async fn finish(mut self, grace: Duration) {
        self.give_back_queued().await;
        let finish = async { while self.handlers.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, finish).await.is_err() {
            tracing::warn!("drain grace ran out; cancelling the tasks still running");
            self.running.cancel_all();
            while self.handlers.join_next().await.is_some() {}
        }
    }
}
