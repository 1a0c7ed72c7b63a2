"""A no-op agent, for `taskplane bench --workloads w1x --agent-command ...`:
it serves BENCH_TASK_TYPE (default ``bench_noop``) of BENCH_DOMAIN (default
``bench``) with a handler that does nothing, at the SDK's default slots.

    taskplane bench --workloads w1,w1x \\
        --agent-command "python3 agent/python/examples/noop_agent.py"
"""

import asyncio
import os

import taskplane


async def noop(ctx: taskplane.TaskContext) -> None:
    return None


registry = taskplane.TaskRegistry(taskplane.RegistryConfig())
registry.register_handler(
    os.environ.get("BENCH_TASK_TYPE", "bench_noop"), noop, domain=os.environ.get("BENCH_DOMAIN", "bench")
)

if __name__ == "__main__":
    asyncio.run(taskplane.Agent.from_env(registry, name="python-noop").run())
