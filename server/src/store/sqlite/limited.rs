//! Claims of a task type under a flow-control policy
//! ([`crate::engine::flow`]), on the writer thread: the policy is read in
//! the claim's own transaction (the one writer makes it exact), what runs
//! is counted through the index of leased tasks, and only what the limits
//! leave room for is leased — with a concurrency key, every key's first
//! waiting task before any key's second.

use chrono::{DateTime, Utc};

use super::TASK_COLUMNS;
use super::writer_thread;
use super::writes::{Route, lease_tasks, ready_tasks, routed};
use crate::engine::flow::ConcurrencyKey;
use crate::error::{Error, Result};
use crate::model::{Lease, Task};
use crate::store::rows::{self, millis};

/// Leases up to `limit` ready tasks of `task_type` within its policy's
/// limits.
pub(super) fn claim_limited(
    connection: &rusqlite::Connection,
    task_type: &str,
    limit: u32,
    route: &Route,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    let (policy, bucket) = {
        let mut statement =
            connection.prepare_cached("SELECT * FROM task_types WHERE task_type = ?1")?;
        let rows = statement.query([task_type])?;
        writer_thread::decode(rows, |row| {
            Ok((rows::task_type(row)?.flow, rows::rate_bucket(row)?))
        })?
        .pop()
        .ok_or_else(|| Error::Corrupt(format!("a claim of unregistered type {task_type}")))?
    };
    let running: u32 = connection
        .prepare_cached(
            "SELECT count(*) FROM tasks INDEXED BY tasks_leased
             WHERE status = 'running' AND task_type = ?1",
        )?
        .query_row([task_type], |row| row.get(0))?;
    let tokens = policy
        .rate_limit
        .map(|rate| rate.refill(bucket.0, bucket.1, millis(now)));
    let room = policy
        .room(running)
        .min(limit)
        .min(tokens.map_or(u32::MAX, |tokens| tokens as u32));
    if room == 0 {
        return Ok(Vec::new());
    }
    let ready = match (&policy.concurrency_key, policy.max_running_per_key) {
        (Some(key), Some(per_key)) => {
            ready_by_key(connection, task_type, key, per_key, room, route, now)?
        }
        _ => ready_tasks(connection, task_type, room, route, now)?,
    };
    let leased = lease_tasks(connection, ready, lease, now)?;
    if let Some(tokens) = tokens {
        // Each start spends a token; the bucket is shared through the row.
        connection
            .prepare_cached(
                "UPDATE task_types SET rate_tokens = ?2, rate_refilled_at = ?3 WHERE task_type = ?1",
            )?
            .execute((task_type, tokens - leased.len() as f64, millis(now)))?;
    }
    Ok(leased)
}

/// Up to `limit` ready tasks of `task_type` that `route` may take, no key
/// past `per_key` running: ranked within each key in priority then age
/// order, and taken by rank, so keys take turns.
fn ready_by_key(
    connection: &rusqlite::Connection,
    task_type: &str,
    key: &ConcurrencyKey,
    per_key: u32,
    limit: u32,
    route: &Route,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    let value = format!("json_extract({}, ?3)", key.column());
    let columns: Vec<String> = TASK_COLUMNS
        .split(',')
        .map(|column| format!("tasks.{0} AS {0}", column.trim()))
        .collect();
    // One statement per key column; rusqlite caches each.
    let sql = format!(
        "WITH running AS (
             SELECT {value} AS k, count(*) AS n FROM tasks INDEXED BY tasks_leased
             WHERE status = 'running' AND task_type = ?1 GROUP BY 1),
         ranked AS (
             SELECT id, {value} AS k, priority, run_at,
                 row_number() OVER (PARTITION BY {value} ORDER BY priority DESC, run_at, id) AS turn
             FROM tasks
             WHERE status = 'pending' AND task_type = ?1 AND run_at <= ?2 AND {}),
         picked AS (
             SELECT ranked.id AS picked_id, ranked.turn AS picked_turn,
                 ranked.priority AS picked_priority, ranked.run_at AS picked_run_at
             FROM ranked LEFT JOIN running ON running.k IS ranked.k
             WHERE ranked.turn <= ?4 - coalesce(running.n, 0)
             ORDER BY ranked.turn, ranked.priority DESC, ranked.run_at, ranked.id LIMIT ?5)
         SELECT {} FROM picked JOIN tasks ON tasks.id = picked.picked_id
         ORDER BY picked_turn, picked_priority DESC, picked_run_at, picked_id",
        routed("tasks", "?6", "?7"),
        columns.join(", ")
    );
    let path = format!("$.{}", key.fields.join("."));
    let mut statement = connection.prepare_cached(&sql)?;
    let ready = statement.query((
        task_type,
        millis(now),
        path,
        per_key,
        limit,
        &route.versions,
        &route.labels,
    ))?;
    writer_thread::decode(ready, |row| rows::task(row))
}
