"""The online store's contract, run against both backends: a real LMDB folder and a real
redis-server (tests/conftest.py starts one); then `shortlist materialize` end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from shortlist.config import OnlineSettings
from shortlist.errors import RequestError, StoreUnavailable, WorkspaceError
from shortlist.features.online import (
    GroupLayout,
    OnlineStore,
    Ragged,
    RecordsBatch,
    RowBatch,
    VersionChanged,
    open_online_store,
)
from shortlist.features.online.materialize import materialize_online
from shortlist.features.store import FeatureStore
from shortlist.workspace import Workspace
from tests.conftest import RedisServer, start_redis_server
from tests.features.conftest import ingested, random_source

ROWS = GroupLayout(
    name="items", kind="row", key="item_idx", columns=["price", "units", "colour"], codes=["colour"]
)
HIST = GroupLayout(
    name="history",
    kind="records",
    key="user_idx",
    columns=["length"],
    fields=[("item", "<i4"), ("day", "<f4")],
)
PAIRS = GroupLayout(
    name="pairs",
    kind="records",
    key="user_idx",
    fields=[("code", "|i1"), ("small", "<i2"), ("big", "<i8"), ("score", "<f8")],
    codes=["code"],
)
NAMED = GroupLayout(name="by_name", kind="row", key="item_id", key_type="str", columns=["x"])
LAYOUTS = [ROWS, HIST, PAIRS, NAMED]


@dataclass
class Backend:
    name: str
    url: str
    ws: Workspace
    settings: OnlineSettings

    def open(self) -> OnlineStore:
        return open_online_store(self.url, self.ws, self.settings)

    def leftovers(self, store: OnlineStore, version: int) -> int:
        """Traces of a version that should be gone: folders (LMDB) or keys (Redis)."""
        if self.name == "lmdb":
            root = self.ws.root / "online"
            return sum(
                1 for p in root.iterdir() if p.name in (f"v{version}", f".v{version}.partial")
            )
        return store.key_count(version)  # type: ignore[attr-defined]


SETTINGS = OnlineSettings(batch_size=100, redis_timeout=2.0, redis_retries=0)


@pytest.fixture(params=["lmdb", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    ws = Workspace(tmp_path / "ws")
    if request.param == "lmdb":
        return Backend("lmdb", "lmdb", ws, SETTINGS)
    server: RedisServer = request.getfixturevalue("redis_server")
    url = f"{server.url(0)}?prefix=t{uuid.uuid4().hex[:12]}"  # each test its own keys
    return Backend("redis", url, ws, SETTINGS)


@pytest.fixture
def store(backend: Backend):
    s = backend.open()
    yield s
    s.close()


def rows_of(keys: np.ndarray, tag: float) -> np.ndarray:
    return np.stack([keys * 0.5 + tag, keys.astype(np.float64) ** 2, keys % 3], axis=1)


def history_of(key: int, tag: float) -> np.ndarray:
    n = key % 4  # some users have no records at all
    return np.array([(key * 10 + i, tag + i / 3) for i in range(n)], HIST.dtype)


def write_version(store: OnlineStore, tag: float, n: int = 50) -> int:
    keys = np.arange(n)
    with store.begin(LAYOUTS, {"tag": tag}) as w:
        w.put_many("items", keys, rows_of(keys, tag))
        w.put_dictionary("items", "colour", ["red", "green", "blue"])
        arrays = [history_of(k, tag) for k in range(n)]
        head = np.array([[len(a)] for a in arrays], np.float32)
        w.put_many("history", keys, Ragged.from_arrays(arrays, HIST.dtype, head))
        w.put_many(
            "pairs",
            [3, 1],
            [
                [(1, -300, 2**40, 0.1), (-1, 7, -1, math.pi)],
                np.array([(5, 2, 3, 4.0)], PAIRS.dtype),
            ],
        )
        w.put_many("by_name", ["a", "b"], [[1.0], [2.0]])
    return w.version


# -- values ------------------------------------------------------------------------------------


def test_rows_round_trip_with_missing_and_duplicate_keys(store: OnlineStore):
    write_version(store, 1.0)
    keys = np.array([7, 999, 0, 7, 49])
    batch = store.get_rows("items", keys)
    assert isinstance(batch, RowBatch) and batch.columns == ["price", "units", "colour"]
    assert batch.values.dtype == np.float32 and batch.values.shape == (5, 3)
    assert batch.found.tolist() == [True, False, True, True, True]
    assert np.isnan(batch.values[1]).all()
    expected = rows_of(keys[batch.found], 1.0).astype(np.float32)
    assert np.array_equal(batch.values[batch.found], expected)  # exact to float32
    assert store.dictionary("items", "colour") == ["red", "green", "blue"]


def test_records_round_trip_with_head(store: OnlineStore):
    write_version(store, 2.0)
    batch = store.get_records("history", [5, 4, 1000, 3])
    assert isinstance(batch, RecordsBatch)
    assert batch.found.tolist() == [True, True, False, True]
    for got, key in zip(batch.records, [5, 4, 1000, 3], strict=True):
        assert got.dtype == HIST.dtype
        if key < 50:
            assert np.array_equal(got, history_of(key, 2.0))
        else:
            assert len(got) == 0
    assert len(batch.records[1]) == 0  # user 4 has an empty list: found, no records
    assert batch.head[:, 0].tolist()[:2] == [1.0, 0.0] and np.isnan(batch.head[2, 0])

    pairs = store.get_records("pairs", [1, 3, 2])
    assert pairs.found.tolist() == [True, True, False]
    assert pairs.records[0].tolist() == [(5, 2, 3, 4.0)]
    assert pairs.records[1].tolist() == [(1, -300, 2**40, 0.1), (-1, 7, -1, math.pi)]
    assert pairs.head.shape == (3, 0)


def test_string_keys_empty_batches_and_errors(store: OnlineStore):
    write_version(store, 3.0)
    named = store.get_rows("by_name", ["b", "zz", "a"])
    assert named.found.tolist() == [True, False, True]
    assert named.values[[0, 2], 0].tolist() == [2.0, 1.0]

    empty = store.get_rows("items", [])
    assert empty.values.shape == (0, 3) and empty.found.shape == (0,)
    assert store.get_records("history", np.array([], np.int64)).records == []

    with pytest.raises(RequestError, match="unknown online group 'nope'.*items"):
        store.get("nope", [1])
    with pytest.raises(RequestError, match="must not be negative"):
        store.get("items", [-1])
    with pytest.raises(RequestError, match="holds records, not rows"):
        store.get_rows("history", [1])


def test_put_many_last_duplicate_wins_and_shapes_are_checked(store: OnlineStore):
    with store.begin([ROWS]) as w:
        w.put_many("items", [4, 2, 4], [[1, 1, 1], [2, 2, 2], [3, 3, 3]])
        with pytest.raises(RequestError, match=r"\(2, 3\) values"):
            w.put_many("items", [1, 2], [[1, 2], [3, 4]])
        with pytest.raises(RequestError, match="unknown online group"):
            w.put_many("history", [1], [[1, 2, 3]])
    assert store.get_rows("items", [4, 2]).values[:, 0].tolist() == [3.0, 2.0]
    assert store.current().stats["items"].entities == 2


def test_nothing_committed_yet(store: OnlineStore):
    assert store.current() is None
    with pytest.raises(WorkspaceError, match="run `shortlist materialize`"):
        store.get_rows("items", [1])


# -- versions ----------------------------------------------------------------------------------


def test_commit_switches_and_removes_the_old_version(backend: Backend, store: OnlineStore):
    v1 = write_version(store, 1.0)
    reader = backend.open()
    assert reader.get_rows("items", [2]).values[0, 0] == 2.0
    assert reader.current().info == {"tag": 1.0}
    v2 = write_version(store, 10.0)
    assert v2 > v1
    batch = reader.get_rows("items", [2])
    assert batch.version == v2 and batch.values[0, 0] == 11.0
    assert backend.leftovers(store, v1) == 0
    if backend.name == "lmdb":
        assert sorted(p.name for p in (backend.ws.root / "online").iterdir()) == [
            ".writer.lock",
            "CURRENT",
            f"v{v2}",
        ]
    else:
        assert store.versions_present() == [v2]  # type: ignore[attr-defined]
    reader.close()


@pytest.mark.parametrize("how", ["abort", "exception"])
def test_abort_keeps_the_current_version(backend: Backend, store: OnlineStore, how: str):
    v1 = write_version(store, 1.0)
    keys = np.arange(50)
    if how == "abort":
        w = store.begin(LAYOUTS)
        w.put_many("items", keys, rows_of(keys, 99.0))
        w.abort()
    else:
        with pytest.raises(ZeroDivisionError), store.begin(LAYOUTS) as w:
            w.put_many("items", keys, rows_of(keys, 99.0))
            _ = 1 / 0
    assert w.state == "aborted"
    assert backend.leftovers(store, w.version) == 0
    reader = backend.open()
    batch = reader.get_rows("items", keys)
    assert batch.version == v1 and batch.found.all()
    assert np.array_equal(batch.values, rows_of(keys, 1.0).astype(np.float32))
    with pytest.raises(WorkspaceError, match="already aborted"):
        w.put_many("items", [1], [[1, 2, 3]])
    reader.close()


def test_a_reader_never_sees_a_partial_version(backend: Backend, store: OnlineStore):
    v1 = write_version(store, 1.0)
    reader = backend.open()
    keys = np.arange(50)
    assert reader.get_rows("items", keys).version == v1
    w = store.begin(LAYOUTS)
    w.put_many("items", keys[:25], rows_of(keys[:25], 7.0))  # half of a group, half the groups
    batch = reader.get_rows("items", keys)
    assert batch.version == v1 and batch.found.all()
    assert np.array_equal(batch.values, rows_of(keys, 1.0).astype(np.float32))
    w.put_many("items", keys[25:], rows_of(keys[25:], 7.0))
    w.commit()
    batch = reader.get_rows("items", keys)  # the old version's files/keys are gone by now
    assert batch.version == w.version and batch.found.all()
    assert np.array_equal(batch.values, rows_of(keys, 7.0).astype(np.float32))
    assert reader.get_records("history", [1]).found.tolist() == [False]  # not written in v2
    reader.close()


def test_a_reader_finds_groups_that_a_new_version_adds(backend: Backend, store: OnlineStore):
    with store.begin([ROWS]) as w:
        w.put_many("items", [1], [[1, 2, 3]])
    reader = backend.open()
    assert reader.groups() == ["items"]
    write_version(store, 4.0)
    assert reader.get_records("history", [5]).found.tolist() == [True]
    reader.close()


def test_lmdb_allows_one_writer_at_a_time(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    first, second = open_online_store("lmdb", ws), open_online_store("lmdb", ws)
    writer = first.begin([ROWS])
    with pytest.raises(WorkspaceError, match="another process is writing"):
        second.begin([ROWS])
    writer.abort()
    second.begin([ROWS]).abort()  # free again


N_ENTITIES = 2000


def _versioned_write(store: OnlineStore, tag: float) -> int:
    """Every entity's row says which version wrote it; written in 20 batches."""
    keys = np.arange(N_ENTITIES)
    with store.begin([ROWS]) as w:
        for part in np.array_split(keys, 20):
            w.put_many("items", part, np.stack([np.full(len(part), tag), part, part % 3], 1))
    return w.version


