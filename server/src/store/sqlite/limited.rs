//! Claims of a task type under a flow-control policy
//! ([`crate::engine::flow`]), on the writer thread: the policy is read in
//! the claim's own transaction (the one writer makes it exact), what runs
//! is counted through the index of leased tasks, and only what the limits
//! leave room for is leased — with a key, the oldest ready tasks whose keys
//! have room ([`KeyedAdmission`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::TASK_COLUMNS;
use super::writer_thread;
use super::writes::{Route, claimable, lease_tasks, ready_tasks};
use crate::engine::admission::KeyedAdmission;
use crate::engine::flow::{FlowPolicy, KeyPath};
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
    // What runs matters only to max_running.
    let running: u32 = match policy.max_running {
        Some(_) => connection
            .prepare_cached(
                "SELECT count(*) FROM tasks INDEXED BY tasks_leased
                 WHERE status = 'running' AND task_type = ?1",
            )?
            .query_row([task_type], |row| row.get(0))?,
        None => 0,
    };
    let tokens = policy
        .type_rate_limit()
        .map(|rate| rate.refill(bucket.0, bucket.1, millis(now)));
    let room = policy
        .room(running)
        .min(limit)
        .min(tokens.map_or(u32::MAX, |tokens| tokens as u32));
    if room == 0 {
        return Ok(Vec::new());
    }
    let ready = if policy.keyed() {
        ready_by_key(connection, task_type, &policy, room, route, now)?
    } else {
        ready_tasks(connection, task_type, room, route, now)?
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
/// priority then age order, each admitted by its keys
/// ([`KeyedAdmission`]): no concurrency key holds more than its share and
/// no rate key starts more than its bucket holds, so another key's tasks
/// start as soon as there is room. The ready index is read only as far as
/// the picks need; the buckets spent from are written back.
fn ready_by_key(
    connection: &rusqlite::Connection,
    task_type: &str,
    policy: &FlowPolicy,
    limit: u32,
    route: &Route,
    now: DateTime<Utc>,
) -> Result<Vec<Task>> {
    let (concurrency, rate) = (policy.limited_key(), policy.rate_key());
    let (value, path) = key_value(concurrency, "?2");
    let (rate_value, rate_path) = key_value(rate, "?6");
    let mut running = HashMap::new();
    if concurrency.is_some() {
        let sql = format!(
            "SELECT {value} AS k, count(*) FROM tasks INDEXED BY tasks_leased
             WHERE status = 'running' AND task_type = ?1 GROUP BY 1"
        );
        let mut statement = connection.prepare_cached(&sql)?;
        let mut rows = statement.query((task_type, &path))?;
        while let Some(row) = rows.next()? {
            running.insert(row.get(0)?, row.get(1)?);
        }
    }
    let mut admission = KeyedAdmission::new(policy, running, millis(now));
    let mut bucket = connection.prepare_cached(
        "SELECT tokens, refilled_at FROM rate_buckets WHERE task_type = ?1 AND key = ?2",
    )?;
    let sql = format!(
        "SELECT id, {value} AS k, {rate_value} AS rk FROM tasks
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
            &rate_path,
        ))?;
        while picked.len() < limit as usize
            && let Some(row) = rows.next()?
        {
            let rate_key: Option<String> = row.get(2)?;
            if admission.needs_bucket(rate_key.as_deref()) {
                let key = rate_key.as_deref().unwrap_or_default();
                let stored = bucket
                    .query_map((task_type, key), |row| Ok((row.get(0)?, row.get(1)?)))?
                    .next()
                    .transpose()?;
                admission.load_bucket(rate_key.as_deref(), stored);
            }
            if admission.admit(row.get(1)?, rate_key.as_deref()) {
                picked.push(row.get(0)?);
            }
        }
    }
    let mut spend = connection.prepare_cached(
        "INSERT INTO rate_buckets (task_type, key, tokens, refilled_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (task_type, key) DO UPDATE
             SET tokens = excluded.tokens, refilled_at = excluded.refilled_at",
    )?;
    for (key, tokens) in admission.spent() {
        spend.execute((task_type, key, tokens, millis(now)))?;
    }
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?1))
         ORDER BY priority DESC, run_at, id"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let ready = statement.query([json_text(&picked)])?;
    writer_thread::decode(ready, |row| rows::task(row))
}

/// The SQL reading a task's value of `key` (bound as `parameter`, a JSON
/// path), and the path to bind. For no key, the parameter itself, bound
/// NULL: it reads NULL, and the statement still has the parameter.
fn key_value(key: Option<&KeyPath>, parameter: &str) -> (String, Option<String>) {
    match key {
        Some(key) => (
            format!("CAST(json_extract({}, {parameter}) AS TEXT)", key.column()),
            Some(format!("$.{}", key.fields.join("."))),
        ),
        None => (format!("CAST({parameter} AS TEXT)"), None),
    }
}
