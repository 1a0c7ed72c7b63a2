"""Enqueue and follow tasks: :class:`Client` (blocking) and :class:`AsyncClient`
(asyncio), over the same ``TaskService`` the CLI and grpcurl use.

Several server URLs give failover: a call that finds its server unavailable
moves on to the next one when resending it is safe (reads, and enqueues
carrying an idempotency key, which the queue deduplicates); any other call
raises :class:`~taskplane.errors.Unavailable` rather than risk a duplicate.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import enum
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping, Optional, Union

import grpc
import grpc.aio

from . import _wire
from .connection import DEFAULT_SERVER, Connection, split_servers
from .errors import (
    DeadlineExceeded,
    InvalidRequest,
    TaskplaneError,
    Unavailable,
    WaitTimeout,
    from_rpc_error,
)
from .v1 import schedule_pb2, schedule_pb2_grpc, task_pb2, task_pb2_grpc


class TaskStatus(str, enum.Enum):
    """Where a task stands; compares equal to its name, e.g. ``"COMPLETED"``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    UNSPECIFIED = "UNSPECIFIED"

    @property
    def is_finished(self) -> bool:
        """Whether the task has ended for good (retry aside)."""
        return self in (TaskStatus.COMPLETED, TaskStatus.DEAD, TaskStatus.CANCELLED, TaskStatus.EXPIRED)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _from_wire(cls, value: int) -> "TaskStatus":
        name = task_pb2.TaskStatus.Name(value).removeprefix("TASK_STATUS_")
        return cls(name) if name in cls.__members__ else cls.UNSPECIFIED

    def _to_wire(self) -> int:
        return task_pb2.TaskStatus.Value(f"TASK_STATUS_{self.value}")


@dataclass(frozen=True)
class Progress:
    """How far a running attempt said it was."""

    fraction: float
    message: str


@dataclass(frozen=True)
class Task:
    """A task as the server reported it."""

    id: str
    task_type: str
    domain: str
    status: TaskStatus
    payload: dict[str, Any]
    result: Optional[dict[str, Any]]
    last_error: str
    attempts: int
    max_attempts: int
    priority: int
    handler_version: str
    metadata: dict[str, str]
    required_labels: dict[str, str]
    parent_id: str
    waiting_for: str
    progress: Optional[Progress]
    created_at: Optional[_dt.datetime]
    run_at: Optional[_dt.datetime]
    started_at: Optional[_dt.datetime]
    finished_at: Optional[_dt.datetime]
    start_by: Optional[_dt.datetime]

    @classmethod
    def _from_wire(cls, task: task_pb2.Task) -> "Task":
        return cls(
            id=task.id,
            task_type=task.task_type,
            domain=task.domain,
            status=TaskStatus._from_wire(task.status),
            payload=_wire.from_struct(task.payload),
            result=_wire.from_struct(task.result) if task.HasField("result") else None,
            last_error=task.last_error,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            priority=task.priority,
            handler_version=task.handler_version,
            metadata=dict(task.metadata),
            required_labels=dict(task.required_labels),
            parent_id=task.parent_id,
            waiting_for=task.waiting_for,
            progress=Progress(task.progress.fraction, task.progress.message)
            if task.HasField("progress")
            else None,
            created_at=_wire.from_timestamp(task, "created_at"),
            run_at=_wire.from_timestamp(task, "run_at"),
            started_at=_wire.from_timestamp(task, "started_at"),
            finished_at=_wire.from_timestamp(task, "finished_at"),
            start_by=_wire.from_timestamp(task, "start_by"),
        )


