"""The service's fixtures: one tiny workspace built for the whole package (as
tests/pipeline/test_pipeline.py builds its own), the app in-process (FastAPI's TestClient, the
lifespan run once), and `shortlist serve` as a real subprocess started right after the build,
so that it loads while the in-process tests run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shortlist.data.generator import generate
from shortlist.data.offline import OfflineStore
from shortlist.service import create_app
from shortlist.workspace import Workspace, open_workspace
from tests.conftest import write
from tests.test_cli import shortlist

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 under its TestClient
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

# the FAST settings of tests/pipeline/test_pipeline.py, and a trending source per region
# beside the age one, so that cold starts have both segments to draw from
FAST = """
[retrieval]
epochs = 2
max_epochs = 2
min_steps = 0
batch_size = 512
dim = 32
hidden = 64

[ranking]
weeks = 3
max_weeks = 3

[pipeline]
sources = [
  { name = "repurchase", k = 50 },
  { name = "same_group", k = 50 },
  { name = "copurchase", k = 100 },
  { name = "two_tower", k = 100 },
  { name = "trending", k = 50, segment = "region" },
  { name = "trending", k = 50, segment = "age" },
  { name = "trending", k = 50 },
]
"""


# answers must be the full pipeline's on a loaded CI machine: a budget no request reaches
# (tests/service/test_resilience.py sets a short one)
PATIENT = """
[service]
budget_ms = 10000
"""


@pytest.fixture(scope="package")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("service")
    generate(root / "src", scale="tiny", seed=4)
    write(root / "ws", "shortlist.toml", FAST + PATIENT)
    result = shortlist("-q", "--workspace", str(root / "ws"), "build", "--source",
                       str(root / "src"), "--format", "hm")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return open_workspace(root / "ws")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    """`shortlist serve` running as a subprocess on a loopback port."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        """The pids of the worker processes (the children of `shortlist serve`)."""
        pid = self.process.pid
        return {
            int(c) for t in Path(f"/proc/{pid}/task").glob("*/children")
            for c in t.read_text().split()
        }  # fmt: skip

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"`shortlist serve` exited ({self.process.returncode}):\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"`shortlist serve` not ready after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (the workers shut down gracefully), then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_serve(ws: Workspace, log: Path, workers: int = 2, **env_vars: str) -> Served:
    """`shortlist serve --workers N` on a free loopback port, its output in `log`, with
    `env_vars` added to the environment."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shortlist.cli", "-q", "--workspace", str(ws.root), "serve",
             "--port", str(port), "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    return Served(process, port, log)


@pytest.fixture(scope="package", autouse=True)
def served(ws, tmp_path_factory) -> Iterator[Served]:
    """Two workers serving the workspace, started as soon as it is built."""
    server = start_serve(ws, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="package")
def app(ws):
    return create_app(ws)


@pytest.fixture(scope="package")
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:  # runs the lifespan: the workspace loads once
        yield c


@pytest.fixture(scope="package")
def pipeline(app, client):
    """The pipeline the app loaded."""
    return app.state.shortlist.pipeline


@dataclass(frozen=True)
class Ids:
    buyers: list[str]  # users with purchases, most recent first
    popular: list[str]  # items most bought in the last weeks, most first


@pytest.fixture(scope="package")
def ids(ws) -> Ids:
    store = OfflineStore(ws)
    buyers = store.sql(
        "SELECT u.user_id FROM interactions i JOIN users u USING (user_idx) "
        "GROUP BY u.user_id ORDER BY max(i.timestamp) DESC LIMIT 10"
    ).fetchall()
    popular = store.sql(
        "SELECT it.item_id FROM interactions i JOIN items it USING (item_idx) "
        "WHERE i.timestamp >= (SELECT max(timestamp) FROM interactions) - INTERVAL 28 DAY "
        "GROUP BY it.item_id ORDER BY count(*) DESC, it.item_id LIMIT 20"
    ).fetchall()
    return Ids([r[0] for r in buyers], [r[0] for r in popular])
