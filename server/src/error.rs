//! Domain errors and their one mapping to `tonic::Status`.
//!
//! Clients see a message that says what is wrong and what to do; they never
//! see SQL or driver text. Storage faults are logged; a transient one (the
//! database unreachable, busy, out of disk or failing I/O) reaches clients
//! as `UNAVAILABLE`, which standard gRPC retry policies retry, and any other
//! as `INTERNAL`, both without detail.

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
    /// A concurrent change got there first (a schedule fired by another
    /// replica, say); nothing was changed.
    #[error("{0}")]
    Aborted(String),
    /// A message was larger than the limit.
    #[error("{0}")]
    ResourceExhausted(String),
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
            Error::ResourceExhausted(message) => tonic::Status::resource_exhausted(message),
            Error::Aborted(message) => tonic::Status::aborted(message),
            transient if transient.is_transient() => {
                tracing::warn!(error = %transient, "storage unavailable");
                tonic::Status::unavailable(
                    "the database is unavailable (unreachable, busy or out of disk); \
                     try again shortly, the server log has the details",
                )
            }
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

impl Error {
    /// Whether this is a fault that heals by itself, so that the same
    /// request may succeed when tried again: the database unreachable or
    /// restarting, busy, out of disk or failing I/O, or the server unable to
    /// take the request just now (`Unavailable`, which the SQLite writer
    /// thread also reports for a transaction it could not commit).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Storage(error) => sqlx_error_is_transient(error),
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                sqlite_code_is_transient(failure.extended_code)
            }
            _ => false,
        }
    }
}

/// Whether a sqlx error is one that heals by itself.
fn sqlx_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => {
            let Some(code) = database.code() else {
                return false;
            };
            match code.parse::<i32>() {
                // SQLite's (extended) result code.
                Ok(sqlite) => sqlite_code_is_transient(sqlite),
                // A PostgreSQL SQLSTATE: connection exceptions (08),
                // insufficient resources (53: disk full, out of memory, too
                // many connections), operator intervention (57: shutting
                // down, cannot connect now), and serialization failures
                // and deadlocks (40001, 40P01), which are worth retrying.
                Err(_) => {
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57P")
                        || code == "40001"
                        || code == "40P01"
                }
            }
        }
        _ => false,
    }
}

/// Whether an SQLite result code (primary or extended) is one that heals by
/// itself: busy or locked, I/O error, disk full, or cannot open the file.
fn sqlite_code_is_transient(code: i32) -> bool {
    use libsqlite3_sys as ffi;
    matches!(
        code & 0xff,
        ffi::SQLITE_BUSY
            | ffi::SQLITE_LOCKED
            | ffi::SQLITE_IOERR
            | ffi::SQLITE_FULL
            | ffi::SQLITE_CANTOPEN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_storage_faults_are_unavailable_and_others_internal() {
        let full = Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(libsqlite3_sys::SQLITE_FULL),
            Some("database or disk is full".into()),
        ));
        assert_eq!(tonic::Status::from(full).code(), tonic::Code::Unavailable);
        let io = Error::Storage(sqlx::Error::Io(std::io::Error::other("reset")));
        assert_eq!(tonic::Status::from(io).code(), tonic::Code::Unavailable);
        let timed_out = Error::Storage(sqlx::Error::PoolTimedOut);
        assert_eq!(
            tonic::Status::from(timed_out).code(),
            tonic::Code::Unavailable
        );
        let constraint = Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(libsqlite3_sys::SQLITE_CONSTRAINT_UNIQUE),
            None,
        ));
        assert_eq!(
            tonic::Status::from(constraint).code(),
            tonic::Code::Internal
        );
        let corrupt = Error::Corrupt("a bad row".into());
        assert_eq!(tonic::Status::from(corrupt).code(), tonic::Code::Internal);
    }
}