@dataclass
class NewTask:
    """A task to enqueue, with its options (see :meth:`Client.enqueue`)."""

    task_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    run_at: Optional[_dt.datetime] = None
    delay: Optional[_wire.Seconds] = None
    start_by: Optional[_dt.datetime] = None
    start_within: Optional[_wire.Seconds] = None
    idempotency_key: Optional[str] = None
    idempotency_window: Optional[_wire.Seconds] = None
    max_attempts: Optional[int] = None
    timeout: Optional[_wire.Seconds] = None
    version: Optional[str] = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    required_labels: Mapping[str, str] = field(default_factory=dict)
    parent_id: Optional[str] = None

    def _to_wire(self) -> task_pb2.EnqueueTaskRequest:
        if self.run_at is not None and self.delay is not None:
            raise InvalidRequest("give run_at or delay, not both")
        if self.start_by is not None and self.start_within is not None:
            raise InvalidRequest("give start_by or start_within, not both")
        try:
            payload = _wire.to_struct(self.payload)
        except TypeError as error:
            raise InvalidRequest(f"payload of {self.task_type}: {error}") from error
        now = _dt.datetime.now(_dt.timezone.utc)
        request = task_pb2.EnqueueTaskRequest(
            task_type=self.task_type,
            payload=payload,
            priority=self.priority,
            idempotency_key=self.idempotency_key or "",
            max_attempts=self.max_attempts or 0,
            handler_version=self.version or "",
            metadata=dict(self.metadata),
            required_labels=dict(self.required_labels),
            parent_id=self.parent_id or "",
        )
        try:
            if self.run_at is not None:
                request.run_at.CopyFrom(_wire.to_timestamp(self.run_at))
            if self.delay is not None:
                run_at = now + _dt.timedelta(seconds=_wire.seconds(self.delay))
                request.run_at.CopyFrom(_wire.to_timestamp(run_at))
            if self.start_by is not None:
                request.start_by.CopyFrom(_wire.to_timestamp(self.start_by))
            if self.start_within is not None:
                start_by = now + _dt.timedelta(seconds=_wire.seconds(self.start_within))
                request.start_by.CopyFrom(_wire.to_timestamp(start_by))
        except ValueError as error:
            raise InvalidRequest(str(error)) from error
        if self.idempotency_window is not None:
            request.idempotency_window.CopyFrom(_wire.to_duration(self.idempotency_window))
        if self.timeout is not None:
            request.timeout.CopyFrom(_wire.to_duration(self.timeout))
        return request


def _list_request(
    task_type: Optional[str],
    domain: Optional[str],
    status: Union[TaskStatus, str, None],
    limit: int,
) -> task_pb2.ListTasksRequest:
    request = task_pb2.ListTasksRequest(
        task_type=task_type or "", domain=domain or "", page_size=limit
    )
    if status is not None:
        request.status = TaskStatus(str(status).upper())._to_wire()  # type: ignore[assignment]
    return request


#: How long ``wait`` polls for between watch streams when a server drops one.
_WATCH_RETRY = 0.1


#: How long connecting to one server may take before the next is tried.
CONNECT_TIMEOUT = 5.0


