"""A real taskplane control plane for the tests: the ``taskplane`` binary
(``TASKPLANE_BIN``, else the workspace's ``target/debug/taskplane``) serving a
fresh SQLite file on a free loopback port, with short timings."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def taskplane_binary() -> str:
    binary = os.environ.get("TASKPLANE_BIN") or str(HERE.parents[2] / "target" / "debug" / "taskplane")
    if not os.path.exists(binary):
        pytest.fail(
            f"no taskplane binary at {binary}: run `cargo build -p taskplane-cli` first, "
            "or set TASKPLANE_BIN"
        )
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A control plane process the test owns."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    data_dir: pathlib.Path
    log: pathlib.Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cli(self, *args: str) -> str:
        """Runs a CLI command against this server and returns its output."""
        done = subprocess.run(
            [taskplane_binary(), *args],
            env={**os.environ, "TASKPLANE_SERVER": self.url},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"taskplane {' '.join(args)} failed: {done.stderr}"
        return done.stdout


def start_server(data_dir: pathlib.Path, *extra: str, port: Optional[int] = None) -> Server:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    process = subprocess.Popen(
        [
            taskplane_binary(),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--database-url",
            f"sqlite://{data_dir / 'taskplane.db'}",
            "--lease",
            "3s",
            "--poll-interval",
            "50ms",
            "--retry-initial-backoff",
            "20ms",
            "--retry-max-backoff",
            "200ms",
            *extra,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Server(f"http://127.0.0.1:{port}", port, process, data_dir, log)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the server did not listen within 30 s")


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[Server]:
    running = start_server(tmp_path / "server")
    try:
        yield running
    finally:
        running.stop()
