//! Tests of what only the PostgreSQL store does.
use super::*;
use crate::store::suite::{
    defaults, lease, new_task, newest_tasks, of_types, running_status, spec,
};
use crate::testing::PostgresSchema;

/// A transaction on a fresh, empty schema that forbids whole-table
/// scans, with the schema to drop after. An empty table is cheapest to
/// scan whole; only without that choice does a plan show whether the
/// indexes can serve a statement at all.
async fn planning_without_seq_scans()
-> Option<(PostgresSchema, sqlx::Transaction<'static, Postgres>)> {
    let schema = PostgresSchema::create().await?;
    let store = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    let mut tx = store.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    Some((schema, tx))
}

#[tokio::test]
async fn a_purge_reads_the_finished_tasks_index() {
    let Some((schema, mut tx)) = planning_without_seq_scans().await else {
        return;
    };
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {PURGE}")))
        .bind(0_i64)
        .bind(10_i64)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("tasks_finished"), "{plan}");
    assert!(!plan.contains("Seq Scan on tasks"), "{plan}");
    drop(tx);
    schema.drop().await;
}

#[tokio::test]
async fn queue_stats_read_only_live_tasks_and_the_counts() {
    let Some((schema, mut tx)) = planning_without_seq_scans().await else {
        return;
    };
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        Postgres::statements().queue_stats()
    )))
    .bind(None::<String>)
    .bind(0_i64)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("tasks_ready"), "{plan}");
    assert!(plan.contains("tasks_leased"), "{plan}");
    for other in [
        "tasks_by_type",
        "tasks_finished",
        "tasks_pkey",
        "Seq Scan on tasks",
    ] {
        assert!(!plan.contains(other), "{other}: {plan}");
    }
    drop(tx);
    schema.drop().await;
}

#[tokio::test]
async fn no_connection_compiles_statements_just_in_time() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let store = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    for pool in [&store.pool, &store.claims] {
        let jit: String = sqlx::query_scalar("SHOW jit")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(jit, "off");
    }
    schema.drop().await;
}

/// Lease maintenance skips a running task another transaction holds
/// (as a completion batch holds its tasks until it commits) instead of
/// waiting for it, so it can never wait in a cycle with that batch, and
/// it gets to the task once the row is free.
#[tokio::test]
async fn lease_maintenance_skips_tasks_another_transaction_holds() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let store = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .enqueue(vec![new_task("a"), new_task("a")])
        .await
        .unwrap();
    let lease = lease();
    let claimed = store
        .claim(&of_types(&["a".into()]), 2, &lease)
        .await
        .unwrap();
    let (held, free) = (claimed[0].id, claimed[1].id);
    let expiry = async |id: Uuid| -> i64 {
        sqlx::query_scalar("SELECT lease_expires_at FROM tasks WHERE id = $1::uuid")
            .bind(id.to_string())
            .fetch_one(&store.pool)
            .await
            .unwrap()
    };
    let before = expiry(held).await;

    let mut holder = store.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM tasks WHERE id = $1::uuid FOR UPDATE")
        .bind(held.to_string())
        .execute(&mut *holder)
        .await
        .unwrap();
    let asked = Utc::now();
    let sessions = [(lease.session_id, running_status(2))];
    // Without SKIP LOCKED these wait for `holder`, which is only
    // released below, until the pool's `lock_timeout` fails them.
    store
        .refresh_sessions(&sessions, chrono::Duration::minutes(5))
        .await
        .unwrap();
    assert!(
        expiry(free).await >= millis(asked + chrono::Duration::minutes(5)),
        "the free task is extended"
    );
    assert_eq!(expiry(held).await, before, "the held task is skipped");
    let far = Utc::now() + chrono::Duration::minutes(10);
    let reaped = store.reap_expired_leases(far).await.unwrap();
    assert_eq!(reaped, [free], "only the free task is reaped");

    holder.rollback().await.unwrap();
    assert_eq!(store.reap_expired_leases(far).await.unwrap(), [held]);
    schema.drop().await;
}

#[tokio::test]
async fn a_type_registered_again_on_another_replica_is_never_used_stale() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let one = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    let two = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    one.register_task_types(&[spec("a", "d")]).await.unwrap();
    let first = one.enqueue(vec![new_task("a")]).await.unwrap().remove(0);
    let more = first.task.max_attempts + 4;

    // Another replica registers the type again with other defaults; the
    // first still holds the old ones.
    let mut changed = spec("a", "d");
    changed.default_max_attempts = Some(more);
    two.register_task_types(&[changed]).await.unwrap();
    let second = one
        .enqueue(vec![new_task("a"), new_task("a")])
        .await
        .unwrap();
    for enqueued in &second {
        assert_eq!(enqueued.task.max_attempts, more, "answered as stored");
        let stored = one.get_task(enqueued.task.id).await.unwrap().unwrap();
        assert_eq!(stored.max_attempts, more);
    }
    let third = one.enqueue(vec![new_task("a")]).await.unwrap().remove(0);
    assert_eq!(third.task.max_attempts, more);
    let all = newest_tasks(&one, 10).await;
    assert_eq!(all.len(), 4, "nothing written twice");
    schema.drop().await;
}

/// How many times `plan` names `index`.
fn scans_of(plan: &str, index: &str) -> usize {
    plan.matches(index).count()
}