def _check_batch(batch: RowBatch, keys: np.ndarray, tags: dict[int, float]) -> str | None:
    """None if the batch is one whole committed version, else what is wrong."""
    if not batch.found.all():
        return f"v{batch.version}: {int((~batch.found).sum())} keys missing"
    if not np.array_equal(batch.values[:, 1], keys):
        return f"v{batch.version}: wrong entities"
    written = set(batch.values[:, 0].tolist())
    if len(written) != 1:
        return f"v{batch.version}: values of several versions {sorted(written)}"
    if batch.version in tags and written != {tags[batch.version]}:
        return f"v{batch.version}: values {written} of another version"
    return None


def test_a_concurrent_reader_sees_only_whole_versions(backend: Backend, store: OnlineStore):
    tags = {_versioned_write(store, 0.0): 0.0}
    reader = backend.open()
    keys = np.random.default_rng(0).choice(N_ENTITIES, 300, replace=False)
    keys[-1] = N_ENTITIES - 1  # written in the last batch of each version
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            batch = reader.get_rows("items", keys)
            seen.append(batch.version)
            if (problem := _check_batch(batch, keys, tags)) is not None:
                problems.append(problem)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for tag in (1.0, 2.0, 3.0, 4.0):
            tags[_versioned_write(store, tag)] = tag
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not problems, problems[:5]
    assert set(seen) <= set(tags) and seen == sorted(seen)
    assert len(set(seen)) >= 2, "the reader did not overlap the switches"
    reader.close()


