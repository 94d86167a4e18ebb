"""`shortlist serve` as a user runs it: a real process (two workers forked from it) on a loopback
port, requested over HTTP with httpx, stopped with SIGTERM."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import Served, start_serve


def test_shortlist_serve_answers_over_http(served, client, ids):
    served.wait_ready()
    with httpx.Client(base_url=served.url, timeout=30) as http:
        user = ids.buyers[0]
        r = http.get(f"/v1/users/{user}/recommendations", params={"k": 6})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        # the same answer as the app in-process: one workspace, one pipeline
        in_process = client.get(f"/v1/users/{user}/recommendations", params={"k": 6}).json()
        assert r.json() == in_process
        cart = http.post("/v1/cart/recommendations", json={"cart": ids.popular[:2], "k": 5})
        assert cart.status_code == 200 and len(cart.json()["items"]) == 5
        similar = http.get(f"/v1/items/{ids.popular[0]}/similar", params={"k": 3})
        assert similar.status_code == 200 and len(similar.json()["items"]) == 3
        bad = http.get(f"/v1/users/{user}/recommendations", params={"k": 10**9})
        assert bad.status_code == 422 and bad.json()["field"] == "k"
        assert http.get("/openapi.json").json()["info"]["title"] == "shortlist"

        def get(u: str) -> int:
            return http.get(f"/v1/users/{u}/recommendations").status_code

        with ThreadPoolExecutor(8) as pool:  # both workers busy at once
            statuses = list(pool.map(get, (ids.buyers * 4)[:24] + ["new-1", "new-2"]))
        assert statuses == [200] * 26

        # /metrics adds up both workers' counts (prometheus multiprocess files)
        metrics = http.get("/metrics").text
    counts = {
        s.labels["status"]: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "shortlist_http_requests_total"
        and s.labels["endpoint"] == "/v1/users/{user_id}/recommendations"
    }
    assert counts == {"200": 27.0, "422": 1.0}
    assert served.stop() == 0
    log = served.logs()
    assert log.count("Application startup complete") == 2  # two workers
    assert "loaded in" in log and "forking 2 workers" in log and "Traceback" not in log
    # the workspace loaded once, before the fork: its files read into the page cache and
    # locked there (or said why not: a process without CAP_IPC_LOCK and a small `ulimit -l`)
    assert log.count("read into the page cache") == 1
    assert log.count("and locked there") == 1 or log.count("not locked there: mlock failed") == 1


def _until(check: Callable[[], bool], what: str, server: Served, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not after {timeout} s:\n{server.logs()}")


def _shared_dirty_mb(pid: int) -> float:
    """Written pages this process shares with another (for a forked worker: its parent's heap
    that neither has written since the fork), MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Shared_Dirty:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no Shared_Dirty for {pid}")


def test_workers_are_forked_from_the_loaded_workspace_replaced_when_they_die_and_reloaded(
    ws, ids, tmp_path
):
    server = start_serve(ws, tmp_path / "serve.log", SHORTLIST_API_KEY="fork-key")
    user = ids.buyers[0]
    try:
        server.wait_ready()
        _until(lambda: len(server.workers()) == 2, "two workers", server)
        first = server.workers()
        # the workers share what the parent loaded: its heap, not a copy each (a worker that
        # loaded the workspace itself, as spawned uvicorn workers did, shares none of it)
        for pid in first:
            assert _shared_dirty_mb(pid) > 50, server.logs()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            want = http.get(f"/v1/users/{user}/recommendations").json()

            # a worker killed is replaced, and the service answers as before
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            _until(lambda: victim not in server.workers() and len(server.workers()) == 2,
                   "a new worker", server)  # fmt: skip
            for _ in range(6):  # both workers answer the same
                assert http.get(f"/v1/users/{user}/recommendations").json() == want
            assert f"worker {victim} ended (signal SIGKILL): forking another" in server.logs()

            # a reload asked of a worker: the parent loads the workspace (once: the worker
            # asked does not), answers through it, forks new workers, then the old ones stop
            before = server.workers()
            version = http.get("/readyz").json()["version"]
            reloaded = http.post("/v1/admin/reload", headers={"Authorization": "Bearer fork-key"})
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["version"] == reloaded.json()["previous"] == version
            assert "forked from the new version" in reloaded.json()["workers"]
            _until(lambda: not (server.workers() & before) and len(server.workers()) == 2,
                   "workers forked from the reloaded workspace", server)  # fmt: skip
            for _ in range(6):
                assert http.get(f"/v1/users/{user}/recommendations").json() == want
        assert server.logs().count("shortlist: reloaded") == 1  # the parent's load alone
        assert server.stop() == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in before)
        log = server.logs()
        assert log.count("Finished server process") >= 4 and "Traceback" not in log
    finally:
        server.stop()


