//! Deadlines to start by: claims skip a task past its `start_by`, the
//! expiry ends it EXPIRED (counted, never run), and a retry clears it.

use super::*;
use crate::engine::flow::FlowChange;
use crate::store::rules::EXPIRED_ERROR;

/// A task of `a` that must start within `within`.
fn due_within(within: chrono::Duration) -> NewTask {
    let mut task = new_task("a");
    task.start_by = Some(Utc::now() + within);
    task
}

async fn a_task_past_its_start_by_is_never_claimed_and_ends_expired(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let short = chrono::Duration::milliseconds(100);
    let enqueued = store
        .enqueue(vec![
            due_within(short),
            due_within(chrono::Duration::hours(1)),
            new_task("a"),
        ])
        .await
        .unwrap();
    let overdue = enqueued[0].task.id;
    assert!(enqueued[0].task.start_by.is_some());
    assert!(
        store
            .expire_overdue(Utc::now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing is past its deadline yet"
    );
    tokio::time::sleep(short.to_std().unwrap() + std::time::Duration::from_millis(50)).await;

    let types = ["a".to_owned()];
    let claimed = store.claim(&of_types(&types), 10, &lease()).await.unwrap();
    let mut ids: Vec<Uuid> = claimed.iter().map(|t| t.id).collect();
    ids.sort();
    let mut others = vec![enqueued[1].task.id, enqueued[2].task.id];
    others.sort();
    assert_eq!(ids, others, "the overdue task is skipped");

    let expired = store.expire_overdue(Utc::now(), 10).await.unwrap();
    assert_eq!(expired, vec![(overdue, "a".to_owned())]);
    let task = store.get_task(overdue).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Expired);
    assert_eq!(task.attempts, 0, "it never ran");
    assert_eq!(task.last_error.as_deref(), Some(EXPIRED_ERROR));
    assert!(task.finished_at.is_some());
    assert!(
        store
            .expire_overdue(Utc::now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "an expired task is expired once"
    );
    let (counts, _, _) = counts_of_a(store).await;
    assert_eq!(counts.get("expired"), Some(&1));

    // A retry is a fresh chance without the deadline.
    let retried = store.retry(overdue).await.unwrap();
    assert_eq!(retried.status, TaskStatus::Pending);
    assert_eq!(retried.start_by, None);
    let again = store.claim(&of_types(&types), 10, &lease()).await.unwrap();
    assert_eq!(again.iter().map(|t| t.id).collect::<Vec<_>>(), [overdue]);
    let (counts, _, _) = counts_of_a(store).await;
    assert_eq!(
        counts.get("expired").copied().unwrap_or(0),
        0,
        "the retry took it out"
    );
}

async fn a_limited_claim_skips_overdue_tasks_too(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let limit = FlowChange {
        max_running: Some(5),
        ..FlowChange::default()
    };
    store.set_flow_policy("a", &limit).await.unwrap();
    let short = chrono::Duration::milliseconds(50);
    let enqueued = store
        .enqueue(vec![due_within(short), new_task("a")])
        .await
        .unwrap();
    tokio::time::sleep(short.to_std().unwrap() + std::time::Duration::from_millis(50)).await;
    let types = ["a".to_owned()];
    let limited = Claimant {
        limited: &types,
        ..of_types(&[])
    };
    let claimed = store.claim(&limited, 10, &lease()).await.unwrap();
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [enqueued[1].task.id]
    );
}

crate::on_every_backend!(
    a_task_past_its_start_by_is_never_claimed_and_ends_expired,
    a_limited_claim_skips_overdue_tasks_too,
);
