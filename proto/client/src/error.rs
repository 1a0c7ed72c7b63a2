//! [`Error`]: what went wrong, sorted by what the caller should do about
//! it, rather than a raw gRPC status.

use taskplane_common::connect::ConnectError;
use tonic::{Code, Status};

use crate::task::Task;

/// Why a call failed. Each variant says what to do; [`Error::is_retryable`]
/// says whether the same call may succeed later unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (a bad payload, a deadline already past, an
    /// unknown option): fix the request. Nothing was written.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request is well formed but the queue refuses it as things stand:
    /// an unregistered task type or version, a task in the wrong state for
    /// the change, a type paused refusing enqueues. Change the state (start
    /// an agent, resume the type) or the request. Nothing was written.
    #[error("refused: {0}")]
    Refused(String),
    /// No such task or schedule: check the id.
    #[error("not found: {0}")]
    NotFound(String),
    /// No token, or one the server does not accept: give a valid token
    /// ([`ClientBuilder::token`](crate::ClientBuilder::token)).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's role or domains do not allow this call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The token's enqueue quota is spent for now: retry after a while.
    #[error("throttled: {0}")]
    Throttled(String),
    /// No server answered (every one was tried), or the one that did cannot
    /// serve now: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// [`Client::wait`](crate::Client::wait) gave up before the task
    /// finished; this is the task as last seen. It goes on in the queue.
    #[error("task {} did not finish in time (last seen {:?})", .0.id, .0.status)]
    Timeout(Box<Task>),
    /// The client's own settings are wrong: a server URL, a TLS file, a
    /// token with characters a header cannot carry.
    #[error("client settings: {0}")]
    Config(String),
    /// Any other answer from the server, as it came.
    #[error("server error: {0}")]
    Server(Status),
}

impl Error {
    /// True when the same call may succeed later unchanged: the server was
    /// unavailable or throttled the caller.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Throttled(_))
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidRequest(message),
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                Error::Refused(message)
            }
            Code::NotFound => Error::NotFound(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::ResourceExhausted => Error::Throttled(message),
            Code::Unavailable => Error::Unavailable(message),
            _ => Error::Server(status),
        }
    }
}

impl From<ConnectError> for Error {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::Setup(reason) => Error::Config(reason),
            unreachable @ ConnectError::Unreachable(..) => {
                Error::Unavailable(unreachable.to_string())
            }
        }
    }
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_what_to_do() {
        let error = Error::from(Status::failed_precondition(
            "task type 'x' is not registered",
        ));
        assert!(matches!(&error, Error::Refused(m) if m.contains("'x'")));
        assert!(!error.is_retryable());
        assert!(Error::from(Status::unavailable("down")).is_retryable());
        assert!(Error::from(Status::resource_exhausted("quota")).is_retryable());
        assert!(matches!(
            Error::from(Status::invalid_argument("bad")),
            Error::InvalidRequest(_)
        ));
        assert!(matches!(
            Error::from(Status::internal("boom")),
            Error::Server(status) if status.code() == Code::Internal
        ));
    }
}
