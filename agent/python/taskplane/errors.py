"""Errors, sorted by what the caller should do about them rather than by
raw gRPC status; and the errors handlers raise to fail an attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import grpc

if TYPE_CHECKING:
    from .client import Task


class TaskplaneError(Exception):
    """Every error this package raises for a call. ``retryable`` says whether
    the same call may succeed later unchanged."""

    retryable = False


class InvalidRequest(TaskplaneError):
    """The request is malformed (a bad payload, a deadline already past):
    fix the request. Nothing was written."""


class Refused(TaskplaneError):
    """Well formed, but refused as things stand: an unregistered task type or
    version, a task in the wrong state, a type paused refusing enqueues.
    Change the state (start an agent, resume the type) or the request."""


class NotFound(TaskplaneError):
    """No such task or schedule: check the id."""


class Unauthenticated(TaskplaneError):
    """No token, or one the server does not accept: give a valid token."""


class PermissionDenied(TaskplaneError):
    """The token's role or domains do not allow this call."""


class Throttled(TaskplaneError):
    """The token's enqueue quota is spent for now: retry after a while."""

    retryable = True


class Unavailable(TaskplaneError):
    """No server answered (every one was tried): retry later."""

    retryable = True


class DeadlineExceeded(TaskplaneError):
    """The call's own timeout (``watch(timeout=...)``) ran out before it ended."""


class ConfigError(TaskplaneError):
    """The client's or agent's own settings are wrong (a URL, a TLS file)."""


class ServerError(TaskplaneError):
    """Any other answer from the server, as it came."""


class WaitTimeout(TaskplaneError):
    """``wait`` gave up before the task finished; ``task`` is the task as
    last seen. It goes on in the queue."""

    def __init__(self, task: "Task") -> None:
        super().__init__(f"task {task.id} did not finish in time (last seen {task.status})")
        self.task = task


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: Refused,
    grpc.StatusCode.ALREADY_EXISTS: Refused,
    grpc.StatusCode.ABORTED: Refused,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Throttled,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError) -> TaskplaneError:
    """The error a failed call means."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    kind = _BY_CODE.get(code, ServerError) if code is not None else ServerError
    if kind is ServerError and code is not None:
        details = f"{code.name}: {details}"
    return kind(details)


class TaskFailure(Exception):
    """Raised by a handler to fail its attempt with a message of its own.
    ``retryable`` (default true) lets the queue retry it under the task's
    retry policy; ``retry_after`` (seconds) is the least wait before the
    retry, as a downstream asked (an HTTP ``Retry-After``)."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: Optional[float] = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class PermanentError(TaskFailure):
    """Fails the attempt for good: retrying cannot help (bad input)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class RetryableError(TaskFailure):
    """Fails the attempt; the queue retries it (a downstream was down)."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None) -> None:
        super().__init__(message, retryable=True, retry_after=retry_after)
