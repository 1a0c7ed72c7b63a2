//! Durable storage of task types, tasks, attempts and agent sessions.
//!
//! One trait, [`Store`], one implementation per database. Every method that
//! writes is atomic: it commits all of its rows or none. Conditional updates
//! (`status = 'running' AND attempts = ?`) are the fence against stale results.

mod postgres;
mod rows;
pub(crate) mod rules;
mod sql;
mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::tokens::{IssuedToken, TokenRecord};
use crate::config::QueueConfig;
use crate::engine::flow::FlowChange;
use crate::error::{Error, Result};
use crate::model::{
    AgentSession, Attempt, AttemptResult, Claimant, Enqueued, Lease, NewTask, Progress,
    ResultOutcome, SessionStatus, Task, TaskFilter, TaskSelector, TaskType, TaskTypeSpec,
    TypeStats,
};
use crate::schedule::Firing;

pub use postgres::PostgresStore;
pub use rules::{ResultBatch, TypeDefaults, unregistered};
pub use sql::{Common, Reads, Schedules, Writes};
pub use sqlite::SqliteStore;
pub use sqlite::open_writer as open_sqlite_writer;

/// Chooses, for a new task that is ready at once, the agent session to lease
/// it to straight away (see [`Store::enqueue_handing_off`]); `None` leaves it
/// PENDING for the next claim.
pub type HandOff<'a> = dyn Fn(&Task) -> Option<Lease> + Send + Sync + 'a;

/// A stream of task types that became ready on another replica.
pub type ReadyNotifications = std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>;

