//! The PostgreSQL store, for several `taskplane serve` replicas on one database.
//!
//! Claims lock ready rows with `FOR UPDATE SKIP LOCKED` inside a CTE (so the
//! planner cannot lock more rows than the limit), replicas sharing one queue
//! never block each other. Enqueues and re-queues `NOTIFY taskplane_ready`
//! with the task type (never the payload: NOTIFY carries at most 8 KB), once
//! per type per transaction; every replica `LISTEN`s on its own connection and
//! wakes its agents. Transactions never stay open while a task runs, and the
//! pool sets `idle_in_transaction_session_timeout` as a backstop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::{LazyLock, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};
use uuid::Uuid;

use super::rows::{self, json_text, millis, parse_uuid};
use super::rules::{self, TypeDefaults};
use super::sql::{
    self, Common, Dialect, Held, STILL_RUNNING, Shared, SharedStore, Spelling, Statements, Writer,
    Writes as _,
};
use super::{EnqueueBatch, Leases, ReadyNotifications, ResultBatch, Store};
use crate::engine::flow::{FlowChange, policy_notice};
use crate::error::Result;
use crate::model::{
    Claimant, Enqueued, Lease, NewTask, ResultOutcome, SessionStatus, Task, TaskType, TaskTypeSpec,
};
use vacuum::QueueVacuum;

/// The channel replicas LISTEN on; payloads are task types.
pub(super) const READY_CHANNEL: &str = "taskplane_ready";

/// The columns of a whole task, as `rows::task` reads them.
pub(super) const TASK_COLUMNS: &str = "id::text AS id, task_type, domain, payload::text AS payload, status, priority, \
    attempts, max_attempts, timeout_ms, retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, \
    updated_at, started_at, finished_at, result::text AS result, last_error, idempotency_key, handler_version, \
    metadata::text AS metadata, required_labels::text AS required_labels, \
    parent_id::text AS parent_id, progress, start_by";

/// What a recorded result returns (see [`rows::recorded_task`]).
pub(super) const RECORDED_COLUMNS: &str = "id::text AS id, task_type, status, started_at, finished_at, updated_at, \
    metadata ->> 'traceparent' AS traceparent";

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// The shared reads and writes, on connections from `pool`.
    common: SharedStore<Postgres, PgPool>,
    /// Connections for claims only, committing without waiting for the WAL
    /// flush (see [`Store::claim`]).
    claims: PgPool,
    claim_rotation: AtomicUsize,
    /// Task types as this replica last read or wrote them. An enqueue
    /// builds its tasks from these without a lookup, and its INSERT checks
    /// them against the table (see `writes::insert_tasks`), so a type registered
    /// again on another replica is never used stale.
    known_types: RwLock<HashMap<String, TaskType>>,
    /// The dead rows this replica's claims and results left in `tasks`,
    /// and the vacuum that clears them (see [`Store::vacuum`]).
    vacuum: QueueVacuum,
}

/// A transaction on the pool.
pub(super) type Tx = Transaction<'static, Postgres>;

impl PostgresStore {
    /// The connection settings every taskplane PostgreSQL connection uses.
    pub fn connect_options(database_url: &str) -> Result<PgConnectOptions> {
        Ok(PgConnectOptions::from_str(database_url)?.options([
            ("idle_in_transaction_session_timeout", "30s"),
            ("lock_timeout", "10s"),
            // No JIT compilation: every statement here is short, but over a
            // large table the planner's estimate for a generic plan (an
            // unknown LIMIT) passes `jit_above_cost`, and compiling took
            // several times as long as running the claim.
            ("jit", "off"),
        ]))
    }

