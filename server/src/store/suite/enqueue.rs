//! Enqueues: idempotency keys, and batches stored whole or not at all.

use super::*;

async fn idempotency_keys_return_the_existing_task(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store
        .register_task_types(&[spec("a", "d"), spec("b", "d")])
        .await
        .unwrap();
    let keyed = |task_type: &str| NewTask {
        idempotency_key: Some("order-1".into()),
        ..new_task(task_type)
    };
    let first = store.enqueue(vec![keyed("a")]).await.unwrap().remove(0);
    let second = store.enqueue(vec![keyed("a")]).await.unwrap().remove(0);
    assert!(first.created && !second.created);
    assert_eq!(first.task.id, second.task.id);
    let other_type = store.enqueue(vec![keyed("b")]).await.unwrap().remove(0);
    assert!(other_type.created, "keys are scoped to their task type");
}

/// A key with a window holds only that long: within it the same task
/// answers, past it a new task takes the key from the old one.
async fn a_keys_window_lets_a_new_task_take_it_once_passed(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let keyed = |window: std::time::Duration| NewTask {
        idempotency_key: Some("digest".into()),
        idempotency_window: Some(window),
        ..new_task("a")
    };
    let hour = std::time::Duration::from_secs(3600);
    let first = store.enqueue(vec![keyed(hour)]).await.unwrap().remove(0);
    let again = store.enqueue(vec![keyed(hour)]).await.unwrap().remove(0);
    assert!(first.created && !again.created);
    assert_eq!(first.task.id, again.task.id, "within the window");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let later = store
        .enqueue(vec![keyed(std::time::Duration::from_millis(10))])
        .await
        .unwrap()
        .remove(0);
    assert!(later.created, "past the window: a new task");
    assert_ne!(later.task.id, first.task.id);
    let old = store.get_task(first.task.id).await.unwrap().unwrap();
    assert_eq!(old.idempotency_key, None, "the old task let the key go");
    let held = store.enqueue(vec![keyed(hour)]).await.unwrap().remove(0);
    assert_eq!(held.task.id, later.task.id, "the new task holds it now");
}

async fn a_batch_is_stored_whole_or_not_at_all(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let listed = async || {
        store
            .list_tasks(&TaskFilter {
                task_type: Some("a".into()),
                status: None,
                limit: 5000,
                ..TaskFilter::default()
            })
            .await
            .unwrap()
    };
    // One unregistered type refuses the whole batch.
    let mut mixed: Vec<NewTask> = (0..3).map(|_| new_task("a")).collect();
    mixed.push(new_task("never_registered"));
    let error = store.enqueue(mixed).await.unwrap_err();
    assert!(matches!(error, Error::FailedPrecondition(ref m) if m.contains("never_registered")));
    assert!(
        listed().await.is_empty(),
        "nothing of a refused batch is stored"
    );
    // A batch larger than one statement's worth of rows is stored entirely,
    // each task as returned.
    let mut big: Vec<NewTask> = (0..1203).map(|_| new_task("a")).collect();
    big[1202].priority = 7;
    let enqueued = store.enqueue(big).await.unwrap();
    assert_eq!(enqueued.len(), 1203);
    assert!(enqueued.iter().all(|e| e.created));
    let stored = listed().await;
    assert_eq!(stored.len(), 1203);
    let last = store
        .get_task(enqueued[1202].task.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last, enqueued[1202].task);
    assert_eq!(last.priority, 7);
}

async fn a_follow_up_keeps_its_parent_and_labels(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let parent = store
        .enqueue(vec![new_task("a")])
        .await
        .unwrap()
        .remove(0)
        .task;
    // Both insert paths: without a key (one multi-row statement) and with one.
    let child = |key: Option<&str>| NewTask {
        parent_id: Some(parent.id),
        idempotency_key: key.map(str::to_owned),
        required_labels: [("region".to_owned(), "eu".to_owned())].into(),
        ..new_task("a")
    };
    for key in [None, Some("k")] {
        let stored = store
            .enqueue(vec![child(key)])
            .await
            .unwrap()
            .remove(0)
            .task;
        let read = store.get_task(stored.id).await.unwrap().unwrap();
        assert_eq!(read.parent_id, Some(parent.id));
        assert_eq!(
            read.required_labels.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(read, stored, "stored as answered");
    }
}

crate::on_every_backend!(
    a_keys_window_lets_a_new_task_take_it_once_passed,
    a_follow_up_keeps_its_parent_and_labels,
    idempotency_keys_return_the_existing_task,
    a_batch_is_stored_whole_or_not_at_all,
);