def test_lmdb_reader_in_another_process_during_switches(tmp_path: Path):
    backend = Backend("lmdb", "lmdb", Workspace(tmp_path / "ws"), SETTINGS)
    store = backend.open()
    tags = {_versioned_write(store, 0.0): 0.0}
    stop = tmp_path / "stop"
    code = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import numpy as np
        from shortlist.features.online import open_online_store
        from shortlist.workspace import Workspace
        store = open_online_store("lmdb", Workspace(Path({str(backend.ws.root)!r})))
        keys = np.arange(0, {N_ENTITIES}, 7)
        seen, bad = [], []
        print("ready", flush=True)
        stop = Path({str(stop)!r})
        while not (stop.exists() and seen and seen[-1] == int(stop.read_text() or -1)):
            b = store.get_rows("items", keys)
            seen.append(b.version)
            ok = b.found.all() and len(set(b.values[:, 0].tolist())) == 1
            ok = ok and np.array_equal(b.values[:, 1], keys)
            if not ok:
                bad.append(b.version)
        print(json.dumps({{"seen": sorted(set(seen)), "n": len(seen), "bad": bad}}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for tag in (1.0, 2.0, 3.0):
            tags[_versioned_write(store, tag)] = tag
        tmp = tmp_path / "stop.tmp"
        tmp.write_text(str(max(tags)))  # read until this version shows up
        tmp.rename(stop)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bad"] == []
    assert set(result["seen"]) <= set(tags) and max(tags) in result["seen"]
    assert len(result["seen"]) >= 2, "the reader did not overlap the switches"
    store.close()


def test_lmdb_map_grows_when_full(tmp_path: Path):
    settings = OnlineSettings(lmdb_map_size_mb=1, batch_size=100)
    store = open_online_store("lmdb", Workspace(tmp_path / "ws"), settings)
    wide = GroupLayout(name="wide", kind="row", key="k", columns=[f"c{i}" for i in range(256)])
    keys = np.arange(4000)  # 4 MB of values in a 1 MB map
    with store.begin([wide]) as w:
        for part in np.array_split(keys, 8):
            w.put_many("wide", part, np.repeat(part[:, None], 256, axis=1))
    reader = open_online_store("lmdb", Workspace(tmp_path / "ws"), settings)
    batch = reader.get_rows("wide", [0, 3999, 4000])
    assert batch.found.tolist() == [True, True, False]
    assert batch.values[1].tolist() == [3999.0] * 256


# -- in place ----------------------------------------------------------------------------------


def test_update_writes_into_the_current_version(backend: Backend, store: OnlineStore):
    v1 = write_version(store, 1.0)
    reader = backend.open()
    assert reader.get_rows("items", [2, 3]).values[:, 0].tolist() == [2.0, 2.5]
    # rows: (n, width), the last value of a repeated key wins; records: one array per key
    store.update("items", [3, 60, 3], [[7, 7, 7], [8, 8, 8], [9, 9, 9]])
    store.update_many(
        {
            "history": ([5], Ragged.from_arrays([[(1, 0.5)]], HIST.dtype, np.array([[1.0]]))),
            "pairs": ([2], [np.array([(1, 2, 3, 4.0)], PAIRS.dtype)]),
        },
        version=v1,
    )
    batch = reader.get_rows("items", [2, 3, 60])
    assert batch.version == v1 and batch.found.tolist() == [True, True, True]
    assert batch.values[:, 0].tolist() == [2.0, 9.0, 8.0]  # others untouched, a new key added
    hist = reader.get_records("history", [5, 6])
    assert hist.records[0].tolist() == [(1, 0.5)] and hist.head[0, 0] == 1.0
    assert np.array_equal(hist.records[1], history_of(6, 1.0))
    assert reader.get_records("pairs", [2]).records[0].tolist() == [(1, 2, 3, 4.0)]
    assert reader.current().version == v1 and store.current().info == {"tag": 1.0}

    with pytest.raises(RequestError, match=r"\(1, 3\) values"):
        store.update("items", [1], [[1, 2]])
    with pytest.raises(RequestError, match="unknown online group"):
        store.update("nope", [1], [[1, 2, 3]])
    reader.close()


def test_update_of_a_replaced_version_writes_nothing(backend: Backend, store: OnlineStore):
    v1 = write_version(store, 1.0)
    v2 = write_version(store, 2.0)
    with pytest.raises(VersionChanged, match=f"from version {v1}"):
        store.update("items", [2], [[5, 5, 5]], version=v1)
    assert store.get_rows("items", [2]).values[0, 0] == 3.0  # v2's own value
    store.update("items", [2], [[5, 5, 5]], version=v2)
    # a new version starts from what its writer wrote: the update is not carried over
    write_version(store, 3.0)
    assert store.get_rows("items", [2]).values[0, 0] == 4.0


def test_add_groups_in_place(backend: Backend, store: OnlineStore):
    extra = GroupLayout(name="recent", kind="records", key="user_idx", fields=[("item", "<i4")])
    first = store.add_groups([extra], {"by": "events"})  # nothing yet: a version of its own
    assert list(first.groups) == ["recent"] and first.info == {"by": "events"}

    v = write_version(store, 1.0)
    reader = backend.open()
    assert reader.get_rows("items", [1]).version == v  # the reader holds v's metadata
    meta = store.add_groups([extra, ROWS])  # present groups are left as they are
    assert meta.version == v and sorted(meta.groups) == sorted(
        [*(g.name for g in LAYOUTS), "recent"]
    )
    assert store.add_groups([extra]).groups.keys() == meta.groups.keys()  # a no-op now
    assert reader.get_records("recent", [1]).found.tolist() == [False]  # found in place, empty
    store.update("recent", [1], [[(42,)]])
    assert reader.get_records("recent", [1]).records[0].tolist() == [(42,)]
    assert reader.get_rows("items", [1]).values[0, 0] == 1.5  # the rest as written

    other = GroupLayout(name="recent", kind="row", key="user_idx", columns=["x"])
    with pytest.raises(WorkspaceError, match="packed another way"):
        store.add_groups([other])
    reader.close()


def test_updates_are_whole_to_a_concurrent_reader(backend: Backend, store: OnlineStore):
    """A reader sees each in-place update of two groups whole: both or neither."""
    keys = np.arange(200)
    with store.begin([ROWS, HIST]) as w:
        w.put_many("items", keys, np.zeros((200, 3)))
        w.put_many("history", keys, Ragged.from_arrays([[]] * 200, HIST.dtype, np.zeros((200, 1))))
    reader = backend.open()
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            rows = reader.get_rows("items", keys).values[:, 0]
            if len(set(rows.tolist())) != 1:
                problems.append(f"rows of several updates: {sorted(set(rows.tolist()))}")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for tag in range(1, 30):
            head = np.full((200, 1), tag, np.float32)
            store.update_many(
                {
                    "items": (keys, np.full((200, 3), tag)),
                    "history": (keys, Ragged.from_arrays([[(tag, 0.0)]] * 200, HIST.dtype, head)),
                }
            )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not problems, problems[:3]
    assert reader.get_records("history", [7]).records[0].tolist() == [(29, 0.0)]
    reader.close()


def test_lmdb_update_from_another_process_is_read_here(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    store = open_online_store("lmdb", ws, SETTINGS)
    v = write_version(store, 1.0)
    assert store.get_rows("items", [4]).values[0, 0] == 3.0
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from shortlist.features.online import GroupLayout, open_online_store
        from shortlist.workspace import Workspace
        store = open_online_store("lmdb", Workspace(Path({str(ws.root)!r})))
        store.add_groups([GroupLayout(name="stock", kind="row", key="item_idx", columns=["units"])])
        store.update_many({{"items": ([4], [[9, 9, 9]]), "stock": ([4], [[0]])}}, version={v})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert store.get_rows("items", [4]).values[0, 0] == 9.0
    assert store.get_rows("stock", [4, 5]).found.tolist() == [True, False]
    store.close()


def test_a_store_opened_before_a_fork_reads_and_writes_in_the_child(backend: Backend, store):
    """`shortlist serve --workers N` forks its workers from the process that opened the store:
    a child reads and writes through it (LMDB forbids using a parent's environment: the child
    opens its own; redis-py opens its own connections), and the parent reads what it wrote."""
    v = write_version(store, 1.0)
    assert store.get_rows("items", [4]).values[0, 0] == 3.0
    parent_env = store._refresh().env if backend.name == "lmdb" else None  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if every check holds
        code = 1
        try:
            ok = store.get_rows("items", [4]).values[0, 0] == 3.0
            if parent_env is not None:
                ok = ok and store._refresh().env is not parent_env  # type: ignore[attr-defined]
            store.update_many({"items": ([4], [[9.0, 9.0, 9.0]])}, version=v)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get_rows("items", [4]).values[0, 0] == 9.0


# -- Redis going away ----------------------------------------------------------------------------


def test_redis_killed_during_a_write(tmp_path: Path):
    """A server with an append-only file: what was acknowledged survives the kill, so after the
    restart we can see which version the pointer names, and what the failed writer left."""
    folder = tmp_path / "redis"
    persistent = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")
    server = start_redis_server(folder, *persistent)
    url = server.url(0)
    ws = Workspace(tmp_path / "ws")
    store = open_online_store(url, ws, SETTINGS)
    try:
        v1 = write_version(store, 1.0)
        writer = store.begin(LAYOUTS)
        keys = np.arange(50)
        writer.put_many("items", keys[:20], rows_of(keys[:20], 5.0))
        server.stop()
        with pytest.raises(StoreUnavailable) as err:
            writer.put_many("items", keys[20:], rows_of(keys[20:], 5.0))
        message = str(err.value)
        assert url in message and "redis-server is running" in message
        assert f"127.0.0.1:{server.port}" in message
        with pytest.raises(StoreUnavailable):
            writer.commit()
        with pytest.raises(StoreUnavailable, match="cannot reach"):
            store.get_rows("items", keys)

        server = start_redis_server(folder, *persistent, port=server.port)
        reader = open_online_store(url, ws, SETTINGS)
        batch = reader.get_rows("items", keys)
        assert batch.version == v1 and batch.found.all()
        assert np.array_equal(batch.values, rows_of(keys, 1.0).astype(np.float32))
        assert reader.key_count(writer.version) > 0  # the partial version's keys, never served
        nxt = reader.begin(LAYOUTS)  # a new writer removes them first
        assert reader.key_count(writer.version) == 0
        nxt.abort()
        assert reader.get_rows("items", [3]).version == v1
    finally:
        server.stop()


# -- shortlist materialize ---------------------------------------------------------------------


def shortlist(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shortlist.cli", *args], capture_output=True, text=True
    )


def _same(stored: float, value: object) -> bool:
    if value is None:
        return math.isnan(stored)
    return stored == np.float32(value)


def assert_serves_latest_features(store: OnlineStore, ws: Workspace) -> None:
    """Every group's online values equal the feature store's latest Parquet values."""
    features = FeatureStore(ws)
    assert sorted(store.groups()) == sorted(features.manifest().groups)
    for group in store.groups():
        layout = store.layout(group)
        rows = features.read(group).to_pylist()
        dicts = {c: store.dictionary(group, c) for c in layout.codes}
        assert layout.source["feature_version"] == features.get(group).version

        def decode(column: str, code: float, dicts=dicts) -> object:
            if column not in dicts:
                return code
            return None if code < 0 or math.isnan(code) else dicts[column][int(code)]

        by_key: dict[int, list[dict]] = {}
        for r in rows:
            by_key.setdefault(r[layout.key], []).append(r)
        keys = sorted(by_key)
        batch = store.get(group, keys + [10**6])
        assert batch.found.tolist() == [True] * len(keys) + [False]
        for i, key in enumerate(keys):
            if isinstance(batch, RowBatch):
                (r,) = by_key[key]
                for j, c in enumerate(layout.columns):
                    got = batch.values[i, j]
                    if c in dicts:
                        assert decode(c, got) == r[c], (group, key, c)
                    else:
                        assert _same(got, r[c]), (group, key, c, got, r[c])
                continue
            recs = batch.records[i]
            lists = [c for c, _ in layout.fields if isinstance(by_key[key][0][c], list)]
            if lists:  # one row per entity: lists zipped into records
                (r,) = by_key[key]
                for c in lists:
                    want = np.array(r[c], dtype=recs.dtype[c])
                    assert np.array_equal(recs[c], want), (group, key, c)
                for j, c in enumerate(layout.columns):
                    assert _same(batch.head[i, j], r[c])
                continue
            got = sorted(
                tuple(decode(c, rec[c]) if c in dicts else rec[c].item() for c, _ in layout.fields)
                for rec in recs
            )
            want = sorted(
                tuple(
                    r[c]
                    if c in dicts or np.dtype(t).kind == "i"
                    else float(np.array(r[c], dtype=t))
                    for c, t in layout.fields
                )
                for r in by_key[key]
            )
            assert got == want, (group, key)


def test_materialize_end_to_end(tmp_path: Path, redis_server: RedisServer):
    ws = ingested(tmp_path / "ws", random_source(tmp_path / "src"))

    first = shortlist("-w", str(ws.root), "materialize", "--online", "lmdb")
    assert first.returncode == 0, first.stderr
    assert "computed first" in first.stdout and "Online version 1" in first.stdout
    for group in ("items", "users", "user_category", "user_items", "history"):
        assert group in first.stdout
    with open_online_store("lmdb", ws) as lmdb_store:
        assert {g: lmdb_store.layout(g).kind for g in lmdb_store.groups()} == {
            "items": "row",
            "item_segments": "records",
            "users": "row",
            "user_category": "records",
            "user_items": "records",
            "history": "records",
        }
        assert_serves_latest_features(lmdb_store, ws)

    url = redis_server.url(1)
    second = shortlist("-w", str(ws.root), "materialize", "--online", url)
    assert second.returncode == 0, second.stderr
    assert "computed first" not in second.stdout and url in second.stdout
    with open_online_store(url, ws) as redis_store:
        assert_serves_latest_features(redis_store, ws)

    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    third = shortlist("-w", str(ws.root), "materialize", "--online", dead)
    assert third.returncode == 1
    assert "Traceback" not in third.stderr
    assert f"error: cannot reach the online store's Redis at {dead}" in third.stderr


def test_materialize_at_a_cutoff_computes_what_is_missing(tmp_path: Path):
    ws = ingested(tmp_path / "ws", random_source(tmp_path / "src"))
    summary = materialize_online(ws, "lmdb", cutoff="2020-02-10T00:00:00+01:00")
    assert [v.cutoff for v in summary.computed] == [datetime(2020, 2, 9, 23)] * 6
    assert {g.group for g in summary.groups} == {
        "items",
        "item_segments",
        "users",
        "user_category",
        "user_items",
        "history",
    }
    with open_online_store("lmdb", ws) as store:
        assert store.layout("users").source["cutoff"] == "2020-02-09T23:00:00"
        assert_serves_latest_features(store, ws)
    again = materialize_online(ws, "lmdb", cutoff="2020-02-09T23:00")  # there now
    assert again.computed == [] and again.version == summary.version + 1


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