class _Servers:
    """The server URLs, which one calls go to now, and its channel once made.

    A server is first connected to (nothing sent yet, so any call may move
    on from one that does not answer); a call that then finds it gone gives
    it up, and only a call safe to resend is sent again to the next.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.current = 0
        self.channel: Any = None

    def candidates(self) -> list[tuple[int, str]]:
        """Each server from the current one on, with its index."""
        count = len(self.connection.servers)
        order = [(self.current + step) % count for step in range(count)]
        return [(index, self.connection.servers[index]) for index in order]

    def tries(self, safe: bool) -> int:
        """How many servers a call may be sent to."""
        return len(self.connection.servers) if safe else 1

    def use(self, index: int, channel: Any) -> None:
        self.current, self.channel = index, channel

    def give_up_on(self, index: int) -> Any:
        """Moves on from server ``index`` (unless already moved); returns the
        channel to close, if any."""
        if self.current != index or self.channel is None:
            return None
        channel, self.channel = self.channel, None
        self.current = (index + 1) % len(self.connection.servers)
        return channel


def _unreachable(errors: list[str]) -> Unavailable:
    return Unavailable("no server answered: " + "; ".join(errors))


class Client:
    """A blocking client. ``Client("http://127.0.0.1:50051")``; several URLs
    (a list or comma-separated) fail over; ``token`` and ``tls_*`` as the
    agent takes them. ``Client.from_env()`` reads ``TASKPLANE_SERVER`` and the rest.

    >>> client = Client("http://127.0.0.1:50051")                # doctest: +SKIP
    >>> task = client.enqueue("shout", {"text": "hi"})          # doctest: +SKIP
    >>> client.wait(task.id, timeout=20).result                 # doctest: +SKIP
    {'shout': 'HI'}
    """

    def __init__(
        self,
        servers: Union[str, Iterable[str], None] = None,
        *,
        token: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        connection: Optional[Connection] = None,
    ) -> None:
        self._servers = _Servers(
            connection or Connection(split_servers(servers) or [DEFAULT_SERVER], token, tls_ca, tls_cert, tls_key)
        )
        # A channel left open at interpreter exit can hang it in grpc's
        # teardown: close it then, unless close() already did.
        self._closer = weakref.finalize(self, _close_blocking, self._servers)

    @classmethod
    def from_env(cls) -> "Client":
        """A client of ``TASKPLANE_SERVER`` with ``TASKPLANE_TOKEN`` and ``TASKPLANE_TLS_*``."""
        return cls(connection=Connection.from_env())

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the client's connection."""
        _close_blocking(self._servers)

    def _channel(self) -> tuple[int, grpc.Channel]:
        """The current server's channel, connecting to the first server that
        answers, from the current one on, when there is none."""
        if self._servers.channel is not None:
            return self._servers.current, self._servers.channel
        errors = []
        for index, url in self._servers.candidates():
            channel = self._servers.connection.channel(url)
            failure = _connect_blocking(channel)
            if failure is None:
                self._servers.use(index, channel)
                return index, channel
            channel.close()
            errors.append(f"{url}: {failure}")
        raise _unreachable(errors)

    def _call(
        self, method: str, request: Any, *, safe: bool, service: Any = None, timeout: Optional[float] = None
    ) -> Any:
        """Sends one call, moving on from a server that is gone (and sending
        it again there when ``safe``)."""
        last: Optional[TaskplaneError] = None
        for _ in range(self._servers.tries(safe)):
            index, channel = self._channel()
            stub = (service or task_pb2_grpc.TaskServiceStub)(channel)
            try:
                return getattr(stub, method)(request, metadata=self._servers.connection.metadata(), timeout=timeout)
            except grpc.RpcError as error:
                last = from_rpc_error(error)
                if not isinstance(last, Unavailable):
                    raise last from None
                gone = self._servers.give_up_on(index)
                if gone is not None:
                    gone.close()
        assert last is not None
        raise last

    def enqueue(self, task_type: str, payload: Optional[Mapping[str, Any]] = None, **options: Any) -> Task:
        """Enqueues one task and returns it (PENDING). Options, all optional:
        ``priority``, ``run_at`` (aware datetime) or ``delay`` (seconds),
        ``start_by`` or ``start_within`` (a deadline to start by, else it
        ends EXPIRED), ``idempotency_key`` and ``idempotency_window``,
        ``max_attempts``, ``timeout``, ``version`` (e.g. ``"v2"``),
        ``metadata``, ``required_labels`` and ``parent_id``."""
        request = NewTask(task_type, payload or {}, **options)._to_wire()
        response = self._call("EnqueueTask", request, safe=bool(request.idempotency_key))
        return Task._from_wire(response.task)

    def enqueue_batch(self, tasks: Iterable[NewTask]) -> list[Task]:
        """Enqueues several tasks in one call, all or none; returns them in order."""
        request = task_pb2.EnqueueTasksRequest(tasks=[task._to_wire() for task in tasks])
        safe = all(task.idempotency_key for task in request.tasks)
        response = self._call("EnqueueTasks", request, safe=safe)
        return [Task._from_wire(result.task) for result in response.results]

    def get(self, task_id: str) -> Task:
        """The task as it stands; :class:`~taskplane.errors.NotFound` if there is none."""
        return Task._from_wire(self._call("GetTask", task_pb2.GetTaskRequest(id=task_id), safe=True))

    def list(
        self,
        task_type: Optional[str] = None,
        *,
        domain: Optional[str] = None,
        status: Union[TaskStatus, str, None] = None,
        limit: int = 100,
    ) -> list[Task]:
        """The newest tasks matching every filter given, at most ``limit``."""
        response = self._call("ListTasks", _list_request(task_type, domain, status, limit), safe=True)
        return [Task._from_wire(task) for task in response.tasks]

    def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancels a pending or running task (a running handler is told to stop)."""
        request = task_pb2.CancelTaskRequest(id=task_id, reason=reason)
        return Task._from_wire(self._call("CancelTask", request, safe=True))

    def retry(self, task_id: str) -> Task:
        """Runs a DEAD, CANCELLED or EXPIRED task again."""
        return Task._from_wire(self._call("RetryTask", task_pb2.RetryTaskRequest(id=task_id), safe=True))

    def watch(self, task_id: str, timeout: Optional[float] = None) -> Iterator[Task]:
        """The task now and at every change, ending once it has finished."""
        index, channel = self._channel()
        stream = task_pb2_grpc.TaskServiceStub(channel).WatchTask(
            task_pb2.WatchTaskRequest(id=task_id), metadata=self._servers.connection.metadata(), timeout=timeout
        )
        try:
            for task in stream:
                yield Task._from_wire(task)
        except grpc.RpcError as error:
            failure = from_rpc_error(error)
            if isinstance(failure, Unavailable):
                gone = self._servers.give_up_on(index)
                if gone is not None:
                    gone.close()
            raise failure from None
        finally:
            stream.cancel()

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """Waits until the task has finished and returns it; raises
        :class:`~taskplane.errors.WaitTimeout` (carrying the task as last
        seen) after ``timeout`` seconds. A server dropping the watch is
        ridden out (on the next server, if any)."""
        deadline = time.monotonic() + timeout
        last: Optional[Task] = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(last or self.get(task_id))
            try:
                for task in self.watch(task_id, timeout=remaining):
                    last = task
                    if task.status.is_finished:
                        return task
            except DeadlineExceeded:
                pass  # the loop's own deadline decides
            except TaskplaneError as error:
                if not error.retryable:
                    raise
            time.sleep(min(_WATCH_RETRY, max(0.0, deadline - time.monotonic())))

    def trigger_schedule(self, name: str) -> Task:
        """Runs a schedule once now; returns the task it enqueued."""
        response = self._call(
            "TriggerSchedule",
            schedule_pb2.TriggerScheduleRequest(name=name),
            safe=False,
            service=schedule_pb2_grpc.ScheduleServiceStub,
        )
        return Task._from_wire(response.task)


class AsyncClient:
    """The asyncio form of :class:`Client`, with the same methods as coroutines
    (``watch`` is an async iterator).

    >>> async with AsyncClient("http://127.0.0.1:50051") as client:  # doctest: +SKIP
    ...     task = await client.enqueue("shout", {"text": "hi"})
    ...     done = await client.wait(task.id, timeout=20)
    """

    def __init__(
        self,
        servers: Union[str, Iterable[str], None] = None,
        *,
        token: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        connection: Optional[Connection] = None,
        channel: Optional[grpc.aio.Channel] = None,
    ) -> None:
        self._servers = _Servers(
            connection or Connection(split_servers(servers) or [DEFAULT_SERVER], token, tls_ca, tls_cert, tls_key)
        )
        if channel is not None:
            # An agent's own channel, borrowed: used, never closed here.
            self._servers.use(0, channel)
            self._borrowed = True
        else:
            self._borrowed = False

    @classmethod
    def from_env(cls) -> "AsyncClient":
        """A client of ``TASKPLANE_SERVER`` with ``TASKPLANE_TOKEN`` and ``TASKPLANE_TLS_*``."""
        return cls(connection=Connection.from_env())

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the client's connection."""
        if self._servers.channel is not None and not self._borrowed:
            await self._servers.channel.close()
            self._servers.channel = None

    async def _channel(self) -> tuple[int, grpc.aio.Channel]:
        """As :meth:`Client._channel`."""
        if self._servers.channel is not None:
            return self._servers.current, self._servers.channel
        errors = []
        for index, url in self._servers.candidates():
            channel = self._servers.connection.aio_channel(url)
            failure = await _connect_async(channel)
            if failure is None:
                self._servers.use(index, channel)
                return index, channel
            await channel.close()
            errors.append(f"{url}: {failure}")
        raise _unreachable(errors)

    async def _call(self, method: str, request: Any, *, safe: bool, service: Any = None) -> Any:
        """As :meth:`Client._call`."""
        last: Optional[TaskplaneError] = None
        for _ in range(1 if self._borrowed else self._servers.tries(safe)):
            index, channel = await self._channel()
            stub = (service or task_pb2_grpc.TaskServiceStub)(channel)
            try:
                return await getattr(stub, method)(request, metadata=self._servers.connection.metadata())
            except grpc.RpcError as error:
                last = from_rpc_error(error)
                if not isinstance(last, Unavailable) or self._borrowed:
                    raise last from None
                gone = self._servers.give_up_on(index)
                if gone is not None:
                    await gone.close()
        assert last is not None
        raise last

    async def enqueue(self, task_type: str, payload: Optional[Mapping[str, Any]] = None, **options: Any) -> Task:
        """As :meth:`Client.enqueue`."""
        request = NewTask(task_type, payload or {}, **options)._to_wire()
        response = await self._call("EnqueueTask", request, safe=bool(request.idempotency_key))
        return Task._from_wire(response.task)

    async def enqueue_batch(self, tasks: Iterable[NewTask]) -> list[Task]:
        """As :meth:`Client.enqueue_batch`."""
        request = task_pb2.EnqueueTasksRequest(tasks=[task._to_wire() for task in tasks])
        safe = all(task.idempotency_key for task in request.tasks)
        response = await self._call("EnqueueTasks", request, safe=safe)
        return [Task._from_wire(result.task) for result in response.results]

    async def get(self, task_id: str) -> Task:
        """As :meth:`Client.get`."""
        return Task._from_wire(await self._call("GetTask", task_pb2.GetTaskRequest(id=task_id), safe=True))

    async def list(
        self,
        task_type: Optional[str] = None,
        *,
        domain: Optional[str] = None,
        status: Union[TaskStatus, str, None] = None,
        limit: int = 100,
    ) -> list[Task]:
        """As :meth:`Client.list`."""
        response = await self._call("ListTasks", _list_request(task_type, domain, status, limit), safe=True)
        return [Task._from_wire(task) for task in response.tasks]

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """As :meth:`Client.cancel`."""
        request = task_pb2.CancelTaskRequest(id=task_id, reason=reason)
        return Task._from_wire(await self._call("CancelTask", request, safe=True))

    async def retry(self, task_id: str) -> Task:
        """As :meth:`Client.retry`."""
        return Task._from_wire(await self._call("RetryTask", task_pb2.RetryTaskRequest(id=task_id), safe=True))

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """As :meth:`Client.watch`: the task now and at every change."""
        index, channel = await self._channel()
        call = task_pb2_grpc.TaskServiceStub(channel).WatchTask(
            task_pb2.WatchTaskRequest(id=task_id), metadata=self._servers.connection.metadata()
        )
        try:
            async for task in call:
                yield Task._from_wire(task)
        except grpc.RpcError as error:
            failure = from_rpc_error(error)
            if isinstance(failure, Unavailable) and not self._borrowed:
                gone = self._servers.give_up_on(index)
                if gone is not None:
                    await gone.close()
            raise failure from None
        finally:
            call.cancel()

    async def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """As :meth:`Client.wait`."""
        last: list[Task] = []

        async def until_finished() -> Task:
            while True:
                try:
                    async for task in self.watch(task_id):
                        last.append(task)
                        if task.status.is_finished:
                            return task
                except TaskplaneError as error:
                    if not error.retryable:
                        raise
                await asyncio.sleep(_WATCH_RETRY)

        try:
            return await asyncio.wait_for(until_finished(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(last[-1] if last else await self.get(task_id)) from None

    async def trigger_schedule(self, name: str) -> Task:
        """As :meth:`Client.trigger_schedule`."""
        response = await self._call(
            "TriggerSchedule",
            schedule_pb2.TriggerScheduleRequest(name=name),
            safe=False,
            service=schedule_pb2_grpc.ScheduleServiceStub,
        )
        return Task._from_wire(response.task)


def _connect_blocking(channel: grpc.Channel) -> Optional[str]:
    """Connects ``channel``; None when ready, else why not (a refused
    connection fails at once rather than after the whole timeout)."""
    settled = threading.Event()
    seen: list[grpc.ChannelConnectivity] = []

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            seen.append(state)
            settled.set()

    channel.subscribe(watch, try_to_connect=True)
    try:
        if not settled.wait(CONNECT_TIMEOUT):
            return f"no connection within {CONNECT_TIMEOUT:g}s"
    finally:
        channel.unsubscribe(watch)
    return None if seen[0] == grpc.ChannelConnectivity.READY else "connection failed"


async def _connect_async(channel: grpc.aio.Channel) -> Optional[str]:
    """As :func:`_connect_blocking`, for an asyncio channel."""

    async def settle() -> grpc.ChannelConnectivity:
        state = channel.get_state(try_to_connect=True)
        while state not in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)
        return state

    try:
        state = await asyncio.wait_for(settle(), CONNECT_TIMEOUT)
    except asyncio.TimeoutError:
        return f"no connection within {CONNECT_TIMEOUT:g}s"
    return None if state == grpc.ChannelConnectivity.READY else "connection failed"


def _close_blocking(servers: _Servers) -> None:
    """Closes the blocking channel in use, if any."""
    if servers.channel is not None:
        servers.channel.close()
        servers.channel = None
