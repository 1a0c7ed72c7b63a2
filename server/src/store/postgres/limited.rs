//! Claims of a task type under a flow-control policy
//! ([`crate::engine::flow`]). The claim locks the type's row (`FOR
//! UPDATE`), so the claims of every replica take turns; counts what runs;
//! and leases only what the limits leave room for — with a key, the
//! oldest ready tasks whose keys have room ([`KeyedAdmission`]).

use std::collections::HashMap;
use std::sync::LazyLock;

use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::Tx;
use super::writes::{bind_lease, claim_type, claimable, lease_ready};
use crate::engine::admission::{KeyedAdmission, RunningPerKey};
use crate::engine::flow::{FlowPolicy, KeyPath, KeySource};
use crate::error::{Error, Result};
use crate::model::{Claimant, Lease, Task};
use crate::store::rows::{self, json_text};

/// Leases up to `limit` ready tasks of `task_type` within its policy's
/// limits, in the caller's transaction.
pub(super) async fn claim_limited(
    tx: &mut Tx,
    task_type: &str,
    limit: u32,
    claimant: &Claimant<'_>,
    lease: &Lease,
    now: i64,
) -> Result<Vec<Task>> {
    let row = sqlx::query("SELECT * FROM task_types WHERE task_type = $1 FOR UPDATE")
        .bind(task_type.to_owned())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("a claim of unregistered type {task_type}")))?;
    let policy = rows::task_type(&row)?.flow;
    let bucket = rows::rate_bucket(&row)?;
    // What runs matters only to max_running: a round trip saved for the
    // other limits. The type is counted in a FILTER, not the WHERE: with
    // it in the WHERE and no fresh statistics (a table just filled), the
    // planner joined the type's whole index to the running ones — 3.5 ms
    // per claim over 60,000 tasks instead of 0.02 ms through `tasks_leased`.
    let running: i64 = if policy.max_running.is_some() {
        sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE task_type = $1) FROM tasks WHERE status = 'running'",
        )
        .bind(task_type.to_owned())
        .fetch_one(&mut **tx)
        .await?
    } else {
        0
    };
    let tokens = policy
        .type_rate_limit()
        .map(|rate| rate.refill(bucket.0, bucket.1, now));
    let room = policy
        .room(u32::try_from(running).unwrap_or(u32::MAX))
        .min(limit)
        .min(tokens.map_or(u32::MAX, |tokens| tokens as u32));
    if room == 0 {
        return Ok(Vec::new());
    }
    let leased = if policy.keyed() {
        claim_by_key(tx, task_type, &policy, room, claimant, lease, now).await?
    } else {
        claim_type(tx, task_type, room, claimant, lease, now).await?
    };
    if let Some(tokens) = tokens {
        // Each start spends a token; the bucket is shared through the row,
        // which this transaction holds.
        sqlx::query(
            "UPDATE task_types SET rate_tokens = $2, rate_refilled_at = $3 WHERE task_type = $1",
        )
        .bind(task_type.to_owned())
        .bind(tokens - leased.len() as f64)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(leased)
}

/// How many ready tasks a keyed claim reads at a time.
const CHUNK: i64 = 256;

/// How many ready tasks a keyed claim of `limit` reads first: twice as
/// many, so a few keys at their limit still leave enough, but not a whole
/// [`CHUNK`], since reading each task's key costs. Later chunks, read only
/// when keys at their limit fill the first, are whole.
fn first_chunk_size(limit: u32) -> i64 {
    (2 * i64::from(limit)).clamp(16, CHUNK)
}

