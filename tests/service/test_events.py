"""Real-time events end to end: POST /v1/events, then the next recommendation reflects them, on
LMDB (in-process) and on Redis across two processes (`shortlist serve` and the app in-process
on one real redis-server); a bad event changes nothing; the key is required; a batch logged but
not applied (a crash between the log's fsync and the store's write) is applied once at start.

Each backend gets its own copy of the package's workspace (its own event log and online store),
so the other tests of the package never see these events."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from shortlist.data.events import EventLog
from shortlist.features.online.live import APPLIED, RECENT
from shortlist.features.online.materialize import materialize_online
from shortlist.pipeline import Pipeline
from shortlist.pipeline.events import EventRecorder
from shortlist.retrieval.sources import CoPurchaseSource
from shortlist.service import create_app
from shortlist.workspace import Workspace, open_workspace
from tests.conftest import RedisServer
from tests.service.conftest import FAST, Served, TestClient, free_port
from tests.service.test_fuzz import CHECKS, EXAMPLES

KEY = "test-key-5f2c"
AUTH = {"Authorization": f"Bearer {KEY}"}
EVENTS = "/v1/events"
USER = "/v1/users/{user_id}/recommendations"
AFTER_CUTOFF = "2020-09-23T10:00:00Z"  # the tiny data's cutoff is that midnight

CONFIG = f"""{FAST}
filters = [
  {{ name = "in_stock" }},
  {{ name = "available_in_region" }},
  {{ name = "age_allowed" }},
  {{ name = "not_bought_before" }},
]

[service]
api_key = "{KEY}"
budget_ms = 10000
"""


def copy_workspace(ws: Workspace, to: Path, extra: str = "") -> Workspace:
    """The package's built workspace with another shortlist.toml, without its event log and
    without LMDB's lock tables (processes of the package hold them open)."""
    shutil.copytree(ws.root, to, ignore=shutil.ignore_patterns("lock.mdb", "events"))
    (to / "shortlist.toml").write_text(CONFIG + extra)
    return open_workspace(to)


def purchase(user: str, item: str, **more) -> dict:
    return {"type": "purchase", "user_id": user, "item_id": item, "timestamp": AFTER_CUTOFF, **more}


def recommended(http, user: str, **params) -> list[str]:
    r = http.get(USER.format(user_id=user), params=params)
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def post(http, events: list[dict], headers=AUTH) -> httpx.Response:
    return http.post(EVENTS, json={"events": events}, headers=headers)


# -- LMDB, in-process ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lmdb_ws(ws, tmp_path_factory) -> Workspace:
    return copy_workspace(ws, tmp_path_factory.mktemp("events") / "ws")


@pytest.fixture(scope="module")
def lmdb_app(lmdb_ws):
    return create_app(lmdb_ws)


@pytest.fixture(scope="module")
def live(lmdb_app) -> Iterator[TestClient]:
    with TestClient(lmdb_app) as c:
        yield c


def fresh_pair(pipeline, user: str) -> tuple[str, np.ndarray]:
    """An item the user never bought, in stock, with co-purchase neighbours the user never
    bought either, and those neighbours (best first)."""
    funnel = pipeline.funnel_
    u = funnel.catalog.user_idx(user)
    source = next(s for s, _ in funnel.retrieval.sources if isinstance(s, CoPurchaseSource))
    bought = set(source.bought_[u].indices.tolist())
    units = funnel.catalog.rules.units
    row_counts = np.diff(source.neighbours_.indptr)
    for item in np.argsort(-row_counts, kind="stable").tolist():
        if item in bought or not (np.isnan(units[item]) or units[item] > 0):
            continue
        row = source.neighbours_[item]
        order = np.argsort(-row.data, kind="stable")
        neighbours = row.indices[order]
        neighbours = neighbours[~np.isin(neighbours, list(bought))]
        if len(neighbours) >= 3:
            return str(funnel.catalog.item_ids[item]), neighbours[:3]
    raise AssertionError("no item with co-purchase neighbours")


