//! The control plane's Prometheus metrics, served on `--metrics-listen`.
//!
//! Counters and histograms are updated where things happen (enqueue,
//! assignment, result, lease expiry); the queue depth per type and status
//! and the connected agents per domain are read fresh at each scrape.
//! Every name starts with `taskplane_`; `docs/operations.md` lists them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::activity::{Event, RecentActivity};
use crate::engine::plane::ControlPlane;
use crate::model::{RecordedTask, Task, TaskStatus};

/// Labels of per-type metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// The task type.
    pub task_type: String,
}

/// Labels of the queue depth.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepthLabels {
    /// The task type.
    pub task_type: String,
    /// Its domain.
    pub domain: String,
    /// `pending`, `running`, `completed`, `dead` or `cancelled`.
    pub status: String,
}

/// Labels of per-domain metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabels {
    /// The domain.
    pub domain: String,
}

/// Labels of per-schedule metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    /// The schedule.
    pub schedule: String,
}

/// Labels of skipped fire times.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// The schedule.
    pub schedule: String,
    /// `overlap`, `buffer_full`, `missed` or `beyond_limit`.
    pub reason: String,
}

type Histograms = Family<TypeLabels, Histogram, fn() -> Histogram>;

/// From 0.25 ms to about 4 minutes.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 20))
}

/// Every metric of one replica.
pub struct ServerMetrics {
    registry: Registry,
    tasks: Family<DepthLabels, Gauge>,
    connected_agents: Family<DomainLabels, Gauge>,
    enqueued: Family<TypeLabels, Counter>,
    completed: Family<TypeLabels, Counter>,
    failed: Family<TypeLabels, Counter>,
    dead: Family<TypeLabels, Counter>,
    expired: Family<TypeLabels, Counter>,
    lease_expiries: Counter,
    dispatch_latency: Histograms,
    run_time: Histograms,
    schedule_fires: Family<ScheduleLabels, Counter>,
    schedule_skips: Family<SkipLabels, Counter>,
    schedule_lag: Family<ScheduleLabels, Histogram, fn() -> Histogram>,
    paused: Family<TypeLabels, Gauge>,
    max_running: Family<TypeLabels, Gauge>,
    activity: RecentActivity,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let metrics = ServerMetrics {
            registry: Registry::with_prefix("taskplane"),
            tasks: Family::default(),
            connected_agents: Family::default(),
            enqueued: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            dead: Family::default(),
            expired: Family::default(),
            lease_expiries: Counter::default(),
            dispatch_latency: Family::new_with_constructor(latency_histogram),
            run_time: Family::new_with_constructor(latency_histogram),
            schedule_fires: Family::default(),
            schedule_skips: Family::default(),
            schedule_lag: Family::new_with_constructor(latency_histogram),
            paused: Family::default(),
            max_running: Family::default(),
            activity: RecentActivity::default(),
        };
        metrics.registered()
    }
}

impl ServerMetrics {
    fn registered(mut self) -> Self {
        let registry = &mut self.registry;
        registry.register(
            "tasks",
            "Tasks in the queue and its history, by type, domain and status",
            self.tasks.clone(),
        );
        registry.register(
            "connected_agents",
            "Agent sessions connected to this replica, by domain",
            self.connected_agents.clone(),
        );
        registry.register(
            "tasks_enqueued",
            "Tasks enqueued (new, not idempotent repeats)",
            self.enqueued.clone(),
        );
        registry.register("tasks_completed", "Tasks completed", self.completed.clone());
        registry.register(
            "tasks_failed",
            "Attempts that failed and were scheduled for a retry",
            self.failed.clone(),
        );
        registry.register(
            "tasks_dead",
            "Tasks that failed for good",
            self.dead.clone(),
        );
        registry.register(
            "tasks_expired",
            "Tasks that ended EXPIRED: not started by their start_by, never run",
            self.expired.clone(),
        );
        registry.register(
            "lease_expiries",
            "Leases that ran out before their agent reported (the tasks went back to the queue)",
            self.lease_expiries.clone(),
        );
        registry.register(
            "dispatch_latency_seconds",
            "From a task being due (enqueued, or its run_at) to its assignment to an agent",
            self.dispatch_latency.clone(),
        );
        registry.register(
            "task_run_seconds",
            "From assignment to the recorded result of an attempt",
            self.run_time.clone(),
        );
        registry.register(
            "schedule_fires",
            "Tasks schedules enqueued (fire times and triggers)",
            self.schedule_fires.clone(),
        );
        registry.register(
            "schedule_skips",
            "Fire times of schedules that made no task, by reason",
            self.schedule_skips.clone(),
        );
        registry.register(
            "schedule_lag_seconds",
            "From a schedule's fire time to the commit of its task",
            self.schedule_lag.clone(),
        );
        registry.register(
            "task_type_paused",
            "1 while a task type is paused (nothing new is delivered), else 0",
            self.paused.clone(),
        );
        registry.register(
            "task_type_max_running",
            "A task type's max_running as this replica enforces it (0: no limit)",
            self.max_running.clone(),
        );
        self
    }