    /// Connects and applies `migrations/postgres` (sqlx holds an advisory
    /// lock while migrating, so replicas starting together are safe).
    pub async fn open(database_url: &str, defaults: TypeDefaults) -> Result<Self> {
        let options = Self::connect_options(database_url)?;
        let pool = pool_options(16).connect_with(options.clone()).await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        if !vacuums_on_its_own(&pool).await? {
            tracing::warn!(
                "PostgreSQL's autovacuum is off in this database: taskplane vacuums the \
                 tasks table itself as claims and results leave dead rows, but nothing \
                 vacuums its other tables or refreshes the planner's statistics. Turn it \
                 on (autovacuum = on, track_counts = on) or run VACUUM ANALYZE regularly"
            );
        }
        let claims = pool_options(4)
            .connect_with(options.options([("synchronous_commit", "off")]))
            .await?;
        Ok(PostgresStore {
            common: SharedStore::new(pool.clone(), pool.clone(), defaults),
            pool,
            claims,
            claim_rotation: AtomicUsize::new(0),
            known_types: RwLock::default(),
            vacuum: QueueVacuum::default(),
        })
    }

    /// The known types of every task, if all are known.
    fn known_types_of(&self, tasks: &[NewTask]) -> Option<BTreeMap<String, TaskType>> {
        let names: BTreeSet<&str> = tasks.iter().map(|t| t.task_type.as_str()).collect();
        let known = self.known_types.read().expect("known types lock poisoned");
        names
            .into_iter()
            .map(|name| known.get(name).map(|t| (name.to_owned(), t.clone())))
            .collect()
    }

    /// Tells every replica that `task_type`'s flow-control policy changed,
    /// so that each refreshes its view of limited types at once.
    async fn announce_policy(&self, task_type: &str) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(ANNOUNCE_READY.as_str()))
            .bind(policy_notice(task_type))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remembers task types as just read or written.
    fn remember_types<'a>(&self, types: impl IntoIterator<Item = &'a TaskType>) {
        let mut known = self.known_types.write().expect("known types lock poisoned");
        for task_type in types {
            known.insert(task_type.task_type.clone(), task_type.clone());
        }
    }

    /// Claims of the types no flow-control policy limits: fair across
    /// types, skipping rows other replicas hold.
    async fn claim_free(
        &self,
        claimant: &Claimant<'_>,
        limit: u32,
        lease: &Lease,
        now: i64,
    ) -> Result<Vec<Task>> {
        let task_types = claimant.task_types;
        // A claim commits without waiting for its WAL flush (the `claims`
        // connections set synchronous_commit = off): a crash can lose the
        // last claims, which puts those tasks back to PENDING with their
        // attempts uncounted, so they run again — what delivery at least
        // once already allows. It takes one fsync off the path from enqueue
        // to handler. Enqueues and results stay synchronous, and their
        // flushes carry any earlier claim to disk with them.
        if let [task_type] = task_types {
            // One statement, so no explicit transaction: one round trip.
            let mut connection = self.claims.acquire().await?;
            let tasks =
                writes::claim_type(&mut connection, task_type, limit, claimant, lease, now).await?;
            return Ok(super::delivery_order(tasks));
        }
        let mut tx = self.claims.begin().await?;
        let mut plan = super::FairClaim::new(task_types, limit, &self.claim_rotation);
        let (first_pass, share) = plan.first_pass();
        let claimed =
            writes::claim_each_type(&mut tx, first_pass, share, limit, claimant, lease, now)
                .await?;
        plan.record_first_pass(claimed);
        while let Some((task_type, wanted)) = plan.next_step() {
            let claimed =
                writes::claim_type(&mut tx, task_type, wanted, claimant, lease, now).await?;
            plan.record(claimed);
        }
        tx.commit().await?;
        Ok(plan.into_tasks())
    }
}

/// The shared statements in PostgreSQL's spelling (see `impl Dialect`).
static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    Statements::new(&Spelling {
        task_columns: TASK_COLUMNS,
        id_text: "id::text",
        id_cast: "::uuid",
        for_update: " FOR UPDATE",
        announce_ready: Some(ANNOUNCE_READY.as_str()),
        ..Spelling::PLAIN
    })
});