/// Leases up to `limit` ready tasks of `task_type` in priority then age
/// order, each admitted by its keys ([`KeyedAdmission`]): no concurrency
/// key holds more than its share and no rate key starts more than its
/// bucket holds, so another key's tasks start as soon as there is room.
/// The ready index is read a chunk at a time (a small one first, see
/// [`first_chunk_size`]), only as far as the picks need, and the rate
/// buckets of a chunk's keys in one query. The type's
/// row lock keeps other limited claims out; the lease still takes PENDING
/// rows only.
async fn claim_by_key(
    tx: &mut Tx,
    task_type: &str,
    policy: &FlowPolicy,
    limit: u32,
    claimant: &Claimant<'_>,
    lease: &Lease,
    now: i64,
) -> Result<Vec<Task>> {
    static READY: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
        ["payload", "metadata"].map(|column| {
            ["payload", "metadata"].map(|rate_column| ready_by_key(column, rate_column))
        })
    });
    static LEASE: LazyLock<String> =
        LazyLock::new(|| lease_ready("SELECT unnest($5::text[])::uuid AS ready_id"));
    let (concurrency, rate) = (policy.limited_key(), policy.rate_key());
    // A key the policy lacks reads NULL through a NULL path.
    let ready = &READY[concurrency.map_or(0, source)][rate.map_or(0, source)];
    let mut admission: Option<KeyedAdmission> = None;
    let mut picked: Vec<String> = Vec::new();
    // Where the previous chunk ended: (priority, run_at, id).
    let mut after = (i64::MAX, i64::MIN, uuid::Uuid::nil().to_string());
    'chunks: loop {
        let size = match admission {
            None => first_chunk_size(limit),
            Some(_) => CHUNK,
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(ready.as_str()))
            .bind(task_type.to_owned())
            .bind(concurrency.map(|key| key.fields.clone()))
            .bind(now)
            .bind(claimant.versions.to_vec())
            .bind(json_text(claimant.labels))
            .bind(after.0)
            .bind(after.1)
            .bind(after.2.clone())
            .bind(size)
            .bind(rate.map(|key| key.fields.clone()))
            .bind(admission.is_none() && concurrency.is_some())
            .fetch_all(&mut **tx)
            .await?;
        let (running, chunk) = running_and_ready(rows)?;
        let admission = admission.get_or_insert_with(|| KeyedAdmission::new(policy, running, now));
        load_buckets(tx, task_type, &chunk, admission).await?;
        for row in &chunk {
            let id: String = row.try_get("task_id")?;
            let rate_key: Option<String> = row.try_get("rk")?;
            if admission.admit(row.try_get("k")?, rate_key.as_deref()) {
                picked.push(id.clone());
                if picked.len() == limit as usize {
                    break 'chunks;
                }
            }
            after = (row.try_get("priority")?, row.try_get("run_at")?, id);
        }
        if (chunk.len() as i64) < size {
            break;
        }
    }
    let spent = admission
        .map(|admission| admission.spent())
        .unwrap_or_default();
    if !spent.is_empty() {
        sqlx::query(
            "INSERT INTO rate_buckets (task_type, key, tokens, refilled_at)
             SELECT $1, key, tokens, $4 FROM unnest($2::text[], $3::float8[]) AS s (key, tokens)
             ON CONFLICT (task_type, key) DO UPDATE
                 SET tokens = excluded.tokens, refilled_at = excluded.refilled_at",
        )
        .bind(task_type.to_owned())
        .bind(spent.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>())
        .bind(spent.iter().map(|(_, tokens)| *tokens).collect::<Vec<_>>())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let rows = bind_lease(sqlx::query(sqlx::AssertSqlSafe(LEASE.as_str())), lease, now)
        .bind(picked)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(rows::task).collect()
}

