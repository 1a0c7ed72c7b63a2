"""The Python agent against a real server: what the issue's sketch promises,
and what the protocol asks of every agent (the conformance suite checks
the rest from outside, for this agent and the Rust one alike)."""

import asyncio
import signal
import threading

import pytest
from agents import ThreadedAgent, eventually, list_agents, start_example
from conftest import Server, free_port, start_server

import taskplane
from taskplane import Agent, Client, RegistryConfig, TaskContext, TaskRegistry


def test_the_issue_sketch_runs(server: Server) -> None:
    registry = taskplane.TaskRegistry()

    async def shout(ctx):
        return {"shout": ctx.payload["text"].upper()}

    registry.register_handler("shout", shout, domain="demo")
    agent = ThreadedAgent(taskplane.Agent(registry=registry, servers=[server.url], max_concurrency=4))
    agent.registered()
    try:
        client = taskplane.Client(server.url)
        task = client.enqueue("shout", {"text": "hi"})
        done = client.wait(task.id, timeout=20)
        assert done.status == "COMPLETED" and done.result == {"shout": "HI"}
    finally:
        agent.stop()


def test_failures_retries_timeouts_and_versions(server: Server) -> None:
    registry = TaskRegistry(RegistryConfig())
    tries: dict[str, int] = {}

    def flaky(ctx: TaskContext) -> dict:
        tries[ctx.task_id] = ctx.attempt
        if ctx.attempt < 3:
            raise ConnectionError("downstream refused")
        return {"attempt": ctx.attempt}

    async def bad_input(ctx: TaskContext) -> dict:
        raise taskplane.PermanentError("payload.email is missing")

    async def slow(ctx: TaskContext) -> dict:
        await asyncio.sleep(30)
        return {}

    registry.register_handler("flaky", flaky, domain="demo")
    registry.register_handler("bad_input", bad_input, domain="demo")
    registry.register_handler("slow", slow, domain="demo")
    registry.register_handler(
        "report",
        taskplane.VersionedHandler("v1").version("v1", lambda c: {"v": 1}).version("v2", lambda c: {"v": 2}),
        domain="demo",
    )
    agent = ThreadedAgent(Agent(registry, server.url, max_concurrency=4))
    agent.registered()
    try:
        with Client(server.url) as client:
            flaky_task = client.enqueue("flaky", {}, max_attempts=3)
            bad = client.enqueue("bad_input", {}, max_attempts=3)
            timed = client.enqueue("slow", {}, timeout=0.5, max_attempts=1)
            v2 = client.enqueue("report", {}, version="v2")
            done = client.wait(flaky_task.id, timeout=20)
            assert done.status == "COMPLETED" and done.result == {"attempt": 3} and done.attempts == 3
            dead = client.wait(bad.id, timeout=20)
            assert dead.status == "DEAD" and dead.attempts == 1 and "payload.email is missing" in dead.last_error
            expired = client.wait(timed.id, timeout=20)
            assert expired.status == "DEAD" and "timed out" in expired.last_error
            assert client.wait(v2.id, timeout=20).result == {"v": 2}
            with pytest.raises(taskplane.Refused, match="v3"):
                client.enqueue("report", {}, version="v3")
    finally:
        agent.stop()


def test_cancellation_and_progress_reach_the_handler(server: Server) -> None:
    registry = TaskRegistry(RegistryConfig())
    started = threading.Event()
    saw_cancel = threading.Event()

    async def wait_for_cancel(ctx: TaskContext) -> dict:
        ctx.report_progress(0.25, "a quarter")
        started.set()
        await asyncio.wait_for(ctx.cancelled.wait(), 30)
        saw_cancel.set()
        return {}

    registry.register_handler("long", wait_for_cancel, domain="demo")
    agent = ThreadedAgent(Agent(registry, server.url, max_concurrency=1))
    agent.registered()
    try:
        with Client(server.url) as client:
            task = client.enqueue("long", {})
            assert started.wait(20)
            eventually(lambda: client.get(task.id).progress is not None, "the progress report")
            progress = client.get(task.id).progress
            assert progress is not None and progress.fraction == 0.25 and progress.message == "a quarter"
            client.cancel(task.id, "changed my mind")
            assert saw_cancel.wait(20), "the handler never saw the cancellation"
            # The slot is free again: the next task runs on the one slot.
            started.clear()
            follow = client.enqueue("long", {})
            assert started.wait(20)
            client.cancel(follow.id)
    finally:
        agent.stop()


