//! The `taskplane` binary, as a library so that test harnesses run exactly
//! what the binary runs.
//!
//! - [`cli`]: the command line: `serve`, `dev` (the control plane and an
//!   agent of the example domains in one process), and the dispatch to the
//!   other commands.
//! - [`client_cli`]: the client commands (`enqueue`, `task`, `types`,
//!   `agents`, `domains`, `stats`, `health`).
//! - [`dev_services`]: the local stand-ins `taskplane dev` runs for mail,
//!   payments, webhooks, logs and backups.
//! - [`token_cli`]: `taskplane token`.
//! - [`bench`]: `taskplane bench`, its workloads and limit rows.

#![warn(missing_docs)]

/// jemalloc serves every allocation of a process that links this crate —
/// the `taskplane` binary, and so every test that runs it in-process —
/// SQLite's included (its symbols replace `malloc` and `free`): the SQLite
/// writer allocates for every row sqlx copies out and every temporary
/// b-tree, and glibc's allocator was a large share of its time
/// (docs/performance.md). Libraries leave the allocator to the
/// application; this crate is the application.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod bench;
pub mod cli;
pub mod client_cli;
pub mod dev_services;
pub mod token_cli;
