//! The writes the writer thread runs ([`super::writer_thread`]), through
//! rusqlite on the connection it owns: claims and result batches, the path
//! every task takes. Each runs inside the thread's transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Sqlite;
use uuid::Uuid;

use super::writer_thread;
use super::{RECORDED_COLUMNS, TASK_COLUMNS};
use crate::error::{Error, Result};
use crate::model::{AttemptResult, Claimant, Lease, RecordedTask, ResultOutcome, Task, TaskStatus};
use crate::store::rows::{self, json_text, millis};
use crate::store::rules;
use crate::store::sql::Dialect;

/// Leases up to `limit` ready tasks of one type, in priority then age order.
/// The lease columns are the running attempt's record (`store::attempts_sql`).
/// Runs inside the writer thread's transaction, so nothing changes between
/// reading the tasks and leasing them.
///
/// The tasks are read, then leased by id, instead of one `UPDATE …
/// RETURNING`: SQLite stores the rows an UPDATE returns in a temporary
/// table before handing them out, which cost more than finding the leased
/// rows a second time (docs/performance.md).
pub(super) fn claim_type(
    connection: &rusqlite::Connection,
    task_type: &str,
    limit: u32,
    route: &Route,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    let tasks = ready_tasks(connection, task_type, limit, route, now)?;
    lease_tasks(connection, tasks, lease, now)
}

/// A claimant's versions and labels (`model::Claimant`), as the JSON the
/// claim's statements read them from.
pub(super) struct Route {
    /// The `type<TAB>version` keys, a JSON array.
    pub(super) versions: String,
    /// The labels, a JSON object.
    pub(super) labels: String,
}

impl Route {
    /// The claimant's versions and labels as JSON.
    pub(super) fn new(claimant: &Claimant<'_>) -> Self {
        Route {
            versions: json_text(claimant.versions),
            labels: json_text(claimant.labels),
        }
    }
}

/// The condition that a ready task of `alias` may go, at the instant
/// `now`, to the claimant whose versions and labels are the parameters
/// `versions` and `labels`: its deadline to start by has not passed (a task
/// past it waits only to be expired), it names no version or one of them,
/// and it requires no labels or only ones it has. Most tasks do none of
/// that, which costs three comparisons.
pub(super) fn claimable(alias: &str, now: &str, versions: &str, labels: &str) -> String {
    format!(
        "({alias}.start_by IS NULL OR {alias}.start_by > {now})
         AND ({alias}.handler_version = '' OR {alias}.task_type || char(9) || {alias}.handler_version
             IN (SELECT value FROM json_each({versions})))
         AND ({alias}.required_labels = '{{}}' OR NOT EXISTS (
             SELECT 1 FROM json_each({alias}.required_labels) AS required
             WHERE required.value IS NOT (
                 SELECT has.value FROM json_each({labels}) AS has WHERE has.key = required.key)))"
    )
}

/// Up to `limit` ready tasks of one type that `route` may take, in priority
/// then age order, as they are before a claim leases them.
pub(super) fn ready_tasks(
    connection: &rusqlite::Connection,
    task_type: &str,
    limit: u32,
    route: &Route,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    static READY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE status = 'pending' AND task_type = ?1 AND run_at <= ?2 AND {}
             ORDER BY priority DESC, run_at, id LIMIT ?3",
            claimable("tasks", "?2", "?4", "?5")
        )
    });
    let mut statement = connection.prepare_cached(&READY)?;
    let ready = statement.query((
        task_type,
        millis(now),
        limit,
        &route.versions,
        &route.labels,
    ))?;
    writer_thread::decode(ready, |row| rows::task(row))
}

/// The first pass of a claim over several types, in one statement: up to
/// `share` ready tasks of each type of `turn`, in priority then age order,
/// taking the types in turn until `limit` tasks are found. One statement
/// per type cost a claim over 1,000 types a statement's setup per task.
pub(super) fn ready_in_turn(
    connection: &rusqlite::Connection,
    turn: &[&str],
    share: u32,
    limit: u32,
    route: &Route,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    // The types are read in their order (json_each's), each through a
    // correlated subquery on the ready index, and reading stops at the
    // limit. json_each has an `id` column too, so the task's are named.
    static READY_IN_TURN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns: Vec<String> = TASK_COLUMNS
            .split(',')
            .map(|column| format!("tasks.{0} AS {0}", column.trim()))
            .collect();
        format!(
            "SELECT {} FROM json_each(?1) AS wanted
             JOIN tasks ON tasks.id IN (
                 SELECT candidate.id FROM tasks AS candidate
                 WHERE candidate.status = 'pending' AND candidate.task_type = wanted.value
                     AND candidate.run_at <= ?2 AND {}
                 ORDER BY candidate.priority DESC, candidate.run_at, candidate.id LIMIT ?3)
             LIMIT ?4",
            columns.join(", "),
            claimable("candidate", "?2", "?5", "?6")
        )
    });
    let mut statement = connection.prepare_cached(&READY_IN_TURN)?;
    let ready = statement.query((
        json_text(turn),
        millis(now),
        share,
        limit,
        &route.versions,
        &route.labels,
    ))?;
    writer_thread::decode(ready, |row| rows::task(row))
}