def test_results_over_the_message_limit_fail_the_attempt_and_keep_the_stream(tmp_path) -> None:
    server = start_server(tmp_path / "small", "--max-message-bytes", "65536", "--max-result-bytes", "1048576")
    registry = TaskRegistry(RegistryConfig())
    registry.register_handler("big", lambda ctx: {"blob": "x" * ctx.payload["bytes"]}, domain="demo")
    agent = ThreadedAgent(Agent(registry, server.url, max_concurrency=2))
    session = agent.registered()
    try:
        with Client(server.url) as client:
            big = client.wait(client.enqueue("big", {"bytes": 100_000}, max_attempts=1).id, timeout=20)
            assert big.status == "DEAD" and "over the server's message limit of 65536 bytes" in big.last_error
            small = client.wait(client.enqueue("big", {"bytes": 10}).id, timeout=20)
            assert small.status == "COMPLETED" and agent.agent.session_id == session
    finally:
        agent.stop()
        server.stop()


def test_operators_see_labels_flags_slots_versions_and_health(server: Server) -> None:
    registry = TaskRegistry(RegistryConfig.from_env({"TASK_FEATURE_FLAGS": "emphasis:true"}))

    class Mailer:
        def handle(self, ctx: TaskContext) -> dict:
            return {}

        def health_check(self) -> taskplane.Health:
            return taskplane.Health(False, "smtp unreachable")

    registry.register_handler("mail", Mailer(), domain="demo")
    agent = ThreadedAgent(Agent(registry, server.url, name="py-mailer", max_concurrency=3, labels={"zone": "eu-1"}))
    agent.registered()
    try:
        eventually(
            lambda: any(h.task_type == "mail" for a in list_agents(server.url) for h in a.handler_health),
            "the first heartbeat's health report",
        )
        [info] = list_agents(server.url)
        assert info.agent_name == "py-mailer" and info.max_concurrency == 3
        assert dict(info.labels) == {"zone": "eu-1"} and dict(info.feature_flags) == {"emphasis": True}
        assert list(info.domains) == ["demo"] and list(info.task_types) == ["mail"]
        [health] = info.handler_health
        assert not health.healthy and health.message == "smtp unreachable"
    finally:
        agent.stop()


def test_the_agent_fails_over_and_comes_back_after_a_restart(tmp_path) -> None:
    port = free_port()
    server = start_server(tmp_path / "one", port=port)
    registry = TaskRegistry(RegistryConfig())
    registry.register_handler("shout", lambda ctx: {"shout": ctx.payload["text"].upper()}, domain="demo")
    dead = f"http://127.0.0.1:{free_port()}"
    agent = ThreadedAgent(Agent(registry, [dead, server.url], reconnect_backoff=(0.05, 0.2)))
    first = agent.registered()
    try:
        server.stop()
        eventually(lambda: agent.agent.session_id != first, "the agent to notice its server left")
        server = start_server(tmp_path / "one", port=port)
        second = agent.registered()
        assert second != first
        with Client(server.url) as client:
            assert client.wait(client.enqueue("shout", {"text": "back"}).id, timeout=20).result == {"shout": "BACK"}
    finally:
        agent.stop()
        server.stop()


