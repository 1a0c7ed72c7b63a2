"""The client, blocking and asyncio, against a real server."""

import asyncio

import pytest
from conftest import Server, free_port

from taskplane import AsyncClient, Client, InvalidRequest, NewTask, NotFound, Refused, TaskStatus, Unavailable, WaitTimeout


def register(server: Server, task_type: str = "shout") -> None:
    server.cli("types", "register", task_type, "--domain", "demo")


def test_enqueue_get_list_cancel_retry(server: Server) -> None:
    register(server)
    with Client(server.url) as client:
        task = client.enqueue("shout", {"text": "hi"}, priority=3, metadata={"tenant": "acme"})
        assert task.status == "PENDING" and task.payload == {"text": "hi"} and task.priority == 3
        assert client.get(task.id).metadata == {"tenant": "acme"}
        assert [t.id for t in client.list("shout", status="pending")] == [task.id]
        cancelled = client.cancel(task.id, "not needed")
        assert cancelled.status == TaskStatus.CANCELLED
        assert client.retry(task.id).status == "PENDING"
        again = client.enqueue("shout", {"text": "x"}, idempotency_key="once")
        assert client.enqueue("shout", {"text": "y"}, idempotency_key="once").id == again.id
        batch = client.enqueue_batch([NewTask("shout", {"n": n}) for n in range(3)])
        assert [t.payload["n"] for t in batch] == [0, 1, 2]


def test_errors_say_what_to_do(server: Server) -> None:
    register(server)
    with Client(server.url) as client:
        with pytest.raises(Refused, match="not registered"):
            client.enqueue("nobody_serves_this", {})
        with pytest.raises(NotFound):
            client.get("00000000-0000-0000-0000-000000000000")
        with pytest.raises(InvalidRequest):
            client.enqueue("shout", {}, start_within=-5)
        task = client.enqueue("shout", {})
        with pytest.raises(WaitTimeout) as timeout:
            client.wait(task.id, timeout=0.3)
        assert timeout.value.task.id == task.id and timeout.value.task.status == "PENDING"
        assert not timeout.value.retryable


def test_several_servers_fail_over_past_one_that_is_down(server: Server) -> None:
    register(server)
    dead = f"http://127.0.0.1:{free_port()}"
    with Client([dead, server.url]) as client:
        task = client.enqueue("shout", {"text": "hi"})
        assert client.get(task.id).id == task.id
    with Client(dead) as client:
        with pytest.raises(Unavailable, match="no server answered") as down:
            client.get(task.id)
        assert down.value.retryable


def test_the_asyncio_client_does_the_same(server: Server) -> None:
    register(server)

    async def run() -> None:
        async with AsyncClient(f"http://127.0.0.1:{free_port()},{server.url}") as client:
            task = await client.enqueue("shout", {"text": "hi"})
            assert (await client.get(task.id)).status == "PENDING"
            assert [t.id for t in await client.list(domain="demo")] == [task.id]
            seen = []
            async for update in client.watch(task.id):
                seen.append(update.status)
                if len(seen) == 1:
                    await client.cancel(task.id)
                if update.status.is_finished:
                    break
            assert seen[0] == "PENDING" and seen[-1] == "CANCELLED"
            with pytest.raises(WaitTimeout):
                await client.wait((await client.enqueue("shout", {})).id, timeout=0.3)
            with pytest.raises(Refused):
                await client.enqueue("nobody_serves_this", {})

    asyncio.run(run())
