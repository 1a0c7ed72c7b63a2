//! Enqueues on SQLite: one multi-row INSERT per batch of new tasks, and the
//! keyed path that looks each idempotency key up first.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Sqlite, SqliteConnection};

use super::write;
use crate::error::Result;
use crate::model::{Enqueued, Lease, NewTask, Task, TaskType};
use crate::store::EnqueueBatch;
use crate::store::rows::{self, duration_millis, json_text, millis, parse_uuid};
use crate::store::rules;
use crate::store::sql::Shared;

/// Enqueues tasks of which some carry idempotency keys: each key is looked
/// up first, and a taken one answers with the task that holds it.
pub(super) async fn enqueue_with_keys(
    writer: &mut SqliteConnection,
    batch: EnqueueBatch<'_>,
) -> Result<Vec<Enqueued>> {
    let EnqueueBatch {
        tasks,
        hand_off,
        now,
        firing,
    } = batch;
    let mut tx = write(writer).await?;
    let types = fetch_task_types(&mut tx, &tasks).await?;
    let windows = rules::key_windows(&tasks, now);
    let mut tasks = rules::new_tasks(tasks, &types, now)?;
    let leases = rules::hand_off(&mut tasks, hand_off);
    let mut enqueued = Vec::with_capacity(tasks.len());
    for ((task, lease), window) in tasks.into_iter().zip(leases).zip(windows) {
        if let Some(key) = &task.idempotency_key {
            if let Some(created_before) = window {
                Shared::<Sqlite>::release_expired_key(
                    &mut tx,
                    &task.task_type,
                    key,
                    created_before,
                )
                .await?;
            }
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE task_type = ? AND idempotency_key = ?",
            )
            .bind(task.task_type.clone())
            .bind(key.clone())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = existing {
                let id = parse_uuid(&id)?;
                let task = Shared::<Sqlite>::fetch_task(&mut *tx, id, false)
                    .await?
                    .ok_or_else(|| rules::not_found(id))?;
                enqueued.push(Enqueued {
                    task,
                    created: false,
                });
                continue;
            }
        }
        insert_tasks(&mut tx, std::slice::from_ref(&task), &[lease]).await?;
        enqueued.push(Enqueued {
            task,
            created: true,
        });
    }
    if let Some(firing) = firing {
        Shared::<Sqlite>::record_firing(&mut tx, firing, &enqueued).await?;
    }
    tx.commit().await?;
    Ok(enqueued)
}

/// The registered types among those `tasks` name, by name.
pub(super) async fn fetch_task_types(
    connection: &mut SqliteConnection,
    tasks: &[NewTask],
) -> Result<BTreeMap<String, TaskType>> {
    let names: BTreeSet<&str> = tasks.iter().map(|t| t.task_type.as_str()).collect();
    let rows =
        sqlx::query("SELECT * FROM task_types WHERE task_type IN (SELECT value FROM json_each(?))")
            .bind(json_text(&names))
            .fetch_all(connection)
            .await?;
    rows.iter()
        .map(|row| rows::task_type(row).map(|t| (t.task_type.clone(), t)))
        .collect()
}

/// The most tasks one INSERT writes: 25 bound values each, well inside
/// SQLite's 32,766.
pub(super) const ROWS_PER_INSERT: usize = 500;

/// Inserts tasks with one multi-row statement: PENDING, or RUNNING under
/// the lease beside them (their first attempt, read from the task row).
pub(super) async fn insert_tasks(
    connection: &mut SqliteConnection,
    tasks: &[Task],
    leases: &[Option<Lease>],
) -> Result<()> {
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = format!(
        "INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts,
             max_attempts, timeout_ms, run_at, created_at, updated_at, started_at,
             idempotency_key, handler_version, metadata, retry_initial_ms, retry_factor,
             retry_max_ms, lease_session, lease_agent, lease_expires_at, required_labels,
             parent_id, start_by)
         VALUES {}",
        vec![ROW; tasks.len()].join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (task, lease) in tasks.iter().zip(leases) {
        query = query
            .bind(task.id.to_string())
            .bind(task.task_type.clone())
            .bind(task.domain.clone())
            .bind(json_text(&task.payload))
            .bind(task.status.as_str())
            .bind(task.priority)
            .bind(task.attempts)
            .bind(task.max_attempts)
            .bind(duration_millis(task.timeout))
            .bind(millis(task.run_at))
            .bind(millis(task.created_at))
            .bind(millis(task.created_at))
            .bind(task.started_at.map(millis))
            .bind(task.idempotency_key.clone())
            .bind(task.handler_version.clone())
            .bind(json_text(&task.metadata))
            .bind(duration_millis(task.retry_policy.initial_backoff))
            .bind(task.retry_policy.backoff_factor)
            .bind(duration_millis(task.retry_policy.max_backoff))
            .bind(lease.as_ref().map(|l| l.session_id.to_string()))
            .bind(lease.as_ref().map(|l| l.agent_id.to_string()))
            .bind(lease.as_ref().map(|l| millis(l.expires_at)))
            .bind(json_text(&task.required_labels))
            .bind(task.parent_id.map(|id| id.to_string()))
            .bind(task.start_by.map(millis));
    }
    query.execute(connection).await?;
    Ok(())
}
