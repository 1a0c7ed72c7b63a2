"""The agent: one bidirectional stream to the control plane carrying the
registration, assignments, results, progress, heartbeats and drain.

``Agent(registry=..., servers=[...], max_concurrency=4).run()`` connects to
the first server it can reach, registers every task type of the registry
at once, then runs what it is assigned on at most ``max_concurrency``
slots, heartbeating so its leases hold. It moves to the next server when a
connection fails, is lost, or its server falls silent; on SIGTERM or
SIGINT (or :meth:`Agent.stop`) it drains: asks for nothing more, gives back
what waits unstarted, and lets running handlers finish within the grace.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

import grpc
import grpc.aio

from . import _wire
from .client import AsyncClient
from .connection import DEFAULT_SERVER, Connection, split_servers
from .context import TaskContext
from .errors import ConfigError, TaskFailure, TaskplaneError
from .registry import TaskRegistry, run_handler
from .v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger("taskplane")

#: Assignments queued per slot unless ``prefetch`` says otherwise.
DEFAULT_PREFETCH_PER_SLOT = 8
#: How long registering may take before the agent tries the next server.
REGISTRATION_TIMEOUT = 10.0
#: How long a cancelled or timed-out handler may take to stop by itself.
CANCEL_GRACE = 1.0
#: How long queued assignments wait behind slots whose handlers all keep
#: running before the agent gives them back (the protocol's queue patience).
QUEUE_PATIENCE = 0.020
#: The longest error text a failure report keeps.
MAX_ERROR_BYTES = 4096
#: The longest progress message kept.
MAX_PROGRESS_MESSAGE_BYTES = 1024
#: The message limit of servers that do not say theirs.
OLDER_SERVERS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: The least time between two progress reports of one attempt.
PROGRESS_INTERVAL = 0.2

#: Codes with which a server refuses a registration for good.
_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


class AgentRefused(TaskplaneError):
    """The server refused the registration (a bad name, a domain conflict,
    a token without the agent role); retrying cannot help."""


class AgentUnreachable(TaskplaneError):
    """No server could be registered with for as long as ``give_up_after`` allows."""


class _Unreachable(Exception):
    """This server could not be registered with; try the next."""


class _Lost(Exception):
    """A registered session ended; reconnect."""


@dataclass
class _Run:
    """One assignment running on a slot."""

    assignment: agent_pb2.Assignment
    ctx: TaskContext
    started: float = field(default_factory=time.monotonic)
    task: Optional[asyncio.Task[None]] = None
    #: Why the attempt was stopped (cancelled, timed out, drained) and
    #: whether the queue should retry it.
    stopped: Optional[TaskFailure] = None
    #: Set when the stopped handler ran past the grace and was interrupted.
    interrupted: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    pending_progress: Optional[tuple[float, str]] = None
    last_progress: float = -math.inf
    progress_timer: Optional[asyncio.TimerHandle] = None


class Agent:
    """A worker process's connection to the control plane (see the module doc)."""

    def __init__(
        self,
        registry: TaskRegistry,
        servers: Union[str, Iterable[str], None] = None,
        *,
        name: str = "taskplane-agent",
        max_concurrency: int = 16,
        prefetch: Optional[int] = None,
        labels: Optional[dict[str, str]] = None,
        token: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        connection: Optional[Connection] = None,
        drain_grace: float = 30.0,
        reconnect_backoff: tuple[float, float] = (0.1, 10.0),
        give_up_after: Optional[float] = None,
    ) -> None:
        registry.check()
        self.registry = registry
        self.connection = connection or Connection(
            split_servers(servers) or [DEFAULT_SERVER], token, tls_ca, tls_cert, tls_key
        )
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.name = name
        self.max_concurrency = max_concurrency
        self.prefetch = max_concurrency * DEFAULT_PREFETCH_PER_SLOT if prefetch is None else prefetch
        self.labels = dict(labels or {})
        self.drain_grace = drain_grace
        self.reconnect_min, self.reconnect_max = reconnect_backoff
        self.give_up_after = give_up_after
        #: The session id while registered, else None.
        self.session_id: Optional[str] = None
        self._server = 0
        self._stopping: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    @classmethod
    def from_env(cls, registry: TaskRegistry, **options: Any) -> "Agent":
        """An agent of ``TASKPLANE_SERVER`` with ``TASKPLANE_TOKEN`` and ``TASKPLANE_TLS_*``."""
        return cls(registry, connection=Connection.from_env(), **options)

    @property
    def server(self) -> str:
        """The server the agent is on, or tries next."""
        return self.connection.servers[self._server % len(self.connection.servers)]

    def stop(self) -> None:
        """Begins draining (safe from any thread or a signal handler)."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    def run_forever(self) -> None:
        """Runs the agent in a new event loop until it has drained."""
        asyncio.run(self.run())

    async def run(self, *, handle_signals: bool = True) -> None:
        """Serves until stopped (SIGTERM/SIGINT when ``handle_signals`` and
        on the main thread, or :meth:`stop`), reconnecting with backoff.
        Raises :class:`AgentRefused` when the server refuses the registration."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        signals = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stopping.set)
                signals.append(sig)
        try:
            await self._reconnecting()
        finally:
            for sig in signals:
                self._loop.remove_signal_handler(sig)
            self.session_id = None

    async def _reconnecting(self) -> None:
        assert self._stopping is not None
        delay = self.reconnect_min
        unregistered_since = time.monotonic()
        while not self._stopping.is_set():
            try:
                await self._serve_once()
                return
            except _Lost as lost:
                log.warning("lost the control plane (%s); reconnecting", lost)
                delay = self.reconnect_min
                unregistered_since = time.monotonic()
            except _Unreachable as unreachable:
                waited = time.monotonic() - unregistered_since
                if self.give_up_after is not None and waited >= self.give_up_after:
                    raise AgentUnreachable(
                        f"gave up after {self.give_up_after}s without reaching a control plane; "
                        f"the last error: {unreachable}"
                    ) from None
                log.warning("cannot reach %s (%s); retrying in %.1fs", self.server, unreachable, delay)
            self.session_id = None
            self._server += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, self.reconnect_max)

    def _register_message(self) -> agent_pb2.AgentMessage:
        domains = []
        for domain, registrations in sorted(self.registry.domains().items()):
            types = []
            for registration in registrations:
                declared = agent_pb2.TaskTypeRegistration(
                    task_type=registration.task_type,
                    description=registration.description,
                    versions=registration.versions,
                )
                if registration.flow is not None:
                    flow = registration.flow
                    declared.flow.CopyFrom(
                        agent_pb2.FlowLimits(
                            max_running=flow.max_running,
                            concurrency_key=flow.concurrency_key,
                            max_running_per_key=flow.max_running_per_key,
                            rate_limit=flow.rate_limit,
                            rate_limit_key=flow.rate_limit_key,
                        )
                    )
                types.append(declared)
            domains.append(agent_pb2.DomainRegistration(domain=domain, task_types=types))
        return agent_pb2.AgentMessage(
            register=agent_pb2.Register(
                agent_name=self.name,
                domains=domains,
                max_concurrency=self.max_concurrency,
                max_prefetch=self.prefetch,
                labels=self.labels,
                feature_flags=self.registry.config.feature_flags,
            )
        )

    async def _serve_once(self) -> None:
        """One connection: register, then serve until drained (returns) or lost (raises)."""
        channel = self.connection.aio_channel(self.server)
        try:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=self.connection.metadata())
            try:
                await asyncio.wait_for(call.write(self._register_message()), REGISTRATION_TIMEOUT)
                first = await asyncio.wait_for(call.read(), REGISTRATION_TIMEOUT)
            except asyncio.TimeoutError:
                call.cancel()
                raise _Unreachable(f"no answer to `register` within {REGISTRATION_TIMEOUT}s") from None
            except grpc.aio.AioRpcError as error:
                if error.code() in _REFUSALS:
                    raise AgentRefused(f"the server refused the registration: {error.details()}") from None
                raise _Unreachable(f"{error.code().name}: {error.details()}") from None
            if first is grpc.aio.EOF or first.WhichOneof("message") != "registered":
                call.cancel()
                raise _Unreachable("the server did not answer `registered` first")
            session = _Session(self, call, first.registered, AsyncClient(connection=self.connection, channel=channel))
            log.info("registered with %s as session %s", self.server, first.registered.session_id)
            self.session_id = first.registered.session_id
            assert self._stopping is not None
            await session.serve(self._stopping)
        finally:
            await channel.close(grace=None)


