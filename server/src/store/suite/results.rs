//! Results: batches written together, completions alone, and the fence against stale attempts.

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

crate::on_every_backend!(
    a_batch_of_results_is_written_together_and_stale_ones_change_nothing,
    a_batch_of_completions_alone_ends_each_attempt_and_fences_stale_ones,
);
