//! Leases: sessions that end, leases that expire, leases that are extended.

use super::*;

async fn released_sessions_return_tasks_and_exhausted_ones_die(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let mut once = new_task("a");
    once.max_attempts = Some(1);
    store.enqueue(vec![new_task("a"), once]).await.unwrap();
    let lease = lease();
    let claimed = store
        .claim(&of_types(&["a".into()]), 10, &lease)
        .await
        .unwrap();
    assert_eq!(
        store
            .release_session(lease.session_id, Leases::STREAM_CLOSED)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        statuses_of(store, &claimed).await,
        vec![TaskStatus::Pending, TaskStatus::Dead]
    );
    let attempts = store.list_attempts(claimed[0].id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("lost"));
    let (counts, _, dead_recently) = counts_of_a(store).await;
    assert_eq!(
        (counts, dead_recently),
        (BTreeMap::from([("pending", 1), ("dead", 1)]), 1),
        "the death is counted"
    );
}

async fn expired_leases_are_reaped_and_live_ones_extended(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .enqueue(vec![new_task("a"), new_task("a")])
        .await
        .unwrap();
    let live = Lease {
        expires_at: Utc::now() + chrono::Duration::milliseconds(50),
        ..lease()
    };
    let dead = Lease {
        expires_at: Utc::now() + chrono::Duration::milliseconds(50),
        ..lease()
    };
    let kept = store
        .claim(&of_types(&["a".into()]), 1, &live)
        .await
        .unwrap();
    let lost = store
        .claim(&of_types(&["a".into()]), 1, &dead)
        .await
        .unwrap();
    store
        .refresh_sessions(
            &[(live.session_id, running_status(1))],
            chrono::Duration::seconds(30),
        )
        .await
        .unwrap();
    let reaped = store
        .reap_expired_leases(Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(reaped, [lost[0].id], "only the unrefreshed lease expires");
    assert_eq!(statuses_of(store, &kept).await, [TaskStatus::Running]);
    assert_eq!(statuses_of(store, &lost).await, [TaskStatus::Pending]);
}

crate::on_every_backend!(
    released_sessions_return_tasks_and_exhausted_ones_die,
    expired_leases_are_reaped_and_live_ones_extended,
);
