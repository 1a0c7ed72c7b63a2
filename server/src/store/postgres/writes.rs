//! The writes on the path every task takes: claims (`SKIP LOCKED`), the
//! `UNNEST` insert of a batch of new tasks, and result batches.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::{READY_CHANNEL, RECORDED_COLUMNS, TASK_COLUMNS, Tx};
use crate::error::Result;
use crate::model::{
    AttemptResult, Claimant, Lease, RecordedTask, ResultOutcome, Task, TaskStatus, TaskType,
};
use crate::store::rows::{self, duration_millis, json_text, millis, parse_uuid};
use crate::store::rules;
use crate::store::sql::{STILL_PENDING, STILL_RUNNING, Shared};

/// [`claim_type`]'s statement: `$5` the type, `$6` the limit, `$7` and
/// `$8` the claimant's versions and labels.
pub(super) static CLAIM_TYPE: LazyLock<String> = LazyLock::new(|| {
    lease_ready(&format!(
        "SELECT id AS ready_id FROM tasks
         WHERE status = 'pending' AND task_type = $5 AND run_at <= $1 AND {}
         ORDER BY priority DESC, run_at, id LIMIT $6
         FOR UPDATE SKIP LOCKED",
        claimable("tasks", "$1", "$7", "$8")
    ))
});

/// Leases up to `limit` ready tasks of one type, in priority then age order,
/// skipping rows other replicas hold, and starts their attempts, in one
/// statement.
pub(super) async fn claim_type(
    connection: &mut PgConnection,
    task_type: &str,
    limit: u32,
    claimant: &Claimant<'_>,
    lease: &Lease,
    now: i64,
) -> Result<Vec<Task>> {
    let rows = bind_lease(
        sqlx::query(sqlx::AssertSqlSafe(CLAIM_TYPE.as_str())),
        lease,
        now,
    )
    .bind(task_type.to_owned())
    .bind(i64::from(limit))
    .bind(claimant.versions.to_vec())
    .bind(json_text(claimant.labels))
    .fetch_all(connection)
    .await?;
    rows.iter().map(rows::task).collect()
}

/// The condition that a ready task of `alias` may go, at the instant
/// `now`, to the claimant whose versions (a `text[]`) and labels (JSON) are
/// the parameters `versions` and `labels`: its deadline to start by has not
/// passed (a task past it waits only to be expired), it names no version or
/// one of them, and it requires no labels or only ones it has. Most tasks
/// do none of that, which costs three comparisons.
pub(super) fn claimable(alias: &str, now: &str, versions: &str, labels: &str) -> String {
    format!(
        "({alias}.start_by IS NULL OR {alias}.start_by > {now})
         AND ({alias}.handler_version = ''
             OR {alias}.task_type || E'\\t' || {alias}.handler_version = ANY({versions}::text[]))
         AND ({alias}.required_labels = '{{}}'::jsonb
             OR {alias}.required_labels <@ {labels}::jsonb)"
    )
}

/// Leases, in one statement, up to `share` ready tasks of each of
/// `task_types` in turn (each type's in priority then age order), `limit`
/// in all, skipping rows other replicas hold: the first pass of a fair
/// claim over many types (`store::FairClaim`), one round trip instead of
/// one per type.
pub(super) async fn claim_each_type(
    connection: &mut PgConnection,
    task_types: &[&str],
    share: u32,
    limit: u32,
    claimant: &Claimant<'_>,
    lease: &Lease,
    now: i64,
) -> Result<Vec<Task>> {
    static CLAIM_EACH_TYPE: LazyLock<String> = LazyLock::new(|| {
        lease_ready(&format!(
            "SELECT picked.id AS ready_id
             FROM unnest($5::text[]) AS wanted(task_type)
             CROSS JOIN LATERAL (
                 SELECT id FROM tasks
                 WHERE status = 'pending' AND task_type = wanted.task_type AND run_at <= $1
                     AND {}
                 ORDER BY priority DESC, run_at, id LIMIT $6
                 FOR UPDATE SKIP LOCKED) AS picked
             LIMIT $7",
            claimable("tasks", "$1", "$8", "$9")
        ))
    });
    let query = sqlx::query(sqlx::AssertSqlSafe(CLAIM_EACH_TYPE.as_str()));
    let rows = bind_lease(query, lease, now)
        .bind(task_types.to_vec())
        .bind(i64::from(share))
        .bind(i64::from(limit))
        .bind(claimant.versions.to_vec())
        .bind(json_text(claimant.labels))
        .fetch_all(connection)
        .await?;
    rows.iter().map(rows::task).collect()
}