/// The durable side of the control plane.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The reads and writes both databases make the same way
    /// (`store/sql.rs`): the methods below that read, register types,
    /// cancel, retry, record sessions and keep tokens answer through them.
    fn common(&self) -> &dyn Common;

    /// Registers or updates task types in one transaction: all or none. A type
    /// that already belongs to another domain fails `AlreadyExists`.
    async fn register_task_types(&self, specs: &[TaskTypeSpec]) -> Result<Vec<TaskType>> {
        self.common().register_task_types(specs).await
    }

    /// One task type, if registered.
    async fn get_task_type(&self, task_type: &str) -> Result<Option<TaskType>> {
        self.common().task_type(task_type).await
    }

    /// Changes a task type's flow-control policy (see
    /// [`crate::engine::flow`]) and returns the type as it now is; on
    /// PostgreSQL every replica is told at commit.
    async fn set_flow_policy(&self, task_type: &str, change: &FlowChange) -> Result<TaskType> {
        self.common().set_flow_policy(task_type, change).await
    }

    /// Every registered task type (of one domain, if given), by name.
    async fn list_task_types(&self, domain: Option<&str>) -> Result<Vec<TaskType>> {
        self.common().task_types(domain).await
    }

    /// Stores tasks PENDING, handing none off; see
    /// [`Store::enqueue_handing_off`].
    async fn enqueue(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        self.enqueue_handing_off(tasks, &|_| None).await
    }

    /// Stores tasks in one transaction: all or none. An unregistered type
    /// fails `FailedPrecondition` naming it; a matching idempotency key
    /// returns the existing task. A new task that is ready at once and for
    /// which `hand_off` names a lease is stored RUNNING under that lease,
    /// its first attempt started, exactly as a claim would leave it; the
    /// rest are PENDING.
    async fn enqueue_handing_off(
        &self,
        tasks: Vec<NewTask>,
        hand_off: &HandOff<'_>,
    ) -> Result<Vec<Enqueued>> {
        let keyed = tasks.iter().any(|t| t.idempotency_key.is_some());
        let batch = EnqueueBatch {
            tasks,
            hand_off,
            now: rows::now(),
            firing: None,
        };
        if keyed {
            self.enqueue_with_keys(batch).await
        } else {
            self.enqueue_without_keys(batch).await
        }
    }

    /// Stores the tasks of a schedule's firing (each keyed by its fire time)
    /// and the firing itself in one transaction, as
    /// [`Store::enqueue_handing_off`] stores tasks: `Aborted`, with nothing
    /// written, when the schedule changed since the firing was planned.
    async fn enqueue_firing(
        &self,
        tasks: Vec<NewTask>,
        firing: &Firing,
        hand_off: &HandOff<'_>,
    ) -> Result<Vec<Enqueued>> {
        self.enqueue_with_keys(EnqueueBatch {
            tasks,
            hand_off,
            now: rows::now(),
            firing: Some(firing),
        })
        .await
    }

    /// Schedules, stored the same way on both databases.
    fn schedules(&self) -> &dyn Schedules {
        self.common()
    }

    /// [`Store::enqueue_handing_off`] for a batch of which some tasks carry
    /// idempotency keys: a taken key answers with the task that holds it.
    async fn enqueue_with_keys(&self, batch: EnqueueBatch<'_>) -> Result<Vec<Enqueued>>;

    /// [`Store::enqueue_handing_off`] for a batch without idempotency keys:
    /// the path every bulk enqueue takes, one multi-row insert.
    async fn enqueue_without_keys(&self, batch: EnqueueBatch<'_>) -> Result<Vec<Enqueued>>;

    /// One task, if it exists.
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        self.common().task(id).await
    }

    /// Every attempt of a task, oldest first.
    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>> {
        self.common().attempts(id).await
    }

    /// Task counts per type and status (of one domain, if given), with the
    /// completions and deaths since `since` (to the second). PENDING and
    /// RUNNING are counted from their indexes; finished tasks from the counts
    /// kept in `task_counts` as they finish, so the cost does not grow with
    /// history.
    async fn queue_stats(
        &self,
        domain: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Vec<TypeStats>> {
        self.common().queue_stats(domain, since).await
    }

    /// Folds the finished-task counts of the seconds before `before` into one
    /// row per type and status, keeping readers' sums short. Totals do not
    /// change; completions and deaths before `before` no longer count as
    /// recent.
    async fn fold_task_counts(&self, before: DateTime<Utc>) -> Result<()>;

    /// Tasks matching the filter, newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        self.common().tasks(filter).await
    }

    /// Which of `task_types` have a PENDING task ready by `now`: the types
    /// whose idle agents must be woken, delayed tasks and retries having
    /// come due with no enqueue to announce them.
    async fn due_types(&self, task_types: &[String], now: DateTime<Utc>) -> Result<Vec<String>>;

    /// Leases up to `limit` ready tasks the claimant may take (its types,
    /// versions and labels): RUNNING, attempt counted, in priority then age
    /// order.
    async fn claim(&self, claimant: &Claimant<'_>, limit: u32, lease: &Lease) -> Result<Vec<Task>>;

    /// Records many attempts' results in one transaction, each only if its
    /// attempt is still the current lease (otherwise it is `Stale` and changes
    /// nothing). Outcomes come back in input order.
    async fn record_results(
        &self,
        results: Vec<(Uuid, u32, AttemptResult)>,
    ) -> Result<Vec<ResultOutcome>> {
        self.write_results(ResultBatch::new(results)).await
    }

    /// [`Store::record_results`] for a batch split into the completions,
    /// written in bulk, and the rest, one by one.
    async fn write_results(&self, batch: ResultBatch) -> Result<Vec<ResultOutcome>>;

    /// Records one attempt's result; see [`Store::record_results`].
    async fn record_result(
        &self,
        id: Uuid,
        attempt: u32,
        result: AttemptResult,
    ) -> Result<ResultOutcome> {
        let mut outcomes = self.record_results(vec![(id, attempt, result)]).await?;
        Ok(outcomes.pop().expect("one result in, one outcome out"))
    }

    /// Returns every task leased by a session to the queue (or to DEAD when it
    /// has no attempts left): its stream closed, for `reason`, which ends
    /// their attempts. Returns the ids it touched.
    async fn release_session(&self, session_id: Uuid, reason: &str) -> Result<Vec<Uuid>> {
        self.return_leases(Leases::OfSession(session_id), reason)
            .await
    }

    /// Returns the RUNNING tasks that `leases` picks to the queue, or to
    /// DEAD when they have no attempts left, ending their attempts `lost`
    /// with the error `reason`. Returns the ids it touched.
    async fn return_leases(&self, leases: Leases, reason: &str) -> Result<Vec<Uuid>>;

    /// The owning replica's periodic refresh of its live sessions: records
    /// their status and extends the leases of every RUNNING task they hold
    /// to `lease` from the moment the transaction began, in one transaction.
    /// The clock is read once the database answers, never before: after a
    /// stall, a lease read off an earlier clock would already be expired.
    async fn refresh_sessions(
        &self,
        sessions: &[(Uuid, SessionStatus)],
        lease: chrono::Duration,
    ) -> Result<()>;

    /// Returns tasks whose lease expired before `now` to the queue (or DEAD).
    async fn reap_expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
        self.return_leases(Leases::ExpiredBefore(now), Leases::EXPIRED)
            .await
    }

    /// Cancels a PENDING or RUNNING task. Returns the task as it was before,
    /// so the caller can tell a running task's agent to stop.
    async fn cancel(&self, id: Uuid, reason: &str) -> Result<(Task, Task)> {
        self.common().cancel(id, reason).await
    }

    /// Returns to the queue a task leased to `session_id` at `attempt` that
    /// its agent gave back without starting it (it waited in the agent's
    /// queue while every slot stayed busy): as if never claimed, its attempt
    /// uncounted. Answers its type, or `None` when that lease is no longer
    /// current (the task was cancelled, say), which changes nothing.
    async fn give_back(&self, id: Uuid, attempt: u32, session_id: Uuid) -> Result<Option<String>> {
        self.common().give_back(id, attempt, session_id).await
    }

    /// Retries those of `ids` still DEAD or CANCELLED, in one transaction
    /// (one batch of a bulk retry).
    async fn retry_many(&self, ids: &[Uuid]) -> Result<Vec<Task>> {
        self.common().retry_many(ids).await
    }

    /// Cancels those of `ids` still PENDING or RUNNING, in one transaction
    /// (one batch of a bulk cancel); returns each as it was and is.
    async fn cancel_many(&self, ids: &[Uuid], reason: &str) -> Result<Vec<(Task, Task)>> {
        self.common().cancel_many(ids, reason).await
    }

    /// Deletes those of `ids` that are finished, with their attempts, in
    /// one transaction (one batch of a bulk purge); returns how many went.
    async fn purge_many(&self, ids: &[Uuid]) -> Result<u64> {
        self.common().purge_many(ids).await
    }

    /// Keeps the progress a running attempt reported (shown by GetTask and
    /// WatchTask); false when that attempt no longer runs.
    async fn record_progress(&self, id: Uuid, attempt: u32, progress: &Progress) -> Result<bool> {
        self.common().record_progress(id, attempt, progress).await
    }

    /// Ends EXPIRED up to `limit` PENDING tasks whose deadline to start by
    /// has passed at `now` (claims already skip them); returns their ids
    /// and types.
    async fn expire_overdue(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<(Uuid, String)>> {
        self.common().expire_overdue(now, limit).await
    }

    /// Deletes `task_type`'s rate buckets per key last spent from before
    /// `full_since`: full again by now, as good as none.
    async fn prune_rate_buckets(&self, task_type: &str, full_since: DateTime<Utc>) -> Result<()> {
        self.common()
            .prune_rate_buckets(task_type, full_since)
            .await
    }

    /// Up to `limit` ids of the tasks `selector` matches after `after`, in
    /// id order: one page of a bulk operation.
    async fn select_task_ids(
        &self,
        selector: &TaskSelector,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        self.common().task_ids(selector, after, limit).await
    }

    /// Puts a DEAD or CANCELLED task back in the queue with fresh attempts.
    async fn retry(&self, id: Uuid) -> Result<Task> {
        self.common().retry(id).await
    }

    /// Records that an agent session registered.
    async fn record_session_start(&self, session: &AgentSession) -> Result<()> {
        self.common().record_session_start(session).await
    }

    /// Records that an agent session ended.
    async fn record_session_end(&self, session_id: Uuid) -> Result<()> {
        self.common().record_session_end(session_id).await
    }

    /// Asks the replica that owns a live session to drain it (see
    /// `maintenance::leases`).
    async fn request_drain(&self, session_id: Uuid) -> Result<()> {
        self.common().request_drain(session_id).await
    }

    /// The live sessions some replica asked to drain.
    async fn drains_requested(&self) -> Result<Vec<Uuid>> {
        self.common().drains_requested().await
    }

    /// Sessions of every replica that have not ended and were refreshed
    /// since `seen_since` (a replica that died stops refreshing its own).
    async fn live_sessions(&self, seen_since: DateTime<Utc>) -> Result<Vec<AgentSession>> {
        self.common().live_sessions(seen_since).await
    }

    /// Commits a small write, to prove that the database takes writes (the
    /// health check).
    async fn probe(&self) -> Result<()> {
        self.common().probe().await
    }

    /// Moves the write-ahead log into the database, off the write path. The
    /// server calls it a few times a second; a no-op where the database
    /// checkpoints by itself.
    async fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    /// Clears the dead row versions that claims and results leave behind,
    /// once there are enough that claims would spend time walking over them.
    /// The server calls it every second; a no-op where the database removes
    /// them as it goes.
    async fn vacuum(&self) -> Result<()> {
        Ok(())
    }

    /// Deletes up to `limit` finished tasks (completed, dead, cancelled) that
    /// finished before `before`, with their attempts, and agent sessions that
    /// ended before it, in one short transaction. Returns the tasks deleted;
    /// fewer than `limit` means nothing more is due.
    async fn purge_finished(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;

    /// Keeps a new token's record and hash (never the token itself).
    async fn create_token(&self, token: &IssuedToken) -> Result<()> {
        self.common().create_token(token).await
    }

    /// Marks a token revoked; false if no live token has this id.
    async fn revoke_token(&self, id: &str) -> Result<bool> {
        self.common().revoke_token(id).await
    }

    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.common().tokens().await
    }

    /// The token whose SHA-256 is `sha256`, revoked or not.
    async fn find_token(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        self.common().token(sha256).await
    }

    /// Wake-ups from other replicas: the task types that got ready work.
    /// `None` when the backend has no other replicas to hear from.
    async fn ready_notifications(&self) -> Result<Option<ReadyNotifications>>;
}

/// Which leased tasks [`Store::return_leases`] returns to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leases {
    /// Every task one agent session holds.
    OfSession(Uuid),
    /// Every task whose lease expired before this instant.
    ExpiredBefore(DateTime<Utc>),
}

