//! The control plane's operations, shared by every gRPC service: the store,
//! the live sessions and the change notices, kept consistent with each other.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::auth::{Authenticator, Quotas};
use crate::config::QueueConfig;
use crate::engine::completer::{Completer, ReportedResult};
use crate::engine::enqueuer::Enqueuer;
use crate::engine::events::TaskEvents;
use crate::engine::flow::{self, FlowChange, FlowView};
use crate::engine::handoff::HandOffs;
use crate::engine::prefetch::ClaimTime;
use crate::engine::routing::{RoutingView, VersionsInUse};
use crate::engine::sessions::{Session, Sessions, ToAgent};
use crate::engine::storage_faults::StorageFaults;
use crate::error::Result;
use crate::metrics::ServerMetrics;
use crate::model::{
    AgentSession, AttemptResult, Enqueued, NewTask, Task, TaskFilter, TaskStatus, TaskType,
};
use crate::schedule::Firing;
use crate::store::Store;

/// The most running tasks of one type read to explain why a task waits.
const MAX_RUNNING_READ: u32 = 10_000;

/// The store, the live sessions and the change notices of one replica.
pub struct ControlPlane {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Agents connected to this replica.
    pub sessions: Sessions,
    /// Task-change notices for watchers.
    pub events: TaskEvents,
    /// Queue tunables.
    pub config: QueueConfig,
    /// Batches the results agents report.
    pub completer: Completer,
    /// Where enqueues are group-committed (see [`crate::engine::enqueuer`]).
    pub enqueuer: Enqueuer,
    /// Every task spawned for sessions and watchers, drained at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Per-token stream counts and enqueue rates.
    pub quotas: Arc<Quotas>,
    /// Checks tokens, when authentication is on; open agent streams are
    /// re-checked with it so a revoked token loses its agents too.
    pub authenticator: Option<Arc<Authenticator>>,
    /// The Prometheus metrics of this replica.
    pub metrics: ServerMetrics,
    /// Transient storage faults met by enqueues and results.
    pub storage_faults: StorageFaults,
    /// How long claims take here, which sizes agents' prefetch windows.
    pub claim_time: Arc<ClaimTime>,
    /// Wakes the scheduler's loop when a schedule changed here.
    pub schedules_changed: Notify,
    /// The handler versions live agents serve (see [`crate::engine::routing`]).
    pub routing: RoutingView,
    /// The task types whose flow-control policy limits them (see
    /// [`crate::engine::flow`]).
    pub flow: FlowView,
}

impl ControlPlane {
    /// Builds a control plane over a store, checking tokens with
    /// `authenticator` (`None`: authentication off).
    pub fn new(
        store: Arc<dyn Store>,
        config: QueueConfig,
        authenticator: Option<Arc<Authenticator>>,
    ) -> Self {
        ControlPlane {
            store,
            sessions: Sessions::default(),
            events: TaskEvents::default(),
            completer: Completer::default(),
            enqueuer: Enqueuer::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            quotas: Arc::new(Quotas::new(
                config.max_streams_per_token,
                config.enqueue_rate_per_token,
            )),
            config,
            authenticator,
            metrics: ServerMetrics::default(),
            storage_faults: StorageFaults::default(),
            claim_time: Arc::new(ClaimTime::default()),
            schedules_changed: Notify::new(),
            routing: RoutingView::default(),
            flow: FlowView::default(),
        }
    }

    /// Reads which handler versions the live agents of every replica serve
    /// and every declared version, and wakes this replica's sessions when
    /// that changed: a session may now claim (or no longer claim) tasks by
    /// falling back to an older version.
    pub async fn refresh_routing(&self) -> Result<()> {
        let live = self.live_sessions().await?;
        let task_types = self.store.list_task_types(None).await?;
        if self.routing.update(VersionsInUse::new(&task_types, &live)) {
            self.sessions.wake_all();
        }
        self.metrics.flow_policies(&task_types);
        if self.flow.update(&task_types) {
            self.sessions.wake_all();
        }
        Ok(())
    }

    /// Changes a task type's flow-control policy, and applies it here at
    /// once: the view of limited types is refreshed and the type's agents
    /// woken (a resumed type, a raised limit). Other replicas are told by
    /// the store.
    pub async fn set_flow_policy(&self, task_type: &str, change: &FlowChange) -> Result<TaskType> {
        let changed = self.store.set_flow_policy(task_type, change).await?;
        self.refresh_flow(&[task_type]).await;
        Ok(changed)
    }