/// Loads, in one query, the rate buckets of the keys in `chunk` that
/// `admission` has not met yet.
async fn load_buckets(
    tx: &mut Tx,
    task_type: &str,
    chunk: &[PgRow],
    admission: &mut KeyedAdmission,
) -> Result<()> {
    let mut wanted: Vec<Option<String>> = Vec::new();
    for row in chunk {
        let rate_key: Option<String> = row.try_get("rk")?;
        if admission.needs_bucket(rate_key.as_deref()) && !wanted.contains(&rate_key) {
            wanted.push(rate_key);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = wanted
        .iter()
        .map(|key| key.clone().unwrap_or_default())
        .collect();
    let stored: HashMap<String, (f64, i64)> = sqlx::query_as(
        "SELECT key, tokens, refilled_at FROM rate_buckets
         WHERE task_type = $1 AND key = ANY($2::text[])",
    )
    .bind(task_type.to_owned())
    .bind(keys)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(key, tokens, refilled_at)| (key, (tokens, refilled_at)))
    .collect();
    for key in wanted {
        let bucket = stored.get(key.as_deref().unwrap_or_default()).copied();
        admission.load_bucket(key.as_deref(), bucket);
    }
    Ok(())
}

/// Which of [`ready_by_key`]'s columns a key is read from.
fn source(key: &KeyPath) -> usize {
    match key.source {
        KeySource::Payload => 0,
        KeySource::Metadata => 1,
    }
}

/// A chunk of type `$1`'s ready tasks with their concurrency key
/// (`column` at path `$2`) and rate key (`rate_column` at path `$10`), due
/// by `$3`, that the claimant (`$4` versions, `$5` labels) may take, after
/// (`$6` priority, `$7` run_at, `$8` id), in delivery order, `$9` at most;
/// and when `$11`, first, how many tasks of the type run per concurrency
/// key (the type in a FILTER, as in `claim_limited`'s count; other types'
/// keys count 0). Both in one statement, so one snapshot taken after the
/// type's row was locked, and one round trip fewer. The id is named
/// `task_id`: named `id`, the text would be what `ORDER BY id` sorts, and
/// the ready index's order would be lost.
fn ready_by_key(column: &str, rate_column: &str) -> String {
    format!(
        "SELECT 'running' AS kind, NULL::text AS task_id, {column} #>> $2::text[] AS k,
             NULL::text AS rk, count(*) FILTER (WHERE task_type = $1) AS n,
             NULL::bigint AS priority, NULL::bigint AS run_at
         FROM tasks WHERE $11 AND status = 'running' GROUP BY 3
         UNION ALL
         (SELECT 'ready', id::text AS task_id, {column} #>> $2::text[],
              {rate_column} #>> $10::text[], 0, priority, run_at FROM tasks
          WHERE status = 'pending' AND task_type = $1 AND run_at <= $3 AND {}
              AND (priority < $6 OR (priority = $6
                  AND (run_at > $7 OR (run_at = $7 AND id > $8::uuid))))
          ORDER BY priority DESC, run_at, id LIMIT $9)",
        claimable("tasks", "$3", "$4", "$5")
    )
}

/// [`ready_by_key`]'s rows apart: the running count per concurrency key,
/// and the ready tasks in delivery order (a UNION does not promise to keep
/// the branch's order, so it is restored here: a UUIDv7's text sorts as
/// the id does).
fn running_and_ready(rows: Vec<PgRow>) -> Result<(RunningPerKey, Vec<PgRow>)> {
    let mut running = HashMap::new();
    let mut ready = Vec::with_capacity(rows.len());
    for row in rows {
        if row.try_get::<&str, _>("kind")? == "running" {
            let count: i64 = row.try_get("n")?;
            running.insert(row.try_get("k")?, u32::try_from(count).unwrap_or(u32::MAX));
        } else {
            ready.push(row);
        }
    }
    let order = |row: &PgRow| -> Result<(std::cmp::Reverse<i64>, i64, String)> {
        Ok((
            std::cmp::Reverse(row.try_get("priority")?),
            row.try_get("run_at")?,
            row.try_get("task_id")?,
        ))
    };
    let mut keyed = ready
        .into_iter()
        .map(|row| Ok((order(&row)?, row)))
        .collect::<Result<Vec<_>>>()?;
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((running, keyed.into_iter().map(|(_, row)| row).collect()))
}
