"""What a handler is given: its task, a way to report progress, the
cancellation signal, feature flags, and a client for follow-up tasks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from .client import AsyncClient, Task

#: A progress report's sender: (fraction, message).
ProgressSink = Callable[[float, str], None]


@dataclass
class TaskContext:
    """One attempt of one task, as its handler sees it.

    ``payload`` is the task's JSON object as a dict. A cancelled attempt (the
    task was cancelled, or ran past its timeout) sets ``cancelled``: an async
    handler may await ``ctx.cancelled.wait()``, a blocking one poll
    ``ctx.is_cancelled()``. A handler that ignores it is interrupted
    (``asyncio.CancelledError`` at its next await) one second later.
    """

    task_id: str
    task_type: str
    payload: dict[str, Any]
    attempt: int = 1
    domain: str = ""
    handler_version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    #: The attempt's timeout in seconds.
    timeout: float = 300.0
    feature_flags: dict[str, bool] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    # Read by blocking handlers on other threads: a bool is enough there.
    _cancelled_flag: bool = field(default=False, repr=False)
    _progress: Optional[ProgressSink] = field(default=None, repr=False)
    _client: Optional["AsyncClient"] = field(default=None, repr=False)
    _started: float = field(default_factory=time.monotonic, repr=False)

    def is_cancelled(self) -> bool:
        """Whether the attempt should stop (safe from any thread)."""
        return self._cancelled_flag

    def cancel(self) -> None:
        """Marks the attempt cancelled (the agent calls this)."""
        self._cancelled_flag = True
        self.cancelled.set()

    def remaining(self) -> float:
        """Seconds left before the attempt's timeout."""
        return max(0.0, self.timeout - (time.monotonic() - self._started))

    def feature_enabled(self, flag: str) -> bool:
        """Whether the agent's feature flag is on (unset flags are off)."""
        return self.feature_flags.get(flag, False)

    def report_progress(self, fraction: float, message: str = "") -> None:
        """Tells the server how far the attempt is (0 to 1), shown by
        ``get``/``watch``; sent at most five times a second, the latest
        report winning. Safe from any thread."""
        if self._progress is not None:
            self._progress(min(1.0, max(0.0, float(fraction))), message)

    async def enqueue(self, task_type: str, payload: Optional[dict[str, Any]] = None, **options: Any) -> "Task":
        """Enqueues a follow-up task over the agent's connection, recorded
        as this task's child (options as :meth:`Client.enqueue`)."""
        if self._client is None:
            raise RuntimeError("this context has no connection: it was not given by an agent")
        options.setdefault("parent_id", self.task_id)
        return await self._client.enqueue(task_type, payload, **options)