def test_the_example_agent_drains_on_sigterm(server: Server) -> None:
    process = start_example("demo_agent.py", server.url, TASK_ENABLED_DOMAINS="reports,demo")
    try:
        with Client(server.url) as client:
            eventually(lambda: list_agents(server.url), "the example agent to register")
            running = client.enqueue("export", {"rows": 10, "seconds_per_row": 0.1})
            eventually(lambda: client.get(running.id).status == "RUNNING", "the export to start")
            process.send_signal(signal.SIGTERM)
            eventually(lambda: list_agents(server.url)[0].draining if list_agents(server.url) else True, "the drain")
            later = client.enqueue("shout", {"text": "after"})
            assert process.wait(20) == 0, process.stdout.read() if process.stdout else ""
            done = client.get(running.id)
            assert done.status == "COMPLETED" and done.result == {"exported": 10} and done.attempts == 1
            assert client.get(later.id).status == "PENDING"
    finally:
        if process.poll() is None:
            process.kill()


def test_handlers_enqueue_follow_ups_over_the_agents_connection(server: Server) -> None:
    registry = TaskRegistry(RegistryConfig())

    @registry.handler("parent", domain="demo")
    async def parent(ctx: TaskContext) -> dict:
        child = await ctx.enqueue("child", {"from": ctx.task_id})
        return {"child": child.id}

    @registry.handler("child", domain="demo")
    def child(ctx: TaskContext) -> dict:
        return {"parent": ctx.payload["from"]}

    agent = ThreadedAgent(Agent(registry, server.url))
    agent.registered()
    try:
        with Client(server.url) as client:
            task = client.enqueue("parent", {})
            done = client.wait(task.id, timeout=20)
            assert done.status == "COMPLETED", done.last_error
            followed = client.wait(done.result["child"], timeout=20)  # type: ignore[index]
            assert followed.parent_id == task.id and followed.result == {"parent": task.id}
    finally:
        agent.stop()


def test_a_handler_that_ignores_cancellation_is_interrupted(server: Server) -> None:
    registry = TaskRegistry(RegistryConfig())
    started = threading.Event()

    async def stubborn(ctx: TaskContext) -> dict:
        started.set()
        await asyncio.sleep(60)  # never looks at ctx.cancelled
        return {}

    registry.register_handler("stubborn", stubborn, domain="demo")
    registry.register_handler("quick", lambda ctx: {"ok": True}, domain="demo")
    agent = ThreadedAgent(Agent(registry, server.url, max_concurrency=1, prefetch=0))
    agent.registered()
    try:
        with Client(server.url) as client:
            task = client.enqueue("stubborn", {})
            assert started.wait(20)
            client.cancel(task.id)
            # One slot, held for a minute unless the interrupt frees it.
            quick = client.wait(client.enqueue("quick", {}).id, timeout=20)
            assert quick.status == "COMPLETED" and quick.result == {"ok": True}
    finally:
        agent.stop()


def test_tokens_admit_the_agent_and_the_client_and_nothing_else(tmp_path) -> None:
    import re
    import subprocess

    from conftest import taskplane_binary

    data = tmp_path / "secured"
    data.mkdir()

    def token(name: str, role: str) -> str:
        printed = subprocess.run(
            [taskplane_binary(), "token", "create", "--name", name, "--role", role, "--domain", "demo",
             "--database-url", f"sqlite://{data / 'taskplane.db'}"],
            capture_output=True, text=True, check=True,
        ).stdout
        match = re.search(r"tp_\S+", printed)
        assert match, printed
        return match.group(0)

    agent_token, client_token = token("py-agent", "agent"), token("py-client", "client")
    server = start_server(data, "--auth")
    registry = TaskRegistry(RegistryConfig())
    registry.register_handler("shout", lambda ctx: {"shout": ctx.payload["text"].upper()}, domain="demo")
    with pytest.raises(taskplane.AgentRefused, match="(?i)token"):
        asyncio.run(Agent(registry, server.url).run(handle_signals=False))
    agent = ThreadedAgent(Agent(registry, server.url, token=agent_token))
    agent.registered()
    try:
        with Client(server.url, token=client_token) as client:
            done = client.wait(client.enqueue("shout", {"text": "hi"}).id, timeout=20)
            assert done.result == {"shout": "HI"}
        with Client(server.url) as anonymous, pytest.raises(taskplane.Unauthenticated):
            anonymous.enqueue("shout", {"text": "hi"})
    finally:
        agent.stop()
        server.stop()
