//! One test suite for every storage backend: each test below runs against a
//! real SQLite file and a real PostgreSQL schema.

use std::collections::BTreeMap;

use chrono::Utc;
use uuid::Uuid;

use super::rules::TypeDefaults;
use super::{PostgresStore, SqliteStore, Store};
use crate::config::QueueConfig;
use crate::error::Error;
use crate::model::{
    AttemptResult, JsonObject, Lease, NewTask, ResultOutcome, Task, TaskFilter, TaskStatus,
    TaskTypeSpec,
};
use crate::testing::PostgresSchema;
use taskplane_proto::trace::TRACEPARENT;

pub(crate) fn defaults() -> TypeDefaults {
    let queue = QueueConfig::default();
    TypeDefaults {
        max_attempts: queue.default_max_attempts,
        timeout: queue.default_timeout,
        retry_policy: queue.default_retry_policy,
    }
}

/// A store on a fresh SQLite file at `path` inside a temporary directory,
/// with the directory (removed when dropped) and the file's URL.
pub(crate) async fn sqlite_store(path: &str) -> (tempfile::TempDir, String, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(path).display());
    let store = SqliteStore::open(&url, defaults()).await.unwrap();
    (dir, url, store)
}

/// Runs each named test body against both backends.
macro_rules! for_each_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let (_dir, _url, store) = super::sqlite_store("nested/dir/t.db").await;
                    super::$test(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(schema) = super::PostgresSchema::create().await else { return };
                    let store = super::PostgresStore::open(&schema.url, super::defaults()).await.unwrap();
                    super::$test(&store).await;
                    schema.drop().await;
                }
            )*
        }
    };
}

for_each_backend!(
    registration_with_a_conflicting_entry_writes_nothing,
    claim_orders_by_priority_then_age_and_fences_stale_results,
    released_sessions_return_tasks_and_exhausted_ones_die,
    one_types_flood_does_not_starve_another,
    expired_leases_are_reaped_and_live_ones_extended,
    idempotency_keys_return_the_existing_task,
    a_batch_of_results_is_written_together_and_stale_ones_change_nothing,
    a_batch_of_completions_alone_ends_each_attempt_and_fences_stale_ones,
    queue_stats_count_each_status_and_recent_completions,
    finished_counts_follow_every_way_in_and_out_and_survive_folding,
    tokens_are_found_by_hash_and_revoked_once,
    purges_delete_only_tasks_finished_before_the_cutoff,
    a_batch_is_stored_whole_or_not_at_all,
    tasks_handed_off_at_enqueue_start_as_a_claim_would_leave_them,
    each_attempt_is_told_by_the_lease_that_ran_it,
);

pub(crate) fn spec(task_type: &str, domain: &str) -> TaskTypeSpec {
    TaskTypeSpec {
        task_type: task_type.into(),
        domain: domain.into(),
        description: String::new(),
        versions: vec!["v1".into()],
        capabilities: vec![],
        default_max_attempts: None,
        default_timeout: None,
        default_retry_policy: Default::default(),
    }
}

pub(crate) fn new_task(task_type: &str) -> NewTask {
    NewTask {
        task_type: task_type.into(),
        payload: JsonObject::new(),
        priority: 0,
        run_at: None,
        idempotency_key: None,
        max_attempts: None,
        timeout: None,
        handler_version: String::new(),
        metadata: BTreeMap::new(),
        retry_policy: Default::default(),
    }
}

/// Up to `limit` tasks of any type, domain and status, newest first.
pub(crate) async fn newest_tasks(store: &dyn Store, limit: u32) -> Vec<Task> {
    store
        .list_tasks(&TaskFilter {
            task_type: None,
            domain: None,
            status: None,
            before: None,
            limit,
        })
        .await
        .unwrap()
}

/// What an agent with `running` tasks in as many slots reports.
pub(crate) fn running_status(running: u32) -> crate::model::SessionStatus {
    crate::model::SessionStatus {
        slots: running,
        running,
        draining: false,
        last_seen_at: Utc::now(),
        health: vec![],
        health_checked_at: None,
    }
}