class _Session:
    """One registered stream: its slots, queue, heartbeats and writer."""

    def __init__(
        self, agent: Agent, call: Any, registered: agent_pb2.Registered, follow_ups: AsyncClient
    ) -> None:
        self.agent = agent
        self.call = call
        self.follow_ups = follow_ups
        self.heartbeat_every = _wire.from_duration(registered, "heartbeat_interval", 10.0)
        lease = _wire.from_duration(registered, "lease_duration", 3 * self.heartbeat_every)
        # Leave a silent server before its leases on what runs here run out.
        self.silence_limit = max(lease - self.heartbeat_every, 2 * self.heartbeat_every)
        self.max_message_bytes = registered.max_message_bytes or OLDER_SERVERS_MAX_MESSAGE_BYTES
        self.running: dict[str, _Run] = {}
        self.queued: collections.deque[tuple[agent_pb2.Assignment, float]] = collections.deque()
        self.outbox: asyncio.Queue[Optional[agent_pb2.AgentMessage]] = asyncio.Queue()
        self.last_heard = time.monotonic()
        self.lost: Optional[str] = None
        self.loop = asyncio.get_running_loop()

    # -- the loop -----------------------------------------------------------

    async def serve(self, stopping: asyncio.Event) -> None:
        writer = asyncio.create_task(self._write())
        reader = asyncio.create_task(self._read())
        health: Optional[asyncio.Task[None]] = None
        stop_wait = asyncio.create_task(stopping.wait())
        next_beat = time.monotonic() + self.heartbeat_every
        try:
            while True:
                now = time.monotonic()
                wake = min(next_beat, self.last_heard + self.silence_limit)
                if self.queued:
                    wake = min(wake, now + QUEUE_PATIENCE)
                done, _ = await asyncio.wait(
                    {reader, writer, stop_wait}, timeout=max(0.0, wake - now), return_when=asyncio.FIRST_COMPLETED
                )
                if stop_wait in done:
                    await self._drain(writer, reader)
                    return
                if reader in done or writer in done:
                    raise _Lost(self.lost or "the stream ended")
                now = time.monotonic()
                if now >= self.last_heard + self.silence_limit:
                    raise _Lost(
                        f"the server was silent for {self.silence_limit:.1f}s, "
                        "longer than a lease less one heartbeat interval"
                    )
                if self.queued:
                    self._give_back_if_stuck(now)
                if now >= next_beat:
                    next_beat = now + self.heartbeat_every
                    if health is None or health.done():
                        health = asyncio.create_task(self._heartbeat())
        finally:
            for task in (reader, writer, stop_wait, health):
                if task is not None:
                    task.cancel()
            for run in self.running.values():
                # Leaving drops what runs here: the server re-queues it.
                run.ctx.cancel()
                if run.task is not None:
                    run.task.cancel()

    async def _write(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                await self.call.done_writing()
                return
            try:
                await self.call.write(message)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
                self.lost = f"the stream closed while writing: {error}"
                return

    async def _read(self) -> None:
        while True:
            try:
                message = await self.call.read()
            except grpc.aio.AioRpcError as error:
                self.lost = f"{error.code().name}: {error.details()}"
                return
            if message is grpc.aio.EOF:
                self.lost = "the server closed the stream"
                return
            self.last_heard = time.monotonic()
            kind = message.WhichOneof("message")
            if kind == "assignment":
                self._assign(message.assignment)
            elif kind == "cancel":
                self._cancel(message.cancel.task_id, message.cancel.reason)

    def _send(self, message: agent_pb2.AgentMessage) -> None:
        self.outbox.put_nowait(message)

    # -- assignments --------------------------------------------------------

    def _assign(self, assignment: agent_pb2.Assignment) -> None:
        if len(self.running) < self.agent.max_concurrency:
            self._start(assignment)
        else:
            self.queued.append((assignment, time.monotonic()))

    def _start(self, assignment: agent_pb2.Assignment) -> None:
        ctx = TaskContext(
            task_id=assignment.task_id,
            task_type=assignment.task_type,
            payload=_wire.from_struct(assignment.payload),
            attempt=assignment.attempt,
            domain=assignment.domain,
            handler_version=assignment.handler_version,
            metadata=dict(assignment.metadata),
            timeout=_wire.from_duration(assignment, "timeout", 300.0),
            feature_flags=dict(self.agent.registry.config.feature_flags),
            _client=self.follow_ups,
        )
        run = _Run(assignment=assignment, ctx=ctx)
        def report(fraction: float, message: str) -> None:
            self.loop.call_soon_threadsafe(self._progress, run, fraction, message)

        ctx._progress = report
        self.running[assignment.task_id] = run
        run.task = asyncio.create_task(self._execute(run))
        run.timers.append(self.loop.call_later(ctx.timeout, self._time_out, run))

    def _cancel(self, task_id: str, reason: str) -> None:
        run = self.running.get(task_id)
        if run is not None:
            log.info("cancelling task %s: %s", task_id, reason)
            self._stop(run, TaskFailure(f"cancelled: {reason or 'on request'}", retryable=False))
            return
        # A cancelled task waiting here never starts (the server has ended it).
        self.queued = collections.deque(entry for entry in self.queued if entry[0].task_id != task_id)

    def _time_out(self, run: _Run) -> None:
        self._stop(run, TaskFailure(f"timed out after {run.ctx.timeout:g}s", retryable=True))

    def _stop(self, run: _Run, why: TaskFailure) -> None:
        """Tells a running handler to stop, and interrupts it if it has not
        returned after the grace; its attempt is reported as ``why``."""
        if run.stopped is not None or run.task is None or run.task.done():
            return
        run.stopped = why
        run.ctx.cancel()

        def interrupt() -> None:
            if run.task is not None and not run.task.done():
                run.interrupted = True
                run.task.cancel()

        run.timers.append(self.loop.call_later(CANCEL_GRACE, interrupt))

    async def _execute(self, run: _Run) -> None:
        assignment = run.assignment
        registration = self.agent.registry.get(assignment.task_type)
        outcome: Union[dict[str, Any], BaseException]
        try:
            if registration is None:
                raise TaskFailure(
                    f"this agent has no handler for task type '{assignment.task_type}'", retryable=False
                )
            output = await run_handler(registration.handler, run.ctx)
            outcome = {} if output is None else output
        except asyncio.CancelledError:
            if not run.interrupted:
                raise  # the session is ending: nothing is reported
            outcome = TaskFailure("interrupted")
        except Exception as error:  # the handler's failure is its attempt's result
            outcome = error
        finally:
            for timer in run.timers:
                timer.cancel()
            if run.progress_timer is not None:
                run.progress_timer.cancel()
        if run.stopped is not None:
            outcome = run.stopped
        ran_for = time.monotonic() - run.started
        del self.running[assignment.task_id]
        if self.queued and len(self.running) < self.agent.max_concurrency:
            self._start(self.queued.popleft()[0])
        self._send(self._result(assignment, outcome, ran_for))

    def _result(
        self, assignment: agent_pb2.Assignment, outcome: Union[dict[str, Any], BaseException], ran_for: float
    ) -> agent_pb2.AgentMessage:
        if isinstance(outcome, BaseException):
            return _failure_message(assignment, outcome, ran_for)
        try:
            result = _wire.to_struct(outcome)
        except TypeError as error:
            return _failed(assignment, f"the handler's result cannot be sent: {error}", False, ran_for)
        message = _message(assignment, ran_for, completed=agent_pb2.Completed(result=result))
        size = message.ByteSize()
        if size > self.max_message_bytes:
            # Sent, it would end the stream and every attempt it carries.
            return _failed(
                assignment,
                f"the handler's result is {size} bytes encoded, over the server's message limit of "
                f"{self.max_message_bytes} bytes: store large results elsewhere and return a reference",
                False,
                ran_for,
            )
        return message

    def _give_back_if_stuck(self, now: float) -> None:
        """Gives the queue back when every slot's handler has run the queue
        patience and the oldest queued assignment has waited as long."""
        full = len(self.running) >= self.agent.max_concurrency
        all_slow = all(now - run.started >= QUEUE_PATIENCE for run in self.running.values())
        if full and all_slow and now - self.queued[0][1] >= QUEUE_PATIENCE:
            self._give_back_queue()

    def _give_back_queue(self) -> None:
        while self.queued:
            assignment, _ = self.queued.popleft()
            self._send(_message(assignment, 0.0, given_back=agent_pb2.GivenBack()))

    # -- progress and heartbeats --------------------------------------------

    def _progress(self, run: _Run, fraction: float, message: str) -> None:
        if self.running.get(run.assignment.task_id) is not run:
            return
        run.pending_progress = (fraction, message)
        if run.progress_timer is None:
            wait = max(0.0, run.last_progress + PROGRESS_INTERVAL - time.monotonic())
            run.progress_timer = self.loop.call_later(wait, self._flush_progress, run)

    def _flush_progress(self, run: _Run) -> None:
        run.progress_timer = None
        if run.pending_progress is None or self.running.get(run.assignment.task_id) is not run:
            return
        fraction, message = run.pending_progress
        run.pending_progress = None
        run.last_progress = time.monotonic()
        self._send(
            agent_pb2.AgentMessage(
                progress=agent_pb2.Progress(
                    task_id=run.assignment.task_id,
                    attempt=run.assignment.attempt,
                    fraction=fraction,
                    message=_wire.bounded_text(message, MAX_PROGRESS_MESSAGE_BYTES),
                )
            )
        )

    async def _heartbeat(self) -> None:
        """Sends a heartbeat naming every held task, with the handlers'
        self-checks (bounded to half the interval)."""
        try:
            health = await asyncio.wait_for(self.agent.registry.health_check(), self.heartbeat_every / 2)
        except asyncio.TimeoutError:
            log.warning("handler health checks ran past their budget; sending none")
            health = {}
        held = list(self.running) + [assignment.task_id for assignment, _ in self.queued]
        self._send(
            agent_pb2.AgentMessage(
                heartbeat=agent_pb2.Heartbeat(
                    running_task_ids=held,
                    handler_health=[
                        agent_pb2.HandlerHealth(task_type=task_type, healthy=h.healthy, message=h.message)
                        for task_type, h in sorted(health.items())
                    ],
                )
            )
        )

    # -- drain --------------------------------------------------------------

    async def _drain(self, writer: asyncio.Task[None], reader: asyncio.Task[None]) -> None:
        """Asks for nothing more, gives back the queue, lets running handlers
        finish within the grace (interrupting the rest), reports them, and
        closes the stream once the server has seen everything."""
        log.info("draining %d running tasks", len(self.running))
        self._send(agent_pb2.AgentMessage(drain=agent_pb2.Drain()))
        self._give_back_queue()
        runs = [run.task for run in self.running.values() if run.task is not None]
        if runs:
            _, late = await asyncio.wait(runs, timeout=self.agent.drain_grace)
            for run in list(self.running.values()):
                self._stop(run, TaskFailure("the agent drained before it finished", retryable=True))
            if late:
                await asyncio.wait(late, timeout=CANCEL_GRACE + 1.0)
        self.outbox.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(writer), 5.0)
            await asyncio.wait_for(asyncio.shield(reader), 5.0)
        except asyncio.TimeoutError:
            log.warning("the server did not end the stream after the drain")
        log.info("drained")


