//! How connections reach the gRPC services: the plain listener, TLS with
//! certificates replaced while serving, and the reloading of the files it
//! and the authenticator read.

pub mod listener;
pub mod reload;
pub mod tls;
