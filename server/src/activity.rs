//! What happened to each task type's tasks in each minute of the last hour,
//! as this replica saw it: the console's overview charts.
//!
//! Kept in memory, fed where the metrics are (an assignment, a recorded
//! result), so drawing a chart reads no table however many tasks the store
//! holds. Each replica knows its own assignments and results only, and
//! forgets them when it stops: the chart says so.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};

/// How many minutes are kept.
pub const MINUTES_KEPT: i64 = 60;

/// One type's counts in one minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Minute {
    /// The minute, as whole minutes since the Unix epoch.
    pub index: i64,
    /// Tasks assigned to an agent.
    pub dispatched: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Tasks that failed for good.
    pub dead: u64,
    /// The sum of the dispatched tasks' waits from due to assignment, in
    /// milliseconds.
    pub latency_sum_ms: f64,
    /// The longest of those waits.
    pub latency_max_ms: f64,
}

impl Minute {
    /// The minute's first instant.
    pub fn start(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.index * 60, 0)
            .single()
            .unwrap_or_default()
    }

    /// The mean wait of the tasks dispatched in the minute.
    pub fn latency_mean_ms(&self) -> f64 {
        if self.dispatched == 0 {
            0.0
        } else {
            self.latency_sum_ms / self.dispatched as f64
        }
    }
}

/// An event counted in a minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// Assigned after waiting this many milliseconds since it was due.
    Dispatched(f64),
    /// Completed.
    Completed,
    /// Failed, to be retried.
    Failed,
    /// Failed for good.
    Dead,
}

/// The last hour of every type, by minute.
#[derive(Debug, Default)]
pub struct RecentActivity {
    types: Mutex<HashMap<String, VecDeque<Minute>>>,
}

impl RecentActivity {
    /// Counts `event` of a task of `task_type` at `at`.
    pub fn record(&self, task_type: &str, event: Event, at: DateTime<Utc>) {
        let index = at.timestamp().div_euclid(60);
        let mut types = self.types.lock().expect("activity lock");
        let minutes = match types.get_mut(task_type) {
            Some(minutes) => minutes,
            None => types.entry(task_type.to_owned()).or_default(),
        };
        if minutes.back().is_none_or(|last| last.index < index) {
            minutes.push_back(Minute {
                index,
                ..Minute::default()
            });
            while minutes
                .front()
                .is_some_and(|first| first.index <= index - MINUTES_KEPT)
            {
                minutes.pop_front();
            }
        }
        // Events arrive in time order but for the odd one a few
        // milliseconds late across a minute's edge: it counts in the
        // latest minute.
        let minute = minutes.back_mut().expect("a minute was just ensured");
        match event {
            Event::Dispatched(waited_ms) => {
                minute.dispatched += 1;
                minute.latency_sum_ms += waited_ms;
                minute.latency_max_ms = minute.latency_max_ms.max(waited_ms);
            }
            Event::Completed => minute.completed += 1,
            Event::Failed => minute.failed += 1,
            Event::Dead => minute.dead += 1,
        }
    }

    /// Every type's minutes within the hour before `now`, oldest first,
    /// types by name.
    pub fn last_hour(&self, now: DateTime<Utc>) -> Vec<(String, Vec<Minute>)> {
        let oldest = now.timestamp().div_euclid(60) - MINUTES_KEPT;
        let types = self.types.lock().expect("activity lock");
        let mut recent: Vec<(String, Vec<Minute>)> = types
            .iter()
            .map(|(task_type, minutes)| {
                let kept = minutes
                    .iter()
                    .filter(|minute| minute.index > oldest)
                    .cloned()
                    .collect::<Vec<_>>();
                (task_type.clone(), kept)
            })
            .filter(|(_, minutes)| !minutes.is_empty())
            .collect();
        recent.sort_by(|a, b| a.0.cmp(&b.0));
        recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + minute * 60 + second, 0)
            .unwrap()
    }

    #[test]
    fn events_count_in_their_minute_and_an_hour_is_kept() {
        let activity = RecentActivity::default();
        let base = at(0, 0).timestamp() / 60;
        activity.record("email", Event::Dispatched(2.0), at(0, 1));
        activity.record("email", Event::Dispatched(4.0), at(0, 59));
        activity.record("email", Event::Completed, at(0, 59));
        activity.record("email", Event::Failed, at(1, 0));
        activity.record("report", Event::Dead, at(1, 5));
        let recent = activity.last_hour(at(1, 30));
        assert_eq!(recent.len(), 2);
        let (name, minutes) = &recent[0];
        assert_eq!(name, "email");
        assert_eq!(minutes.len(), 2);
        assert_eq!(minutes[0].index, base);
        assert_eq!(
            (minutes[0].dispatched, minutes[0].completed),
            (2, 1),
            "{minutes:?}"
        );
        assert_eq!(minutes[0].latency_mean_ms(), 3.0);
        assert_eq!(minutes[0].latency_max_ms, 4.0);
        assert_eq!(minutes[1].failed, 1);
        assert_eq!(recent[1].1[0].dead, 1);

        // An hour later the first minute is gone, from the answer and
        // from memory once the type records again.
        let recent = activity.last_hour(at(60, 30));
        assert_eq!(recent[0].1.len(), 1, "{recent:?}");
        activity.record("email", Event::Completed, at(61, 0));
        let recent = activity.last_hour(at(61, 0));
        assert_eq!(recent[0].1.len(), 1);
        assert_eq!(recent[0].1[0].index, base + 61);
        assert_eq!(recent.len(), 1, "report's minute is over an hour old");
    }
}
