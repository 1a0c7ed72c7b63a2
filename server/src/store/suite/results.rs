//! Results: batches written together, completions alone, and the fence against stale attempts.

use std::time::Duration;

use super::*;

async fn a_batch_of_results_is_written_together_and_stale_ones_change_nothing(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let mut traced = new_task("a");
    traced.metadata.insert(
        TRACEPARENT.into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    let mut once = new_task("a");
    once.max_attempts = Some(1);
    store
        .enqueue(vec![traced, new_task("a"), once])
        .await
        .unwrap();
    let claimed = store
        .claim(&of_types(&["a".into()]), 3, &lease())
        .await
        .unwrap();
    let failed = |retryable| AttemptResult::Failed {
        error: "boom".into(),
        retryable,
        jitter: 0.0,
        retry_after: None,
    };
    let mut answer = JsonObject::new();
    answer.insert("answer".into(), 42.into());
    let outcomes = store
        .record_results(vec![
            (claimed[0].id, 1, AttemptResult::Completed(answer.clone())),
            (
                claimed[1].id,
                2,
                AttemptResult::Completed(JsonObject::new()),
            ),
            (claimed[1].id, 1, failed(true)),
            (claimed[2].id, 1, failed(true)),
        ])
        .await
        .unwrap();
    let statuses: Vec<Option<TaskStatus>> = outcomes
        .iter()
        .map(|o| match o {
            ResultOutcome::Applied(task) => Some(task.status),
            ResultOutcome::Stale => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [
            Some(TaskStatus::Completed),
            None,
            Some(TaskStatus::Pending),
            Some(TaskStatus::Dead)
        ],
        "in input order; the wrong attempt is stale; retryable with attempts left retries; none left is dead"
    );
    let ResultOutcome::Applied(completed) = &outcomes[0] else {
        unreachable!("checked above")
    };
    assert_eq!(
        (completed.id, completed.task_type.as_str()),
        (claimed[0].id, "a")
    );
    assert!(completed.started_at.is_some() && completed.finished_at.is_some());
    assert_eq!(
        completed.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "the trace context comes back with the outcome"
    );
    let stored = store.get_task(claimed[0].id).await.unwrap().unwrap();
    assert_eq!(stored.result, Some(answer));
    // Every attempt ended in the same transaction, each with its own outcome.
    let mut ends = Vec::new();
    for task in &claimed {
        for attempt in store.list_attempts(task.id).await.unwrap() {
            ends.push((
                attempt.outcome,
                attempt.error,
                attempt.finished_at.is_some(),
            ));
        }
    }
    assert_eq!(
        ends,
        [
            (Some("completed".into()), None, true),
            (Some("failed".into()), Some("boom".into()), true),
            (Some("failed".into()), Some("boom".into()), true),
        ]
    );
}

/// Completions with no failure among them are written by the bulk statement
/// alone (on PostgreSQL without a transaction around it): every current
/// attempt still ends with its result, and a stale one changes nothing.
async fn a_batch_of_completions_alone_ends_each_attempt_and_fences_stale_ones(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .enqueue(vec![new_task("a"), new_task("a")])
        .await
        .unwrap();
    let claimed = store
        .claim(&of_types(&["a".into()]), 2, &lease())
        .await
        .unwrap();
    let mut answer = JsonObject::new();
    answer.insert(
        "rows".into(),
        serde_json::json!([3, "four", {"five": null}]),
    );
    let outcomes = store
        .record_results(vec![
            (
                claimed[0].id,
                2,
                AttemptResult::Completed(JsonObject::new()),
            ),
            (claimed[1].id, 1, AttemptResult::Completed(answer.clone())),
            (claimed[0].id, 1, AttemptResult::Completed(answer.clone())),
        ])
        .await
        .unwrap();
    let applied: Vec<Option<(Uuid, TaskStatus)>> = outcomes
        .iter()
        .map(|o| match o {
            ResultOutcome::Applied(task) => Some((task.id, task.status)),
            ResultOutcome::Stale => None,
        })
        .collect();
    assert_eq!(
        applied,
        [
            None,
            Some((claimed[1].id, TaskStatus::Completed)),
            Some((claimed[0].id, TaskStatus::Completed)),
        ],
        "in input order; attempt 2 of a task on its first attempt is stale"
    );
    for task in &claimed {
        let stored = store.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(
            stored.result,
            Some(answer.clone()),
            "the result is stored as reported"
        );
        assert_eq!(stored.status, TaskStatus::Completed);
        assert!(stored.finished_at.is_some());
        let attempts = store.list_attempts(task.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome.as_deref(), Some("completed"));
        assert!(attempts[0].finished_at.is_some());
    }
}

/// A failure that names a `retry_after` waits at least that long before
/// its retry, however short the backoff, and never longer than the policy's
/// `max_backoff`.
async fn a_retry_after_lengthens_the_backoff_within_its_cap(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let mut tasks = vec![new_task("a"), new_task("a"), new_task("a")];
    for task in &mut tasks {
        task.retry_policy = crate::model::RetryPolicyPatch {
            initial_backoff: Some(Duration::from_millis(10)),
            backoff_factor: Some(1.0),
            max_backoff: Some(Duration::from_secs(60)),
        };
    }
    store.enqueue(tasks).await.unwrap();
    let claimed = store
        .claim(&of_types(&["a".into()]), 3, &lease())
        .await
        .unwrap();
    let failed = |after: Option<u64>| {
        AttemptResult::failed("throttled".into(), true)
            .retrying_after(after.map(Duration::from_secs))
    };
    let before = Utc::now();
    store
        .record_results(vec![
            (claimed[0].id, 1, failed(None)),
            (claimed[1].id, 1, failed(Some(30))),
            (claimed[2].id, 1, failed(Some(3600))),
        ])
        .await
        .unwrap();
    // Milliseconds from before the write; the stores keep times to the
    // millisecond.
    let mut waits = Vec::new();
    for task in &claimed {
        let stored = store.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(stored.status, TaskStatus::Pending);
        waits.push((stored.run_at - before).num_milliseconds());
    }
    assert!(waits[0] < 1_000, "the 10 ms backoff alone: {waits:?}");
    assert!(
        (29_990..32_000).contains(&waits[1]),
        "30 s asked, longer than the backoff: {waits:?}"
    );
    assert!(
        (59_990..62_000).contains(&waits[2]),
        "an hour asked, capped at max_backoff: {waits:?}"
    );
}

crate::on_every_backend!(
    a_batch_of_results_is_written_together_and_stale_ones_change_nothing,
    a_batch_of_completions_alone_ends_each_attempt_and_fences_stale_ones,
    a_retry_after_lengthens_the_backoff_within_its_cap,
);
