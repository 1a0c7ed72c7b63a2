//! Every periodic loop of a replica, started in one place ([`start`]) and
//! stopped with it (each ends when the control plane shuts down):
//!
//! | loop | every | module |
//! | --- | --- | --- |
//! | lease maintenance: refresh live sessions, end silent ones, reap expired leases | heartbeat interval (a third of the lease) | [`leases`] |
//! | wake idle agents whose delayed tasks or retries came due | poll interval | [`due`] |
//! | expire tasks not started by their `start_by` | poll interval | [`deadlines`] |
//! | WAL checkpoint (SQLite; a no-op elsewhere) | 250 ms | [`start`] |
//! | vacuum `tasks` once claims and results left enough dead rows (PostgreSQL; a no-op elsewhere) | 1 s | [`start`] |
//! | wake-ups from other replicas (PostgreSQL) | as they arrive | [`wakeups`] |
//! | retention: purge finished tasks in batches | purge interval | [`retention`] |
//! | fold the finished-task counts | 30 s | [`task_counts`] |
//! | prune the full rate buckets of keys | 30 s | [`rate_buckets`] |
//! | health: probe the database with a write, report on `grpc.health.v1` | 1 s | [`health`] |
//! | fire due schedules | until the next fire time, at most 1 s | [`schedules`] |
//!
//! TLS and tokens files are watched by the server's transport
//! (`transport::reload`), which owns what it reloads.

pub mod deadlines;
pub mod due;
pub mod health;
pub mod leases;
pub mod rate_buckets;
pub mod retention;
pub mod schedules;
pub mod task_counts;
pub mod wakeups;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;

use crate::engine::plane::ControlPlane;
use crate::error::Result;

/// How often the write-ahead log is checkpointed.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// How often the store is asked whether its dead rows call for a vacuum.
const VACUUM_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the finished-task counts are folded.
const FOLD_INTERVAL: Duration = Duration::from_secs(30);

/// Starts every periodic loop on the plane's task tracker; the health loop
/// reports on `health`.
pub fn start(plane: &Arc<ControlPlane>, health: HealthReporter) {
    plane
        .tasks
        .spawn(health::report_health(plane.clone(), health));
    let keeper = Arc::new(leases::LeaseKeeper::default());
    plane.tasks.spawn(every(
        plane.clone(),
        plane.config.heartbeat_interval,
        "lease maintenance",
        move |plane| {
            let keeper = Arc::clone(&keeper);
            async move { keeper.round(&plane).await }
        },
    ));
    plane.tasks.spawn(every(
        plane.clone(),
        plane.config.poll_interval,
        "waking agents for tasks come due",
        |plane| async move { due::wake_for_due_tasks(&plane).await },
    ));
    plane.tasks.spawn(every(
        plane.clone(),
        plane.config.poll_interval,
        "expiring tasks past their start_by",
        |plane| async move { deadlines::expire_overdue(&plane).await },
    ));
    plane.tasks.spawn(every(
        plane.clone(),
        CHECKPOINT_INTERVAL,
        "checkpoint",
        |plane| async move { plane.store.checkpoint().await },
    ));
    plane.tasks.spawn(every(
        plane.clone(),
        VACUUM_CHECK_INTERVAL,
        "vacuum",
        |plane| async move { plane.store.vacuum().await },
    ));
    plane.tasks.spawn(every(
        plane.clone(),
        FOLD_INTERVAL,
        "folding the finished-task counts",
        |plane| async move { task_counts::fold(&plane).await },
    ));
    plane.tasks.spawn(every(
        plane.clone(),
        FOLD_INTERVAL,
        "pruning full rate buckets",
        |plane| async move { rate_buckets::prune(&plane).await },
    ));
    plane
        .tasks
        .spawn(wakeups::relay_ready_notifications(plane.clone()));
    plane.tasks.spawn(retention::purge_expired(plane.clone()));
    plane.tasks.spawn(schedules::fire_schedules(plane.clone()));
}

/// Runs `round` every `interval` until the plane shuts down. A failed round
/// is logged with `what` and tried again at the next interval.
async fn every<Round, Done>(
    plane: Arc<ControlPlane>,
    interval: Duration,
    what: &'static str,
    round: Round,
) where
    Round: Fn(Arc<ControlPlane>) -> Done,
    Done: Future<Output = Result<()>>,
{
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = plane.shutdown.cancelled() => return,
        }
        if let Err(error) = round(plane.clone()).await {
            tracing::warn!(%error, "{what} failed; the next round retries");
        }
    }
}
