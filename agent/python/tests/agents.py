"""Running Python agents inside a test: on a thread of their own, or as the
example's process."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

import grpc

from taskplane import Agent
from taskplane.v1 import registry_pb2, registry_pb2_grpc

PACKAGE = pathlib.Path(__file__).resolve().parents[1]


def eventually(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Waits until ``condition()`` is true; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class ThreadedAgent:
    """An agent running its own event loop on a thread."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self.agent.run(handle_signals=False))
        except BaseException as error:  # surfaced by stop()
            self.error = error

    def registered(self) -> str:
        """Waits until the agent has registered; returns its session id."""
        eventually(lambda: self.agent.session_id or self.error, "the agent to register")
        if self.error is not None:
            raise self.error
        assert self.agent.session_id is not None
        return self.agent.session_id

    def stop(self) -> None:
        eventually(lambda: self.agent._loop is not None or not self.thread.is_alive(), "the agent's loop")
        self.agent.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the agent did not stop within 30 s"
        if self.error is not None:
            raise self.error


def list_agents(url: str) -> list[registry_pb2.AgentInfo]:
    """The agents the server at ``url`` lists."""
    with grpc.insecure_channel(url.removeprefix("http://")) as channel:
        return list(registry_pb2_grpc.RegistryServiceStub(channel).ListAgents(registry_pb2.ListAgentsRequest()).agents)


def start_example(name: str, server_url: str, **env: str) -> subprocess.Popen[str]:
    """Starts ``examples/<name>`` as its own process against ``server_url``."""
    return subprocess.Popen(
        [sys.executable, str(PACKAGE / "examples" / name)],
        env={**os.environ, "PYTHONPATH": str(PACKAGE), "TASKPLANE_SERVER": server_url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
