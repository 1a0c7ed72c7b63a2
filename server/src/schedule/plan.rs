//! What a due schedule does at an instant: [`plan`], a pure function of
//! the stored schedule, the clock and whether its previous run is still
//! going, so that every policy is tested without waiting for a clock.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::model::{CatchUp, Overlap, Schedule};

/// How many fire times a plan walks through at most: a per-second schedule
/// after a long outage is counted this far, then jumped to the present.
const MAX_WALKED: usize = 100_000;

/// What a firing writes, in one transaction with the tasks it enqueues.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// The schedule.
    pub schedule: String,
    /// How it moves the schedule on; `None` for a trigger, which leaves
    /// its fire times alone.
    pub advance: Option<Advance>,
    /// Its runs, in order; every [`RunPlan::Enqueue`] is matched, in order,
    /// with the enqueued tasks.
    pub runs: Vec<PlannedRun>,
}

/// The schedule's new state after a firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    /// The version the firing was planned from: it applies only if the
    /// schedule has not changed since (another replica fired it, an
    /// operator edited it).
    pub expected_version: i64,
    /// The next fire time.
    pub next_fire_at: DateTime<Utc>,
    /// A fire time waiting for the previous run to finish.
    pub buffered_fire_at: Option<DateTime<Utc>>,
}

/// One run of a firing.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// The fire time.
    pub fire_at: DateTime<Utc>,
    /// How many fire times it stands for.
    pub fire_times: u32,
    /// What it does.
    pub plan: RunPlan,
}

/// What a run does.
#[derive(Debug, Clone, PartialEq)]
pub enum RunPlan {
    /// Enqueues the schedule's task.
    Enqueue,
    /// Enqueues nothing, for this reason.
    Skipped(SkipReason),
}

/// Why a fire time made no task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The previous run had not finished and the overlap policy is skip.
    Overlap,
    /// A fire time already waits for the previous run (buffer_one).
    BufferFull,
    /// Missed while no server ran, and the catch-up policy is skip.
    Missed,
    /// Missed, and beyond the run_all limit.
    BeyondLimit,
}

impl SkipReason {
    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::BufferFull => "buffer_full",
            SkipReason::Missed => "missed",
            SkipReason::BeyondLimit => "beyond_limit",
        }
    }

    /// What a run records, in words.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap: the previous run has not finished",
            SkipReason::BufferFull => "overlap: a run already waits for the previous one to finish",
            SkipReason::Missed => "catch-up: missed while no server was running",
            SkipReason::BeyondLimit => "catch-up: missed, beyond the catch-up limit",
        }
    }
}

/// What `schedule` does at `now`: the buffered fire time, once the previous
/// run has finished (`previous_running` false), then every fire time up
/// to `now`. Fire times older than `grace` were missed and follow the
/// catch-up policy; each task-making one then follows the overlap policy.
/// `None` when nothing is due.
pub fn plan(
    schedule: &Schedule,
    now: DateTime<Utc>,
    previous_running: bool,
    grace: chrono::Duration,
) -> Option<Firing> {
    let spec = &schedule.spec;
    let buffered_ready = schedule.buffered_fire_at.is_some() && !previous_running;
    if schedule.next_fire_at > now && !buffered_ready {
        return None;
    }
    let mut overlap = OverlapState {
        policy: spec.overlap,
        running: previous_running,
        buffered: schedule.buffered_fire_at,
        runs: Vec::new(),
    };
    if buffered_ready && let Some(at) = overlap.buffered.take() {
        overlap.offer(at, 1);
    }
    let walk = walk_due(schedule, now, grace, spec.catch_up_limit as usize + 1);
    if walk.missed > 0 {
        let latest = *walk.latest_missed.back().expect("a missed time is kept");
        match spec.catch_up {
            CatchUp::Skip => overlap.skip(latest, walk.missed, SkipReason::Missed),
            CatchUp::RunOnce => overlap.offer(latest, walk.missed),
            CatchUp::RunAll => {
                let mut kept = walk.latest_missed;
                let limit = spec.catch_up_limit as usize;
                if walk.missed as usize > limit
                    && let Some(last_dropped) = kept.pop_front()
                {
                    let dropped = walk.missed - limit as u32;
                    overlap.skip(last_dropped, dropped, SkipReason::BeyondLimit);
                }
                for at in kept.into_iter().rev().take(limit).rev() {
                    overlap.offer(at, 1);
                }
            }
        }
    }
    for at in walk.on_time {
        overlap.offer(at, 1);
    }
    let next_fire_at = if schedule.next_fire_at > now {
        schedule.next_fire_at
    } else {
        spec.cadence.next_after(now)?
    };
    Some(Firing {
        schedule: spec.name.clone(),
        advance: Some(Advance {
            expected_version: schedule.version,
            next_fire_at,
            buffered_fire_at: overlap.buffered,
        }),
        runs: overlap.runs,
    })
}