def test_write_endpoints_need_the_key(client, live):
    # the package's workspace sets no key: writes are off, saying how to turn them on
    r = client.post(EVENTS, json={"events": [{"type": "stock", "item_id": "x", "units": 1}]})
    assert r.status_code == 503 and "SHORTLIST_API_KEY" in r.json()["message"]
    body = {"events": [{"type": "stock", "item_id": "x", "units": 1}]}
    missing = live.post(EVENTS, json=body)
    assert missing.status_code == 401 and missing.json()["field"] == "authorization"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = live.post(EVENTS, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["message"] == "authorization: wrong API key"
    # the key checked before the body: a bad body without the key is still a 401
    assert live.post(EVENTS, json={"nope": 1}).status_code == 401
    assert live.get(USER.format(user_id="anyone")).status_code == 200  # reads stay open
    state = live.app.state.shortlist
    state.read_key_required = True  # [service] read_key_required = true
    try:
        assert live.get(USER.format(user_id="anyone")).status_code == 401
        assert live.get(USER.format(user_id="anyone"), headers=AUTH).status_code == 200
    finally:
        state.read_key_required = False


def test_a_purchase_shows_in_the_next_recommendation(live, lmdb_app, ids):
    pipeline = lmdb_app.state.shortlist.pipeline
    funnel, store = pipeline.funnel_, pipeline.online_
    user = ids.buyers[0]
    u = funnel.catalog.user_idx(user)
    item, neighbours = fresh_pair(pipeline, user)
    x = int(funnel.catalog.item_idx([item])[0])
    users = np.array([u])
    before = store.get_rows("users", users)
    vector = funnel.retrieval.two_tower.queries(users)
    cs = funnel.retrieval.candidates(users, live=funnel.signals(users))
    repurchase = cs.ranks["repurchase"][0][cs.items[0] == x]
    assert not repurchase.any()  # never bought: not proposed for repurchase

    r = post(live, [purchase(user, item, price=0.02, quantity=2)])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["applied"] and body["counts"] == {"purchase": 1}

    # the next request: bought before (the filter is configured), so not recommended
    assert item not in recommended(live, user, k=50)
    signals = funnel.signals(users)
    assert signals.items[0].tolist() == [x] and signals.units[0].tolist() == [2.0]
    cs = funnel.retrieval.candidates(users, live=signals)
    ranked = dict(zip(cs.items[0].tolist(), range(cs.items.shape[1]), strict=True))
    assert cs.ranks["repurchase"][0][ranked[x]] > 0  # proposed for repurchase now
    assert cs.ranks["copurchase"][0][ranked[x]] == 0  # seeds are excluded
    for n in neighbours.tolist():  # its co-purchase neighbours are proposed
        assert n in ranked and cs.ranks["copurchase"][0][ranked[n]] > 0
    # the user tower pools the purchase: the vector moved
    moved = funnel.retrieval.two_tower.queries(users, signals)
    assert not np.allclose(moved, vector)
    # the user's features in the online store
    after = store.get_rows("users", users)
    col = {c: j for j, c in enumerate(after.columns)}
    assert after.values[0, col["units_all"]] == before.values[0, col["units_all"]] + 2
    assert after.values[0, col["days_since_last_purchase"]] == 0.0
    pairs = store.get_records("user_items", users).records[0]
    (mine,) = pairs[pairs["item_idx"] == x]
    assert mine["purchases"] == 2 and mine["days_since_last"] == 0.0
    assert store.get_records(RECENT, users).records[0]["item_idx"].tolist() == [x]


def test_stock_at_zero_removes_an_item(live, ids):
    user = ids.buyers[1]
    top = recommended(live, user)[0]
    r = post(live, [{"type": "stock", "item_id": top, "units": 0}])
    assert r.status_code == 200 and r.json()["applied"]
    assert top not in recommended(live, user, k=50)
    cart = live.post("/v1/cart/recommendations", json={"cart": ids.popular[:2], "k": 50})
    assert top not in [i["item_id"] for i in cart.json()["items"]]
    assert post(live, [{"type": "stock", "item_id": top, "units": 3}]).status_code == 200
    assert top in recommended(live, user, k=50)  # back in stock


def test_a_batch_with_one_bad_event_changes_nothing(live, lmdb_app, ids):
    pipeline = lmdb_app.state.shortlist.pipeline
    store, log = pipeline.online_, EventLog.of(pipeline.workspace)
    user = ids.buyers[2]
    u = pipeline.funnel_.catalog.user_idx(user)
    seq, row = log.last_seq(), store.get_rows("users", [u]).values.copy()
    marker = store.get_records(APPLIED, [0]).records[0].tolist()
    r = post(
        live,
        [
            purchase(user, ids.popular[0]),
            purchase(user, "no-such-item"),
            {"type": "view", "user_id": user, "item_id": ids.popular[1], "timestamp": "soon"},
        ],
    )
    assert r.status_code == 422
    body = r.json()
    assert body["field"] == "events.2.timestamp"  # pydantic's checks come first, then the ids
    assert body["value"] == "soon"
    r = post(live, [purchase(user, ids.popular[0]), purchase(user, "no-such-item")])
    assert r.status_code == 422
    assert (r.json()["field"], r.json()["value"]) == ("events.1.item_id", "no-such-item")
    assert "events.1.item_id: unknown item 'no-such-item'" in r.json()["message"]
    # neither the log nor the store changed
    assert log.last_seq() == seq
    assert np.array_equal(store.get_rows("users", [u]).values, row, equal_nan=True)
    assert store.get_records(APPLIED, [0]).records[0].tolist() == marker
    # an unknown user's purchase is accepted: logged, the item's sales counted
    r = post(live, [purchase("never-seen-user", ids.popular[0])])
    assert r.status_code == 200 and "unknown user 'never-seen-user'" in r.json()["notes"][0]


def test_a_logged_batch_not_applied_is_applied_once_at_start(live, lmdb_ws, lmdb_app, ids):
    """A crash between the log's fsync and the store's write: the next start applies it."""
    pipeline = lmdb_app.state.shortlist.pipeline
    recorder = lmdb_app.state.shortlist.recorder
    user, item = ids.buyers[3], ids.popular[2]
    u = pipeline.funnel_.catalog.user_idx(user)
    x = int(pipeline.funnel_.catalog.item_idx([item])[0])
    checked, _ = recorder.check([purchase(user, item, quantity=3)])
    with recorder.log.locked():
        (logged,) = recorder.log.append(checked)  # ... and the process dies here
    store = pipeline.online_
    units = store.get_rows("users", [u]).values[0]
    assert x not in store.get_records(RECENT, [u]).records[0]["item_idx"].tolist()

    restarted = create_app(lmdb_ws)
    with TestClient(restarted) as c:  # the lifespan loads the workspace, then catches up
        state = restarted.state.shortlist
        assert state.replayed is not None and state.replayed.applied == 1
        assert state.replayed.last_seq == logged.seq
        assert item not in recommended(c, user, k=50)
    recent = store.get_records(RECENT, [u]).records[0]
    assert recent["item_idx"].tolist().count(x) == 1
    col = {c: j for j, c in enumerate(store.get_rows("users", [u]).columns)}
    assert store.get_rows("users", [u]).values[0, col["units_all"]] == units[col["units_all"]] + 3
    # and once only: another start finds nothing to apply
    again = EventRecorder(Pipeline.from_config(lmdb_ws)).catch_up()
    assert again.applied == 0 and again.after == logged.seq
    assert store.get_records(RECENT, [u]).records[0]["item_idx"].tolist().count(x) == 1


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_batch_of_events_makes_a_server_error(lmdb_app, live, mode):
    """The fuzz of tests/service/test_fuzz.py over POST /v1/events, with the key (the package's
    workspace sets none: there every write is a 503)."""
    operation = schemathesis.openapi.from_asgi("/openapi.json", lmdb_app)[EVENTS]["POST"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES // 2,  # batches of up to 1,000 events: slow to generate
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        case.validate_response(case.call(headers=AUTH), checks=CHECKS)

    fuzz()


# -- Redis, across two processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_ws(ws, tmp_path_factory, redis_server: RedisServer) -> Workspace:
    """A copy of the workspace serving from Redis: the pipeline's feature versions materialized
    there, without the event groups (the service adds them to the version at start)."""
    url = f"{redis_server.url(2)}?prefix=events"
    folder = tmp_path_factory.mktemp("events-redis") / "ws"
    copy = copy_workspace(ws, folder, f'\n[online]\nurl = "{url}"\n')
    shutil.rmtree(copy.root / "online")
    versions = json.loads((copy.root / "models" / "pipeline.json").read_text())["features"]
    materialize_online(copy, url, groups=list(versions["versions"]), versions=versions["versions"])
    return copy


@pytest.fixture(scope="module", autouse=True)
def redis_served(request, tmp_path_factory) -> Iterator[Served | None]:
    """`shortlist serve` on the Redis copy, started with the module so that it loads while the
    LMDB tests run (None, and the Redis test skipped, without a redis-server)."""
    try:
        ws = request.getfixturevalue("redis_ws")
    except pytest.skip.Exception:
        yield None
        return
    log = tmp_path_factory.mktemp("serve-redis") / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shortlist.cli", "-q", "--workspace", str(ws.root), "serve",
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    server = Served(process, port, log)
    yield server
    server.stop()


def test_events_on_redis_reach_the_other_process(redis_served, request, ids):
    if redis_served is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    app = create_app(request.getfixturevalue("redis_ws"))
    with TestClient(app) as here, httpx.Client(base_url=redis_served.url, timeout=30) as there:
        redis_served.wait_ready()
        pipeline = app.state.shortlist.pipeline
        assert pipeline.online_.url.startswith("redis://")
        user = ids.buyers[4]
        item, neighbours = fresh_pair(pipeline, user)
        # a purchase posted to the other process: this one reflects it at its next request
        r = post(there, [purchase(user, item)])
        assert r.status_code == 200 and r.json()["applied"], r.text
        assert item not in recommended(here, user, k=50)
        u = np.array([pipeline.funnel_.catalog.user_idx(user)])
        cs = pipeline.funnel_.retrieval.candidates(u, live=pipeline.funnel_.signals(u))
        assert set(neighbours.tolist()) <= set(cs.items[0][cs.ranks["copurchase"][0] > 0].tolist())
        # a stock event posted here: the other process drops the item at its next request
        other = ids.buyers[5]
        top = recommended(there, other)[0]
        r = post(here, [{"type": "stock", "item_id": top, "units": 0}])
        assert r.status_code == 200 and r.json()["applied"], r.text
        assert top not in recommended(there, other, k=50)
        assert recommended(there, other) == recommended(here, other)  # one state, two processes
        assert r.json()["last_seq"] == 2  # one log for both: sequence numbers continue
    assert "Traceback" not in redis_served.logs()
