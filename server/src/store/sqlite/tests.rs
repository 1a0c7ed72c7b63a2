//! Tests of what only the SQLite store does.
use super::*;
use crate::model::AttemptResult;
use crate::store::suite::of_types;
use rusqlite::config::DbConfig;
use sqlx::Row;

/// Whether `connection` has the query planner stability guarantee on.
async fn plans_are_stable(connection: &mut SqliteConnection) -> bool {
    let mut handle = connection.lock_handle().await.unwrap();
    let mut enabled: std::ffi::c_int = -1;
    // SAFETY: as in `keep_plans_stable`; -1 asks for the current value,
    // written into `enabled`.
    let code = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            handle.as_raw_handle().as_ptr(),
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            -1 as std::ffi::c_int,
            &mut enabled as *mut std::ffi::c_int,
        )
    };
    assert_eq!(code, libsqlite3_sys::SQLITE_OK);
    enabled == 1
}

#[tokio::test]
async fn a_purge_reads_only_the_finished_tasks_index() {
    let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
    let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {PURGED_TASKS}"
    )))
    .bind(0_i64)
    .bind(10_i64)
    .fetch_all(&mut *store.writer().await.unwrap())
    .await
    .unwrap();
    let steps: Vec<String> = plan.iter().map(|row| row.get("detail")).collect();
    assert_eq!(
        steps,
        ["SEARCH tasks USING INDEX tasks_finished (finished_at<?)"],
        "no other table or index is read, and nothing is sorted"
    );
}

#[tokio::test]
async fn queue_stats_read_only_live_tasks_and_the_counts() {
    let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
    let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {}",
        Sqlite::statements().queue_stats()
    )))
    .bind(None::<String>)
    .bind(0_i64)
    .fetch_all(&mut *store.writer().await.unwrap())
    .await
    .unwrap();
    let reads: Vec<String> = plan
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .filter(|step| step.contains(" tasks"))
        .collect();
    assert_eq!(
        reads,
        [
            "SCAN tasks USING COVERING INDEX tasks_ready",
            "SCAN tasks USING INDEX tasks_leased"
        ],
        "finished tasks are never read"
    );
}

