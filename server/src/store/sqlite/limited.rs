//! Claims of a task type under a flow-control policy
//! ([`crate::engine::flow`]), on the writer thread: the policy is read in
//! the claim's own transaction (the one writer makes it exact), what runs
//! is counted through the index of leased tasks, and only what the limits
//! leave room for is leased — with a concurrency key, the oldest ready
//! tasks whose keys have room.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::TASK_COLUMNS;
use super::writer_thread;
use super::writes::{Route, claimable, lease_tasks, ready_tasks};
use crate::engine::flow::ConcurrencyKey;
use crate::error::{Error, Result};
use crate::model::{Lease, Task};
use crate::store::rows::{self, json_text, millis};

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

/// Up to `limit` ready tasks of `task_type` that `route` may take, in
/// priority then age order, skipping those whose key already has
/// `per_key` running or picked: no key holds more than its share, so
/// another key's tasks start as soon as slots free. The ready index is read
/// only as far as the picks need.
fn ready_by_key(
    connection: &rusqlite::Connection,
    task_type: &str,
    key: &ConcurrencyKey,
    per_key: u32,
    limit: u32,
    route: &Route,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    let value = format!("CAST(json_extract({}, ?2) AS TEXT)", key.column());
    let path = format!("$.{}", key.fields.join("."));
    let mut taken: HashMap<Option<String>, u32> = HashMap::new();
    {
        let sql = format!(
            "SELECT {value} AS k, count(*) FROM tasks INDEXED BY tasks_leased
             WHERE status = 'running' AND task_type = ?1 GROUP BY 1"
        );
        let mut statement = connection.prepare_cached(&sql)?;
        let mut rows = statement.query((task_type, &path))?;
        while let Some(row) = rows.next()? {
            taken.insert(row.get(0)?, row.get(1)?);
        }
    }
    let sql = format!(
        "SELECT id, {value} AS k FROM tasks
         WHERE status = 'pending' AND task_type = ?1 AND run_at <= ?3 AND {}
         ORDER BY priority DESC, run_at, id",
        claimable("tasks", "?3", "?4", "?5")
    );
    let mut picked: Vec<String> = Vec::new();
    {
        let mut statement = connection.prepare_cached(&sql)?;
        let mut rows = statement.query((
            task_type,
            &path,
            millis(now),
            &route.versions,
            &route.labels,
        ))?;
        while picked.len() < limit as usize
            && let Some(row) = rows.next()?
        {
            let count = taken.entry(row.get(1)?).or_default();
            if *count < per_key {
                *count += 1;
                picked.push(row.get(0)?);
            }
        }
    }
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?1))
         ORDER BY priority DESC, run_at, id"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let ready = statement.query([json_text(&picked)])?;
    writer_thread::decode(ready, |row| rows::task(row))
}
