//! W3: latency and throughput over a large backlog, seeded straight into
//! the database, measured in rounds against an empty control queue.

use std::time::Instant;

use serde_json::{Value, json};
use sqlx::ConnectOptions as _;
use taskplane_agent::ConnectOptions;

use super::harness::*;
use super::limit::{self};
use super::probe::BACKLOG_TYPE;
use super::workloads::{change_percent, percentile, w1, w2, w2_tasks};
use super::{BenchArgs, BenchBackend};

/// Counts the `count` COMPLETED tasks seeded straight into the database, as
/// the completions that would have made them would have (queue statistics
/// read finished tasks from `task_counts`).
pub(super) async fn count_seeded<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    count: usize,
) -> anyhow::Result<()>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    &'static str: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    sqlx::query("INSERT INTO task_counts (task_type, status, second, count) VALUES ($1, 'completed', 0, $2)")
        .bind(BACKLOG_TYPE)
        .bind(count as i64)
        .execute(&mut *pool.acquire().await?)
        .await?;
    Ok(())
}

/// Seeds W3's backlog straight into the database: `count` PENDING tasks of a
/// type no agent serves and `count` COMPLETED ones.
pub(super) async fn seed_backlog(database_url: &str, count: usize) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    if database_url.starts_with("sqlite:") {
        seed_sqlite(database_url, count, now).await
    } else {
        seed_postgres(database_url, count, now).await
    }
}

/// One statement per this many rows keeps each seeding transaction short.
const SEED_CHUNK: usize = 100_000;

/// [`seed_backlog`] on SQLite, created at `now` (Unix milliseconds).
async fn seed_sqlite(database_url: &str, count: usize, now: i64) -> anyhow::Result<()> {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            taskplane_server::store::SqliteStore::connect_options(
                database_url,
                taskplane_server::SqliteDurability::default(),
            )?
            .disable_statement_logging(),
        )
        .await?;
    for status in ["pending", "completed"] {
        for start in (0..count).step_by(SEED_CHUNK) {
            let rows = SEED_CHUNK.min(count - start);
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts, max_attempts, timeout_ms,
                     retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at, finished_at)
                 SELECT printf('00000000-0000-7000-8%03d-%012d', ?4, ?5 + i), ?2, 'bench', '{}', ?3, 0, 0, 3, 1000, 1000, 2.0, 1000, ?6, ?6, ?6,
                     CASE ?3 WHEN 'completed' THEN ?6 END FROM n",
            )
            .bind(rows as i64)
            .bind(BACKLOG_TYPE)
            .bind(status)
            .bind(i64::from(status == "completed"))
            .bind(start as i64)
            .bind(now)
            .execute(&pool)
            .await?;
        }
    }
    count_seeded(&pool, count).await?;
    // Let the backlog settle as one that built up over time would
    // have: the seeding's write-ahead log copied into the database,
    // not left for the checkpointer to copy during the measurement.
    // PASSIVE copies it without holding off the server's writer; a
    // TRUNCATE alone blocked writers while it copied, and the server's
    // lease refresh gave up behind it ("database is locked").
    for checkpoint in [
        "PRAGMA wal_checkpoint(PASSIVE)",
        "PRAGMA wal_checkpoint(TRUNCATE)",
    ] {
        sqlx::query(checkpoint).execute(&pool).await?;
    }
    Ok(())
}

/// [`seed_backlog`] on PostgreSQL, created at `now` (Unix milliseconds).
async fn seed_postgres(database_url: &str, count: usize, now: i64) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            taskplane_server::store::PostgresStore::connect_options(database_url)?
                .disable_statement_logging(),
        )
        .await?;
    for status in ["pending", "completed"] {
        for start in (0..count).step_by(SEED_CHUNK) {
            let rows = SEED_CHUNK.min(count - start);
            sqlx::query(
                "INSERT INTO tasks (id, task_type, domain, payload, status, priority, attempts, max_attempts, timeout_ms,
                     retry_initial_ms, retry_factor, retry_max_ms, run_at, created_at, updated_at, finished_at)
                 SELECT gen_random_uuid(), $1, 'bench', '{}'::jsonb, $2, 0, 0, 3, 1000, 1000, 2.0, 1000, $3, $3, $3,
                     CASE $2 WHEN 'completed' THEN $3 END
                 FROM generate_series(1, $4)",
            )
            .bind(BACKLOG_TYPE)
            .bind(status)
            .bind(now)
            .bind(rows as i64)
            .execute(&pool)
            .await?;
        }
    }
    count_seeded(&pool, count).await?;
    // Let the backlog settle as one that built up over time would have:
    // vacuumed (visibility map and hint bits set, as autovacuum leaves a
    // table; the measurement must not pay for the seeding's first visit),
    // analysed, and written to disk (as SQLite's checkpoint above), not
    // left for the checkpointer and the kernel to flush while the
    // measurement waits on its own fsyncs.
    sqlx::query("VACUUM ANALYZE tasks").execute(&pool).await?;
    if let Err(error) = sqlx::query("CHECKPOINT").execute(&pool).await {
        tracing::warn!(%error, "cannot checkpoint after seeding the backlog (needs a superuser or the pg_checkpoint role); W3 may pay for writing the seed");
    }
    Ok(())
}