impl Leases {
    /// When the tasks go back: now for a closed session, the reaper's
    /// clock for expired leases.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Leases::OfSession(_) => Utc::now(),
            Leases::ExpiredBefore(now) => *now,
        }
    }

    /// Why an attempt was `lost` when its session's stream closed.
    pub const STREAM_CLOSED: &str = "the agent's stream closed while it ran this attempt";

    /// Why an attempt was `lost` when its lease expired.
    pub const EXPIRED: &str = "the lease expired before the agent reported";
}

/// A batch of new tasks on its way into the store.
pub struct EnqueueBatch<'a> {
    /// The tasks, as the client gave them.
    pub tasks: Vec<NewTask>,
    /// Chooses the session a ready task goes straight to, if any.
    pub hand_off: &'a HandOff<'a>,
    /// The batch's creation time.
    pub now: DateTime<Utc>,
    /// The schedule firing these tasks stand for, written in the same
    /// transaction (the keyed path only: every scheduled task has a key).
    pub firing: Option<&'a Firing>,
}

/// The order of per-type claims that makes one claim fair across task types:
/// each type first gets an equal share of the slots, in turn from where the
/// last claim over the same rotation stopped, so one type's flood cannot
/// starve another; slots a type leaves unused then go to the types that had
/// more waiting.
///
/// The first pass is one statement on both backends (every type's share,
/// in turn, until the limit). A claim that fills its limit partway through
/// the types leaves the next claim to start just after the last type it
/// took from: starting one type further each time, as it once did, made a
/// session of 1,000 types look again at every type the last claim had just
/// emptied. A claim that goes through every type moves the start by one,
/// so the leftovers of the second pass go to each type in turn.
/// Concurrent claims (PostgreSQL) may start at the same type; `SKIP
/// LOCKED` keeps their tasks apart.
struct FairClaim<'a> {
    /// Every type, in this claim's turn.
    turn: Vec<&'a str>,
    /// Where the turn starts, shared by the claims of one store.
    rotation: &'a AtomicUsize,
    start: usize,
    more_waiting: std::collections::VecDeque<&'a str>,
    share: u32,
    remaining: u32,
    claimed: Vec<Task>,
}

