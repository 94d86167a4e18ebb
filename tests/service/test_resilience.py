"""Degradation and reloads under traffic, on real engines.

* A real redis-server holding the online store is stopped (SIGSTOP: a store that hangs), resumed,
  then shut down and started again on the same port (its data saved and reloaded), while client
  threads keep asking for recommendations: no answer is an error, none waits past its budget,
  the answers during the outage are degraded (from memory), an event posted meanwhile is logged
  (202) and applied once the store is back, and the answers are full and fresh again after it.
* A workspace is rebuilt (another `k`) while client threads keep asking: every answer carries the
  version that made it and has that version's length (no half of each); a POST
  /v1/admin/reload switches one app at once, and the other (another worker) follows by its
  watch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shortlist.features.online.materialize import materialize_online
from shortlist.service import create_app
from shortlist.workspace import Workspace
from tests.conftest import RedisServer, start_redis_server
from tests.service.conftest import TestClient
from tests.service.test_events import AUTH, EVENTS, USER, copy_workspace, fresh_pair, purchase
from tests.test_cli import shortlist

BUDGET_MS = 300
SLACK_S = 1.0  # what a loaded 2-core CI machine may add to a request on top of its budget


@dataclass
class Traffic:
    """Client threads asking for recommendations until stopped; every answer kept."""

    client: TestClient
    users: list[str]
    threads: int = 2
    answers: list[tuple[float, float, int, dict]] = field(default_factory=list)  # t, s, code
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            user = self.users[i % len(self.users)]
            i += self.threads
            started = time.perf_counter()
            r = self.client.get(USER.format(user_id=user), params={"trace": "true"})
            took = time.perf_counter() - started
            body = (
                r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            )
            self.answers.append((time.monotonic(), took, r.status_code, body))
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)

    def since(self, t: float) -> list[tuple[float, float, int, dict]]:
        return [a for a in list(self.answers) if a[0] >= t]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


# -- Redis stopped and restarted under traffic ---------------------------------------------------


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory) -> Iterator[RedisServer]:
    """A redis-server of this module alone (it is stopped and restarted), saving its data on
    shutdown so that a restart on the same port finds the online store again."""
    folder = tmp_path_factory.mktemp("redis-outage")
    server = start_redis_server(folder, "--save", "3600 1", "--appendonly", "no")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_copy(ws, tmp_path_factory, own_redis) -> Workspace:
    url = own_redis.url(0)
    # the copy's config ends in its [service] table (the key, a long budget): these join it
    extra = "retry_after = 0.3\nstore_timeout = 0.5\n"
    extra += f'\n[online]\nurl = "{url}"\n'
    copy = copy_workspace(ws, tmp_path_factory.mktemp("outage") / "ws", extra)
    path = copy.root / "shortlist.toml"
    path.write_text(path.read_text().replace("budget_ms = 10000", f"budget_ms = {BUDGET_MS}"))
    shutil.rmtree(copy.root / "online")
    versions = json.loads((copy.root / "models" / "pipeline.json").read_text())["features"]
    materialize_online(copy, url, groups=list(versions["versions"]), versions=versions["versions"])
    return copy


def test_redis_stopped_and_restarted_under_traffic(redis_copy, own_redis, ids):
    app = create_app(redis_copy)
    users = ids.buyers[:6]
    with TestClient(app) as client:
        state = app.state.shortlist
        assert state.pipeline.online_.url.startswith("redis://")
        full = {u: client.get(USER.format(user_id=u)).json() for u in users}
        assert not any(a["degraded"] for a in full.values())
        buyer = users[0]
        item, _ = fresh_pair(state.pipeline, buyer)

        with Traffic(client, users) as traffic:
            time.sleep(0.5)
            healthy = traffic.since(0)
            assert healthy and all(not a[3]["degraded"] for a in healthy), "degraded while healthy"

            # 1. the store hangs: answers within the budget, from memory
            hung = time.monotonic()
            own_redis.process.send_signal(signal.SIGSTOP)
            try:
                wait_for(lambda: len(traffic.since(hung + 0.5)) >= 10, 30, "answers while hung")
            finally:
                own_redis.process.send_signal(signal.SIGCONT)
            during = traffic.since(hung + 0.5)
            assert all(a[3]["degraded"] for a in during), "full answers from a hung store?"
            assert client.get("/readyz").json()["store"].startswith("degraded: ")

            # 2. back: full answers again, by itself
            resumed = time.monotonic()
            wait_for(lambda: any(not a[3]["degraded"] for a in traffic.since(resumed)), 15,
                     "full answers after SIGCONT")  # fmt: skip

            # 3. shut down (data saved), an event meanwhile, then started again on its port
            down = time.monotonic()
            own_redis.process.send_signal(signal.SIGTERM)
            own_redis.process.wait(timeout=30)
            wait_for(lambda: len(traffic.since(down + 0.3)) >= 10, 30, "answers while down")
            logged = client.post(EVENTS, json={"events": [purchase(buyer, item)]}, headers=AUTH)
            assert logged.status_code == 202, logged.text  # logged, not applied: not lost
            assert logged.json()["applied"] is False
            restarted = start_redis_server(
                own_redis.folder, "--save", "3600 1", "--appendonly", "no", port=own_redis.port
            )
            own_redis.process = restarted.process
            back = time.monotonic()
            wait_for(lambda: any(not a[3]["degraded"] for a in traffic.since(back)), 15,
                     "full answers after the restart")  # fmt: skip
            time.sleep(0.3)

        answers = traffic.answers
        assert len(answers) > 50
        errors = [(code, body) for _, _, code, body in answers if code != 200]
        assert not errors, errors[:3]
        slowest = max(took for _, took, _, _ in answers)
        assert slowest < BUDGET_MS / 1000 + SLACK_S, f"an answer took {slowest:.2f} s"
        outage = [a for a in answers if down + 0.3 <= a[0] < back]
        assert outage and all(a[3]["degraded"] for a in outage)
        reasons = {a[3]["trace"][0]["reason"][:24] for a in answers if a[3]["degraded"]}
        assert reasons, reasons
        for a in outage:  # the fallback: the segment's best sellers, not random items
            assert a[3]["trace"][1]["stage"] in ("fallback", "cold_start")
            assert len(a[3]["items"]) == len(full[a[3]["user_id"]]["items"])

        # fresh again: the event logged during the outage is applied by the next batch
        view = {"type": "view", "user_id": buyer, "item_id": item,
                "timestamp": "2020-09-23T10:00:01Z"}  # fmt: skip
        again = client.post(EVENTS, json={"events": [view]}, headers=AUTH)
        assert again.status_code == 200, again.text
        r = client.get(USER.format(user_id=buyer), params={"trace": "true"}).json()
        assert r["degraded"] is False
        retrieve = next(s for s in r["trace"] if s["stage"] == "retrieve")
        assert retrieve.get("events", {}).get("purchases", 0) >= 1, retrieve
        metrics = client.get("/metrics").text
        assert (
            'shortlist_fallbacks_total{endpoint="/v1/users/{user_id}/recommendations",reason="degraded"}'
            in metrics
        )


# -- reloads under traffic ------------------------------------------------------------------------


def rebuild(ws: Workspace, source: Path, k: int) -> None:
    """`shortlist build` again on the workspace, serving `k` items instead of 12."""
    path = ws.root / "shortlist.toml"
    path.write_text(path.read_text().replace("[pipeline]\n", f"[pipeline]\nk = {k}\n", 1))
    result = shortlist("-q", "--workspace", str(ws.root), "build", "--source", str(source),
                       "--format", "hm")  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_reload_under_traffic(ws, tmp_path_factory, ids):
    copy = copy_workspace(ws, tmp_path_factory.mktemp("reload") / "ws", "watch = 0.5\n")
    posted, watching = create_app(copy), create_app(copy)
    posted.state.shortlist.watch_seconds = 0  # this one reloads when told only
    users = ids.buyers[:6]
    with TestClient(posted) as a, TestClient(watching) as b:
        old = a.get("/readyz").json()["version"]
        assert b.get("/readyz").json()["version"] == old
        held = posted.state.shortlist.current.locked  # [service] lock: its mapped files
        assert held is not None or os.geteuid() != 0  # root may lock (CAP_IPC_LOCK)
        assert held is None or held.bytes > 0
        with Traffic(a, users) as on_a, Traffic(b, users, threads=1) as on_b:
            rebuild(copy, ws.root.parent / "src", k=5)
            r = a.post("/v1/admin/reload", headers=AUTH)
            assert r.status_code == 200, r.text
            new = r.json()["version"]
            assert new != old and r.json()["previous"] == old
            if held is not None:  # the old version's files unlocked at the switch, the new locked
                assert held.bytes == 0 and posted.state.shortlist.current.locked.bytes > 0
            switched = time.monotonic()
            wait_for(lambda: b.get("/readyz").json()["version"] == new, 15, "the watch reloads")
            time.sleep(0.5)
        assert a.post("/v1/admin/reload").status_code == 401
    for traffic in (on_a, on_b):
        answers = traffic.answers
        assert not [(c, body) for _, _, c, body in answers if c != 200][:3]
        versions = [body["version"] for _, _, _, body in answers]
        assert set(versions) == {old, new}, set(versions)
        for _, _, _, body in answers:  # each answer whole from one version
            if not body["degraded"]:
                assert len(body["items"]) == (12 if body["version"] == old else 5)
        first_new = versions.index(new)
        assert all(v == new for v in versions[first_new + 4 :])  # threads in flight: a few
    assert all(body["version"] == new for t, _, _, body in on_a.answers if t > switched + 0.2)