    /// Why a due PENDING task waits for its type's flow-control policy:
    /// paused, at `max_running`, or its key at `max_running_per_key`.
    /// `None` when its type has no policy or the limits leave room.
    pub async fn held_by_flow(&self, task: &Task) -> Result<Option<String>> {
        let Some(policy) = self.flow.current().get(&task.task_type).cloned() else {
            return Ok(None);
        };
        let running = self
            .store
            .list_tasks(&TaskFilter {
                task_type: Some(task.task_type.clone()),
                domain: None,
                status: Some(TaskStatus::Running),
                limit: MAX_RUNNING_READ,
                ..TaskFilter::default()
            })
            .await?;
        let key = policy.concurrency_key.as_ref().map(|key| {
            let value = key.value_in(&task.payload, &task.metadata);
            let same = running
                .iter()
                .filter(|other| key.value_in(&other.payload, &other.metadata) == value)
                .count();
            (value.unwrap_or_default(), same as u32)
        });
        Ok(flow::waiting_for(
            &task.task_type,
            &policy,
            running.len() as u32,
            key.as_ref().map(|(value, same)| (value.as_str(), *same)),
        ))
    }

    /// Re-reads which types are limited after the policies of `changed`
    /// changed (here or on another replica), and wakes their agents.
    pub async fn refresh_flow(&self, changed: &[&str]) {
        match self.store.list_task_types(None).await {
            Ok(task_types) => {
                self.flow.update(&task_types);
                self.metrics.flow_policies(&task_types);
            }
            Err(error) => {
                tracing::warn!(%error, ?changed, "cannot read flow policies; the next heartbeat round will")
            }
        }
        self.sessions.wake_for(changed.iter().copied());
    }

    /// Stores tasks atomically and wakes the agents that serve their types,
    /// through the group commit of [`crate::engine::enqueuer`].
    pub async fn enqueue(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        self.enqueuer.enqueue(tasks).await
    }

    /// Stores tasks in one transaction, handing those it can to idle agents
    /// (see [`crate::engine::handoff`]), then sends those tasks' assignments, wakes
    /// the agents that serve the others' types, counts them all and tells
    /// their watchers.
    pub async fn store_tasks(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        self.store_tasks_of(tasks, None).await
    }

    /// [`ControlPlane::store_tasks`] for the tasks of a schedule's firing,
    /// written in one transaction with the firing (`Aborted`, nothing
    /// written, when the schedule changed since it was planned).
    pub async fn store_firing(
        &self,
        tasks: Vec<NewTask>,
        firing: &Firing,
    ) -> Result<Vec<Enqueued>> {
        self.store_tasks_of(tasks, Some(firing)).await
    }

    async fn store_tasks_of(
        &self,
        tasks: Vec<NewTask>,
        firing: Option<&Firing>,
    ) -> Result<Vec<Enqueued>> {
        let hand_offs = HandOffs::new(self);
        let hand_off = |task: &Task| hand_offs.choose(task);
        let stored = match firing {
            None => self.store.enqueue_handing_off(tasks, &hand_off).await,
            Some(firing) => self.store.enqueue_firing(tasks, firing, &hand_off).await,
        };
        let enqueued = stored.inspect_err(|error| self.storage_faults.note(error))?;
        hand_offs.deliver(&enqueued).await;
        let created = || enqueued.iter().filter(|e| e.created).map(|e| &e.task);
        self.metrics
            .enqueued(created().map(|task| task.task_type.as_str()));
        self.sessions.wake_for(
            created()
                .filter(|task| task.status == TaskStatus::Pending)
                .map(|task| task.task_type.as_str()),
        );
        self.events.changed(created().map(|task| task.id));
        Ok(enqueued)
    }

    /// Records what an agent reported for an attempt it was assigned, its
    /// handler having run for `ran_for` (if the agent said): frees its slot
    /// at once and queues the result for the next batched write
    /// (see [`crate::engine::completer`]). A stale attempt changes nothing
    /// and is answered with `cancel`, so the agent knows its work no longer
    /// counts.
    pub async fn record_result(
        &self,
        session: Arc<Session>,
        task_id: Uuid,
        attempt: u32,
        result: AttemptResult,
        ran_for: Option<std::time::Duration>,
    ) {
        session.untrack_attempt(task_id, attempt, ran_for);
        self.completer
            .record(ReportedResult {
                session,
                task_id,
                attempt,
                result,
            })
            .await;
    }