/// The statement that leases the rows `ready` picks (their ids as
/// `ready_id`) and starts their attempts, returning the tasks: `$1` is the
/// clock and `$2` to `$4` the lease ([`bind_lease`]); `ready`'s own
/// parameters start at `$5`.
pub(super) fn lease_ready(ready: &str) -> String {
    format!(
        "WITH ready AS ({ready}),
         claimed AS (
             UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = $1,
                 updated_at = $1, lease_session = $2, lease_agent = $3, lease_expires_at = $4
             FROM ready WHERE id = ready.ready_id AND {STILL_PENDING}
             RETURNING {TASK_COLUMNS})
         SELECT * FROM claimed"
    )
}

/// Binds [`lease_ready`]'s `$1` to `$4`: the clock and the lease.
pub(super) fn bind_lease<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    lease: &Lease,
    now: i64,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(now)
        .bind(lease.session_id.to_string())
        .bind(lease.agent_id.to_string())
        .bind(millis(lease.expires_at))
}

/// One array to bind: `value` of each item.
fn each<T, U>(items: &[T], value: impl Fn(&T) -> U) -> Vec<U> {
    items.iter().map(value).collect()
}

/// Inserts tasks in one statement, skipping any whose idempotency key is
/// taken: PENDING, announced to every replica when it commits, or RUNNING
/// under the lease beside them, their first attempts started. When a
/// type in `checked` no longer has the domain and defaults given there, or
/// is now paused refusing enqueues, it inserts nothing. Returns the ids it
/// inserted.
pub(super) async fn insert_tasks(
    connection: &mut PgConnection,
    tasks: &[Task],
    leases: &[Option<Lease>],
    checked: &[&TaskType],
) -> Result<BTreeSet<Uuid>> {
    let query = sqlx::query_scalar(INSERT_TASKS);
    let query = bind_checked(
        bind_new_rows(query, tasks, leases).bind(READY_CHANNEL),
        checked,
    )
    .bind(each(tasks, |t| json_text(&t.required_labels)))
    .bind(each(tasks, |t| t.parent_id.map(|id| id.to_string())))
    .bind(each(tasks, |t| t.start_by.map(millis)));
    let inserted: Vec<String> = query.fetch_all(connection).await?;
    inserted.iter().map(|id| parse_uuid(id)).collect()
}

/// The inserted tasks and leases, as [`INSERT_TASKS`]' arrays `$1` to `$20`.
fn bind_new_rows<'q>(
    query: InsertQuery<'q>,
    tasks: &[Task],
    leases: &[Option<Lease>],
) -> InsertQuery<'q> {
    query
        .bind(each(tasks, |t| t.id.to_string()))
        .bind(each(tasks, |t| t.task_type.clone()))
        .bind(each(tasks, |t| t.domain.clone()))
        .bind(each(tasks, |t| json_text(&t.payload)))
        .bind(each(tasks, |t| t.status.as_str().to_owned()))
        .bind(each(tasks, |t| i64::from(t.priority)))
        .bind(each(tasks, |t| i64::from(t.attempts)))
        .bind(each(tasks, |t| i64::from(t.max_attempts)))
        .bind(each(tasks, |t| duration_millis(t.timeout)))
        .bind(each(tasks, |t| millis(t.run_at)))
        .bind(each(tasks, |t| millis(t.created_at)))
        .bind(each(tasks, |t| t.idempotency_key.clone()))
        .bind(each(tasks, |t| t.handler_version.clone()))
        .bind(each(tasks, |t| json_text(&t.metadata)))
        .bind(each(tasks, |t| {
            duration_millis(t.retry_policy.initial_backoff)
        }))
        .bind(each(tasks, |t| t.retry_policy.backoff_factor))
        .bind(each(tasks, |t| duration_millis(t.retry_policy.max_backoff)))
        .bind(each(leases, |l| {
            l.as_ref().map(|l| l.session_id.to_string())
        }))
        .bind(each(leases, |l| l.as_ref().map(|l| l.agent_id.to_string())))
        .bind(each(leases, |l| l.as_ref().map(|l| millis(l.expires_at))))
}