/// The steps of `EXPLAIN QUERY PLAN` for a listing of `filter` read from `source`.
async fn listing_plan(store: &SqliteStore, filter: &TaskFilter, source: &str) -> Vec<String> {
    let (listing, values) = super::super::rules::task_listing(filter, "");
    let explain = format!("EXPLAIN QUERY PLAN SELECT id FROM {source} {listing}");
    let query = values
        .into_iter()
        .fold(sqlx::query(sqlx::AssertSqlSafe(explain)), |q, v| q.bind(v))
        .bind(i64::from(filter.limit));
    let plan = query
        .fetch_all(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    plan.iter().map(|row| row.get("detail")).collect()
}

#[tokio::test]
async fn pending_and_running_listings_read_their_partial_indexes() {
    let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
    let cases = [
        (TaskStatus::Pending, "tasks_ready"),
        (TaskStatus::Running, "tasks_leased"),
    ];
    for (status, index) in cases {
        let filter = TaskFilter {
            task_type: Some("send_email".into()),
            status: Some(status),
            limit: 10,
            ..TaskFilter::default()
        };
        let plan = listing_plan(&store, &filter, listing_source(&filter)).await;
        assert!(
            plan.iter().any(|step| step.contains(index)),
            "{status:?}: {plan:?}"
        );
        assert!(!plan.iter().any(|step| step.contains("tasks_by_type")));
        // Left to itself, SQLite walks every task of the type instead.
        let unhinted = listing_plan(&store, &filter, "tasks").await;
        assert!(
            unhinted.iter().any(|step| step.contains("tasks_by_type")),
            "{status:?}: {unhinted:?}"
        );
    }
}

#[tokio::test]
async fn every_connection_keeps_its_query_plans() {
    let (_dir, url, store) = crate::store::suite::sqlite_store("t.db").await;
    assert!(plans_are_stable(&mut store.writer().await.unwrap()).await);
    assert!(plans_are_stable(&mut *store.checkpointer.lock().await).await);
    let mut reader = store.common.readers().acquire().await.unwrap();
    assert!(plans_are_stable(&mut reader).await);
    // A fresh connection does not have it: the check can fail.
    let mut fresh = SqliteConnection::connect_with(
        &SqliteStore::connect_options(&url, Default::default()).unwrap(),
    )
    .await
    .unwrap();
    assert!(!plans_are_stable(&mut fresh).await);
}

#[tokio::test]
async fn the_log_is_reused_under_sustained_writes() {
    const COMMITS: u64 = 5_000;
    /// Commits between two checkpoints at most, however the test's
    /// tasks are scheduled.
    const COMMITS_PER_CHECKPOINT: u64 = 20;
    let (dir, _url, mut store) = crate::store::suite::sqlite_store("t.db").await;
    store.wal_frames_before_pause = 256;
    let store = std::sync::Arc::new(store);
    sqlx::query("CREATE TABLE filler (bytes BLOB)")
        .execute(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    let (checkpoint_began, mut checkpoints) = tokio::sync::watch::channel(0_u64);
    let writing = tokio::spawn({
        let store = store.clone();
        async move {
            for commit in 1..=COMMITS {
                sqlx::query("INSERT INTO filler VALUES (randomblob(3000))")
                    .execute(&mut *store.writer().await.unwrap())
                    .await
                    .unwrap();
                if commit % COMMITS_PER_CHECKPOINT == 0 {
                    // Keeps committing while that checkpoint copies.
                    checkpoints.changed().await.unwrap();
                }
            }
        }
    });
    while !writing.is_finished() {
        checkpoint_began.send_modify(|began| *began += 1);
        store.checkpoint().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writing.await.unwrap();
    // Each commit appends at least its new leaf page to the log, so a
    // log that is never reused ends at least COMMITS pages long.
    let log_bytes = std::fs::metadata(dir.path().join("t.db-wal"))
        .unwrap()
        .len();
    assert!(
        log_bytes < COMMITS * 4096 / 4,
        "the log grew to {log_bytes} bytes over {COMMITS} commits"
    );
}

#[tokio::test]
async fn claims_and_completions_write_no_attempt_rows_and_older_rows_read_right() {
    use crate::store::suite::{lease, new_task, spec};
    let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .enqueue(vec![new_task("a"), new_task("a"), new_task("a")])
        .await
        .unwrap();
    let ran = lease();
    let claimed = store
        .claim(&of_types(&["a".into()]), 3, &ran)
        .await
        .unwrap();
    let (plain, older, lost) = (claimed[0].id, claimed[1].id, claimed[2].id);
    // An open row for each claim, as migrations 0003 and 0004 wrote them.
    for id in [older, lost] {
        sqlx::query(
            "INSERT INTO task_attempts (task_id, attempt, agent_id, session_id, started_at)
             VALUES (?1, 1, 'older-agent', 'older-session', 0)",
        )
        .bind(id.to_string())
        .execute(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    }
    store
        .record_results(vec![
            (plain, 1, AttemptResult::Completed(Default::default())),
            (older, 1, AttemptResult::Completed(Default::default())),
        ])
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = ?1")
        .bind(plain.to_string())
        .fetch_one(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    assert_eq!(rows, 0, "a claim and a completion write no attempt row");
    for id in [plain, older] {
        let attempts = store.list_attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1, "an older row gives way to the task row");
        assert_eq!(
            (
                attempts[0].agent_id.as_str(),
                attempts[0].outcome.as_deref()
            ),
            (ran.agent_id.to_string().as_str(), Some("completed"))
        );
    }
    store
        .release_session(ran.session_id, Leases::STREAM_CLOSED)
        .await
        .unwrap();
    let attempts = store.list_attempts(lost).await.unwrap();
    assert_eq!(attempts.len(), 1, "the older open row is filled in");
    assert_eq!(attempts[0].outcome.as_deref(), Some("lost"));
    assert!(attempts[0].finished_at.is_some());
}

#[tokio::test]
async fn the_writer_keeps_statement_journals_in_memory() {
    let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
    let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
        .fetch_one(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    assert_eq!(temp_store, 2, "2 is MEMORY; 0, the default, means files");
}

#[tokio::test]
async fn every_writer_syncs_each_commit_by_default_and_as_configured() {
    // SQLite's codes for `PRAGMA synchronous`.
    const FULL: i64 = 2;
    const NORMAL: i64 = 1;
    for (durability, synchronous) in [
        (SqliteDurability::default(), FULL),
        (SqliteDurability::Normal, NORMAL),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, crate::store::suite::defaults(), durability)
            .await
            .unwrap();
        let settings = writers_settings(&store).await;
        assert_eq!(settings, [synchronous, synchronous], "{durability:?}");
    }
}

/// `PRAGMA synchronous` on the sqlx writer and on the writer thread.
async fn writers_settings(store: &SqliteStore) -> [i64; 2] {
    let sqlx_writer: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    let thread = store
        .thread
        .write(|connection| Ok(connection.query_row("PRAGMA synchronous", [], |row| row.get(0))?))
        .await
        .unwrap();
    [sqlx_writer, thread]
}

#[tokio::test]
async fn the_writer_thread_connects_with_the_sqlx_connections_settings() {
    let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
    const SETTINGS: [&str; 5] = [
        "synchronous",
        "foreign_keys",
        "temp_store",
        "wal_autocheckpoint",
        "busy_timeout",
    ];
    let mut sqlx_settings = Vec::new();
    for setting in SETTINGS {
        let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {setting}")))
            .fetch_one(&mut *store.writer().await.unwrap())
            .await
            .unwrap();
        sqlx_settings.push(value);
    }
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    let (thread_settings, thread_journal, stable) = store
        .thread
        .write(|connection| {
            let mut values = Vec::new();
            for setting in SETTINGS {
                values.push(
                    connection
                        .query_row(&format!("PRAGMA {setting}"), [], |row| row.get::<_, i64>(0))?,
                );
            }
            let journal: String =
                connection.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
            let stable = connection.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)?;
            Ok((values, journal, stable))
        })
        .await
        .unwrap();
    assert_eq!(thread_settings, sqlx_settings, "{SETTINGS:?}");
    assert_eq!((journal.as_str(), thread_journal.as_str()), ("wal", "wal"));
    assert!(stable, "the writer thread's plans are not stable");
}

#[tokio::test]
async fn an_in_memory_database_is_refused_with_what_to_give_instead() {
    for url in ["sqlite::memory:", "sqlite://t.db?mode=memory"] {
        let refused =
            SqliteStore::open(url, crate::store::suite::defaults(), Default::default()).await;
        assert!(
            matches!(&refused, Err(Error::InvalidArgument(message)) if message.contains("--database-url a file")),
            "{url}: {:?}",
            refused.as_ref().err()
        );
    }
}

#[tokio::test]
async fn sqlite_is_built_without_memory_statistics() {
    let (_dir, _url, store) = crate::store::suite::sqlite_store("t.db").await;
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(&mut *store.writer().await.unwrap())
        .await
        .unwrap();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "LIBSQLITE3_FLAGS from .cargo/config.toml did not reach the SQLite build: {options:?}"
    );
}