/// PostgreSQL's spellings of the shared SQL: ids are `uuid` and JSON is
/// `jsonb` (both selected as text), reads that precede an update lock
/// their rows, and the planner finds the partial indexes by itself.
impl Dialect for Postgres {
    const STATEMENTS: &'static LazyLock<Statements> = &STATEMENTS;
}

/// Announces ready work of task type `$1` to every replica at commit.
static ANNOUNCE_READY: LazyLock<String> =
    LazyLock::new(|| format!("SELECT pg_notify('{READY_CHANNEL}', $1)"));

/// The shared writes take a connection from the pool.
#[async_trait]
impl Writer<Postgres> for PgPool {
    async fn hold(&self) -> Result<Held<'_, Postgres>> {
        Ok(Box::new(self.acquire().await?))
    }
}

/// One purge batch ($1 the cutoff, $2 the batch size): finished tasks read
/// from the `tasks_finished` index, only what it deletes, with their
/// attempts. SKIP LOCKED: a replica purging at the same time takes other
/// rows, and none waits.
const PURGE: &str = "WITH doomed AS (
        SELECT id FROM tasks WHERE finished_at < $1
          AND status IN ('completed', 'dead', 'cancelled', 'expired')
        ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED),
    attempts AS (DELETE FROM task_attempts WHERE task_id IN (SELECT id::text FROM doomed))
    DELETE FROM tasks WHERE id IN (SELECT id FROM doomed)";

/// A connection that sat idle this long is pinged before it is used again.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A pool of up to `connections` connections. sqlx pings every connection
/// as it returns to the pool, so one that was idle only briefly is known to
/// be alive; pinging it again when it is taken (sqlx's default) would put one
/// more round trip to the server in front of every statement. Only a
/// connection idle for [`PING_AFTER_IDLE`] is checked first.
fn pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(false)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for >= PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Wakes every replica's agents for these task types when the transaction commits.
async fn notify_ready(tx: &mut Tx, task_types: impl IntoIterator<Item = &str>) -> Result<()> {
    let distinct: BTreeSet<&str> = task_types.into_iter().collect();
    for task_type in distinct {
        sqlx::query(sqlx::AssertSqlSafe(ANNOUNCE_READY.as_str()))
            .bind(task_type.to_owned())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Returns leased tasks matching `condition` (bound to `$1`) to the queue,
/// or to DEAD when they have no attempts left, ending their attempts `lost`
/// (the attempt rows are written from the locked rows before they change).
async fn return_to_queue(
    tx: &mut Tx,
    condition: &str,
    bound: String,
    reason: &str,
    now: i64,
) -> Result<Vec<Uuid>> {
    let end_attempts = sql::end_attempts_sql(
        "id::text",
        "$2",
        "'lost'",
        "$3",
        "id IN (SELECT id FROM held)",
    );
    let assignments = rules::lost_lease_assignments("$2", "$3");
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH held AS (SELECT id FROM tasks WHERE status = 'running' AND {condition} FOR UPDATE),
              ended AS ({end_attempts})
         UPDATE tasks SET {assignments}
         WHERE {STILL_RUNNING} AND id IN (SELECT id FROM held)
         RETURNING id::text, task_type"
    )))
    .bind(bound)
    .bind(now)
    .bind(reason.to_owned())
    .fetch_all(&mut **tx)
    .await?;
    notify_ready(tx, rows.iter().map(|(_, task_type)| task_type.as_str())).await?;
    rows.iter().map(|(id, _)| parse_uuid(id)).collect()
}

