//! Schedules: a firing applies to the version it was planned from, once.

use std::time::Duration;

use super::*;
use crate::schedule::{
    Advance, Cadence, CatchUp, Firing, Overlap, PlannedRun, RunPlan, Schedule, ScheduleSpec,
    fire_key, task_for_run,
};

fn every_second(name: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        task: new_task("tick"),
        cadence: Cadence::every(Duration::from_secs(1)).unwrap(),
        jitter: Duration::ZERO,
        overlap: Overlap::Allow,
        catch_up: CatchUp::RunOnce,
        catch_up_limit: 10,
        paused: false,
        revision: 0,
    }
}

/// A firing of `schedule`'s next fire time that moves it on a second.
fn firing_of(schedule: &Schedule, plan: RunPlan) -> Firing {
    Firing {
        schedule: schedule.spec.name.clone(),
        advance: Some(Advance {
            expected_version: schedule.version,
            next_fire_at: schedule.next_fire_at + chrono::Duration::seconds(1),
            buffered_fire_at: None,
        }),
        runs: vec![PlannedRun {
            fire_at: schedule.next_fire_at,
            fire_times: 1,
            plan,
        }],
    }
}

/// Two firings planned from the same version (two replicas, one due fire
/// time) run at once: exactly one writes its task and moves the schedule
/// on; the other is `Aborted` and writes nothing, its key or not.
async fn a_firing_applies_once_to_the_version_it_was_planned_from(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store
        .register_task_types(&[spec("tick", "clock")])
        .await
        .unwrap();
    let schedule = store
        .schedules()
        .create_schedule(&every_second("race"))
        .await
        .unwrap();
    let fire_at = schedule.next_fire_at;
    let firing = |key: String| {
        let task = task_for_run(&schedule.spec, fire_at, key, Duration::ZERO);
        (firing_of(&schedule, RunPlan::Enqueue), task)
    };
    // Different keys, so only the version check can keep them apart.
    let (first, first_task) = firing(fire_key("race", fire_at));
    let (second, second_task) = firing(format!("{}-other", fire_key("race", fire_at)));
    let (a, b) = tokio::join!(
        store.enqueue_firing(vec![first_task], &first, &|_| None),
        store.enqueue_firing(vec![second_task], &second, &|_| None),
    );
    let outcomes = [a, b];
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(Error::Aborted(m)) if m.contains("race"))),
        "{outcomes:?}"
    );
    assert_eq!(newest_tasks(store, 10).await.len(), 1);
    let after = store.schedules().schedule("race").await.unwrap().unwrap();
    assert_eq!(after.version, schedule.version + 1);
    assert_eq!(after.next_fire_at, fire_at + chrono::Duration::seconds(1));
    let runs = store.schedules().schedule_runs("race", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].task_id, after.last_task_id);
}

/// Runs are kept per schedule up to a bound, newest first.
async fn runs_are_trimmed_to_the_newest(backend: Backend) {
    let (_dir, store) = open(backend).await;
    let store = &*store;
    store
        .register_task_types(&[spec("tick", "clock")])
        .await
        .unwrap();
    let mut schedule = store
        .schedules()
        .create_schedule(&every_second("busy"))
        .await
        .unwrap();
    let kept = crate::store::sql::RUNS_KEPT as usize;
    for i in 0..kept + 5 {
        let firing = firing_of(
            &schedule,
            RunPlan::Skipped(crate::schedule::SkipReason::Overlap),
        );
        store
            .enqueue_firing(Vec::new(), &firing, &|_| None)
            .await
            .unwrap_or_else(|e| panic!("firing {i}: {e}"));
        schedule = store.schedules().schedule("busy").await.unwrap().unwrap();
    }
    let runs = store.schedules().schedule_runs("busy", 1000).await.unwrap();
    assert_eq!(runs.len(), kept);
    assert!(runs.windows(2).all(|w| w[0].fire_at > w[1].fire_at));
    assert_eq!(
        runs[0].fire_at + chrono::Duration::seconds(1),
        schedule.next_fire_at
    );
}

crate::on_every_backend!(
    a_firing_applies_once_to_the_version_it_was_planned_from,
    runs_are_trimmed_to_the_newest,
);
