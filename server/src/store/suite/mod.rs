//! One test suite for every storage backend: each test runs against a real
//! SQLite file and a real PostgreSQL schema (`crate::on_every_backend!`),
//! one file per concern, with the helpers they share here.

mod claims;
mod deadlines;
mod enqueue;
mod flow;
mod history;
mod leases;
mod registry;
mod results;
mod schedules;

use std::collections::BTreeMap;

use chrono::Utc;
use uuid::Uuid;

use super::rules::TypeDefaults;
use super::{Leases, PostgresStore, SqliteStore, Store};
use crate::config::QueueConfig;
use crate::error::Error;
use crate::model::{
    AttemptResult, Claimant, JsonObject, Lease, NewTask, ResultOutcome, Task, TaskFilter,
    TaskStatus, TaskTypeSpec,
};
use crate::testing::Backend;
use taskplane_proto::trace::TRACEPARENT;

pub(crate) fn defaults() -> TypeDefaults {
    let queue = QueueConfig::default();
    TypeDefaults {
        max_attempts: queue.default_max_attempts,
        timeout: queue.default_timeout,
        retry_policy: queue.default_retry_policy,
    }
}

/// A store on `backend`, with the directory that holds its SQLite file
/// (removed when dropped).
pub(crate) async fn open(backend: Backend) -> (tempfile::TempDir, Box<dyn Store>) {
    match backend {
        Backend::Sqlite => {
            let (dir, _url, store) = sqlite_store("nested/dir/t.db").await;
            (dir, Box::new(store))
        }
        Backend::Postgres(url) => {
            let store = PostgresStore::open(&url, defaults()).await.unwrap();
            (tempfile::tempdir().unwrap(), Box::new(store))
        }
    }
}

/// A store on a fresh SQLite file at `path` inside a temporary directory,
/// with the directory (removed when dropped) and the file's URL.
pub(crate) async fn sqlite_store(path: &str) -> (tempfile::TempDir, String, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(path).display());
    let store = SqliteStore::open(&url, defaults(), Default::default())
        .await
        .unwrap();
    (dir, url, store)
}

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
        flow: None,
    }
}

/// A claimant of these types with no versions or labels, as an agent whose
/// handlers are not versioned.
pub(crate) fn of_types(task_types: &[String]) -> Claimant<'_> {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    Claimant {
        task_types,
        versions: &[],
        labels: &NO_LABELS,
        limited: &[],
    }
}

pub(crate) fn new_task(task_type: &str) -> NewTask {
    NewTask {
        task_type: task_type.into(),
        payload: JsonObject::new(),
        priority: 0,
        run_at: None,
        idempotency_key: None,
        idempotency_window: None,
        max_attempts: None,
        timeout: None,
        handler_version: String::new(),
        metadata: BTreeMap::new(),
        retry_policy: Default::default(),
        required_labels: BTreeMap::new(),
        parent_id: None,
        start_by: None,
    }
}

/// Up to `limit` tasks of any type, domain and status, newest first.
pub(crate) async fn newest_tasks(store: &dyn Store, limit: u32) -> Vec<Task> {
    store
        .list_tasks(&TaskFilter {
            limit,
            ..TaskFilter::default()
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

pub(crate) async fn statuses_of(store: &dyn Store, tasks: &[Task]) -> Vec<TaskStatus> {
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(store.get_task(task.id).await.unwrap().unwrap().status);
    }
    statuses
}

/// Type `a`'s count of each status, and its recent completions and deaths.
pub(crate) async fn counts_of_a(store: &dyn Store) -> (BTreeMap<&'static str, u64>, u64, u64) {
    let stats = store
        .queue_stats(None, Utc::now() - chrono::Duration::minutes(1))
        .await
        .unwrap();
    let a = stats.into_iter().find(|s| s.task_type == "a").unwrap();
    (a.by_status, a.completed_recently, a.dead_recently)
}