/// The rounds W3 measured on one side: each round's W2 figures with its
/// W1 figures laid over them (only `tasks` is in both, and W3 reads it from
/// neither).
#[derive(Default)]
pub(super) struct Rounds(Vec<serde_json::Map<String, Value>>);

/// The figures W3 compares between its two sides.
pub(super) const COMPARED: [&str; 3] = ["p99_ms", "processed_per_sec", "cpu_ms_per_1000_tasks"];

impl Rounds {
    /// Records one round's W2 (`latency`) and W1 (`throughput`) figures.
    fn push(
        &mut self,
        mut latency: serde_json::Map<String, Value>,
        throughput: serde_json::Map<String, Value>,
    ) {
        latency.extend(throughput);
        self.0.push(latency);
    }

    /// One figure of every round, in round order.
    fn each(&self, name: &str) -> Vec<f64> {
        self.0.iter().filter_map(|r| r[name].as_f64()).collect()
    }

    /// This side's figures, each name prefixed with `prefix`: the median
    /// round's latency percentiles, throughput and CPU per task, the worst
    /// latency of all rounds, how many tasks started, and every round's
    /// compared figures.
    fn figures(&self, prefix: &str) -> serde_json::Map<String, Value> {
        let mut figures = serde_json::Map::new();
        for name in ["p50_ms", "p95_ms"].into_iter().chain(COMPARED) {
            figures.insert(format!("{prefix}{name}"), json!(median(self.each(name))));
        }
        let worst = self.each("max_ms").into_iter().fold(0.0, f64::max);
        figures.insert(format!("{prefix}max_ms"), json!(worst));
        let started: f64 = self.each("started").iter().sum();
        figures.insert(format!("{prefix}started"), json!(started));
        for name in COMPARED {
            figures.insert(format!("{prefix}{name}_rounds"), json!(self.each(name)));
        }
        figures
    }
}

/// The median of `values` (the upper one of an even count).
pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}

/// W3: W2's latency and W1's throughput over a seeded backlog, against the
/// same measurements on an empty control queue (a database and server of
/// its own), so the machine's drift during the run falls on both sides
/// alike. In each round the two W2 windows run at the same time, then W1
/// runs on each side in turn (control first in odd rounds). Each side's
/// figure is the median of its rounds (`max_ms` the worst of all); each
/// change is the median of the rounds' changes.
pub(super) async fn w3(
    args: &BenchArgs,
    backend: BenchBackend,
    database: &Database,
    servers: &Servers,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let seeded = Instant::now();
    seed_backlog(&database.url, args.backlog).await?;
    let seed_seconds = seeded.elapsed().as_secs_f64().round();
    let control_database = Database::create(backend, &args.postgres_url).await?;
    let control_server =
        RunningServer::start(&control_database.url, args.sqlite_synchronous.into()).await?;
    let control = Servers {
        urls: vec![control_server.url.clone()],
        options: ConnectOptions::default(),
    };
    register_types(&control).await?;
    let (mut backlog, mut empty) = (Rounds::default(), Rounds::default());
    let bars = progress_group(args);
    for round in 0..args.rounds {
        // Both sides' W2 windows run at once, so a stall of the machine
        // delays the tasks of both alike instead of one side's window.
        let window = |side: &str| {
            let label = format!("W3 round {} {side}", round + 1);
            bars.add(progress(args, w2_tasks(args) as u64, &label))
        };
        let (empty_latency, backlog_latency) = tokio::try_join!(
            w2(args, &control, window("empty"), None),
            w2(args, servers, window("backlog"), None),
        )?;
        // W1 takes the machine for itself, so the sides take turns.
        let mut sides = [
            (&control, &mut empty, empty_latency),
            (servers, &mut backlog, backlog_latency),
        ];
        if round % 2 == 1 {
            sides.reverse();
        }
        for (servers, rounds, latency) in sides {
            rounds.push(latency, w1(args, servers, None).await?);
        }
    }
    control_server.stop().await?;
    control_database.drop().await;
    let mut figures = serde_json::Map::new();
    figures.insert("backlog_pending".into(), json!(args.backlog));
    figures.insert("backlog_completed".into(), json!(args.backlog));
    figures.insert("seed_seconds".into(), json!(seed_seconds));
    figures.insert("rounds".into(), json!(args.rounds));
    figures.insert("tasks".into(), json!(w2_tasks(args)));
    figures.insert("rate_per_sec".into(), json!(args.rate));
    figures.insert("warmup_calls".into(), json!(limit::WARMUP_CALLS));
    figures.extend(backlog.figures(""));
    figures.extend(empty.figures("empty_"));
    // Each round's change sets the backlog against the control measured
    // just before or after it; the median of those changes is reported.
    for name in COMPARED {
        let changes: Vec<f64> = backlog
            .each(name)
            .into_iter()
            .zip(empty.each(name))
            .map(|(backlog, empty)| change_percent(empty, backlog))
            .collect();
        let stem = name.split('_').next().unwrap_or(name);
        figures.insert(format!("{stem}_change_percent_rounds"), json!(changes));
        figures.insert(format!("{stem}_change_percent"), json!(median(changes)));
    }
    for name in ["lost", "duplicated"] {
        let total: f64 = [&backlog, &empty]
            .iter()
            .flat_map(|side| side.each(name))
            .sum();
        figures.insert(name.into(), json!(total));
    }
    Ok(figures)
}
