"""The handler registry: task types grouped by domain, each served by a
handler that is a plain function, a coroutine function, or an object with
a ``handle`` method (and optionally ``health_check``).

A handler takes a :class:`~taskplane.context.TaskContext` and returns a
JSON-able dict (``None`` means ``{}``). Raising
:class:`~taskplane.errors.PermanentError` fails the attempt for good;
:class:`~taskplane.errors.RetryableError`, or any other exception, fails it
to be retried under the task's retry policy. Blocking (non-async) handlers
run in a worker thread, so they never stall the agent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Union

from .config import RegistryConfig
from .context import TaskContext
from .errors import ConfigError, PermanentError

log = logging.getLogger("taskplane")

#: What a handler returns: a JSON-able dict, or None for ``{}``.
Output = Optional[dict[str, Any]]
HandlerFunction = Callable[[TaskContext], Union[Output, Awaitable[Output]]]

#: Task type and domain names the server accepts.
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,127}")

#: The versions a :class:`VersionedHandler` serves, oldest first.
VERSIONS = ("v1", "v2", "v3")


@dataclass(frozen=True)
class Health:
    """A handler's self-check: whether it can work, and why not."""

    healthy: bool
    message: str = ""


@dataclass(frozen=True)
class FlowLimits:
    """Flow-control limits a handler declares for its type; they replace the
    type's stored limits at each registration. Zero and empty limit nothing."""

    max_running: int = 0
    concurrency_key: str = ""
    max_running_per_key: int = 0
    #: e.g. ``"20/second"``.
    rate_limit: str = ""
    rate_limit_key: str = ""


async def call_handler(function: Callable[..., Any], *args: Any) -> Any:
    """Runs a handler function: awaited if it is async, in a thread if not."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    result = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(result):
        return await result
    return result


class VersionedHandler:
    """One task type served by up to three versions (``v1``..``v3``).

    The version a task asks for is its ``handler_version`` (set at enqueue),
    else its ``handler_version`` metadata, else its payload's ``"version"``,
    else ``default``. A version this agent lacks falls back to the newest
    older one (v3 → v2 → v1); asking for an older version than any here,
    or an unknown name, fails the task for good.
    """

    def __init__(self, default: str = "v1", description: str = "") -> None:
        if default not in VERSIONS:
            raise ConfigError(f"'{default}' is not a handler version: use v1, v2 or v3")
        self.default = default
        self.description = description
        self.handlers: dict[str, Any] = {}

    def version(self, name: str, handler: Any) -> "VersionedHandler":
        """Adds (or replaces) the handler of version ``name``."""
        if name not in VERSIONS:
            raise ConfigError(f"'{name}' is not a handler version: use v1, v2 or v3")
        self.handlers[name] = handler
        return self

    def asked_version(self, ctx: TaskContext) -> str:
        """The version ``ctx`` asks for."""
        asked = ctx.handler_version or ctx.metadata.get("handler_version") or ctx.payload.get("version")
        if asked is None:
            return self.default
        if asked not in VERSIONS:
            raise PermanentError(f"'{asked}' is not a handler version: use v1, v2 or v3")
        return str(asked)

    async def handle(self, ctx: TaskContext) -> Output:
        """Runs the version the task asks for, or the newest older one."""
        asked = self.asked_version(ctx)
        for name in reversed(VERSIONS[: VERSIONS.index(asked) + 1]):
            if name in self.handlers:
                ctx.handler_version = name
                return await run_handler(self.handlers[name], ctx)
        raise PermanentError(
            f"version {asked} is not served here (this agent has {', '.join(sorted(self.handlers))})"
        )


async def run_handler(handler: Any, ctx: TaskContext) -> Output:
    """Runs a function or an object's ``handle`` on ``ctx``."""
    function = handler.handle if hasattr(handler, "handle") else handler
    return await call_handler(function, ctx)


@dataclass
class Registration:
    """A handler as registered: its type, domain and what it declares."""

    task_type: str
    domain: str
    handler: Any
    description: str = ""
    versions: list[str] = field(default_factory=list)
    flow: Optional[FlowLimits] = None