/// The task types checked, as [`INSERT_TASKS`]' arrays `$22` to `$28`.
fn bind_checked<'q>(query: InsertQuery<'q>, checked: &[&TaskType]) -> InsertQuery<'q> {
    query
        .bind(each(checked, |t| t.task_type.clone()))
        .bind(each(checked, |t| t.domain.clone()))
        .bind(each(checked, |t| i64::from(t.default_max_attempts)))
        .bind(each(checked, |t| duration_millis(t.default_timeout)))
        .bind(each(checked, |t| {
            duration_millis(t.default_retry_policy.initial_backoff)
        }))
        .bind(each(checked, |t| t.default_retry_policy.backoff_factor))
        .bind(each(checked, |t| {
            duration_millis(t.default_retry_policy.max_backoff)
        }))
}

/// [`INSERT_TASKS`] while its values are bound.
type InsertQuery<'q> = sqlx::query::QueryScalar<'q, Postgres, String, sqlx::postgres::PgArguments>;

/// Inserts a batch of tasks from arrays (see [`insert_tasks`]): `$1` to
/// `$20` the tasks' columns, `$21` the ready channel, `$22` to `$28` the
/// task types checked, `$29` the tasks' required labels, `$30` their
/// parents and `$31` their deadlines to start by.
const INSERT_TASKS: &str = "WITH inserted AS (
             INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts,
                 max_attempts, timeout_ms, run_at, created_at, updated_at, started_at,
                 idempotency_key, handler_version, metadata, retry_initial_ms, retry_factor,
                 retry_max_ms, lease_session, lease_agent, lease_expires_at, required_labels,
                 parent_id, start_by)
             SELECT id::uuid, task_type, domain, payload::jsonb, status, priority, attempts,
                 max_attempts, timeout_ms, run_at, created_at, created_at,
                 CASE WHEN status = 'running' THEN created_at END,
                 idempotency_key, handler_version, metadata::jsonb, retry_initial_ms,
                 retry_factor, retry_max_ms, lease_session, lease_agent, lease_expires_at,
                 required_labels::jsonb, parent_id::uuid, start_by
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                 $11::bigint[], $12::text[], $13::text[], $14::text[], $15::bigint[],
                 $16::float8[], $17::bigint[], $18::text[], $19::text[], $20::bigint[],
                 $29::text[], $30::text[], $31::bigint[])
                 AS new (id, task_type, domain, payload, status, priority, attempts,
                     max_attempts, timeout_ms, run_at, created_at, idempotency_key,
                     handler_version, metadata, retry_initial_ms, retry_factor, retry_max_ms,
                     lease_session, lease_agent, lease_expires_at, required_labels, parent_id,
                     start_by)
             WHERE NOT EXISTS (
                 SELECT 1 FROM UNNEST($22::text[], $23::text[], $24::bigint[], $25::bigint[],
                     $26::bigint[], $27::float8[], $28::bigint[])
                     AS checked (task_type, domain, max_attempts, timeout_ms, initial_ms,
                         factor, max_ms)
                 WHERE NOT EXISTS (
                     SELECT 1 FROM task_types t
                     WHERE t.task_type = checked.task_type AND t.domain = checked.domain
                         AND t.default_max_attempts = checked.max_attempts
                         AND t.default_timeout_ms = checked.timeout_ms
                         AND t.retry_initial_ms = checked.initial_ms
                         AND t.retry_factor = checked.factor
                         AND t.retry_max_ms = checked.max_ms
                         AND NOT (t.paused <> 0 AND t.refuse_enqueues <> 0)))
             ON CONFLICT (task_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id, task_type, status)
         SELECT inserted.id::text FROM inserted,
             (SELECT count(pg_notify($21, task_type))
              FROM (SELECT DISTINCT task_type FROM inserted WHERE status = 'pending') AS types)
                 AS announced";

