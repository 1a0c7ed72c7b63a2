"""The Python SDK's agent under the conformance suite (``taskplane-conformance``;
``docs/protocol.md`` states the task types every such agent serves).

Environment: ``TASKPLANE_SERVER`` (comma-separated URLs, tried in order) and
``CONFORMANCE_SLOTS``. Drains on SIGTERM.
"""

import asyncio
import logging
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import taskplane  # noqa: E402

registry = taskplane.TaskRegistry(taskplane.RegistryConfig())


async def echo(ctx: taskplane.TaskContext) -> dict:
    """Returns its payload; ``pad_bytes: N`` returns ``{"pad": "x" * N}`` instead."""
    if "pad_bytes" in ctx.payload:
        return {"pad": "x" * int(ctx.payload["pad_bytes"])}
    return ctx.payload


async def fail(ctx: taskplane.TaskContext) -> dict:
    """Fails, retryably when ``payload.retryable`` is true."""
    message = f"conformance failure of attempt {ctx.attempt}"
    if ctx.payload.get("retryable") is True:
        raise taskplane.RetryableError(message)
    raise taskplane.PermanentError(message)


def sleeper(report: bool):
    async def sleep(ctx: taskplane.TaskContext) -> dict:
        """Sleeps ``payload.ms`` unless cancelled first, and says when it ran."""
        started_us = time.time_ns() // 1000
        if report:
            ctx.report_progress(0.5, "half way")
        try:
            await asyncio.wait_for(ctx.cancelled.wait(), int(ctx.payload.get("ms", 0)) / 1000)
        except asyncio.TimeoutError:
            return {"started_us": started_us, "ended_us": time.time_ns() // 1000}
        raise taskplane.PermanentError("stopped on request")

    return sleep


registry.register_handler("echo", echo, domain="conformance")
registry.register_handler("fail", fail, domain="conformance")
registry.register_handler("sleep", sleeper(report=False), domain="conformance")
registry.register_handler("progress", sleeper(report=True), domain="conformance")

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    slots = int(os.environ.get("CONFORMANCE_SLOTS", "2"))
    agent = taskplane.Agent.from_env(
        registry, name="conformance-agent", max_concurrency=slots, reconnect_backoff=(0.05, 0.5)
    )
    asyncio.run(agent.run())