    /// Returns to the queue an assignment the agent gave back unstarted, its
    /// attempt uncounted, and wakes the sessions of its type. A lease no
    /// longer current changes nothing; should the write fail, the task
    /// goes back when the session closes or its lease expires.
    pub async fn give_back(&self, session: &Session, task_id: Uuid, attempt: u32) {
        if !session.given_back(task_id, attempt) {
            return;
        }
        match self.store.give_back(task_id, attempt, session.id).await {
            Ok(Some(task_type)) => {
                tracing::debug!(%task_id, attempt, session_id = %session.id, "given back unstarted");
                self.sessions.wake_for([task_type.as_str()]);
                self.events.changed([task_id]);
            }
            Ok(None) => {}
            Err(error) => {
                self.storage_faults.note(&error);
                tracing::warn!(%task_id, %error, "could not return a task given back; its lease will");
            }
        }
    }

    /// Agent sessions of every replica, freshest view first: this replica's
    /// own sessions from memory, the others as their replicas last recorded
    /// them (a replica that stopped refreshing for a lease is gone).
    pub async fn live_sessions(&self) -> Result<Vec<AgentSession>> {
        let lease = self.config.lease_length();
        let local: Vec<AgentSession> = self.sessions.list().iter().map(|s| s.describe()).collect();
        let mut sessions: Vec<AgentSession> = self
            .store
            .live_sessions(Utc::now() - lease)
            .await?
            .into_iter()
            .filter(|remote| local.iter().all(|l| l.session_id != remote.session_id))
            .collect();
        sessions.extend(local);
        sessions.sort_by_key(|s| s.session_id);
        Ok(sessions)
    }

    /// Drains agent sessions of any replica: one here stops getting tasks at
    /// once; another replica's is asked to, through the store, and drains
    /// at that replica's next lease-maintenance round.
    pub async fn drain(&self, sessions: &[AgentSession]) -> Result<()> {
        for described in sessions {
            match self.sessions.get(described.session_id) {
                Some(session) => session.drain(),
                None => self.store.request_drain(described.session_id).await?,
            }
            tracing::info!(agent = %described.agent_name, session_id = %described.session_id, "agent drained by an operator");
        }
        Ok(())
    }

    /// Drains the sessions here that another replica asked to drain.
    pub async fn drain_as_requested(&self) -> Result<()> {
        for id in self.store.drains_requested().await? {
            if let Some(session) = self.sessions.get(id) {
                session.drain();
            }
        }
        Ok(())
    }

    /// Cancels a task; a running task's agent, if connected here, is told to stop.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<Task> {
        let (before, after) = self.store.cancel(id, reason).await?;
        self.stop_attempt(&before, reason);
        self.events.changed([id]);
        Ok(after)
    }

    /// Tells the agent running a task that was just cancelled (`before`,
    /// as it was) to stop, when that agent is connected here.
    pub fn stop_attempt(&self, before: &Task, reason: &str) {
        if before.status == TaskStatus::Running
            && let Some(holder) = self.sessions.holder_of(before.id)
        {
            holder.untrack(before.id);
            let _ = holder.outbound.try_send(ToAgent::Cancel {
                task_id: before.id,
                reason: reason.to_owned(),
            });
        }
    }

    /// Puts a DEAD or CANCELLED task back in the queue.
    pub async fn retry(&self, id: Uuid) -> Result<Task> {
        let task = self.store.retry(id).await?;
        self.sessions.wake_for([task.task_type.as_str()]);
        self.events.changed([id]);
        Ok(task)
    }

    /// Returns a closed session's leased tasks to the queue at once, after
    /// writing the results it reported (or a finished task would go back to
    /// the queue); `reason` ends their attempts.
    pub async fn release(&self, session: &Session, reason: &str) -> Result<()> {
        self.completer.flush().await;
        let released = self.store.release_session(session.id, reason).await?;
        if !released.is_empty() {
            tracing::info!(session_id = %session.id, tasks = released.len(), "returned leased tasks to the queue");
            self.sessions
                .wake_for(session.task_types.iter().map(String::as_str));
            self.events.changed(released);
        }
        Ok(())
    }
}
