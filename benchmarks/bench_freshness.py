"""Freshness: from an event's 2xx to the first recommendation that reflects it.

On a built workspace (`shortlist build`, e.g. the tiny test one or `shortlist generate --scale
small` + `shortlist build`), copied twice into a temporary folder so the original is left as it
is (its event log and online store untouched), with the bought-before filter added and an API
key set:

1. **in-process** (LMDB): the app in this process (FastAPI's TestClient); each event is posted,
   then the user's recommendations are asked until they reflect it;
2. **two processes on one Redis** (a private redis-server on a free loopback port): two
   `shortlist serve` processes on the copy; each event is posted to the first over HTTP, then
   the second is asked until it reflects it;
3. **two processes on LMDB** (the same, both serving the copy's LMDB files), for reference.

Events alternate: a purchase of the item at the top of a user's recommendations (reflected
when the item is gone: the bought-before filter), then a stock event setting another user's top
item to 0 units (reflected when it is gone). The time is from the moment the 2xx arrived to the
end of the first answer without the item; `requests` counts the answers asked for (1: the next
request reflects the event). Medians and p99 over `--events` events per mode.

    python benchmarks/bench_freshness.py --workspace WS [--events 50] [--name tiny]

Writes results/freshness_<name>.json. Goal (issue 14): the next request; at most 1 s across
replicas.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from shortlist.data.offline import OfflineStore
from shortlist.features.online.materialize import materialize_online
from shortlist.workspace import Workspace, open_workspace

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
KEY = "bench-freshness"
AUTH = {"Authorization": f"Bearer {KEY}"}
FILTERS = """
[pipeline]
filters = [
  { name = "in_stock" },
  { name = "available_in_region" },
  { name = "age_allowed" },
  { name = "not_bought_before" },
]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_workspace(ws: Workspace, to: Path, online: str | None = None) -> Workspace:
    """The workspace without its event log (and LMDB's lock tables), with the bought-before
    filter and the key; `online`: a Redis URL to serve from (the pipeline's versions are
    materialized there)."""
    shutil.copytree(ws.root, to, ignore=shutil.ignore_patterns("lock.mdb", "events"))
    toml = to / "shortlist.toml"
    text = toml.read_text() if toml.exists() else ""
    if "[pipeline]" in text:  # keep its [pipeline], add the filters to it
        text = text.replace("[pipeline]", FILTERS.strip(), 1)
    else:
        text += FILTERS
    text += f'\n[service]\napi_key = "{KEY}"\n'
    if online is not None:
        text += f'\n[online]\nurl = "{online}"\n'
    toml.write_text(text)
    copy = open_workspace(to)
    if online is not None:
        shutil.rmtree(to / "online", ignore_errors=True)
        saved = json.loads((to / "models" / "pipeline.json").read_text())["features"]["versions"]
        materialize_online(copy, online, groups=list(saved), versions=saved)
    return copy


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def serving(ws: Workspace, count: int, logs: Path) -> Iterator[list[str]]:
    """`count` `shortlist serve` processes (one worker each) on the workspace, ready."""
    procs, urls = [], []
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    try:
        for i in range(count):
            port = free_port()
            out = open(logs / f"serve-{i}.log", "wb")
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "shortlist.cli",
                        "-q",
                        "--workspace",
                        str(ws.root),
                        "serve",
                        "--port",
                        str(port),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )  # fmt: skip
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 300
        for url, proc in zip(urls, procs, strict=True):
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"`shortlist serve` did not start: see {logs}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def users_of(ws: Workspace, n: int) -> list[str]:
    """The n users with the most recent purchases (their recommendations have personal items)."""
    rows = (
        OfflineStore(ws)
        .sql(
            "SELECT u.user_id FROM interactions i JOIN users u USING (user_idx) "
            f"GROUP BY u.user_id ORDER BY max(i.timestamp) DESC, u.user_id LIMIT {n}"
        )
        .fetchall()
    )
    return [r[0] for r in rows]


