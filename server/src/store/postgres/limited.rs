//! Claims of a task type under a flow-control policy
//! ([`crate::engine::flow`]). The claim locks the type's row (`FOR
//! UPDATE`), so the claims of every replica take turns; counts what runs;
//! and leases only what the limits leave room for — with a concurrency
//! key, every key's first waiting task before any key's second.

use std::sync::LazyLock;

use super::Tx;
use super::writes::{bind_lease, claim_type, lease_ready, routed};
use crate::engine::flow::{ConcurrencyKey, KeySource};
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
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE status = 'running' AND task_type = $1",
    )
    .bind(task_type.to_owned())
    .fetch_one(&mut **tx)
    .await?;
    let tokens = policy
        .rate_limit
        .map(|rate| rate.refill(bucket.0, bucket.1, now));
    let room = policy
        .room(u32::try_from(running).unwrap_or(u32::MAX))
        .min(limit)
        .min(tokens.map_or(u32::MAX, |tokens| tokens as u32));
    if room == 0 {
        return Ok(Vec::new());
    }
    let leased = match (&policy.concurrency_key, policy.max_running_per_key) {
        (Some(key), Some(per_key)) => {
            claim_by_key(tx, task_type, (key, per_key), room, claimant, lease, now).await?
        }
        _ => claim_type(tx, task_type, room, claimant, lease, now).await?,
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

/// Leases up to `limit` ready tasks of `task_type`, no key past its limit
/// `per_key` running; keys take turns.
async fn claim_by_key(
    tx: &mut Tx,
    task_type: &str,
    (key, per_key): (&ConcurrencyKey, u32),
    limit: u32,
    claimant: &Claimant<'_>,
    lease: &Lease,
    now: i64,
) -> Result<Vec<Task>> {
    static BY_PAYLOAD: LazyLock<String> = LazyLock::new(|| by_key("payload"));
    static BY_METADATA: LazyLock<String> = LazyLock::new(|| by_key("metadata"));
    let sql = match key.source {
        KeySource::Payload => BY_PAYLOAD.as_str(),
        KeySource::Metadata => BY_METADATA.as_str(),
    };
    let rows = bind_lease(sqlx::query(sqlx::AssertSqlSafe(sql)), lease, now)
        .bind(task_type.to_owned())
        .bind(i64::from(limit))
        .bind(claimant.versions.to_vec())
        .bind(json_text(claimant.labels))
        .bind(key.fields.clone())
        .bind(i64::from(per_key))
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(rows::task).collect()
}

/// The claim of ready tasks keyed by `column` (`$9` the path, `$10` the
/// limit per key): ranked within each key in priority then age order and
/// taken by rank, no key past its limit. The type's row lock keeps other
/// limited claims out; a lease still skips rows that another claim took
/// meanwhile (`lease_ready` leases PENDING rows only).
fn by_key(column: &str) -> String {
    let value = format!("{column} #>> $9::text[]");
    lease_ready(&format!(
        "WITH running AS (
             SELECT {value} AS k, count(*) AS n FROM tasks
             WHERE status = 'running' AND task_type = $5 GROUP BY 1),
         ranked AS (
             SELECT id, {value} AS k, priority, run_at,
                 row_number() OVER (PARTITION BY {value} ORDER BY priority DESC, run_at, id) AS turn
             FROM tasks
             WHERE status = 'pending' AND task_type = $5 AND run_at <= $1 AND {})
         SELECT ranked.id AS ready_id FROM ranked
         LEFT JOIN running ON running.k IS NOT DISTINCT FROM ranked.k
         WHERE ranked.turn <= $10 - coalesce(running.n, 0)
         ORDER BY ranked.turn, ranked.priority DESC, ranked.run_at, ranked.id LIMIT $6",
        routed("tasks", "$7", "$8")
    ))
}