/// The RUNNING tasks matching `condition` that no other transaction holds,
/// locked for this one: how lease maintenance (refresh, reap) picks its
/// rows. A held row is being completed or released and needs neither.
/// Waiting for it locked a completion batch's rows in another order than
/// the batch did, and PostgreSQL broke each such deadlock after a second;
/// a statement that never waits for a row lock cannot be in a cycle.
fn unheld_running(condition: &str) -> String {
    format!(
        "id IN (SELECT id FROM tasks WHERE status = 'running' AND {condition} FOR UPDATE SKIP LOCKED)"
    )
}

/// Whether the database vacuums and analyzes its tables by itself: the
/// per-table thresholds of `migrations/postgres` rely on it.
async fn vacuums_on_its_own(pool: &PgPool) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT current_setting('autovacuum')::bool AND current_setting('track_counts')::bool",
    )
    .fetch_one(pool)
    .await?)
}

/// The registered types among those `tasks` name, by name.
async fn fetch_task_types(
    connection: &mut PgConnection,
    tasks: &[NewTask],
) -> Result<BTreeMap<String, TaskType>> {
    let names: Vec<String> = tasks
        .iter()
        .map(|t| t.task_type.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = sqlx::query("SELECT * FROM task_types WHERE task_type = ANY($1)")
        .bind(names)
        .fetch_all(connection)
        .await?;
    rows.iter()
        .map(|row| rows::task_type(row).map(|t| (t.task_type.clone(), t)))
        .collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn return_leases(&self, leases: Leases, reason: &str) -> Result<Vec<Uuid>> {
        let (condition, bound) = match leases {
            Leases::OfSession(session_id) => ("lease_session = $1".into(), session_id.to_string()),
            // Safe with every replica reaping: each row is updated once,
            // and a second reaper finds it no longer RUNNING.
            Leases::ExpiredBefore(expired) => (
                unheld_running("lease_expires_at < $1::bigint"),
                millis(expired).to_string(),
            ),
        };
        let mut tx = self.pool.begin().await?;
        let now = millis(leases.now());
        let returned = return_to_queue(&mut tx, &condition, bound, reason, now).await?;
        tx.commit().await?;
        Ok(returned)
    }

    fn common(&self) -> &dyn Common {
        &self.common
    }

    async fn due_types(&self, task_types: &[String], now: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT wanted FROM unnest($1::text[]) AS wanted WHERE EXISTS (
                 SELECT 1 FROM tasks
                 WHERE status = 'pending' AND task_type = wanted AND run_at <= $2
                     AND (start_by IS NULL OR start_by > $2))",
        )
        .bind(task_types.to_vec())
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_flow_policy(&self, task_type: &str, change: &FlowChange) -> Result<TaskType> {
        let changed = self.common.set_flow_policy(task_type, change).await?;
        self.announce_policy(task_type).await?;
        Ok(changed)
    }

    async fn register_task_types(&self, specs: &[TaskTypeSpec]) -> Result<Vec<TaskType>> {
        let registered = self.common.register_task_types(specs).await?;
        self.remember_types(&registered);
        // Limits an agent declared reach other replicas' views at once.
        for spec in specs.iter().filter(|spec| spec.flow.is_some()) {
            self.announce_policy(&spec.task_type).await?;
        }
        Ok(registered)
    }

    async fn enqueue_with_keys(&self, batch: EnqueueBatch<'_>) -> Result<Vec<Enqueued>> {
        let (tasks, hand_off, now, firing) = (batch.tasks, batch.hand_off, batch.now, batch.firing);
        let mut tx = self.pool.begin().await?;
        let types = fetch_task_types(&mut tx, &tasks).await?;
        let windows = rules::key_windows(&tasks, now);
        let mut tasks = rules::new_tasks(tasks, &types, now)?;
        let leases = rules::hand_off(&mut tasks, hand_off);
        let mut enqueued = Vec::with_capacity(tasks.len());
        for ((task, lease), window) in tasks.into_iter().zip(leases).zip(windows) {
            if let (Some(key), Some(created_before)) = (&task.idempotency_key, window) {
                Shared::<Postgres>::release_expired_key(
                    &mut tx,
                    &task.task_type,
                    key,
                    created_before,
                )
                .await?;
            }
            if writes::insert_tasks(&mut tx, std::slice::from_ref(&task), &[lease], &[])
                .await?
                .contains(&task.id)
            {
                enqueued.push(Enqueued {
                    task,
                    created: true,
                });
                continue;
            }
            // The idempotency key is taken (perhaps by a concurrent enqueue
            // that just committed): answer with that task.
            let id: String = sqlx::query_scalar(
                "SELECT id::text FROM tasks WHERE task_type = $1 AND idempotency_key = $2",
            )
            .bind(task.task_type.clone())
            .bind(task.idempotency_key.clone())
            .fetch_one(&mut *tx)
            .await?;
            let id = parse_uuid(&id)?;
            let existing = Shared::<Postgres>::fetch_task(&mut *tx, id, false)
                .await?
                .ok_or_else(|| rules::not_found(id))?;
            enqueued.push(Enqueued {
                task: existing,
                created: false,
            });
        }
        if let Some(firing) = firing {
            Shared::<Postgres>::record_firing(&mut tx, firing, &enqueued).await?;
        }
        tx.commit().await?;
        Ok(enqueued)
    }

    async fn enqueue_without_keys(&self, batch: EnqueueBatch<'_>) -> Result<Vec<Enqueued>> {
        let (tasks, hand_off, now) = (batch.tasks, batch.hand_off, batch.now);
        let mut connection = self.pool.acquire().await?;
        // A handler version the remembered type lacks may have been
        // declared on another replica since: the types are read afresh.
        if let Some(types) = self.known_types_of(&tasks)
            && let Ok(mut built) = rules::new_tasks(tasks.clone(), &types, now)
        {
            // No lookup: the INSERT itself checks that each type still has
            // the settings the tasks were built with, and writes nothing
            // if one changed.
            let leases = rules::hand_off(&mut built, hand_off);
            let checked: Vec<&TaskType> = types.values().collect();
            let inserted = writes::insert_tasks(&mut connection, &built, &leases, &checked).await?;
            if inserted.len() == built.len() {
                return Ok(rules::newly_created(built));
            }
            // A type was registered again since this replica read it:
            // nothing was written; read the types afresh.
        }
        // A registration committing between the lookup and the insert only
        // orders this enqueue before it: types are never removed, and the
        // foreign key still refuses a type that is not there.
        let types = fetch_task_types(&mut connection, &tasks).await?;
        self.remember_types(types.values());
        let mut tasks = rules::new_tasks(tasks, &types, now)?;
        let leases = rules::hand_off(&mut tasks, hand_off);
        // One statement is atomic by itself: no BEGIN and COMMIT round trips.
        writes::insert_tasks(&mut connection, &tasks, &leases, &[]).await?;
        Ok(rules::newly_created(tasks))
    }

    async fn fold_task_counts(&self, before: DateTime<Utc>) -> Result<()> {
        // The rows folded are deleted and summed in one statement. A replica
        // folding at the same time waits for these rows, finds them gone and
        // skips them, so nothing is counted twice.
        sqlx::query(
            "WITH folded AS (
                 DELETE FROM task_counts WHERE second < $1 RETURNING task_type, status, count)
             INSERT INTO task_counts (task_type, status, second, count)
             SELECT task_type, status, 0, sum(count) FROM folded
             GROUP BY task_type, status HAVING sum(count) <> 0",
        )
        .bind(before.timestamp())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim(&self, claimant: &Claimant<'_>, limit: u32, lease: &Lease) -> Result<Vec<Task>> {
        let now = millis(Utc::now());
        // Limited types first, in a transaction of their own: their limits
        // bound what they take, so they cannot starve the other types,
        // while a backlog of those could starve them.
        let mut tasks = Vec::new();
        if !claimant.limited.is_empty() && limit > 0 {
            let mut tx = self.claims.begin().await?;
            for task_type in claimant.limited {
                let wanted = limit - tasks.len() as u32;
                if wanted == 0 {
                    break;
                }
                tasks.extend(
                    limited::claim_limited(&mut tx, task_type, wanted, claimant, lease, now)
                        .await?,
                );
            }
            tx.commit().await?;
        }
        let limit = limit - tasks.len() as u32;
        let task_types = claimant.task_types;
        if limit > 0 && !task_types.is_empty() {
            tasks.extend(self.claim_free(claimant, limit, lease, now).await?);
        }
        self.vacuum.record(tasks.len());
        Ok(tasks)
    }

    async fn write_results(&self, batch: ResultBatch) -> Result<Vec<ResultOutcome>> {
        let (results, bulk, single, now) = (batch.results, batch.bulk, batch.single, batch.now);
        self.vacuum.record(results.len());
        let mut outcomes = vec![None; results.len()];
        if single.is_empty() {
            // Completions alone are one statement, atomic by itself: no
            // BEGIN and COMMIT round trips.
            let mut connection = self.pool.acquire().await?;
            let applied = writes::complete_in_bulk(&mut connection, &results, &bulk, now).await?;
            rules::bulk_outcomes(&results, &bulk, applied, &mut outcomes);
            return Ok(rules::all_outcomes(outcomes));
        }
        let mut tx = self.pool.begin().await?;
        let applied = writes::complete_in_bulk(&mut tx, &results, &bulk, now).await?;
        rules::bulk_outcomes(&results, &bulk, applied, &mut outcomes);
        for index in single {
            let (id, attempt, result) = &results[index];
            outcomes[index] = Some(writes::record_one(&mut tx, *id, *attempt, result, now).await?);
        }
        tx.commit().await?;
        Ok(rules::all_outcomes(outcomes))
    }

    async fn refresh_sessions(
        &self,
        sessions: &[(Uuid, SessionStatus)],
        lease: chrono::Duration,
    ) -> Result<()> {
        let ids: Vec<String> = sessions.iter().map(|(id, _)| id.to_string()).collect();
        let statuses: Vec<String> = sessions
            .iter()
            .map(|(_, status)| json_text(status))
            .collect();
        let mut tx = self.pool.begin().await?;
        let lease_expires_at = Utc::now() + lease;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET lease_expires_at = $1 WHERE {}",
            unheld_running("lease_session = ANY($2)")
        )))
        .bind(millis(lease_expires_at))
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE agents SET last_seen_at = $1, status = s.status
             FROM unnest($2::text[], $3::text[]) AS s(session_id, status)
             WHERE agents.session_id = s.session_id",
        )
        .bind(millis(Utc::now()))
        .bind(&ids)
        .bind(&statuses)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn vacuum(&self) -> Result<()> {
        self.vacuum
            .vacuum_if_due(&self.pool.connect_options())
            .await?;
        Ok(())
    }

    async fn purge_finished(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let deleted = sqlx::query(PURGE)
            .bind(millis(before))
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM agents WHERE disconnected_at < $1")
            .bind(millis(before))
            .execute(&self.pool)
            .await?;
        Ok(deleted)
    }

    async fn ready_notifications(&self) -> Result<Option<ReadyNotifications>> {
        // LISTEN needs a connection of its own; PgListener reconnects by
        // itself, and the dispatchers' slow poll covers what a reconnect misses.
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(READY_CHANNEL).await?;
        let stream = listener
            .into_stream()
            .filter_map(|notification| async move {
                match notification {
                    Ok(notification) => Some(notification.payload().to_owned()),
                    Err(error) => {
                        tracing::warn!(%error, "ready notifications interrupted; reconnecting");
                        None
                    }
                }
            });
        Ok(Some(Box::pin(stream)))
    }
}

mod limited;
#[cfg(test)]
mod tests;
mod vacuum;
mod writes;
