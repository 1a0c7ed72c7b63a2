"""taskplane for Python: a client to enqueue and follow tasks, and an agent
SDK to serve them, over the same gRPC protocol as the Rust SDK.

>>> import asyncio, taskplane                                   # doctest: +SKIP
>>> registry = taskplane.TaskRegistry()
>>> async def shout(ctx):
...     return {"shout": ctx.payload["text"].upper()}
>>> registry.register_handler("shout", shout, domain="demo")
>>> asyncio.run(taskplane.Agent(registry, servers=["http://127.0.0.1:50051"]).run())
"""

from .agent import Agent, AgentRefused, AgentUnreachable
from .client import AsyncClient, Client, NewTask, Progress, Task, TaskStatus
from .config import RegistryConfig
from .connection import DEFAULT_SERVER, Connection
from .context import TaskContext
from .errors import (
    ConfigError,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PermanentError,
    PermissionDenied,
    Refused,
    RetryableError,
    ServerError,
    TaskFailure,
    TaskplaneError,
    Throttled,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from .registry import FlowLimits, Health, TaskRegistry, VersionedHandler

__all__ = [
    "Agent",
    "AgentRefused",
    "AgentUnreachable",
    "AsyncClient",
    "Client",
    "ConfigError",
    "DeadlineExceeded",
    "Connection",
    "DEFAULT_SERVER",
    "FlowLimits",
    "Health",
    "InvalidRequest",
    "NewTask",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "Progress",
    "Refused",
    "RegistryConfig",
    "RetryableError",
    "ServerError",
    "Task",
    "TaskContext",
    "TaskFailure",
    "TaskRegistry",
    "TaskStatus",
    "TaskplaneError",
    "Throttled",
    "Unauthenticated",
    "Unavailable",
    "VersionedHandler",
    "WaitTimeout",
]