    /// The last hour's assignments and results by type and minute.
    pub fn activity(&self) -> &RecentActivity {
        &self.activity
    }

    /// Sets each type's paused and max_running gauges.
    pub fn flow_policies(&self, task_types: &[crate::model::TaskType]) {
        for task_type in task_types {
            let labels = TypeLabels {
                task_type: task_type.task_type.clone(),
            };
            self.paused
                .get_or_create(&labels)
                .set(i64::from(task_type.flow.paused));
            self.max_running
                .get_or_create(&labels)
                .set(i64::from(task_type.flow.max_running.unwrap_or(0)));
        }
    }

    /// Counts a schedule's task enqueued for `fire_at`, and its lag.
    pub fn schedule_fired(&self, schedule: &str, fire_at: DateTime<Utc>, now: DateTime<Utc>) {
        let labels = ScheduleLabels {
            schedule: schedule.to_owned(),
        };
        self.schedule_fires.get_or_create(&labels).inc();
        let lag = (now - fire_at).to_std().unwrap_or_default();
        self.schedule_lag
            .get_or_create(&labels)
            .observe(lag.as_secs_f64());
    }

    /// Counts `fire_times` of a schedule skipped for `reason`.
    pub fn schedule_skipped(&self, schedule: &str, reason: &str, fire_times: u32) {
        self.schedule_skips
            .get_or_create(&SkipLabels {
                schedule: schedule.to_owned(),
                reason: reason.to_owned(),
            })
            .inc_by(u64::from(fire_times));
    }

    /// Counts newly enqueued tasks.
    pub fn enqueued<'a>(&self, task_types: impl Iterator<Item = &'a str>) {
        for task_type in task_types {
            self.enqueued.get_or_create(&labels(task_type)).inc();
        }
    }

    /// Counts tasks that ended EXPIRED.
    pub fn expired<'a>(&self, task_types: impl Iterator<Item = &'a str>) {
        for task_type in task_types {
            self.expired.get_or_create(&labels(task_type)).inc();
        }
    }

    /// Records an assignment: how long the task waited since it was due.
    pub fn assigned(&self, task: &Task, now: DateTime<Utc>) {
        let waited = (now - task.run_at).to_std().unwrap_or_default();
        self.dispatch_latency
            .get_or_create(&labels(&task.task_type))
            .observe(waited.as_secs_f64());
        self.activity.record(
            &task.task_type,
            Event::Dispatched(waited.as_secs_f64() * 1000.0),
            now,
        );
    }

    /// Records a result as written: the task's new state and, for a finished
    /// attempt, how long it ran.
    pub fn recorded(&self, task: &RecordedTask) {
        let labels = labels(&task.task_type);
        let (counter, event) = match task.status {
            TaskStatus::Completed => (&self.completed, Event::Completed),
            TaskStatus::Dead => (&self.dead, Event::Dead),
            TaskStatus::Pending => (&self.failed, Event::Failed),
            TaskStatus::Running | TaskStatus::Cancelled | TaskStatus::Expired => return,
        };
        counter.get_or_create(&labels).inc();
        self.activity
            .record(&task.task_type, event, task.updated_at);
        if let Some(started) = task.started_at {
            let finished = task.finished_at.unwrap_or(task.updated_at);
            let ran = (finished - started).to_std().unwrap_or_default();
            self.run_time
                .get_or_create(&labels)
                .observe(ran.as_secs_f64());
        }
    }

    /// Counts leases that expired.
    pub fn leases_expired(&self, count: usize) {
        self.lease_expiries.inc_by(count as u64);
    }

    /// The text of one scrape, with the queue depth and connected agents
    /// read now.
    pub async fn scrape(&self, plane: &ControlPlane) -> String {
        match plane.store.queue_stats(None, Utc::now()).await {
            Ok(stats) => {
                self.tasks.clear();
                for stats in stats {
                    for (status, count) in stats.by_status {
                        self.tasks
                            .get_or_create(&DepthLabels {
                                task_type: stats.task_type.clone(),
                                domain: stats.domain.clone(),
                                status: status.to_owned(),
                            })
                            .set(i64::try_from(count).unwrap_or(i64::MAX));
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "metrics: reading the queue depth failed"),
        }
        let mut agents: BTreeMap<String, i64> = BTreeMap::new();
        for session in plane.sessions.list() {
            for domain in &session.domains {
                *agents.entry(domain.clone()).or_default() += 1;
            }
        }
        self.connected_agents.clear();
        for (domain, count) in agents {
            self.connected_agents
                .get_or_create(&DomainLabels { domain })
                .set(count);
        }
        taskplane_common::metrics_endpoint::encode(&self.registry)
    }
}

fn labels(task_type: &str) -> TypeLabels {
    TypeLabels {
        task_type: task_type.to_owned(),
    }
}
