//! Flow control in claims: per-key limits taken in turn, `max_running`,
//! pause and resume, and policy changes that check what they are given.

use std::collections::BTreeMap;

use super::*;
use crate::engine::flow::{FlowChange, KeyPath, RateLimit};

/// A claimant of `a` under its policy: the limited path alone.
fn limited(types: &[String]) -> Claimant<'_> {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    Claimant {
        task_types: &[],
        versions: &[],
        labels: &NO_LABELS,
        limited: types,
    }
}

/// Up to `limit` tasks of `a`, claimed under its policy by a new lease.
async fn claim_a(store: &dyn Store, limit: u32) -> Vec<Task> {
    let types = ["a".to_owned()];
    store
        .claim(&limited(&types), limit, &lease())
        .await
        .unwrap()
}

/// A task of `a` whose payload names `customer`.
fn for_customer(customer: &str) -> NewTask {
    let mut task = new_task("a");
    task.payload.insert("customer".into(), customer.into());
    task
}

fn customers_of(tasks: &[Task]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t.payload["customer"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_key_limit_takes_each_key_in_turn_and_never_past_its_limit(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let per_customer = FlowChange {
        concurrency_key: Some(Some(
            KeyPath::parse("concurrency_key", "payload.customer").unwrap(),
        )),
        max_running_per_key: Some(1),
        ..FlowChange::default()
    };
    let changed = store.set_flow_policy("a", &per_customer).await.unwrap();
    assert_eq!(changed.flow.max_running_per_key, Some(1));
    // Key x floods first; y and z come after.
    let mut tasks: Vec<NewTask> = (0..5).map(|_| for_customer("x")).collect();
    tasks.extend((0..3).map(|_| for_customer("y")));
    tasks.extend((0..3).map(|_| for_customer("z")));
    store.enqueue(tasks).await.unwrap();
    let first = claim_a(store, 10).await;
    let mut keys = customers_of(&first);
    keys.sort();
    assert_eq!(keys, ["x", "y", "z"], "one of each key, not x's flood");
    assert!(
        claim_a(store, 10).await.is_empty(),
        "every key is at its limit"
    );
    let x = first.iter().find(|t| t.payload["customer"] == "x").unwrap();
    let done = AttemptResult::Completed(JsonObject::new());
    store.record_results(vec![(x.id, 1, done)]).await.unwrap();
    let next = claim_a(store, 10).await;
    assert_eq!(
        customers_of(&next),
        ["x"],
        "x's turn again once its task ended"
    );
}

async fn max_running_and_pause_hold_claims_until_changed(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    store
        .set_flow_policy(
            "a",
            &FlowChange {
                max_running: Some(2),
                ..FlowChange::default()
            },
        )
        .await
        .unwrap();
    store
        .enqueue((0..6).map(|_| new_task("a")).collect())
        .await
        .unwrap();
    assert_eq!(claim_a(store, 10).await.len(), 2);
    assert!(claim_a(store, 10).await.is_empty());
    let paused = store
        .set_flow_policy(
            "a",
            &FlowChange {
                paused: Some(true),
                max_running: Some(0),
                ..FlowChange::default()
            },
        )
        .await
        .unwrap();
    assert!(paused.flow.paused && paused.flow.max_running.is_none());
    assert!(claim_a(store, 10).await.is_empty(), "paused: nothing new");
    let listed = store.list_task_types(None).await.unwrap();
    assert!(listed[0].flow.paused, "the state reads back");
    store
        .set_flow_policy(
            "a",
            &FlowChange {
                paused: Some(false),
                ..FlowChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        claim_a(store, 10).await.len(),
        4,
        "resumed, and no longer limited"
    );
}

async fn a_metadata_key_groups_tasks_and_tasks_without_it_share_one(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let per_tenant = FlowChange {
        concurrency_key: Some(Some(
            KeyPath::parse("concurrency_key", "metadata.tenant").unwrap(),
        )),
        max_running_per_key: Some(2),
        ..FlowChange::default()
    };
    store.set_flow_policy("a", &per_tenant).await.unwrap();
    let mut tasks = Vec::new();
    for tenant in ["t1", "t1", "t1", "t2"] {
        let mut task = new_task("a");
        task.metadata.insert("tenant".into(), tenant.into());
        tasks.push(task);
    }
    tasks.extend((0..3).map(|_| new_task("a")));
    store.enqueue(tasks).await.unwrap();
    let claimed = claim_a(store, 10).await;
    let mut tenants: Vec<&str> = claimed
        .iter()
        .map(|t| t.metadata.get("tenant").map_or("-", String::as_str))
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["-", "-", "t1", "t1", "t2"]);
}

async fn a_policy_change_checks_its_input_and_changes_nothing_when_refused(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let orphan = FlowChange {
        max_running_per_key: Some(3),
        ..FlowChange::default()
    };
    let err = store.set_flow_policy("a", &orphan).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let unknown = store
        .set_flow_policy(
            "nobody",
            &FlowChange {
                paused: Some(true),
                ..FlowChange::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("'nobody' is not registered"),
        "{unknown}"
    );
    let stored = store.get_task_type("a").await.unwrap().unwrap();
    assert_eq!(stored.flow, Default::default(), "nothing changed");
    // A registration later keeps the operator's policy.
    store
        .set_flow_policy(
            "a",
            &FlowChange {
                max_running: Some(4),
                ..FlowChange::default()
            },
        )
        .await
        .unwrap();
    let again = store.register_task_types(&[spec("a", "d")]).await.unwrap();
    assert_eq!(again[0].flow.max_running, Some(4));
}

/// A rate limit starts with an empty bucket and refills at its rate: no
/// start at once, then one per 50 ms at 20/second.
async fn a_rate_limit_spends_tokens_as_they_refill(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let rate = FlowChange {
        rate_limit: Some(Some(RateLimit::parse("20/second").unwrap())),
        ..FlowChange::default()
    };
    let changed = store.set_flow_policy("a", &rate).await.unwrap();
    assert_eq!(changed.flow.rate_limit.unwrap().to_string(), "20/second");
    store
        .enqueue((0..10).map(|_| new_task("a")).collect())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let first = claim_a(store, 10).await.len();
    tokio::time::sleep(std::time::Duration::from_millis(160)).await;
    let second = claim_a(store, 10).await.len();
    let elapsed = started.elapsed().as_secs_f64();
    // At most one token per 50 ms since the limit was set, and at least
    // the three whole ones of the sleep.
    assert!(
        first + second >= 3 && (first + second) as f64 <= 1.0 + elapsed * 20.0,
        "{first} then {second} in {elapsed} s"
    );
}

async fn a_rate_limit_per_key_gives_each_key_its_own_bucket(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    let orphan = FlowChange {
        rate_limit_key: Some(Some(
            KeyPath::parse("rate_limit_key", "payload.customer").unwrap(),
        )),
        ..FlowChange::default()
    };
    let refused = store.set_flow_policy("a", &orphan).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("rate_limit_key needs a rate_limit")
    );
    let per_customer = FlowChange {
        rate_limit: Some(Some(RateLimit::parse("2/second").unwrap())),
        ..orphan
    };
    let changed = store.set_flow_policy("a", &per_customer).await.unwrap();
    assert_eq!(
        changed.flow.rate_limit_key.unwrap().to_string(),
        "payload.customer"
    );
    // x floods first; y comes after, and the tasks without a customer.
    let mut tasks: Vec<NewTask> = (0..5).map(|_| for_customer("x")).collect();
    tasks.extend((0..5).map(|_| for_customer("y")));
    tasks.extend((0..3).map(|_| new_task("a")));
    store.enqueue(tasks).await.unwrap();
    let started = std::time::Instant::now();
    let first = claim_a(store, 20).await;
    let mut keys: Vec<Option<&str>> = first
        .iter()
        .map(|t| t.payload.get("customer").and_then(|c| c.as_str()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [None, None, Some("x"), Some("x"), Some("y"), Some("y")],
        "each key's full bucket, a second's worth: 2"
    );
    let drained = claim_a(store, 20).await;
    let spent_for = started.elapsed().as_secs_f64();
    assert!(
        drained.len() as f64 <= (spent_for * 2.0).ceil() * 3.0,
        "{} more after {spent_for} s",
        drained.len()
    );
    // Pruning a bucket spent from just now keeps it: the next claim finds
    // it as it was, not full.
    store
        .prune_rate_buckets("a", Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    let after_prune = claim_a(store, 20).await;
    let spent_for = started.elapsed().as_secs_f64();
    assert!(
        (drained.len() + after_prune.len()) as f64 <= (spent_for * 2.0).ceil() * 3.0,
        "{} more after {spent_for} s",
        after_prune.len()
    );
    // A bucket pruned as full is full: each key starts a second's worth
    // again (x and y have 2 of their 3 left, no customer its last one).
    store
        .prune_rate_buckets("a", Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    let refilled = claim_a(store, 20).await;
    let claimed = first.len() + drained.len() + after_prune.len();
    assert_eq!(
        refilled.len(),
        5.min(13 - claimed),
        "{claimed} claimed before"
    );
}

async fn a_pause_refusing_enqueues_refuses_them_on_every_replica(backend: Backend) {
    let (_dir, store) = open(backend.clone()).await;
    let store = &*store;
    store.register_task_types(&[spec("a", "d")]).await.unwrap();
    // A second replica that has enqueued before, so it remembers the type
    // as it was (PostgreSQL only: a SQLite file has one server).
    let other = match &backend {
        Backend::Postgres(url) => Some(PostgresStore::open(url, defaults()).await.unwrap()),
        Backend::Sqlite => None,
    };
    if let Some(other) = &other {
        other.enqueue(vec![new_task("a")]).await.unwrap();
    }
    let before = newest_tasks(store, 10).await.len();
    let refusing = FlowChange {
        paused: Some(true),
        refuse_enqueues: Some(true),
        ..FlowChange::default()
    };
    let paused = store.set_flow_policy("a", &refusing).await.unwrap();
    assert!(paused.flow.paused && paused.flow.refuse_enqueues);
    let refused = store.enqueue(vec![new_task("a")]).await.unwrap_err();
    assert!(
        matches!(&refused, Error::FailedPrecondition(m) if m.contains("paused and refuses new tasks")
            && m.contains("taskplane types resume a")),
        "{refused:?}"
    );
    if let Some(other) = &other {
        let refused = other.enqueue(vec![new_task("a")]).await.unwrap_err();
        assert!(
            matches!(refused, Error::FailedPrecondition(_)),
            "{refused:?}"
        );
    }
    assert_eq!(
        newest_tasks(store, 10).await.len(),
        before,
        "nothing was written"
    );

    // A resume clears the refusal; a plain pause queues new tasks.
    let resume = FlowChange {
        paused: Some(false),
        ..FlowChange::default()
    };
    let resumed = store.set_flow_policy("a", &resume).await.unwrap();
    assert!(!resumed.flow.refuse_enqueues);
    let pause = FlowChange {
        paused: Some(true),
        ..FlowChange::default()
    };
    store.set_flow_policy("a", &pause).await.unwrap();
    store.enqueue(vec![new_task("a")]).await.unwrap();
    if let Some(other) = &other {
        other.enqueue(vec![new_task("a")]).await.unwrap();
    }
}

crate::on_every_backend!(
    a_rate_limit_spends_tokens_as_they_refill,
    a_key_limit_takes_each_key_in_turn_and_never_past_its_limit,
    max_running_and_pause_hold_claims_until_changed,
    a_metadata_key_groups_tasks_and_tasks_without_it_share_one,
    a_policy_change_checks_its_input_and_changes_nothing_when_refused,
    a_pause_refusing_enqueues_refuses_them_on_every_replica,
    a_rate_limit_per_key_gives_each_key_its_own_bucket,
);
