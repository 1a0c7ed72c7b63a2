//! [`Schedule`]: recurring work, created by a client
//! ([`Client::create_schedule`](crate::Client::create_schedule)) or declared
//! by an agent with its handlers.
//!
//! An agent's domain returns its schedules from `schedules()`, and the
//! agent sends them when it registers. The server creates the missing ones
//! and replaces those whose definition changed when the declaration's
//! [`revision`](Schedule::revision) is at least the stored one's, so an
//! older agent never undoes a newer one's change; it keeps a schedule's
//! paused state, and never deletes a schedule because an agent does not
//! declare it. The server validates every field and refuses the request
//! (or the whole registration), naming the field, when one is wrong.
//!
//! ```
//! use std::time::Duration;
//! use taskplane_client::schedule::{CatchUp, Schedule};
//!
//! let nightly = Schedule::cron("nightly-backup", "database_backup", "0 2 * * *")
//!     .timezone("Europe/Berlin")
//!     .catch_up(CatchUp::RunOnce);
//! let probe = Schedule::every("probe", "health_check", Duration::from_secs(60))
//!     .payload(serde_json::json!({ "host": "db.internal", "port": 5432 }));
//! assert_eq!(nightly.name(), "nightly-backup");
//! assert_eq!(probe.task_type(), "health_check");
//! ```

use std::time::Duration;

use taskplane_proto::json::json_to_struct;
use taskplane_proto::v1;

/// What a fire time does while the previous run's task has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// It makes no task (the default).
    #[default]
    Skip,
    /// It makes a task anyway.
    Allow,
    /// The first waits until the previous run finishes; later ones are skipped.
    BufferOne,
}

/// What fire times missed while no server ran make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Nothing.
    Skip,
    /// One task, for the latest of them (the default).
    #[default]
    RunOnce,
    /// A task each, at most the catch-up limit of them.
    RunAll,
}

/// A schedule declared in code: a name, the task it enqueues and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    spec: v1::ScheduleSpec,
}

impl Schedule {
    /// Fires at the times of a cron `expression` (five fields, six with
    /// seconds first, or `@hourly`, `@daily`, …), in UTC unless
    /// [`timezone`](Schedule::timezone) says otherwise.
    pub fn cron(name: &str, task_type: &str, expression: &str) -> Self {
        Schedule::new(name, task_type, |spec| spec.cron = expression.to_owned())
    }

    /// Fires every `interval`, at whole multiples of it since the Unix epoch.
    pub fn every(name: &str, task_type: &str, interval: Duration) -> Self {
        Schedule::new(name, task_type, |spec| {
            spec.interval = Some(proto_duration(interval))
        })
    }

    fn new(name: &str, task_type: &str, cadence: impl FnOnce(&mut v1::ScheduleSpec)) -> Self {
        let mut spec = v1::ScheduleSpec {
            name: name.to_owned(),
            task_type: task_type.to_owned(),
            ..v1::ScheduleSpec::default()
        };
        cadence(&mut spec);
        Schedule { spec }
    }

    /// The task's payload, a JSON object (default `{}`); any other value
    /// is sent as `{}` and its task gets no input.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        let object = match payload {
            serde_json::Value::Object(object) => object,
            _ => serde_json::Map::new(),
        };
        self.spec.payload = Some(json_to_struct(&object));
        self
    }

    /// The IANA time zone the cron expression is read in, e.g. `"Europe/Berlin"`.
    pub fn timezone(mut self, timezone: &str) -> Self {
        self.spec.timezone = timezone.to_owned();
        self
    }

    /// Delays each task by a random amount up to `jitter`.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.spec.jitter = Some(proto_duration(jitter));
        self
    }

    /// What a fire time does while the previous run has not finished.
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.spec.overlap = match overlap {
            Overlap::Skip => v1::OverlapPolicy::Skip,
            Overlap::Allow => v1::OverlapPolicy::Allow,
            Overlap::BufferOne => v1::OverlapPolicy::BufferOne,
        } as i32;
        self
    }

    /// What fire times missed while no server ran make.
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.spec.catch_up = match catch_up {
            CatchUp::Skip => v1::CatchUpPolicy::Skip,
            CatchUp::RunOnce => v1::CatchUpPolicy::RunOnce,
            CatchUp::RunAll => v1::CatchUpPolicy::RunAll,
        } as i32;
        self
    }

    /// The most missed fire times [`CatchUp::RunAll`] enqueues (default 10).
    pub fn catch_up_limit(mut self, limit: u32) -> Self {
        self.spec.catch_up_limit = limit;
        self
    }

    /// The tasks' priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.spec.priority = priority;
        self
    }

    /// Adds an entry to the tasks' metadata.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.spec.metadata.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Requires a label of the agent that runs each task (see
    /// `EnqueueTaskRequest.required_labels`).
    pub fn require_label(mut self, key: &str, value: &str) -> Self {
        self.spec
            .required_labels
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Creates the schedule paused (a stored schedule keeps its own state).
    pub fn paused(mut self, paused: bool) -> Self {
        self.spec.paused = paused;
        self
    }

    /// This declaration's revision: raise it when you change the schedule,
    /// so agents still running an older revision do not change it back.
    pub fn revision(mut self, revision: u32) -> Self {
        self.spec.revision = revision;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The task type it enqueues.
    pub fn task_type(&self) -> &str {
        &self.spec.task_type
    }

    /// The definition as sent on the wire.
    pub fn to_spec(&self) -> v1::ScheduleSpec {
        self.spec.clone()
    }
}

impl From<Schedule> for v1::ScheduleSpec {
    fn from(schedule: Schedule) -> Self {
        schedule.spec
    }
}

fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}
