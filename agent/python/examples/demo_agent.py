"""An example domain agent: two domains, served the way a Python team would.

    pip install ./agent/python
    taskplane dev &                        # a control plane on 127.0.0.1:50051
    python agent/python/examples/demo_agent.py
    taskplane enqueue shout '{"text": "hi"}' --wait

It reads TASKPLANE_SERVER (comma-separated URLs fail over),
TASK_ENABLED_DOMAINS, TASK_DISABLED_TYPES and TASK_FEATURE_FLAGS, and drains
on SIGTERM or Ctrl-C: running tasks finish, nothing new starts.
"""

import asyncio
import logging
import os
import time

import taskplane

registry = taskplane.TaskRegistry()


# A coroutine handler: ctx.payload is a dict; return a JSON-able dict.
async def shout(ctx: taskplane.TaskContext) -> dict:
    text = ctx.payload.get("text")
    if not isinstance(text, str):
        raise taskplane.PermanentError("payload.text must be a string, e.g. {\"text\": \"hi\"}")
    return {"shout": text.upper() + ("!" if ctx.feature_enabled("emphasis") else "")}


registry.register_handler("shout", shout, domain="demo", description="Upper-cases payload.text")


# A blocking handler runs on a worker thread; it polls for cancellation.
def export(ctx: taskplane.TaskContext) -> dict:
    """Exports payload.rows rows, reporting progress; stops when cancelled."""
    rows = int(ctx.payload.get("rows", 10))
    for row in range(rows):
        if ctx.is_cancelled():
            raise taskplane.PermanentError(f"cancelled after {row} rows")
        ctx.report_progress((row + 1) / rows, f"row {row + 1} of {rows}")
        time.sleep(float(ctx.payload.get("seconds_per_row", 0.1)))
    return {"exported": rows}


registry.register_handler("export", export, domain="reports")


# A class handler with a self-check, shown to operators with the agent.
class Report:
    """Builds a report (v1: a count; v2 adds a title)."""

    def __init__(self, version: str) -> None:
        self.version = version

    async def handle(self, ctx: taskplane.TaskContext) -> dict:
        items = ctx.payload.get("items", [])
        report = {"count": len(items), "version": self.version}
        if self.version == "v2":
            report["title"] = ctx.payload.get("title", "untitled")
        return report

    def health_check(self) -> taskplane.Health:
        return taskplane.Health(True, "report templates loaded")


registry.register_handler(
    "report",
    taskplane.VersionedHandler(default="v1").version("v1", Report("v1")).version("v2", Report("v2")),
    domain="reports",
)

if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    agent = taskplane.Agent.from_env(registry, name="demo-python", max_concurrency=4)
    asyncio.run(agent.run())