/// [`complete_in_bulk`]'s statement: `$1` the clock, `$2` to `$4` the
/// ids, attempts and results.
pub(super) static COMPLETE_IN_BULK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH completed AS (
             UPDATE tasks SET status = 'completed', result = c.completed_result::jsonb, last_error = NULL,
                 finished_at = $1, updated_at = $1, lease_expires_at = NULL
             FROM unnest($2::text[], $3::bigint[], $4::text[]) AS c(completed_id, completed_attempt, completed_result)
             WHERE id = c.completed_id::uuid AND {STILL_RUNNING} AND attempts = c.completed_attempt
             RETURNING {RECORDED_COLUMNS}),
         counted AS (
             INSERT INTO task_counts (task_type, status, second, count)
             SELECT task_type, 'completed', $1 / 1000, count(*) FROM completed GROUP BY task_type)
         SELECT * FROM completed"
    )
});

/// Completes many attempts in one statement: the tasks still RUNNING at that
/// attempt become COMPLETED (the fence), keeping who ran the attempt, which
/// is how their attempts read as completed (`store::attempts_sql`), and a
/// data-modifying CTE counts them in `task_counts`. Returns the tasks that
/// changed.
pub(super) async fn complete_in_bulk(
    connection: &mut PgConnection,
    results: &[(Uuid, u32, AttemptResult)],
    bulk: &[usize],
    now: DateTime<Utc>,
) -> Result<Vec<RecordedTask>> {
    if bulk.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(bulk.len());
    let mut attempts = Vec::with_capacity(bulk.len());
    let mut values = Vec::with_capacity(bulk.len());
    for &index in bulk {
        let (id, attempt, result) = &results[index];
        let AttemptResult::Completed(value) = result else {
            unreachable!("bulk holds completions only")
        };
        ids.push(id.to_string());
        attempts.push(i64::from(*attempt));
        values.push(json_text(value));
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(COMPLETE_IN_BULK.as_str()))
        .bind(millis(now))
        .bind(&ids)
        .bind(&attempts)
        .bind(&values)
        .fetch_all(connection)
        .await?;
    rows.iter().map(rows::recorded_task).collect()
}

/// [`record_one`]'s statement: `$1` to `$5` the attempt's end, `$6` the
/// task and `$7` its attempt.
pub(super) static RECORD_ONE: LazyLock<String> = LazyLock::new(|| {
    let assignments = rules::end_attempt_assignments("$1", "$2::jsonb", "$3", "$4", "$5");
    format!(
        "UPDATE tasks SET {assignments}
         WHERE id = $6::uuid AND {STILL_RUNNING} AND attempts = $7
         RETURNING {RECORDED_COLUMNS}"
    )
});

/// Records one attempt's result inside a batch's transaction.
pub(super) async fn record_one(
    tx: &mut Tx,
    id: Uuid,
    attempt: u32,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Result<ResultOutcome> {
    let Some(task) = Shared::<Postgres>::fetch_task(&mut **tx, id, true).await? else {
        return Ok(ResultOutcome::Stale);
    };
    let Some(end) = rules::end_attempt(&task, attempt, result, now) else {
        return Ok(ResultOutcome::Stale);
    };
    if end.status != TaskStatus::Completed {
        Shared::<Postgres>::end_one_attempt(
            tx,
            id,
            attempt,
            millis(now),
            end.outcome,
            end.error.clone(),
        )
        .await?;
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(RECORD_ONE.as_str()))
        .bind(end.status.as_str())
        .bind(end.result)
        .bind(end.error)
        .bind(millis(end.run_at))
        .bind(millis(now))
        .bind(id.to_string())
        .bind(i64::from(attempt))
        .fetch_one(&mut **tx)
        .await?;
    let recorded = rows::recorded_task(&row)?;
    if recorded.status == TaskStatus::Completed {
        // Counted here as the bulk statement counts its own (migration 0004).
        sqlx::query("INSERT INTO task_counts (task_type, status, second, count) VALUES ($1, 'completed', $2 / 1000, 1)")
            .bind(&recorded.task_type)
            .bind(millis(now))
            .execute(&mut **tx)
            .await?;
    }
    Ok(ResultOutcome::Applied(recorded))
}