class TaskRegistry:
    """Task types grouped by domain, each with its handler.

    ``TaskRegistry()`` reads ``TASK_ENABLED_DOMAINS``, ``TASK_DISABLED_TYPES``
    and ``TASK_FEATURE_FLAGS`` from the environment; pass ``config`` to set
    them in code. Handlers of a domain or type the configuration leaves out
    are skipped at registration, with a log line.
    """

    def __init__(self, config: Optional[RegistryConfig] = None) -> None:
        self.config = config if config is not None else RegistryConfig.from_env()
        self._handlers: dict[str, Registration] = {}
        self._seen_domains: set[str] = set()

    def register_handler(
        self,
        task_type: str,
        handler: Any,
        *,
        domain: str,
        description: str = "",
        versions: Optional[list[str]] = None,
        flow: Optional[FlowLimits] = None,
    ) -> None:
        """Registers ``handler`` for ``task_type`` in ``domain``. A
        :class:`VersionedHandler` declares its versions itself; ``flow``
        declares the type's flow-control limits."""
        for what, name in (("task type", task_type), ("domain", domain)):
            if not _NAME.fullmatch(name):
                raise ConfigError(
                    f"{what} '{name}' is not a valid name: use lowercase letters, digits, "
                    "'_', '-' and '.', starting with a letter (at most 128)"
                )
        if task_type in self._handlers:
            raise ConfigError(
                f"task type '{task_type}' is registered twice "
                f"(domains {self._handlers[task_type].domain} and {domain}): each type has one handler"
            )
        function = handler.handle if hasattr(handler, "handle") else handler
        if not callable(function):
            raise ConfigError(f"the handler of '{task_type}' is not callable and has no handle method")
        self._seen_domains.add(domain)
        if not self.config.serves(domain, task_type):
            log.info("skipping %s (%s): disabled by the configuration", task_type, domain)
            return
        if isinstance(handler, VersionedHandler):
            versions = sorted(handler.handlers)
            documented = ""
        else:
            documented = (inspect.getdoc(handler) or "").split("\n")[0]
        self._handlers[task_type] = Registration(
            task_type=task_type,
            domain=domain,
            handler=handler,
            description=description or getattr(handler, "description", "") or documented,
            versions=list(versions or []),
            flow=flow or getattr(handler, "flow_limits", None),
        )

    def handler(self, task_type: str, *, domain: str, **options: Any) -> Callable[[Any], Any]:
        """A decorator form of :meth:`register_handler`."""

        def register(function: Any) -> Any:
            self.register_handler(task_type, function, domain=domain, **options)
            return function

        return register

    def get(self, task_type: str) -> Optional[Registration]:
        """The registration of ``task_type``, if it is served."""
        return self._handlers.get(task_type)

    def task_types(self) -> list[str]:
        """Every task type served."""
        return sorted(self._handlers)

    def domains(self) -> dict[str, list[Registration]]:
        """The registrations of each domain served."""
        grouped: dict[str, list[Registration]] = {}
        for registration in self._handlers.values():
            grouped.setdefault(registration.domain, []).append(registration)
        return grouped

    def check(self) -> None:
        """Raises :class:`~taskplane.errors.ConfigError` when the registry
        cannot serve: no handlers, or (strict) an enabled domain without any."""
        enabled = self.config.enabled_domains or []
        unknown = [domain for domain in enabled if domain not in self._seen_domains]
        if unknown:
            message = f"TASK_ENABLED_DOMAINS names domains with no handlers here: {', '.join(unknown)}"
            if self.config.strict:
                raise ConfigError(message + "; TASK_STRICT_CONFIG=true refuses to start")
            log.warning("%s", message)
        if not self._handlers:
            raise ConfigError(
                "the registry serves no task types: register handlers, and check "
                "TASK_ENABLED_DOMAINS and TASK_DISABLED_TYPES"
            )

    async def health_check(self) -> dict[str, Health]:
        """The self-check of every handler that has one (``health_check``
        returning a :class:`Health` or a bool); a check that raises is unhealthy."""
        results: dict[str, Health] = {}
        for task_type, registration in self._handlers.items():
            check = getattr(registration.handler, "health_check", None)
            if check is None:
                continue
            try:
                outcome = await call_handler(check)
            except Exception as error:  # a failing check is a finding, not a crash
                outcome = Health(False, f"health check raised {type(error).__name__}: {error}")
            if isinstance(outcome, bool):
                outcome = Health(outcome, "ok" if outcome else "unhealthy")
            results[task_type] = outcome
        return results

    async def process_task(self, ctx: TaskContext) -> Output:
        """Runs ``ctx`` through the handler of its type, in this process (for tests)."""
        registration = self._handlers.get(ctx.task_type)
        if registration is None:
            raise PermanentError(f"this agent has no handler for task type '{ctx.task_type}'")
        ctx.feature_flags = dict(self.config.feature_flags)
        return await run_handler(registration.handler, ctx)