/// Leases `tasks`, read by [`ready_tasks`] or [`ready_in_turn`] in this
/// transaction, in one statement, and starts their attempts.
pub(super) fn lease_tasks(
    connection: &rusqlite::Connection,
    mut tasks: Vec<Task>,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    if tasks.is_empty() {
        return Ok(tasks);
    }
    let ids: Vec<String> = tasks.iter().map(|task| task.id.to_string()).collect();
    let leased = connection
        .prepare_cached(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = ?1,
                 updated_at = ?1, lease_session = ?2, lease_agent = ?3, lease_expires_at = ?4
             WHERE id IN (SELECT value FROM json_each(?5)) AND status = 'pending'",
        )?
        .execute((
            millis(now),
            lease.session_id.to_string(),
            lease.agent_id.to_string(),
            millis(lease.expires_at),
            json_text(&ids),
        ))?;
    if leased != tasks.len() {
        return Err(Error::Corrupt(format!(
            "a claim read {} ready tasks and leased {leased}",
            tasks.len()
        )));
    }
    for task in &mut tasks {
        rules::start_attempt(task, now);
    }
    Ok(tasks)
}

/// Completes many attempts in one statement: the tasks still RUNNING at that
/// attempt become COMPLETED (the fence), keeping who ran the attempt, which
/// is how their attempts read as completed (`store::attempts_sql`). `bulk`
/// is [`bulk_completions`]' JSON. Returns the tasks that changed.
pub(super) fn complete_in_bulk(
    connection: &rusqlite::Connection,
    bulk: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<RecordedTask>> {
    static COMPLETE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE tasks SET status = 'completed', result = c.value ->> '$.result',
                 last_error = NULL, finished_at = ?1, updated_at = ?1, lease_expires_at = NULL
             FROM json_each(?2) AS c
             WHERE tasks.id = c.value ->> '$.id' AND tasks.status = 'running'
                 AND tasks.attempts = c.value ->> '$.attempt'
             RETURNING {RECORDED_COLUMNS}"
        )
    });
    let Some(bulk) = bulk else {
        return Ok(Vec::new());
    };
    let mut statement = connection.prepare_cached(&COMPLETE)?;
    let changed = statement.query((millis(now), bulk))?;
    writer_thread::decode(changed, |row| rows::recorded_task(row))
}

/// The completions at the indices `bulk` of `results` as the JSON array
/// [`complete_in_bulk`] reads, or `None` when there are none. Encoded before
/// the batch goes to the writer thread, which has no CPU to spare in W1.
pub(super) fn bulk_completions(
    results: &[(Uuid, u32, AttemptResult)],
    bulk: &[usize],
) -> Option<String> {
    if bulk.is_empty() {
        return None;
    }
    let items: Vec<BulkCompletion> = bulk
        .iter()
        .map(|&i| {
            let (id, attempt, result) = &results[i];
            let AttemptResult::Completed(value) = result else {
                unreachable!("bulk holds completions only")
            };
            BulkCompletion {
                id: id.to_string(),
                attempt: *attempt,
                result: json_text(value),
            }
        })
        .collect();
    Some(json_text(&items))
}

/// Counts the completions among a batch's `outcomes` in `task_counts`, in
/// the batch's transaction: one upsert per task type, where a row trigger
/// would fire once per task (migration 0009).
pub(super) fn count_completions(
    connection: &rusqlite::Connection,
    outcomes: &[ResultOutcome],
    now: DateTime<Utc>,
) -> Result<()> {
    let mut by_type: BTreeMap<&str, i64> = BTreeMap::new();
    for outcome in outcomes {
        if let ResultOutcome::Applied(task) = outcome
            && task.status == TaskStatus::Completed
        {
            *by_type.entry(task.task_type.as_str()).or_default() += 1;
        }
    }
    if by_type.is_empty() {
        return Ok(());
    }
    connection
        .prepare_cached(
            "INSERT INTO task_counts (task_type, status, second, count)
             SELECT key, 'completed', ?1, value FROM json_each(?2) WHERE true
             ON CONFLICT (task_type, status, second) DO UPDATE SET count = count + excluded.count",
        )?
        .execute((now.timestamp(), json_text(&by_type)))?;
    Ok(())
}

/// One completion in [`complete_in_bulk`]'s JSON array, serialized straight
/// to text (no intermediate `serde_json::Value` maps). Its result travels as
/// the text to store, so SQLite copies it without parsing it.
#[derive(serde::Serialize)]
struct BulkCompletion {
    id: String,
    attempt: u32,
    result: String,
}

/// Records one attempt's result inside a batch's transaction.
pub(super) fn record_one(
    connection: &rusqlite::Connection,
    id: Uuid,
    attempt: u32,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Result<ResultOutcome> {
    static FINISH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let assignments = rules::end_attempt_assignments("?1", "?2", "?3", "?4", "?5");
        format!(
            "UPDATE tasks SET {assignments}
             WHERE id = ?6 AND status = 'running' AND attempts = ?7
             RETURNING {RECORDED_COLUMNS}"
        )
    });
    let task = {
        let mut statement = connection.prepare_cached(Sqlite::statements().fetch_task(false))?;
        writer_thread::decode(statement.query([id.to_string()])?, |row| rows::task(row))?.pop()
    };
    let Some(task) = task else {
        return Ok(ResultOutcome::Stale);
    };
    let Some(end) = rules::end_attempt(&task, attempt, result, now) else {
        return Ok(ResultOutcome::Stale);
    };
    if end.status != TaskStatus::Completed {
        connection
            .prepare_cached(Sqlite::statements().end_one_attempt())?
            .execute((
                millis(now),
                end.outcome,
                end.error.as_deref(),
                id.to_string(),
                attempt,
            ))?;
    }
    let mut statement = connection.prepare_cached(&FINISH)?;
    let changed = statement.query((
        end.status.as_str(),
        end.result,
        end.error,
        millis(end.run_at),
        millis(now),
        id.to_string(),
        attempt,
    ))?;
    let task = writer_thread::decode(changed, |row| rows::recorded_task(row))?
        .pop()
        .ok_or_else(|| Error::Corrupt(format!("task {id} changed under the writer")))?;
    Ok(ResultOutcome::Applied(task))
}
