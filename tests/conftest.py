"""Shared fixtures: workspaces in tmp folders and the real H&M sample (skipped when absent)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shortlist.workspace import Workspace, open_workspace

HM_SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hm-sample"


@pytest.fixture
def hm_sample() -> Path:
    if not (HM_SAMPLE / "transactions_train.csv").is_file():
        pytest.skip("../shared/data/hm-sample not present")
    return HM_SAMPLE.resolve()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return open_workspace(tmp_path / "ws")


def write(folder: Path, name: str, text: str) -> Path:
    """Write a small source file (dedented lines) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return path


# -- a real redis-server (the online store's Redis backend) ---------------------------------------


@dataclass
class RedisServer:
    """A redis-server started for tests, on a free loopback port."""

    process: subprocess.Popen
    port: int
    folder: Path

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        """Kill it (SIGKILL: no chance to save anything) and wait until it is gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(folder: Path, *args: str, port: int | None = None) -> RedisServer:
    """redis-server on 127.0.0.1 (a free port unless given), files in `folder`, extra `args`
    (default: no persistence). Waits until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a free port can be taken between the check and the start
        chosen = port or _free_port()
        cmd = [binary, "--port", str(chosen), "--bind", "127.0.0.1", "--dir", str(folder)]
        cmd += list(args) or ["--save", "", "--appendonly", "no"]
        log = open(folder / "redis.log", "ab")  # the server process keeps it open
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_ping(chosen):
                return RedisServer(proc, chosen, folder)
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run (no persistence); tests keep apart by database
    number or key prefix. Skipped when the redis-server binary is absent."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
