//! The schedule calls of [`Client`]: create, change, read, pause, resume,
//! delete and fire schedules, as `taskplane schedule …` does.

use chrono::{DateTime, Utc};
use taskplane_proto::v1;
use taskplane_proto::v1::schedule_service_client::ScheduleServiceClient;
use tonic::Status;

use crate::client::{Client, Resend};
use crate::error::{Error, Result};
use crate::options::timestamp;
use crate::task::Task;

/// A schedule as the server stores it: its definition (`spec`), domain,
/// paused state, next fire times and recent runs (the wire type).
pub use taskplane_proto::v1::Schedule as StoredSchedule;

impl Client {
    /// Creates a schedule; [`Error::Refused`] when one of that name exists,
    /// [`Error::InvalidRequest`] naming a field that is wrong.
    ///
    /// ```no_run
    /// # async fn example(client: taskplane_client::Client) -> taskplane_client::Result<()> {
    /// use taskplane_client::schedule::Schedule;
    ///
    /// let stored = client
    ///     .create_schedule(Schedule::cron("nightly-report", "report_generation", "0 2 * * *")
    ///         .timezone("Europe/Berlin")
    ///         .payload(serde_json::json!({ "format": "csv" })))
    ///     .await?;
    /// println!("next at {:?}", stored.next_fire_at);
    /// # Ok(()) }
    /// ```
    pub async fn create_schedule(
        &self,
        schedule: impl Into<v1::ScheduleSpec>,
    ) -> Result<StoredSchedule> {
        let request = v1::CreateScheduleRequest {
            schedule: Some(schedule.into()),
        };
        self.call(Resend::Unsafe, |channel| {
            let request = request.clone();
            async move {
                ScheduleServiceClient::new(channel)
                    .create_schedule(request)
                    .await
            }
        })
        .await
    }

    /// Replaces a schedule's definition (its paused state is kept).
    pub async fn update_schedule(
        &self,
        schedule: impl Into<v1::ScheduleSpec>,
    ) -> Result<StoredSchedule> {
        let request = v1::UpdateScheduleRequest {
            schedule: Some(schedule.into()),
        };
        self.call(Resend::Safe, |channel| {
            let request = request.clone();
            async move {
                ScheduleServiceClient::new(channel)
                    .update_schedule(request)
                    .await
            }
        })
        .await
    }

    /// The schedule of this name, with its next few fire times.
    pub async fn get_schedule(&self, name: &str) -> Result<StoredSchedule> {
        self.get_schedule_upcoming(name, 0, None).await
    }

    /// The schedule of this name, with its next `count` fire times from
    /// `from` (default now; `count` 0: the server's default).
    pub async fn get_schedule_upcoming(
        &self,
        name: &str,
        count: u32,
        from: Option<DateTime<Utc>>,
    ) -> Result<StoredSchedule> {
        let request = v1::GetScheduleRequest {
            name: name.to_owned(),
            upcoming_count: count,
            upcoming_from: from.map(timestamp),
        };
        self.call(Resend::Safe, |channel| {
            let request = request.clone();
            async move {
                ScheduleServiceClient::new(channel)
                    .get_schedule(request)
                    .await
            }
        })
        .await
    }

    /// Every schedule, or those of one task type and/or domain.
    pub async fn list_schedules(
        &self,
        task_type: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Vec<StoredSchedule>> {
        let request = v1::ListSchedulesRequest {
            task_type: task_type.unwrap_or_default().to_owned(),
            domain: domain.unwrap_or_default().to_owned(),
        };
        let answer = self
            .call(Resend::Safe, |channel| {
                let request = request.clone();
                async move {
                    ScheduleServiceClient::new(channel)
                        .list_schedules(request)
                        .await
                }
            })
            .await?;
        Ok(answer.schedules)
    }

    /// Pauses a schedule: it fires nothing until resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<StoredSchedule> {
        let request = v1::PauseScheduleRequest {
            name: name.to_owned(),
        };
        self.call(Resend::Safe, |channel| {
            let request = request.clone();
            async move {
                ScheduleServiceClient::new(channel)
                    .pause_schedule(request)
                    .await
            }
        })
        .await
    }

    /// Resumes a paused schedule from its next fire time.
    pub async fn resume_schedule(&self, name: &str) -> Result<StoredSchedule> {
        let request = v1::ResumeScheduleRequest {
            name: name.to_owned(),
        };
        self.call(Resend::Safe, |channel| {
            let request = request.clone();
            async move {
                ScheduleServiceClient::new(channel)
                    .resume_schedule(request)
                    .await
            }
        })
        .await
    }

    /// Deletes a schedule; the tasks it made stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        let request = v1::DeleteScheduleRequest {
            name: name.to_owned(),
        };
        self.call(Resend::Unsafe, |channel| {
            let request = request.clone();
            async move {
                ScheduleServiceClient::new(channel)
                    .delete_schedule(request)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Fires a schedule now, whatever its cadence; returns the task it
    /// enqueued.
    pub async fn trigger_schedule(&self, name: &str) -> Result<Task> {
        let request = v1::TriggerScheduleRequest {
            name: name.to_owned(),
        };
        let answer = self
            .call(Resend::Unsafe, |channel| {
                let request = request.clone();
                async move {
                    ScheduleServiceClient::new(channel)
                        .trigger_schedule(request)
                        .await
                }
            })
            .await?;
        answer
            .task
            .map(Task::from)
            .ok_or_else(|| Error::Server(Status::internal("TriggerSchedule answered no task")))
    }
}