/// The fire times from the schedule's next one up to `now`, split at
/// `now - grace`.
struct DueTimes {
    /// How many were missed.
    missed: u32,
    /// The latest missed ones, at most the `keep` asked for, oldest first.
    latest_missed: VecDeque<DateTime<Utc>>,
    /// Those within the grace, oldest first.
    on_time: Vec<DateTime<Utc>>,
}

fn walk_due(
    schedule: &Schedule,
    now: DateTime<Utc>,
    grace: chrono::Duration,
    keep: usize,
) -> DueTimes {
    let cadence = &schedule.spec.cadence;
    let missed_before = now - grace;
    let mut due = DueTimes {
        missed: 0,
        latest_missed: VecDeque::with_capacity(keep),
        on_time: Vec::new(),
    };
    let mut at = Some(schedule.next_fire_at).filter(|at| *at <= now);
    let mut walked = 0;
    while let Some(time) = at.filter(|at| *at <= now) {
        if time < missed_before {
            due.missed += 1;
            if due.latest_missed.len() == keep {
                due.latest_missed.pop_front();
            }
            due.latest_missed.push_back(time);
        } else {
            due.on_time.push(time);
        }
        walked += 1;
        at = if walked == MAX_WALKED && time < missed_before {
            // Too many to count one by one: jump to the last grace period.
            cadence.next_after(missed_before - chrono::Duration::milliseconds(1))
        } else {
            cadence.next_after(time)
        };
    }
    due
}

/// The overlap policy applied run by run within one firing.
struct OverlapState {
    policy: Overlap,
    running: bool,
    buffered: Option<DateTime<Utc>>,
    runs: Vec<PlannedRun>,
}

impl OverlapState {
    /// A fire time that would make a task, if the overlap policy lets it.
    fn offer(&mut self, fire_at: DateTime<Utc>, fire_times: u32) {
        if !self.running || self.policy == Overlap::Allow {
            self.running = true;
            self.runs.push(PlannedRun {
                fire_at,
                fire_times,
                plan: RunPlan::Enqueue,
            });
            return;
        }
        match self.policy {
            Overlap::BufferOne if self.buffered.is_none() => self.buffered = Some(fire_at),
            Overlap::BufferOne => self.skip(fire_at, fire_times, SkipReason::BufferFull),
            _ => self.skip(fire_at, fire_times, SkipReason::Overlap),
        }
    }