/// A lease of a new session for 30 seconds.
pub(crate) fn lease() -> Lease {
    Lease {
        session_id: Uuid::now_v7(),
        agent_id: Uuid::now_v7(),
        expires_at: Utc::now() + chrono::Duration::seconds(30),
    }
}

async fn statuses_of(store: &dyn Store, tasks: &[Task]) -> Vec<TaskStatus> {
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(store.get_task(task.id).await.unwrap().unwrap().status);
    }
    statuses
}

async fn registration_with_a_conflicting_entry_writes_nothing(store: &dyn Store) {
    store
        .register_task_types(&[spec("invoice_generation", "billing")])
        .await
        .unwrap();
    let err = store
        .register_task_types(&[
            spec("welcome_email", "user_management"),
            spec("invoice_generation", "user_management"),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists(ref m) if m.contains("belongs to domain 'billing'")),
        "{err}"
    );
    assert!(
        store
            .get_task_type("welcome_email")
            .await
            .unwrap()
            .is_none()
    );
    let unregistered = store
        .enqueue(vec![new_task("welcome_email")])
        .await
        .unwrap_err();
    assert!(matches!(unregistered, Error::FailedPrecondition(_)));
}

async fn claim_orders_by_priority_then_age_and_fences_stale_results(store: &dyn Store) {
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let mut low = new_task("a");
    low.priority = 1;
    let mut high = new_task("a");
    high.priority = 5;
    let enqueued = store.enqueue(vec![low, new_task("a"), high]).await.unwrap();
    let claimed = store.claim(&["a".into()], 10, &lease()).await.unwrap();
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
        .finish_attempt(first, 7, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert_eq!(stale, ResultOutcome::Stale);
    let done = store
        .finish_attempt(first, 1, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert!(matches!(done, ResultOutcome::Applied(ref t) if t.status == TaskStatus::Completed));
    let again = store
        .finish_attempt(first, 1, AttemptResult::Completed(JsonObject::new()))
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

async fn tasks_handed_off_at_enqueue_start_as_a_claim_would_leave_them(store: &dyn Store) {
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
    let claimed = store.claim(&["a".into()], 10, &lease()).await.unwrap();
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [tasks[1].id]
    );
    // The lease fences results as a claimed one does.
    let stale = store
        .finish_attempt(tasks[2].id, 2, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert_eq!(stale, ResultOutcome::Stale);
    let done = store
        .finish_attempt(tasks[2].id, 1, AttemptResult::Completed(JsonObject::new()))
        .await
        .unwrap();
    assert!(matches!(done, ResultOutcome::Applied(ref t) if t.status == TaskStatus::Completed));
    // Its session closing returns what it still holds to the queue.
    assert_eq!(
        store.release_session(session.session_id).await.unwrap(),
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

async fn released_sessions_return_tasks_and_exhausted_ones_die(store: &dyn Store) {
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let mut once = new_task("a");
    once.max_attempts = Some(1);
    store.enqueue(vec![new_task("a"), once]).await.unwrap();
    let lease = lease();
    let claimed = store.claim(&["a".into()], 10, &lease).await.unwrap();
    assert_eq!(
        store.release_session(lease.session_id).await.unwrap().len(),
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

/// The latest attempt is read from the task row (while it runs and once it
/// completed), the others from their rows: each names its own lease.
async fn each_attempt_is_told_by_the_lease_that_ran_it(store: &dyn Store) {
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store.enqueue(vec![new_task("a")]).await.unwrap();
    let (first, second) = (lease(), lease());
    let id = store.claim(&["a".into()], 1, &first).await.unwrap()[0].id;
    store.release_session(first.session_id).await.unwrap();
    store.claim(&["a".into()], 1, &second).await.unwrap();
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
        .finish_attempts(vec![(id, 2, AttemptResult::Completed(JsonObject::new()))])
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

async fn one_types_flood_does_not_starve_another(store: &dyn Store) {
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
    let claimed = store.claim(&types, 4, &holder).await.unwrap();
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
    let claimed = store.claim(&types, 10, &lease()).await.unwrap();
    assert!(claimed.iter().all(|t| t.task_type == "flood") && claimed.len() == 10);
}

async fn expired_leases_are_reaped_and_live_ones_extended(store: &dyn Store) {
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
    let kept = store.claim(&["a".into()], 1, &live).await.unwrap();
    let lost = store.claim(&["a".into()], 1, &dead).await.unwrap();
    store
        .refresh_sessions(
            &[(live.session_id, running_status(1))],
            Utc::now() + chrono::Duration::seconds(30),
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

async fn a_batch_is_stored_whole_or_not_at_all(store: &dyn Store) {
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let listed = async || {
        store
            .list_tasks(&TaskFilter {
                task_type: Some("a".into()),
                domain: None,
                status: None,
                before: None,
                limit: 5000,
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

async fn idempotency_keys_return_the_existing_task(store: &dyn Store) {
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

async fn a_batch_of_results_is_written_together_and_stale_ones_change_nothing(store: &dyn Store) {
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
    let claimed = store.claim(&["a".into()], 3, &lease()).await.unwrap();
    let failed = |retryable| AttemptResult::Failed {
        error: "boom".into(),
        retryable,
        jitter: 0.0,
    };
    let mut answer = JsonObject::new();
    answer.insert("answer".into(), 42.into());
    let outcomes = store
        .finish_attempts(vec![
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
async fn a_batch_of_completions_alone_ends_each_attempt_and_fences_stale_ones(store: &dyn Store) {
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .enqueue(vec![new_task("a"), new_task("a")])
        .await
        .unwrap();
    let claimed = store.claim(&["a".into()], 2, &lease()).await.unwrap();
    let mut answer = JsonObject::new();
    answer.insert(
        "rows".into(),
        serde_json::json!([3, "four", {"five": null}]),
    );
    let outcomes = store
        .finish_attempts(vec![
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

async fn queue_stats_count_each_status_and_recent_completions(store: &dyn Store) {
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
    let claimed = store.claim(&["a".into()], 1, &lease()).await.unwrap();
    store
        .finish_attempt(
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

/// Type `a`'s count of each status, and its recent completions and deaths.
async fn counts_of_a(store: &dyn Store) -> (BTreeMap<&'static str, u64>, u64, u64) {
    let stats = store
        .queue_stats(None, Utc::now() - chrono::Duration::minutes(1))
        .await
        .unwrap();
    let a = stats.into_iter().find(|s| s.task_type == "a").unwrap();
    (a.by_status, a.completed_recently, a.dead_recently)
}

async fn finished_counts_follow_every_way_in_and_out_and_survive_folding(store: &dyn Store) {
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .enqueue((0..5).map(|_| new_task("a")).collect())
        .await
        .unwrap();
    let claimed = store.claim(&["a".into()], 5, &lease()).await.unwrap();
    let done = || AttemptResult::Completed(JsonObject::new());
    let outcomes = store
        .finish_attempts(vec![
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

async fn tokens_are_found_by_hash_and_revoked_once(store: &dyn Store) {
    use crate::auth::tokens::{hash, issue};
    use crate::auth::{DomainScope, Role};
    let billing = issue("billing-agent", Role::Agent, vec!["billing".into()]).unwrap();
    let admin = issue("ops", Role::Admin, vec![]).unwrap();
    store.create_token(&billing).await.unwrap();
    store.create_token(&admin).await.unwrap();

    let found = store
        .find_token(&hash(&billing.token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.role, Role::Agent);
    assert_eq!(
        found.domains,
        DomainScope::from_list(vec!["billing".into()])
    );
    assert_eq!(found.revoked_at, None);
    assert!(
        store
            .find_token(&hash("tp_nope_0"))
            .await
            .unwrap()
            .is_none()
    );

    assert!(store.revoke_token(&billing.record.id).await.unwrap());
    assert!(
        !store.revoke_token(&billing.record.id).await.unwrap(),
        "revoking twice changes nothing"
    );
    assert!(!store.revoke_token("no-such-id").await.unwrap());
    let revoked = store
        .find_token(&hash(&billing.token))
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());

    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|t| t.id == admin.record.id && t.domains == DomainScope::All)
    );
}

async fn purges_delete_only_tasks_finished_before_the_cutoff(store: &dyn Store) {
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
    let claimed = store.claim(&["p".into()], 2, &lease()).await.unwrap();
    store
        .finish_attempts(vec![(
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
