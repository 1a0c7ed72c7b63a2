//! The limit rows: the minimum SQL a durable task needs, on the same kind of
//! database with the same schema and settings, without gRPC or any taskplane
//! code in the way.
//!
//! - Throughput (W1): insert tasks, lease them, mark them done, batched 100
//!   per transaction. taskplane's W1 figures are reported as fractions of
//!   these.
//! - Latency (W2): one durable single-row INSERT per task at W2's rate, each
//!   timed to its commit — the least any queue must wait before a task may
//!   start without risking its loss. taskplane's W2 percentiles are reported
//!   beside these.
//! - Transport (W2): one gRPC round trip that touches no database (the
//!   health check) at W2's rate — what the machine charges any gRPC service
//!   on top of its commit.

use std::time::{Duration, Instant};

use sqlx::{PgPool, SqlitePool};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use serde_json::json;

use taskplane_server::SqliteDurability;
use taskplane_server::error::Result;
use taskplane_server::store::{PostgresStore, SqliteStore, open_sqlite_writer};

/// Rows per transaction.
const BATCH: usize = 100;

/// Inserted and processed tasks per second.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Inserts per second.
    pub enqueue_per_sec: f64,
    /// Claims plus completions per second.
    pub process_per_sec: f64,
}

const REGISTER: &str = "INSERT INTO task_types (task_type, domain, default_max_attempts, default_timeout_ms, \
    retry_initial_ms, retry_factor, retry_max_ms, registered_at, updated_at) \
    VALUES ('limit', 'limit', 3, 1000, 1000, 2.0, 1000, 0, 0)";

/// How one database spells the parts of the INSERT that differ.
struct Dialect {
    id_cast: &'static str,
    payload: &'static str,
    /// How a numbered parameter begins.
    parameter: &'static str,
}

const SQLITE: Dialect = Dialect {
    id_cast: "",
    payload: "'{}'",
    parameter: "?",
};
const POSTGRES: Dialect = Dialect {
    id_cast: "::uuid",
    payload: "'{}'::jsonb",
    parameter: "$",
};

/// The columns every limit INSERT writes.
const INSERT_COLUMNS: &str = "INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts, \
    max_attempts, timeout_ms, retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at)";

/// One pending task with its id (1) and clock (2) bound, so the statement
/// is prepared once, as taskplane's are.
fn single_insert_sql(dialect: &Dialect) -> String {
    let Dialect {
        id_cast,
        payload,
        parameter: p,
    } = dialect;
    format!(
        "{INSERT_COLUMNS} VALUES ({p}1{id_cast}, 'limit', 'limit', {payload}, 'pending', 0, 0, 3, 1000, \
         1000, 2.0, 1000, {p}2, {p}2, {p}2)"
    )
}

/// One multi-row INSERT of `rows` pending tasks. Every value is generated
/// here (fresh UUIDs, the clock), so writing them literally is safe.
fn insert_sql(dialect: &Dialect, rows: usize) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let values: Vec<String> = (0..rows)
        .map(|_| {
            format!(
                "('{}'{}, 'limit', 'limit', {}, 'pending', 0, 0, 3, 1000, 1000, 2.0, 1000, {now}, {now}, {now})",
                uuid::Uuid::now_v7(),
                dialect.id_cast,
                dialect.payload
            )
        })
        .collect();
    format!("{INSERT_COLUMNS} VALUES {}", values.join(", "))
}

/// Times `insert` over every batch of `tasks`, then `process` until it finds nothing.
async fn measure(
    tasks: usize,
    mut insert: impl AsyncFnMut(usize) -> Result<()>,
    mut process: impl AsyncFnMut() -> Result<usize>,
) -> Result<Limits> {
    let started = Instant::now();
    let mut left = tasks;
    while left > 0 {
        let rows = left.min(BATCH);
        insert(rows).await?;
        left -= rows;
    }
    let enqueue_per_sec = tasks as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    while process().await? > 0 {}
    Ok(Limits {
        enqueue_per_sec,
        process_per_sec: tasks as f64 / started.elapsed().as_secs_f64(),
    })
}

/// The trigger that counts finished tasks for queue statistics: part of the
/// schema, but not of the minimum a durable task needs, so the limit rows
/// run without it.
const NOT_NEEDED_FOR_DURABILITY: &str = "task_counts_follow_finishes";

/// A fresh SQLite file at `url`, migrated, with the limit's task type.
async fn sqlite_pool(url: &str, durability: SqliteDurability) -> Result<SqlitePool> {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteStore::connect_options(url, durability)?)
        .await?;
    sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER {NOT_NEEDED_FOR_DURABILITY}"
    )))
    .execute(&pool)
    .await?;
    sqlx::query(REGISTER).execute(&pool).await?;
    Ok(pool)
}

/// A fresh PostgreSQL schema at `url`, migrated, with the limit's task type.
async fn postgres_pool(url: &str) -> Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(PostgresStore::connect_options(url)?)
        .await?;
    sqlx::migrate!("../../migrations/postgres")
        .run(&pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER {NOT_NEEDED_FOR_DURABILITY} ON tasks"
    )))
    .execute(&pool)
    .await?;
    sqlx::query(REGISTER).execute(&pool).await?;
    Ok(pool)
}

