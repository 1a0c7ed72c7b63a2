//! Claims: delivery order, fairness across types, hand-offs at enqueue, and who ran each attempt.

use std::collections::BTreeSet;

use super::*;

async fn claim_orders_by_priority_then_age_and_fences_stale_results(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let mut low = new_task("a");
    low.priority = 1;
    let mut high = new_task("a");
    high.priority = 5;
    let enqueued = store.enqueue(vec![low, new_task("a"), high]).await.unwrap();
    let claimed = store
        .claim(&of_types(&["a".into()]), 10, &lease())
        .await
        .unwrap();
    let order: Vec<Uuid> = claimed.iter().map(|t| t.id).collect();
    assert_eq!(
        order,
        [
            enqueued[2].task.id,
            enqueued[0].task.id,
            enqueued[1].task.id
        ],
        "priority, then age"
    );
    assert_eq!(claimed[0].attempts, 1);
    for task in &claimed {
        let stored = store.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(&stored, task, "a claim answers each task as it stored it");
    }

    let first = claimed[0].id;
    let stale = store
        .record_result(first, 7, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert_eq!(stale, ResultOutcome::Stale);
    let done = store
        .record_result(first, 1, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert!(matches!(done, ResultOutcome::Applied(ref t) if t.status == TaskStatus::Completed));
    let again = store
        .record_result(first, 1, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert_eq!(
        again,
        ResultOutcome::Stale,
        "a finished attempt cannot finish twice"
    );
    let attempts = store.list_attempts(first).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("completed"));
}

async fn one_types_flood_does_not_starve_another(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store
        .register_task_types(&[spec("flood", "d"), spec("trickle", "d")])
        .await
        .unwrap();
    store
        .enqueue((0..50).map(|_| new_task("flood")).collect())
        .await
        .unwrap();
    store
        .enqueue(vec![new_task("trickle"), new_task("trickle")])
        .await
        .unwrap();
    let types = ["flood".to_string(), "trickle".to_string()];
    let holder = lease();
    let claimed = store.claim(&of_types(&types), 4, &holder).await.unwrap();
    for task in &claimed {
        let attempts = store.list_attempts(task.id).await.unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "a claim of several types records each attempt"
        );
        assert_eq!(attempts[0].session_id, holder.session_id.to_string());
    }
    let trickle = claimed.iter().filter(|t| t.task_type == "trickle").count();
    assert_eq!(
        (claimed.len(), trickle),
        (4, 2),
        "the older flood must not take every slot"
    );
    // Unused shares go to the type with more waiting.
    let claimed = store.claim(&of_types(&types), 10, &lease()).await.unwrap();
    assert!(claimed.iter().all(|t| t.task_type == "flood") && claimed.len() == 10);
}

async fn a_claim_over_more_types_than_slots_takes_one_of_each_in_turn(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    let types: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    let specs: Vec<_> = types.iter().map(|t| spec(t, "d")).collect();
    store.register_task_types(&specs).await.unwrap();
    for task_type in &types {
        store
            .enqueue((0..3).map(|_| new_task(task_type)).collect())
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let claimed = store.claim(&of_types(&types), 10, &lease()).await.unwrap();
        assert_eq!(claimed.len(), 10);
        let of_types: std::collections::BTreeSet<_> =
            claimed.iter().map(|t| t.task_type.clone()).collect();
        assert_eq!(of_types.len(), 10, "one task of each of ten types");
        seen.extend(of_types);
    }
    assert_eq!(
        seen.len(),
        30,
        "each claim goes on from the type after the last one served: {seen:?}"
    );
    // A type with nothing waiting leaves its share to one with more.
    store
        .register_task_types(&[spec("empty", "d"), spec("full", "d")])
        .await
        .unwrap();
    store
        .enqueue((0..5).map(|_| new_task("full")).collect())
        .await
        .unwrap();
    let two = ["empty".to_string(), "full".to_string()];
    let claimed = store.claim(&of_types(&two), 4, &lease()).await.unwrap();
    assert_eq!(claimed.len(), 4, "{claimed:?}");
}

async fn tasks_handed_off_at_enqueue_start_as_a_claim_would_leave_them(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let session = lease();
    // The session has two slots to offer; tasks are offered by priority,
    // then age, and a delayed task is never offered.
    let slots = std::sync::atomic::AtomicU32::new(2);
    let hand_off = |_: &Task| {
        let left = slots.load(std::sync::atomic::Ordering::SeqCst);
        slots.store(left.saturating_sub(1), std::sync::atomic::Ordering::SeqCst);
        (left > 0).then(|| session.clone())
    };
    let mut low = new_task("a");
    low.priority = 1;
    let mut high = new_task("a");
    high.priority = 5;
    let mut delayed = new_task("a");
    delayed.priority = 9;
    delayed.run_at = Some(Utc::now() + chrono::Duration::hours(1));
    let enqueued = store
        .enqueue_handing_off(vec![low, new_task("a"), high, delayed], &hand_off)
        .await
        .unwrap();
    let tasks: Vec<Task> = enqueued.into_iter().map(|e| e.task).collect();
    let expected = [
        TaskStatus::Running,
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Pending,
    ];
    let answered: Vec<TaskStatus> = tasks.iter().map(|t| t.status).collect();
    assert_eq!(answered, expected, "the enqueue answers as stored");
    assert_eq!(statuses_of(store, &tasks).await, expected);
    for handed_off in [&tasks[0], &tasks[2]] {
        let stored = store.get_task(handed_off.id).await.unwrap().unwrap();
        assert_eq!(stored.attempts, 1);
        assert!(stored.started_at.is_some());
        let attempts = store.list_attempts(handed_off.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "its first attempt is recorded");
        assert_eq!(attempts[0].attempt, 1);
        assert_eq!(attempts[0].session_id, session.session_id.to_string());
        assert_eq!(attempts[0].agent_id, session.agent_id.to_string());
    }

    // A claim takes only the task left PENDING and due.
    let claimed = store
        .claim(&of_types(&["a".into()]), 10, &lease())
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [tasks[1].id]
    );
    // The lease fences results as a claimed one does.
    let stale = store
        .record_result(tasks[2].id, 2, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert_eq!(stale, ResultOutcome::Stale);
    let done = store
        .record_result(tasks[2].id, 1, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert!(matches!(done, ResultOutcome::Applied(ref t) if t.status == TaskStatus::Completed));
    // Its session closing returns what it still holds to the queue.
    assert_eq!(
        store
            .release_session(session.session_id, Leases::STREAM_CLOSED)
            .await
            .unwrap(),
        [tasks[0].id]
    );
    assert_eq!(statuses_of(store, &tasks[..1]).await, [TaskStatus::Pending]);

    // A task whose idempotency key is taken is not handed off again.
    let keyed = || NewTask {
        idempotency_key: Some("k".into()),
        ..new_task("a")
    };
    let always = |_: &Task| Some(session.clone());
    let first = store
        .enqueue_handing_off(vec![keyed()], &always)
        .await
        .unwrap()
        .remove(0);
    assert!(first.created);
    assert_eq!(first.task.status, TaskStatus::Running);
    let second = store
        .enqueue_handing_off(vec![keyed()], &always)
        .await
        .unwrap()
        .remove(0);
    assert!(!second.created);
    assert_eq!(second.task.id, first.task.id);
    assert_eq!(store.list_attempts(first.task.id).await.unwrap().len(), 1);
}

/// The latest attempt is read from the task row (while it runs and once it
/// completed), the others from their rows: each names its own lease.
async fn each_attempt_is_told_by_the_lease_that_ran_it(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store.enqueue(vec![new_task("a")]).await.unwrap();
    let (first, second) = (lease(), lease());
    let id = store
        .claim(&of_types(&["a".into()]), 1, &first)
        .await
        .unwrap()[0]
        .id;
    store
        .release_session(first.session_id, Leases::STREAM_CLOSED)
        .await
        .unwrap();
    store
        .claim(&of_types(&["a".into()]), 1, &second)
        .await
        .unwrap();
    let told = |attempts: Vec<crate::model::Attempt>| -> Vec<_> {
        attempts
            .into_iter()
            .map(|a| {
                (
                    a.attempt,
                    a.agent_id,
                    a.session_id,
                    a.outcome,
                    a.finished_at.is_some(),
                )
            })
            .collect()
    };
    let lost = (
        1,
        first.agent_id.to_string(),
        first.session_id.to_string(),
        Some("lost".to_owned()),
        true,
    );
    assert_eq!(
        told(store.list_attempts(id).await.unwrap()),
        [
            lost.clone(),
            (
                2,
                second.agent_id.to_string(),
                second.session_id.to_string(),
                None,
                false
            )
        ],
        "the running attempt is open"
    );
    store
        .record_results(vec![(id, 2, AttemptResult::Completed(JsonObject::new()))])
        .await
        .unwrap();
    let attempts = store.list_attempts(id).await.unwrap();
    let task = store.get_task(id).await.unwrap().unwrap();
    assert_eq!(
        (attempts[1].started_at, attempts[1].finished_at),
        (task.started_at.unwrap(), task.finished_at),
        "the completed attempt's times are the task's"
    );
    assert_eq!(
        told(attempts),
        [
            lost,
            (
                2,
                second.agent_id.to_string(),
                second.session_id.to_string(),
                Some("completed".to_owned()),
                true
            )
        ]
    );
}

async fn a_claim_takes_only_the_versions_and_labels_its_claimant_may(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    let versioned = |task_type: &str| TaskTypeSpec {
        versions: vec!["v1".into(), "v2".into()],
        ..spec(task_type, "d")
    };
    store
        .register_task_types(&[versioned("a"), versioned("b")])
        .await
        .unwrap();
    let task = |task_type: &str, version: &str, labels: &[(&str, &str)]| NewTask {
        handler_version: version.into(),
        required_labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..new_task(task_type)
    };
    let mut tasks = Vec::new();
    for task_type in ["a", "b"] {
        tasks.extend([
            task(task_type, "", &[]),
            task(task_type, "v1", &[]),
            task(task_type, "v2", &[]),
            task(task_type, "", &[("region", "eu")]),
            task(task_type, "v2", &[("region", "eu"), ("gpu", "true")]),
        ]);
    }
    let enqueued = store.enqueue(tasks).await.unwrap();
    let ids = |indexes: &[usize]| -> BTreeSet<Uuid> {
        indexes.iter().map(|&i| enqueued[i].task.id).collect()
    };
    let types: Vec<String> = vec!["a".into(), "b".into()];
    let claim = |versions: Vec<String>, labels: &[(&str, &str)]| {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let types = types.clone();
        async move {
            let claimant = Claimant {
                task_types: &types,
                versions: &versions,
                labels: &labels,
                limited: &[],
            };
            let claimed = store.claim(&claimant, 20, &lease()).await.unwrap();
            claimed.iter().map(|t| t.id).collect::<BTreeSet<Uuid>>()
        }
    };
    // An unlabelled v1 agent: the plain tasks and the v1 ones.
    let v1 = claim(vec!["a\tv1".into(), "b\tv1".into()], &[]).await;
    assert_eq!(v1, ids(&[0, 1, 5, 6]));
    // A v2 agent in the EU without a GPU: v2 and the EU task, not the GPU one.
    let eu = claim(vec!["a\tv2".into(), "b\tv2".into()], &[("region", "eu")]).await;
    assert_eq!(eu, ids(&[2, 3, 7, 8]));
    // Only an agent with every label and the version takes the last ones;
    // versions of one type do not open another's.
    let gpu = claim(
        vec!["a\tv2".into()],
        &[("region", "eu"), ("gpu", "true"), ("x", "y")],
    )
    .await;
    assert_eq!(gpu, ids(&[4]));
    assert!(
        claim(vec!["b\tv1".into()], &[("gpu", "true")])
            .await
            .is_empty()
    );

    let error = store.enqueue(vec![task("a", "v9", &[])]).await.unwrap_err();
    assert!(
        matches!(&error, Error::FailedPrecondition(m) if m.contains("'v9'") && m.contains("declared: v1, v2")),
        "{error}"
    );
}

crate::on_every_backend!(
    a_claim_takes_only_the_versions_and_labels_its_claimant_may,
    claim_orders_by_priority_then_age_and_fences_stale_results,
    one_types_flood_does_not_starve_another,
    a_claim_over_more_types_than_slots_takes_one_of_each_in_turn,
    tasks_handed_off_at_enqueue_start_as_a_claim_would_leave_them,
    each_attempt_is_told_by_the_lease_that_ran_it,
);