    fn skip(&mut self, fire_at: DateTime<Utc>, fire_times: u32, reason: SkipReason) {
        self.runs.push(PlannedRun {
            fire_at,
            fire_times,
            plan: RunPlan::Skipped(reason),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::schedule::cadence::Cadence;
    use crate::schedule::model::{OPERATOR, ScheduleSpec};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    /// Every 10 s, next due at 100 s.
    fn schedule(overlap: Overlap, catch_up: CatchUp, limit: u32) -> Schedule {
        Schedule {
            spec: ScheduleSpec {
                name: "every-ten".into(),
                task: crate::model::NewTask {
                    task_type: "t".into(),
                    payload: Default::default(),
                    priority: 0,
                    run_at: None,
                    idempotency_key: None,
                    idempotency_window: None,
                    max_attempts: None,
                    timeout: None,
                    handler_version: String::new(),
                    metadata: Default::default(),
                    required_labels: Default::default(),
                    parent_id: None,
                    start_by: None,
                    retry_policy: Default::default(),
                },
                cadence: Cadence::every(Duration::from_secs(10)).unwrap(),
                jitter: Duration::ZERO,
                overlap,
                catch_up,
                catch_up_limit: limit,
                paused: false,
                revision: 0,
            },
            domain: "d".into(),
            declared_by: OPERATOR.into(),
            next_fire_at: at(100),
            buffered_fire_at: None,
            last_task_id: None,
            version: 7,
            created_at: at(0),
            updated_at: at(0),
        }
    }

    fn grace() -> chrono::Duration {
        chrono::Duration::seconds(5)
    }

    fn enqueued(firing: &Firing) -> Vec<DateTime<Utc>> {
        firing
            .runs
            .iter()
            .filter(|r| r.plan == RunPlan::Enqueue)
            .map(|r| r.fire_at)
            .collect()
    }

    #[test]
    fn nothing_is_due_before_the_next_fire_time() {
        let s = schedule(Overlap::Skip, CatchUp::RunOnce, 10);
        assert_eq!(plan(&s, at(99), false, grace()), None);
    }

    #[test]
    fn a_fire_time_on_time_enqueues_and_moves_the_schedule_on() {
        let s = schedule(Overlap::Skip, CatchUp::Skip, 10);
        let firing = plan(&s, at(101), false, grace()).unwrap();
        assert_eq!(enqueued(&firing), vec![at(100)]);
        let advance = firing.advance.unwrap();
        assert_eq!(advance.next_fire_at, at(110));
        assert_eq!(advance.expected_version, 7);
    }

    /// Fire times 100..=130 were missed (the server came back at 137, the
    /// grace is 5 s); nothing was on time.
    #[test]
    fn each_catch_up_policy_treats_missed_fire_times_its_way() {
        let skip = plan(
            &schedule(Overlap::Allow, CatchUp::Skip, 10),
            at(137),
            false,
            grace(),
        )
        .unwrap();
        assert!(enqueued(&skip).is_empty());
        assert_eq!(skip.runs.len(), 1);
        assert_eq!(skip.runs[0].fire_times, 4);
        assert_eq!(skip.runs[0].plan, RunPlan::Skipped(SkipReason::Missed));

        let once = plan(
            &schedule(Overlap::Allow, CatchUp::RunOnce, 10),
            at(137),
            false,
            grace(),
        )
        .unwrap();
        assert_eq!(enqueued(&once), vec![at(130)]);
        assert_eq!(once.runs[0].fire_times, 4);

        let all = plan(
            &schedule(Overlap::Allow, CatchUp::RunAll, 10),
            at(137),
            false,
            grace(),
        )
        .unwrap();
        assert_eq!(enqueued(&all), vec![at(100), at(110), at(120), at(130)]);
        assert_eq!(all.advance.unwrap().next_fire_at, at(140));

        let bounded = plan(
            &schedule(Overlap::Allow, CatchUp::RunAll, 2),
            at(137),
            false,
            grace(),
        )
        .unwrap();
        assert_eq!(enqueued(&bounded), vec![at(120), at(130)]);
        assert_eq!(bounded.runs[0].fire_at, at(110));
        assert_eq!(bounded.runs[0].fire_times, 2);
        assert_eq!(
            bounded.runs[0].plan,
            RunPlan::Skipped(SkipReason::BeyondLimit)
        );
    }

    #[test]
    fn fire_times_within_the_grace_are_not_missed() {
        let s = schedule(Overlap::Allow, CatchUp::Skip, 10);
        let firing = plan(&s, at(113), false, grace()).unwrap();
        // 100 is missed (older than 108), 110 is on time.
        assert_eq!(enqueued(&firing), vec![at(110)]);
    }

    #[test]
    fn skip_overlap_makes_no_task_while_the_previous_runs() {
        let s = schedule(Overlap::Skip, CatchUp::RunAll, 10);
        let firing = plan(&s, at(101), true, grace()).unwrap();
        assert!(enqueued(&firing).is_empty());
        assert_eq!(firing.runs[0].plan, RunPlan::Skipped(SkipReason::Overlap));
        // Within one firing, the first task counts as running for the rest.
        let caught_up = plan(&s, at(137), false, grace()).unwrap();
        assert_eq!(enqueued(&caught_up), vec![at(100)]);
        assert_eq!(caught_up.runs.len(), 4);
    }

    #[test]
    fn buffer_one_keeps_one_fire_time_until_the_previous_run_ends() {
        let mut s = schedule(Overlap::BufferOne, CatchUp::RunAll, 10);
        let firing = plan(&s, at(121), true, grace()).unwrap();
        let advance = firing.advance.clone().unwrap();
        assert_eq!(advance.buffered_fire_at, Some(at(100)));
        assert!(enqueued(&firing).is_empty());
        assert_eq!(
            firing.runs[0].plan,
            RunPlan::Skipped(SkipReason::BufferFull)
        );
        s.next_fire_at = advance.next_fire_at;
        s.buffered_fire_at = advance.buffered_fire_at;
        // Still running: nothing to do before the next fire time.
        assert_eq!(plan(&s, at(125), true, grace()), None);
        // Finished: the buffered fire time is enqueued at once.
        let released = plan(&s, at(125), false, grace()).unwrap();
        assert_eq!(enqueued(&released), vec![at(100)]);
        let advance = released.advance.unwrap();
        assert_eq!(advance.buffered_fire_at, None);
        assert_eq!(advance.next_fire_at, at(130));
    }

    #[test]
    fn a_long_outage_is_counted_without_walking_every_fire_time() {
        let mut s = schedule(Overlap::Allow, CatchUp::RunOnce, 10);
        s.spec.cadence = Cadence::every(Duration::from_secs(1)).unwrap();
        let year = 365 * 24 * 3600;
        let firing = plan(&s, at(100 + year), false, grace()).unwrap();
        // The missed ones as one task, then the six within the grace.
        assert_eq!(enqueued(&firing).len(), 7);
        assert_eq!(firing.runs[0].fire_times, MAX_WALKED as u32);
        assert_eq!(firing.advance.unwrap().next_fire_at, at(101 + year));
    }
}
