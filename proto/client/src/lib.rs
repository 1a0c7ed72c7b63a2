//! Enqueue and follow taskplane tasks from Rust.
//!
//! A [`Client`] speaks taskplane's gRPC API (`taskplane.v1.TaskService`)
//! with typed requests ([`NewTask`]), tasks ([`Task`]) and errors
//! ([`Error`], sorted by what to do), so a service needs neither the
//! generated code nor `prost_types::Struct`:
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use taskplane_client::{Client, NewTask, TaskStatus};
//!
//! # async fn example() -> Result<(), taskplane_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let task = client
//!     .enqueue("invoice_generation", json!({"customer_id": 7, "lines": []}))
//!     .await?;
//! let done = client.wait(&task.id, Duration::from_secs(30)).await?;
//! assert_eq!(done.status, TaskStatus::Completed);
//!
//! // Options, and several servers with a token:
//! let client = Client::builder()
//!     .servers(["http://10.0.0.1:50051", "http://10.0.0.2:50051"])
//!     .token("tp_…")
//!     .connect()
//!     .await?;
//! let enqueued = client
//!     .enqueue_task(
//!         NewTask::new("welcome_email", json!({"to": "a@example.com"}))
//!             .idempotency_key("welcome-a@example.com")
//!             .start_within(Duration::from_secs(600)),
//!     )
//!     .await?;
//! println!("{} created: {}", enqueued.task.id, enqueued.created);
//! # Ok(()) }
//! ```
//!
//! Servers are tried in order; when the one in use goes away, calls move
//! to the next (see [`Client`] for which calls are sent again). Tokens and
//! TLS are the settings agents take ([`ClientBuilder`], or
//! [`ClientBuilder::from_env`] for `TASKPLANE_SERVER`, `TASKPLANE_TOKEN`
//! and `TASKPLANE_TLS_*`).

#![warn(missing_docs)]

mod client;
mod error;
mod options;
pub mod schedule;
mod schedules;
mod task;

pub use client::{Client, ClientBuilder, TaskStream};
pub use error::{Error, Result};
pub use options::{NewTask, TaskFilter};
pub use schedule::Schedule;
pub use schedules::StoredSchedule;
pub use task::{Enqueued, Progress, Task, TaskStatus};
pub use taskplane_common::connect::ConnectOptions;
pub use taskplane_proto::trace::TraceParent;
