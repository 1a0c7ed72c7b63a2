//! What the taskplane server, the agent SDK and the binaries share beyond
//! the wire types.
//!
//! - [`connect`]: [`ConnectOptions`], how agents and clients reach the
//!   control plane (token, CA, client certificate).
//! - [`shutdown`]: graceful shutdown on SIGTERM or Ctrl-C; a second signal
//!   forces the exit.
//! - [`logging`] (feature `logging`): the binaries' `tracing` set-up.
//! - [`http_server`] (feature `http-server`): a small HTTP/1.1 server, one
//!   answering function per listener.
//! - [`metrics_endpoint`] (feature `metrics-endpoint`): the Prometheus
//!   scrape endpoint of the server and the agent binary.

#![warn(missing_docs)]

pub mod connect;
#[cfg(feature = "http-server")]
pub mod http_server;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "metrics-endpoint")]
pub mod metrics_endpoint;
pub mod shutdown;

pub use connect::{AuthChannel, ConnectError, ConnectOptions};
