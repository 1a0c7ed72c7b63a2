//! [`Schedule`]: recurring work an agent declares with its handlers.
//!
//! A [`DomainRegistry`](crate::DomainRegistry) returns its schedules from
//! `schedules()`, and the agent sends them when it registers. The type is
//! the client crate's, so a schedule a client creates and one an agent
//! declares are written the same way (see [`taskplane_client::schedule`]).
//!
//! ```
//! use std::time::Duration;
//! use taskplane_agent::schedule::{CatchUp, Schedule};
//!
//! let nightly = Schedule::cron("nightly-backup", "database_backup", "0 2 * * *")
//!     .timezone("Europe/Berlin")
//!     .catch_up(CatchUp::RunOnce);
//! assert_eq!(nightly.name(), "nightly-backup");
//! ```

pub use taskplane_client::schedule::{CatchUp, Overlap, Schedule};
