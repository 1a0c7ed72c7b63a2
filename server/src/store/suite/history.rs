//! What the queue keeps of finished tasks: statistics, the counts behind them, and purges.

use super::*;

async fn queue_stats_count_each_status_and_recent_completions(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store
        .register_task_types(&[spec("a", "d"), spec("b", "e")])
        .await
        .unwrap();
    store
        .enqueue(vec![
            new_task("a"),
            new_task("a"),
            new_task("a"),
            new_task("b"),
        ])
        .await
        .unwrap();
    let claimed = store
        .claim(&of_types(&["a".into()]), 1, &lease())
        .await
        .unwrap();
    store
        .record_result(
            claimed[0].id,
            1,
            AttemptResult::Completed(JsonObject::new()),
        )
        .await
        .unwrap();
    let stats = store
        .queue_stats(None, Utc::now() - chrono::Duration::minutes(1))
        .await
        .unwrap();
    let a = stats.iter().find(|s| s.task_type == "a").unwrap();
    assert_eq!(
        (
            a.by_status.get("pending"),
            a.by_status.get("completed"),
            a.completed_recently
        ),
        (Some(&2), Some(&1), 1)
    );
    let only_e = store.queue_stats(Some("e"), Utc::now()).await.unwrap();
    assert_eq!(only_e.len(), 1);
    assert_eq!(
        (
            only_e[0].task_type.as_str(),
            only_e[0].by_status.get("pending")
        ),
        ("b", Some(&1))
    );
}

async fn finished_counts_follow_every_way_in_and_out_and_survive_folding(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .enqueue((0..5).map(|_| new_task("a")).collect())
        .await
        .unwrap();
    let claimed = store
        .claim(&of_types(&["a".into()]), 5, &lease())
        .await
        .unwrap();
    let done = || AttemptResult::Completed(JsonObject::new());
    let outcomes = store
        .record_results(vec![
            (claimed[0].id, 1, done()),
            // A stale result, then the current one for the same task: the
            // second completes it outside the bulk statement.
            (claimed[4].id, 9, done()),
            (claimed[4].id, 1, done()),
            (
                claimed[1].id,
                1,
                AttemptResult::Failed {
                    error: "bad input".into(),
                    retryable: false,
                    jitter: 0.0,
                    retry_after: None,
                },
            ),
        ])
        .await
        .unwrap();
    assert!(matches!(&outcomes[3], ResultOutcome::Applied(t) if t.status == TaskStatus::Dead));
    assert!(matches!(outcomes[1], ResultOutcome::Stale));
    assert!(matches!(&outcomes[2], ResultOutcome::Applied(t) if t.status == TaskStatus::Completed));
    store.cancel(claimed[2].id, "not needed").await.unwrap();
    store.enqueue(vec![new_task("a")]).await.unwrap();
    let expected = BTreeMap::from([
        ("pending", 1),
        ("running", 1),
        ("completed", 2),
        ("dead", 1),
        ("cancelled", 1),
    ]);
    assert_eq!(counts_of_a(store).await, (expected.clone(), 2, 1));

    // Folding every second so far keeps the totals; nothing is recent.
    store
        .fold_task_counts(Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(counts_of_a(store).await, (expected, 0, 0));

    // A retried task leaves DEAD; purged tasks leave their states.
    store.retry(claimed[1].id).await.unwrap();
    let purged = store
        .purge_finished(Utc::now() + chrono::Duration::minutes(1), 100)
        .await
        .unwrap();
    assert_eq!(purged, 3, "the completed and the cancelled tasks");
    let expected = BTreeMap::from([("pending", 2), ("running", 1)]);
    assert_eq!(counts_of_a(store).await, (expected.clone(), 0, 0));
    store
        .fold_task_counts(Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(counts_of_a(store).await, (expected, 0, 0));
}

async fn purges_delete_only_tasks_finished_before_the_cutoff(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("p", "d")]).await.unwrap();
    let enqueued = store
        .enqueue(vec![
            new_task("p"),
            new_task("p"),
            new_task("p"),
            new_task("p"),
        ])
        .await
        .unwrap();
    let claimed = store
        .claim(&of_types(&["p".into()]), 2, &lease())
        .await
        .unwrap();
    store
        .record_results(vec![(
            claimed[0].id,
            1,
            AttemptResult::Completed(JsonObject::new()),
        )])
        .await
        .unwrap();
    let cancelled = enqueued[3].task.id;
    store.cancel(cancelled, "no longer needed").await.unwrap();
    let running = claimed[1].id;
    let pending = enqueued[2].task.id;
    assert_eq!(store.list_attempts(claimed[0].id).await.unwrap().len(), 1);

    // Nothing finished an hour ago.
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(store.purge_finished(hour_ago, 10).await.unwrap(), 0);

    // Finished before now: one batch of one, then the rest, then nothing.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = Utc::now();
    assert_eq!(store.purge_finished(now, 1).await.unwrap(), 1);
    assert_eq!(store.purge_finished(now, 10).await.unwrap(), 1);
    assert_eq!(store.purge_finished(now, 10).await.unwrap(), 0);
    assert!(store.get_task(claimed[0].id).await.unwrap().is_none());
    assert!(
        store.list_attempts(claimed[0].id).await.unwrap().is_empty(),
        "attempts go with their task"
    );
    assert!(store.get_task(cancelled).await.unwrap().is_none());
    assert_eq!(
        store.get_task(running).await.unwrap().unwrap().status,
        TaskStatus::Running
    );
    assert_eq!(
        store.get_task(pending).await.unwrap().unwrap().status,
        TaskStatus::Pending
    );
}