def _message(assignment: agent_pb2.Assignment, ran_for: float, **outcome: Any) -> agent_pb2.AgentMessage:
    result = agent_pb2.TaskResult(task_id=assignment.task_id, attempt=assignment.attempt, **outcome)
    if ran_for > 0:
        result.ran_for.CopyFrom(_wire.to_duration(ran_for))
    return agent_pb2.AgentMessage(result=result)


def _failed(
    assignment: agent_pb2.Assignment,
    error: str,
    retryable: bool,
    ran_for: float,
    retry_after: Optional[float] = None,
) -> agent_pb2.AgentMessage:
    failed = agent_pb2.Failed(error=_wire.bounded_text(error, MAX_ERROR_BYTES), retryable=retryable)
    if retry_after is not None and retryable:
        failed.retry_after.CopyFrom(_wire.to_duration(retry_after))
    return _message(assignment, ran_for, failed=failed)


def _failure_message(
    assignment: agent_pb2.Assignment, error: BaseException, ran_for: float
) -> agent_pb2.AgentMessage:
    if isinstance(error, TaskFailure):
        return _failed(assignment, str(error), error.retryable, ran_for, error.retry_after)
    # An unexpected exception may be a passing fault: the retry policy bounds it.
    log.warning("task %s failed: %s: %s", assignment.task_id, type(error).__name__, error)
    return _failed(assignment, f"{type(error).__name__}: {error}", True, ran_for)