/// Measures the limits on a fresh SQLite file at `url`, through the driver
/// taskplane's writer thread uses (rusqlite, on the thread that owns the
/// connection), so the limit pays no hand-offs between threads either.
pub async fn sqlite(url: &str, tasks: usize, durability: SqliteDurability) -> Result<Limits> {
    sqlite_pool(url, durability).await?.close().await;
    let path = SqliteStore::connect_options(url, durability)?
        .get_filename()
        .to_owned();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let connection = open_sqlite_writer(&path, durability)?;
        let insert = async |rows: usize| {
            connection.execute_batch("BEGIN IMMEDIATE")?;
            connection.execute(&insert_sql(&SQLITE, rows), [])?;
            connection.execute_batch("COMMIT")?;
            Ok(())
        };
        let process = async || {
            let now = chrono::Utc::now().timestamp_millis();
            connection.execute_batch("BEGIN IMMEDIATE")?;
            let ids: Vec<String> = connection
                .prepare_cached(
                    "UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = ?1, lease_expires_at = ?1
                     WHERE id IN (SELECT id FROM tasks WHERE status = 'pending' AND task_type = 'limit' AND run_at <= ?1
                                  ORDER BY priority DESC, run_at, id LIMIT 100)
                     RETURNING id",
                )?
                .query_map([now], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            connection
                .prepare_cached("UPDATE tasks SET status = 'completed', finished_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))")?
                .execute((now, json!(ids).to_string()))?;
            connection.execute_batch("COMMIT")?;
            Ok(ids.len())
        };
        runtime.block_on(measure(tasks, insert, process))
    })
    .await
    .expect("the SQLite limit does not panic")
}

/// Measures the limits in a fresh PostgreSQL schema at `url`.
pub async fn postgres(url: &str, tasks: usize) -> Result<Limits> {
    let pool = postgres_pool(url).await?;
    let insert = async |rows: usize| {
        let mut tx = pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(insert_sql(&POSTGRES, rows)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    };
    let process = async || {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "WITH ready AS (SELECT id AS ready_id FROM tasks WHERE status = 'pending' AND task_type = 'limit' AND run_at <= $1
                            ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED)
             UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = $1, lease_expires_at = $1
             FROM ready WHERE id = ready.ready_id RETURNING id::text",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("UPDATE tasks SET status = 'completed', finished_at = $1 WHERE id = ANY($2::text[]::uuid[])")
            .bind(now)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids.len())
    };
    measure(tasks, insert, process).await
}

/// Inserts `count` single pending tasks at `rate` per second through
/// `pool`; returns each insert's milliseconds to commit, sorted.
async fn measure_latency<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    dialect: &Dialect,
    count: usize,
    rate: u32,
) -> Result<Vec<f64>>
where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let sql = single_insert_sql(dialect);
    time_each(count, rate, async || {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(pool)
            .await
            .map(drop)
    })
    .await
    .map_err(Into::into)
}

/// Calls made at the start of every latency series (taskplane's W2 and W3
/// windows, the limit rows, the gRPC floor) and left out of its figures.
/// The first calls pay once for what a running system has already done:
/// opening pooled connections, preparing statements on each, an agent's
/// first task. In W2 they were the three slowest of 2,000 enqueues, at 2.4
/// to 4.9 ms.
pub const WARMUP_CALLS: usize = 100;

/// Runs `operation` at `rate` per second, [`WARMUP_CALLS`] times untimed and
/// then `count` times, and returns how long each timed call took, in
/// milliseconds, sorted.
async fn time_each<E>(
    count: usize,
    rate: u32,
    mut operation: impl AsyncFnMut() -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..WARMUP_CALLS {
        ticker.tick().await;
        operation().await?;
    }
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        ticker.tick().await;
        let at = Instant::now();
        operation().await?;
        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// W2's transport limit: `count` health checks over `channel` at `rate`
/// per second, each timed from call to answer, in milliseconds, sorted.
pub async fn rpc_round_trips(
    channel: taskplane_common::AuthChannel,
    count: usize,
    rate: u32,
) -> Result<Vec<f64>, tonic::Status> {
    let mut health = HealthClient::new(channel);
    time_each(count, rate, async || {
        health.check(HealthCheckRequest::default()).await.map(drop)
    })
    .await
}

/// W2's latency limit on a fresh SQLite file at `url`: `count` durable
/// single-row inserts at `rate` per second, in milliseconds, sorted.
pub async fn sqlite_latency(
    url: &str,
    count: usize,
    rate: u32,
    durability: SqliteDurability,
) -> Result<Vec<f64>> {
    measure_latency(&sqlite_pool(url, durability).await?, &SQLITE, count, rate).await
}

/// W2's latency limit in a fresh PostgreSQL schema at `url`: `count`
/// durable single-row inserts at `rate` per second, in milliseconds, sorted.
pub async fn postgres_latency(url: &str, count: usize, rate: u32) -> Result<Vec<f64>> {
    measure_latency(&postgres_pool(url).await?, &POSTGRES, count, rate).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_limit_inserts_leases_and_completes_every_task() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("limit.db").display());
        let limits = sqlite(&url, 250, SqliteDurability::default())
            .await
            .unwrap();
        assert!(
            limits.enqueue_per_sec > 0.0 && limits.process_per_sec > 0.0,
            "{limits:?}"
        );
        let connection =
            open_sqlite_writer(&dir.path().join("limit.db"), SqliteDurability::default()).unwrap();
        let counts: Vec<(String, i64, i64)> = connection
            .prepare("SELECT status, count(*), sum(attempts) FROM tasks GROUP BY status")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(counts, vec![("completed".to_owned(), 250, 250)]);
    }
}