async fn listings_filter_by_creation_time_error_text_and_parent(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let first = store.enqueue(vec![new_task("a")]).await.unwrap()[0]
        .task
        .clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let between = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let child = NewTask {
        parent_id: Some(first.id),
        ..new_task("a")
    };
    let later = store
        .enqueue(vec![child, new_task("a")])
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.task)
        .collect::<Vec<_>>();
    let claimed = store
        .claim(&of_types(&["a".into()]), 3, &lease())
        .await
        .unwrap();
    for task in &claimed {
        let error = format!("100%_sure {}", task.id);
        let outcome = AttemptResult::Failed {
            error: if task.id == later[1].id {
                error
            } else {
                "other".into()
            },
            retryable: false,
            jitter: 0.0,
            retry_after: None,
        };
        store.record_result(task.id, 1, outcome).await.unwrap();
    }
    let ids = async |filter: TaskFilter| {
        store
            .list_tasks(&TaskFilter {
                limit: 10,
                ..filter
            })
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    let after = ids(TaskFilter {
        created_after: Some(between),
        ..TaskFilter::default()
    });
    assert_eq!(after.await, vec![later[1].id, later[0].id]);
    let before = ids(TaskFilter {
        created_before: Some(between),
        ..TaskFilter::default()
    });
    assert_eq!(before.await, vec![first.id]);
    // `%` and `_` are the text itself, not wildcards.
    let by_error = ids(TaskFilter {
        error_contains: Some("0%_s".into()),
        ..TaskFilter::default()
    });
    assert_eq!(by_error.await, vec![later[1].id]);
    let wildcard = ids(TaskFilter {
        error_contains: Some("0_%s".into()),
        ..TaskFilter::default()
    });
    assert!(wildcard.await.is_empty());
    let children = ids(TaskFilter {
        parent_id: Some(first.id),
        ..TaskFilter::default()
    });
    assert_eq!(children.await, vec![later[0].id]);
}

async fn pending_listings_page_newest_first_in_a_backlog_and_among_history(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store
        .register_task_types(&[spec("backlog", "d"), spec("history", "d")])
        .await
        .unwrap();
    // A backlog: more waiting tasks than a listing's first window.
    let mut backlog = Vec::new();
    for _ in 0..3 {
        let batch = (0..1000).map(|_| new_task("backlog")).collect();
        backlog.extend(
            store
                .enqueue(batch)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.task.id),
        );
    }
    // History: a few old tasks wait behind many newer finished ones.
    let waiting = NewTask {
        priority: -1,
        ..new_task("history")
    };
    let old: Vec<Uuid> = store
        .enqueue(vec![waiting; 5])
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.task.id)
        .collect();
    let batch = (0..2500).map(|_| new_task("history")).collect();
    store.enqueue(batch).await.unwrap();
    let claimed = store
        .claim(&of_types(&["history".into()]), 2500, &lease())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2500);
    let done = claimed
        .iter()
        .map(|t| (t.id, 1, AttemptResult::Completed(JsonObject::new())))
        .collect();
    store.record_results(done).await.unwrap();

    let pending = |task_type: &str, before: Option<Uuid>| TaskFilter {
        task_type: Some(task_type.into()),
        status: Some(TaskStatus::Pending),
        before,
        limit: 50,
        ..TaskFilter::default()
    };
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let newest: Vec<Uuid> = backlog.iter().rev().copied().collect();
    let first = ids(store.list_tasks(&pending("backlog", None)).await.unwrap());
    assert_eq!(first, newest[..50]);
    let deep = ids(store
        .list_tasks(&pending("backlog", Some(newest[2979])))
        .await
        .unwrap());
    assert_eq!(deep, newest[2980..], "the last page, past the first window");
    let waiting = ids(store.list_tasks(&pending("history", None)).await.unwrap());
    let expected: Vec<Uuid> = old.iter().rev().copied().collect();
    assert_eq!(waiting, expected, "found behind 2,500 finished tasks");
}

crate::on_every_backend!(
    pending_listings_page_newest_first_in_a_backlog_and_among_history,
    listings_filter_by_creation_time_error_text_and_parent,
    queue_stats_count_each_status_and_recent_completions,
    finished_counts_follow_every_way_in_and_out_and_survive_folding,
    purges_delete_only_tasks_finished_before_the_cutoff,
);