def run(
    post: Callable[[dict], Any],
    ask: Callable[[str], list[str]],
    users: list[str],
    events: int,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Post `events` events (purchase, stock, purchase, ...) and time each to the first answer
    that reflects it."""
    seconds, requests, post_ms = [], [], []
    when = datetime.now(UTC).isoformat()
    for i in range(events):
        user = users[i % len(users)]
        top = ask(user)[0]
        if i % 2 == 0:
            event = {"type": "purchase", "user_id": user, "item_id": top, "timestamp": when}
        else:
            event = {"type": "stock", "item_id": top, "units": 0}
        started = time.perf_counter()
        status = post(event)
        acknowledged = time.perf_counter()
        post_ms.append((acknowledged - started) * 1000)
        if status not in (200, 202):
            sys.exit(f"POST /v1/events answered {status}")
        asked = 0
        while True:
            asked += 1
            if top not in ask(user):
                break
            if time.perf_counter() - acknowledged > timeout:
                sys.exit(f"event {i} not reflected after {timeout} s")
        seconds.append(time.perf_counter() - acknowledged)
        requests.append(asked)
    ms = np.asarray(seconds) * 1000
    return {
        "events": events,
        "fresh_ms": {
            "p50": round(float(np.percentile(ms, 50)), 2),
            "p99": round(float(np.percentile(ms, 99)), 2),
            "max": round(float(ms.max()), 2),
        },
        "next_request_share": round(float(np.mean(np.asarray(requests) == 1)), 3),
        "requests_max": int(max(requests)),
        "post_ms": {
            "p50": round(float(np.percentile(post_ms, 50)), 2),
            "p99": round(float(np.percentile(post_ms, 99)), 2),
        },
    }


def in_process(ws: Workspace, users: list[str], events: int) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from shortlist.service import create_app

    with TestClient(create_app(ws)) as c:

        def post(event: dict) -> int:
            return c.post("/v1/events", json={"events": [event]}, headers=AUTH).status_code

        def ask(user: str) -> list[str]:
            r = c.get(f"/v1/users/{user}/recommendations", params={"k": 12})
            return [i["item_id"] for i in r.json()["items"]]

        return run(post, ask, users, events)


def two_processes(ws: Workspace, users: list[str], events: int, logs: Path) -> dict[str, Any]:
    with serving(ws, 2, logs) as (first, second), httpx.Client(timeout=30) as http:

        def post(event: dict) -> int:
            r = http.post(f"{first}/v1/events", json={"events": [event]}, headers=AUTH)
            return r.status_code

        def ask(user: str) -> list[str]:
            r = http.get(f"{second}/v1/users/{user}/recommendations", params={"k": 12})
            return [i["item_id"] for i in r.json()["items"]]

        return run(post, ask, users, events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True, type=Path, help="a built workspace")
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--name", default="", help="results/freshness_<name>.json")
    args = parser.parse_args()
    source = open_workspace(args.workspace)
    users = users_of(source, args.events)
    out: dict[str, Any] = {
        "workspace": str(args.workspace.resolve()),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="shortlist-freshness-") as tmp:
        root = Path(tmp)
        lmdb_ws = copy_workspace(source, root / "lmdb")
        print("in-process (LMDB) ...", flush=True)
        out["in_process_lmdb"] = in_process(lmdb_ws, users, args.events)
        print(json.dumps(out["in_process_lmdb"]), flush=True)
        (root / "redis").mkdir()
        with redis_server(root / "redis") as url:
            redis_ws = copy_workspace(source, root / "ws-redis", online=url)
            print("two `shortlist serve` processes on one Redis ...", flush=True)
            out["two_processes_redis"] = two_processes(redis_ws, users, args.events, root)
            print(json.dumps(out["two_processes_redis"]), flush=True)
        shared = copy_workspace(source, root / "ws-lmdb-shared")
        print("two `shortlist serve` processes on one LMDB folder ...", flush=True)
        out["two_processes_lmdb"] = two_processes(shared, users, args.events, root)
        print(json.dumps(out["two_processes_lmdb"]), flush=True)
    out["load_average_after"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    name = args.name or args.workspace.name
    path = RESULTS / f"freshness_{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