#[tokio::test]
async fn statements_that_find_tasks_by_id_use_the_primary_key_after_an_idle_analyze() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let store = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let batch = || (0..2_000).map(|_| new_task("a")).collect::<Vec<_>>();
    store.enqueue(batch()).await.unwrap();
    // Statistics taken while nothing waits or runs, as autovacuum takes
    // them on a quiet queue: they put both partial indexes at one row.
    sqlx::query("UPDATE tasks SET status = 'completed', finished_at = 0")
        .execute(&store.pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE tasks")
        .execute(&store.pool)
        .await
        .unwrap();
    store.enqueue(batch()).await.unwrap();

    let statements = Postgres::statements();
    let lease_picked = writes::lease_ready("SELECT unnest($5::text[])::uuid AS ready_id");
    // Each statement's parameters, typed as the store binds them.
    let cases = [
        (
            "a claim",
            writes::CLAIM_TYPE.as_str(),
            "bigint, text, text, bigint, text, bigint, text[], text",
            1,
        ),
        (
            "a lease of picked tasks",
            lease_picked.as_str(),
            "bigint, text, text, bigint, text[]",
            0,
        ),
        (
            "a completion batch",
            writes::COMPLETE_IN_BULK.as_str(),
            "bigint, text[], bigint[], text[]",
            0,
        ),
        (
            "one result",
            writes::RECORD_ONE.as_str(),
            "text, text, text, bigint, bigint, text, bigint",
            0,
        ),
        (
            "a give-back",
            statements.give_back(),
            "bigint, text, bigint, text",
            0,
        ),
        (
            "progress",
            statements.record_progress(),
            "text, text, bigint",
            0,
        ),
    ];
    let mut tx = store.pool.begin().await.unwrap();
    // The plan a prepared statement settles on after its first runs.
    sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
        .execute(&mut *tx)
        .await
        .unwrap();
    for (name, statement, types, ready_scans) in cases {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE checked ({types}) AS {statement}"
        )))
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let nulls = vec!["NULL"; types.split(',').count()].join(", ");
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN EXECUTE checked({nulls})"
        )))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert_eq!(
            scans_of(&plan, "tasks_ready"),
            ready_scans,
            "{name}: {plan}"
        );
        assert_eq!(scans_of(&plan, "tasks_leased"), 0, "{name}: {plan}");
        assert!(plan.contains("tasks_pkey"), "{name}: {plan}");
        sqlx::raw_sql("DEALLOCATE checked")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    drop(tx);
    schema.drop().await;
}

#[tokio::test]
async fn the_store_knows_whether_the_database_vacuums_on_its_own() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let store = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    let setting = async |name: &str| -> String {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&store.pool)
            .await
            .unwrap()
    };
    let expected = setting("autovacuum").await == "on" && setting("track_counts").await == "on";
    assert_eq!(vacuums_on_its_own(&store.pool).await.unwrap(), expected);
    schema.drop().await;
}

/// The index pages (and table pages) an empty claim of `task_type` reads:
/// with nothing pending, every one but the few on the way down holds the
/// dead entries of tasks claimed earlier.
async fn pages_an_empty_claim_reads(store: &PostgresStore, task_type: &str) -> u64 {
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
         SELECT id FROM tasks WHERE task_type = $1 AND status = 'pending'
         ORDER BY priority DESC, run_at, id LIMIT 10",
    )
    .bind(task_type)
    .fetch_one(&store.pool)
    .await
    .unwrap();
    let top = &plan[0]["Plan"];
    top["Shared Hit Blocks"].as_u64().unwrap() + top["Shared Read Blocks"].as_u64().unwrap()
}

/// Claims leave dead entries at the head of the ready index, where the
/// next claim starts reading. Once enough have piled up the store vacuums
/// the table itself (autovacuum being off on the test server, or a minute
/// away on a default one), and an empty claim reads a handful of pages
/// again; below the threshold it leaves the table alone.
#[tokio::test]
async fn the_store_vacuums_the_dead_entries_its_claims_left_once_they_are_enough() {
    let Some(schema) = PostgresSchema::create().await else {
        return;
    };
    let store = PostgresStore::open(&schema.url, defaults()).await.unwrap();
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let total = vacuum::VACUUM_AFTER_ROWS as usize + 1_000;
    for _ in 0..total / 1_000 {
        store
            .enqueue((0..1_000).map(|_| new_task("a")).collect())
            .await
            .unwrap();
    }
    let claimant = ["a".to_owned()];
    let lease = lease();
    let options = store.pool.connect_options();
    let mut claimed = 0;
    while claimed < total {
        let batch = store
            .claim(&of_types(&claimant), 1_000, &lease)
            .await
            .unwrap();
        assert!(!batch.is_empty(), "{claimed} of {total} claimed");
        claimed += batch.len();
        if claimed < vacuum::VACUUM_AFTER_ROWS as usize {
            assert!(!store.vacuum.vacuum_if_due(&options).await.unwrap());
        }
    }
    let before = pages_an_empty_claim_reads(&store, "a").await;
    assert!(store.vacuum.vacuum_if_due(&options).await.unwrap());
    let after = pages_an_empty_claim_reads(&store, "a").await;
    assert!(before >= 30, "{before} pages before the vacuum");
    assert!(
        after <= 8,
        "{after} pages after the vacuum, {before} before"
    );
    assert!(
        !store.vacuum.vacuum_if_due(&options).await.unwrap(),
        "the count starts again after a vacuum"
    );
    schema.drop().await;
}