def _connections_by_worker(server: Served) -> dict[int, int]:
    """How many established connections to the service's port each worker holds (/proc)."""
    ours = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == server.port:
                ours.add(f"socket:[{inode}]")
    held = {}
    for pid in server.workers():
        fds = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                fds.append(os.readlink(fd))
            except OSError:  # closed meanwhile
                pass
        held[pid] = sum(target in ours for target in fds)
    return held


def test_new_connections_take_turns_over_the_workers(ws, tmp_path):
    """Keep-alive connections opened one after another spread evenly over the two workers:
    the worker that took the last leaves the next to the other ([service] accept_turn_ms,
    here 2 s so that a busy machine cannot reorder them). An event loop accepting on its own
    gives each connection to whichever worker wakes first (all of a burst to one, at times).
    A stopped worker only delays the other's new connections, by the turn at most."""
    server = start_serve(ws, tmp_path / "serve.log", SHORTLIST_SERVICE_ACCEPT_TURN_MS="2000")
    opened: list[http.client.HTTPConnection] = []

    def connect() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        assert answer.status == 200 and answer.read() == b'{"status":"ok"}'
        opened.append(conn)

    try:
        server.wait_ready()
        _until(lambda: len(server.workers()) == 2, "two workers", server)
        for _ in range(16):
            connect()
        held = _connections_by_worker(server)
        assert sorted(held.values()) == [8, 8], held

        # a stopped worker: the other answers new connections (one given to the stopped
        # worker would never be answered: `connect` would time out), after its turn at most
        stopped = min(server.workers())
        os.kill(stopped, signal.SIGSTOP)
        try:
            for _ in range(2):
                connect()
        finally:
            os.kill(stopped, signal.SIGCONT)
    finally:
        for conn in opened:
            conn.close()
        assert server.stop() == 0
    assert "Traceback" not in server.logs()


def test_workers_that_keep_failing_to_start_stop_the_service(ws, tmp_path):
    """The workspace loads, but the app's startup fails in every forked worker: after
    MAX_STARTUP_FAILURES workers in a row the parent stops with uvicorn's startup-failure
    status instead of forking the same failure once a second forever."""
    from shortlist.service.server import MAX_STARTUP_FAILURES, STARTUP_FAILURE

    script = tmp_path / "failing.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, uvicorn
            from shortlist.service.app import create_app
            from shortlist.service.server import Prefork

            app = create_app({str(ws.root)!r})

            class StartupFails:  # the service's app, but its startup fails in every worker
                state = app.state

                async def __call__(self, scope, receive, send):
                    if scope["type"] == "lifespan":
                        raise RuntimeError("this app cannot start")
                    await app(scope, receive, send)

            config = uvicorn.Config(StartupFails(), host="127.0.0.1", port=0, lifespan="on")
            sys.exit(Prefork(config, 2).run())
            """
        )
    )
    # the timeout only stops a parent that re-forks the failure forever (the bug this guards)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=900
    )
    log = done.stdout + done.stderr
    assert done.returncode == STARTUP_FAILURE, log
    # each worker's failure logged (the second replacement may fail too before it is stopped)
    failures = log.count("Application startup failed")
    assert MAX_STARTUP_FAILURES <= failures <= MAX_STARTUP_FAILURES + 1, log
    assert f"workers failed to start {MAX_STARTUP_FAILURES} times in a row" in log
    # a replacement after each failure but the last (2 forked at first: 2 + 2 workers)
    assert log.count("forking another") == MAX_STARTUP_FAILURES - 1


def test_reload_signals_written_at_once_by_many_threads_never_fail(tmp_path):
    """Workers and request threads touch models/reload at the same moment (a reload asked of
    several workers): each write has its own temporary file, so none fails and the file is
    always whole."""
    from shortlist.service.engine import _touch

    path = tmp_path / "reload"
    errors: list[OSError] = []

    def touch() -> None:
        for _ in range(200):
            try:
                _touch(path)
            except OSError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=touch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert float(path.read_text()) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["reload"]  # no temporary file left
