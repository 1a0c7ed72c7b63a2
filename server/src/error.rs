//! Domain errors and their one mapping to `tonic::Status`.
//!
//! Clients see a message that says what is wrong and what to do; they never
//! see SQL or driver text (storage faults are logged and reported as
//! `INTERNAL` without detail).

/// Everything a control-plane operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing was changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is well-formed but the system is not in a state to accept it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The named task or task type does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken by something else (e.g. a task type of another domain).
    #[error("{0}")]
    AlreadyExists(String),
    /// The server cannot take the request now (it is shutting down); retry.
    #[error("{0}")]
    Unavailable(String),
    /// A configuration file (TLS, tokens) cannot be used; the message names
    /// the file and what to fix.
    #[error("{0}")]
    Config(String),
    /// The caller's token does not allow this (a domain outside its scope).
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's token is no longer valid (revoked while a stream was open).
    #[error("{0}")]
    Unauthenticated(String),
    /// The other side was silent for longer than it may be.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The database failed; details are logged, not sent.
    #[error("storage error: {0}")]
    Storage(#[from] sqlx::Error),
    /// The SQLite writer thread's database call failed; details are logged, not sent.
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration failed at start-up.
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Stored data could not be decoded (a corrupt or foreign row).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Shorthand for results of control-plane operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(message) => tonic::Status::invalid_argument(message),
            Error::FailedPrecondition(message) => tonic::Status::failed_precondition(message),
            Error::Unavailable(message) => tonic::Status::unavailable(message),
            Error::Config(message) => tonic::Status::failed_precondition(message),
            Error::NotFound(message) => tonic::Status::not_found(message),
            Error::AlreadyExists(message) => tonic::Status::already_exists(message),
            Error::PermissionDenied(message) => tonic::Status::permission_denied(message),
            Error::Unauthenticated(message) => tonic::Status::unauthenticated(message),
            Error::DeadlineExceeded(message) => tonic::Status::deadline_exceeded(message),
            internal @ (Error::Storage(_)
            | Error::Sqlite(_)
            | Error::Migration(_)
            | Error::Corrupt(_)) => {
                tracing::error!(error = %internal, "internal error");
                tonic::Status::internal("internal storage error; the server log has the details")
            }
        }
    }
}