impl<'a> FairClaim<'a> {
    fn new(task_types: &'a [String], limit: u32, rotation: &'a AtomicUsize) -> Self {
        let start = rotation.load(Ordering::Relaxed) % task_types.len().max(1);
        let turn = task_types[start..]
            .iter()
            .chain(&task_types[..start])
            .map(String::as_str)
            .collect();
        let share = (limit / task_types.len().max(1) as u32).max(1);
        FairClaim {
            turn,
            rotation,
            start,
            more_waiting: Default::default(),
            share,
            remaining: limit,
            claimed: Vec::new(),
        }
    }

    /// The first pass: the types in their turn and the share of each.
    fn first_pass(&self) -> (&[&'a str], u32) {
        (&self.turn, self.share)
    }

    /// Keeps what the first pass claimed, and moves the start of the next
    /// claim's turn. A type that filled its share may have more waiting.
    fn record_first_pass(&mut self, claimed: Vec<Task>) {
        let mut per_type: std::collections::HashMap<&str, u32> = Default::default();
        for task in &claimed {
            *per_type.entry(task.task_type.as_str()).or_default() += 1;
        }
        let mut last_served = None;
        for (position, task_type) in self.turn.iter().enumerate() {
            if let Some(&count) = per_type.get(task_type) {
                last_served = Some(position);
                if count == self.share {
                    self.more_waiting.push_back(task_type);
                }
            }
        }
        self.remaining -= (claimed.len() as u32).min(self.remaining);
        let advance = match last_served {
            Some(last) if self.remaining == 0 && last + 1 < self.turn.len() => last + 1,
            _ => 1,
        };
        self.rotation
            .store(self.start.wrapping_add(advance), Ordering::Relaxed);
        self.claimed.extend(claimed);
    }

    /// The next type of the second pass and how many to ask for.
    fn next_step(&mut self) -> Option<(&'a str, u32)> {
        if self.remaining == 0 {
            return None;
        }
        self.more_waiting
            .pop_front()
            .map(|task_type| (task_type, self.remaining))
    }

    /// Keeps what a step of the second pass claimed.
    fn record(&mut self, claimed: Vec<Task>) {
        self.remaining -= (claimed.len() as u32).min(self.remaining);
        self.claimed.extend(claimed);
    }

    /// Every task the passes claimed, in delivery order.
    fn into_tasks(self) -> Vec<Task> {
        delivery_order(self.claimed)
    }
}

/// Claimed tasks in delivery order: priority, then age (RETURNING does not
/// keep a subquery's order).
fn delivery_order(mut tasks: Vec<Task>) -> Vec<Task> {
    tasks.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
    tasks
}

/// Opens the store named by a database URL and applies its migrations.
pub async fn open(database_url: &str, queue: &QueueConfig) -> Result<Arc<dyn Store>> {
    let defaults = TypeDefaults {
        max_attempts: queue.default_max_attempts,
        timeout: queue.default_timeout,
        retry_policy: queue.default_retry_policy,
    };
    if database_url.starts_with("sqlite:") {
        return Ok(Arc::new(
            SqliteStore::open(database_url, defaults, queue.sqlite_durability).await?,
        ));
    }
    if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        return Ok(Arc::new(PostgresStore::open(database_url, defaults).await?));
    }
    Err(Error::InvalidArgument(format!(
        "unsupported database url '{database_url}': use sqlite://path/to/file.db or postgres://user@host/database"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task of type `a`, as a claim would return it.
    fn claimed_task() -> Task {
        let now = Utc::now();
        let task_type = TaskType {
            task_type: "a".into(),
            domain: "d".into(),
            description: String::new(),
            versions: Vec::new(),
            capabilities: Vec::new(),
            default_max_attempts: 3,
            default_timeout: std::time::Duration::from_secs(60),
            default_retry_policy: Default::default(),
            registered_at: now,
            updated_at: now,
            flow: Default::default(),
        };
        rules::new_task(suite::new_task("a"), &task_type, now)
    }

    #[test]
    fn a_fair_claim_of_one_type_asks_for_the_whole_limit_at_once() {
        let types = vec!["a".to_owned()];
        for claimed in [100, 40, 0] {
            let rotation = AtomicUsize::new(0);
            let mut plan = FairClaim::new(&types, 100, &rotation);
            assert_eq!(plan.first_pass(), (&["a"][..], 100));
            plan.record_first_pass((0..claimed).map(|_| claimed_task()).collect());
            assert_eq!(plan.next_step(), None, "claimed {claimed}");
        }
    }

    #[test]
    fn the_next_claim_starts_after_the_last_type_served_or_one_further() {
        let types: Vec<String> = ["a", "b", "c", "d"].map(String::from).into();
        let rotation = AtomicUsize::new(0);
        let of_types = |names: &[&str]| -> Vec<Task> {
            names
                .iter()
                .map(|name| Task {
                    task_type: (*name).into(),
                    ..claimed_task()
                })
                .collect()
        };
        // A limit of two, filled by "a" and "b": the next turn starts at "c".
        let mut plan = FairClaim::new(&types, 2, &rotation);
        assert_eq!(plan.first_pass().0, ["a", "b", "c", "d"]);
        plan.record_first_pass(of_types(&["a", "b"]));
        let mut plan = FairClaim::new(&types, 2, &rotation);
        assert_eq!(plan.first_pass().0, ["c", "d", "a", "b"]);
        // Short: every type was looked at, so the start moves by one.
        plan.record_first_pass(of_types(&["d"]));
        let plan = FairClaim::new(&types, 2, &rotation);
        assert_eq!(plan.first_pass().0, ["d", "a", "b", "c"]);
    }
}
