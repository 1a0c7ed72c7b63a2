//! The queue engine of one replica: the live agent sessions and their
//! credit, the dispatchers that push leased tasks to them, hand-offs at
//! enqueue, and the group commits of enqueues and results. Everything the
//! gRPC services do goes through [`plane::ControlPlane`].
//!
//! - [`plane`]: the operations the services share, keeping the store, the
//!   live sessions and the change notices consistent.
//! - [`sessions`]: live agent streams, their slots and in-flight attempts.
//! - [`dispatch`]: one dispatcher per session, claiming and assigning.
//! - [`prefetch`]: how many assignments an agent queues beyond its slots.
//! - [`handoff`]: new tasks handed straight to idle agents at enqueue.
//! - [`routing`]: which agent may take a task that names a handler version
//!   or requires labels.
//! - [`flow`]: an operator's limits on a task type: pause, `max_running`,
//!   `max_running_per_key` by a concurrency key, and rate limits; with
//!   [`admission`], which ready tasks a claim under keyed limits takes.
//! - [`enqueuer`] and [`completer`]: enqueues and results written in
//!   batches, sharing the batching step of [`group_commit`].
//! - [`events`]: task-change notices for `WatchTask`.
//! - [`bulk`]: retry, cancel or purge every task a selector matches, in
//!   batches.
//! - [`scheduler`]: firing due schedules, and `TriggerSchedule`.
//! - [`storage_faults`]: transient storage faults the write paths met, for
//!   the health check.

pub mod admission;
pub mod bulk;
pub mod completer;
pub mod dispatch;
pub mod enqueuer;
pub mod events;
pub mod flow;
pub mod group_commit;
pub mod handoff;
pub mod plane;
pub mod prefetch;
pub mod routing;
pub mod scheduler;
pub mod sessions;
pub mod storage_faults;
