"""Ingest learns from the event log: its purchases join the interactions (quantities, prices and
timestamps kept, unknown buyers added as users), the manifest says up to which event, the store
is stale once a new purchase is logged, a log line the catalogue no longer matches is a bad row
naming its file and line, and a rebuilt pipeline's online version replays only what its data
lacks (no purchase counted twice). Real DuckDB, event log and LMDB online store; tiny data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from shortlist.cli import cli
from shortlist.data.events import EventLog
from shortlist.data.generator import generate
from shortlist.data.ingest import REJECTED_FILE, BadRowsError, ingest, is_current
from shortlist.data.offline import OfflineStore
from shortlist.features.online.live import GLOBAL_KEY, RECENT, SALES
from shortlist.pipeline import Pipeline
from shortlist.pipeline.build import train_pipeline
from shortlist.pipeline.events import EventRecorder
from shortlist.workspace import Workspace, open_workspace

# the cheapest pipeline that serves: no model to train, the event groups in LMDB
CONFIG = """
[ingest]
format = "hm"

[pipeline]
ranker = "none"
sources = [{ name = "repurchase", k = 20 }, { name = "trending", k = 20 }]
filters = []
"""
T1, T2 = "2020-09-23T10:15:00Z", "2020-09-23T18:00:00Z"  # the tiny data ends 2020-09-22


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("events-source")
    generate(folder, scale="tiny", seed=5)
    return folder


@pytest.fixture
def ws(tmp_path: Path, source: Path) -> Workspace:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "shortlist.toml").write_text(CONFIG)
    workspace = open_workspace(tmp_path / "ws")
    ingest(workspace, source)
    return workspace


def log_events(ws: Workspace, *events: dict) -> list[int]:
    """Append one batch to the workspace's event log (as the service does); its seqs."""
    log = EventLog.of(ws)
    with log.locked():
        return [e.seq for e in log.append(list(events))]


def purchase(user: str, item: str, when: str, **more) -> dict:
    return {"type": "purchase", "user_id": user, "item_id": item, "timestamp": when, **more}


def first_ids(ws: Workspace) -> tuple[list[str], list[str]]:
    store = OfflineStore(ws)
    users = [r[0] for r in store.sql("SELECT user_id FROM users ORDER BY user_idx").fetchall()]
    items = [r[0] for r in store.sql("SELECT item_id FROM items ORDER BY item_idx").fetchall()]
    return users[:3], items[:3]


def totals(ws: Workspace) -> tuple[int, int, int]:
    """Interaction rows, units, users."""
    store = OfflineStore(ws)
    rows, units = store.sql("SELECT count(*), sum(quantity) FROM interactions").fetchall()[0]
    return int(rows), int(units), int(store.sql("SELECT count(*) FROM users").fetchall()[0][0])


def test_the_logged_purchases_become_interactions(ws, source):
    m = OfflineStore(ws).manifest
    assert m.events_through == 0 and m.event_purchases == 0  # the log read: empty
    rows, units, n_users = totals(ws)
    merged = m.merged_duplicates
    (u0, u1, _), (i0, i1, i2) = first_ids(ws)
    seqs = log_events(
        ws,
        purchase(u0, i0, T1, price=0.05, quantity=3),
        {"type": "view", "user_id": u0, "item_id": i1, "timestamp": T1},
        purchase("log-only-user", i1, T2),  # a buyer the source never had
        {"type": "stock", "item_id": i2, "units": 0},
    )
    # the same purchase twice (same user, item, time, price): one row, the units summed,
    # as ingest merges identical source rows
    seqs += log_events(ws, purchase(u1, i2, T2, quantity=2), purchase(u1, i2, T2))
    assert not is_current(ws, source)  # new purchases: a build must re-ingest

    summary = ingest(ws, source)
    m = summary.manifest
    assert (m.events_through, m.event_purchases, m.event_units) == (seqs[-1], 4, 3 + 1 + 2 + 1)
    assert m.event_users == 1 and m.event_others == {"stock": 1, "view": 1}
    assert summary.rejections == [] and m.rejected == {}
    assert totals(ws) == (rows + 3, units + 7, n_users + 1)  # 3 rows: u0/i0, new/i1, u1/i2 x2
    assert m.merged_duplicates == merged + 1  # the two identical purchases
    store = OfflineStore(ws)
    got = store.sql(
        "SELECT u.user_id, i.item_id, strftime(t.timestamp, '%Y-%m-%dT%H:%M:%SZ'), t.price, "
        "t.channel, t.quantity FROM interactions t JOIN users u USING (user_idx) "
        "JOIN items i USING (item_idx) WHERE t.timestamp >= TIMESTAMP '2020-09-23' ORDER BY 3, 1"
    ).fetchall()
    assert got == [
        (u0, i0, T1, 0.05, None, 3),
        *sorted([("log-only-user", i1, T2, None, None, 1), (u1, i2, T2, None, None, 3)]),
    ]
    assert m.end == datetime(2020, 9, 23, 18)  # the data now ends with the log
    new = store.sql("SELECT * EXCLUDE (user_idx) FROM users WHERE user_id = 'log-only-user'")
    (row,) = new.fetchall()
    assert all(v is None for v in row[1:])  # attributes unknown
    ids = [r[0] for r in store.sql("SELECT user_id FROM users ORDER BY user_idx").fetchall()]
    assert ids == sorted(ids)  # dense ids still in external id order

    assert is_current(ws, source)
    log_events(ws, {"type": "click", "user_id": u0, "item_id": i1, "timestamp": T2})
    assert is_current(ws, source)  # views, clicks, stock: nothing to learn
    last = log_events(ws, purchase(u0, i1, T2))[-1]
    assert not is_current(ws, source)

    result = CliRunner().invoke(cli, ["-w", str(ws.root), "ingest", "--source", str(source)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as printed, whatever the terminal's width
    assert f"Event log: 5 purchases from the event log (through event #{last})" in said
    assert "1 new user" in said and "1 click" in said


def test_a_rebuilt_version_replays_only_what_the_data_lacks(ws, source):
    (u0, u1, _), (i0, i1, i2) = first_ids(ws)
    log_events(ws, purchase(u0, i0, T1, quantity=3), purchase(u1, i1, T2))
    ingest(ws, source)
    through = OfflineStore(ws).manifest.events_through
    trained = train_pipeline(ws)
    assert trained.cutoff == "2020-09-24"  # the midnight after the last logged purchase
    # logged after the ingest (as by a service while the build ran), dated before the new
    # cutoff: not in the data, so the new version must replay it
    (late,) = log_events(ws, purchase(u1, i2, "2020-09-23T20:00:00Z", quantity=4))

    pipeline = Pipeline.from_config(ws)
    caught = EventRecorder(pipeline).catch_up()
    assert (caught.after, caught.applied, caught.last_seq) == (None, 1, late) and late > through
    store, catalog = pipeline.online_, pipeline.funnel_.catalog
    x0, x1, x2 = (catalog.find_item(i) for i in (i0, i1, i2))
    sales = store.get_records(SALES, [GLOBAL_KEY]).records[0]
    assert dict(zip(sales["item_idx"].tolist(), sales["units"].tolist(), strict=True)) == {x2: 4}
    recent = store.get_records(RECENT, [catalog.find_user(u0), catalog.find_user(u1)]).records
    assert len(recent[0]) == 0  # u0's logged purchase is learnt, not replayed
    assert recent[1]["item_idx"].tolist() == [x2] and x1 not in recent[1]["item_idx"].tolist()
    again = EventRecorder(Pipeline.from_config(ws)).catch_up()
    assert (again.after, again.applied) == (late, 0)  # and once only


def test_a_logged_purchase_the_catalogue_lacks_is_a_bad_row(ws, source):
    (u0, _, _), (i0, _, _) = first_ids(ws)
    before = OfflineStore(ws).manifest
    log_events(ws, purchase(u0, i0, T1))
    log_events(
        ws,
        purchase(u0, "0999999999", T1),  # an item the source's catalogue no longer has
        purchase(u0, i0, "2199-01-01T00:00:00Z"),  # a client clock far ahead
    )
    (path,) = EventLog.of(ws).files()  # one file per UTC day of receipt: today's
    day = f"events/{path.name}"
    lines = (ws.root / day).read_text().splitlines()
    bad = next(n for n, line in enumerate(lines, 1) if "0999999999" in line)
    assert bad == 2

    with pytest.raises(BadRowsError) as failed:
        ingest(ws, source)
    message = str(failed.value)
    assert "2 bad row(s) in the source and the event log" in message
    assert f"{day}:2 column 'item_id': logged purchase of an unknown item" in message
    assert "(not in articles.csv): '0999999999'" in message
    assert f"{day}:3 column 'timestamp': logged purchase dated more than 1 day after" in message
    assert OfflineStore(ws).manifest == before  # the previous store untouched

    summary = ingest(ws, source, on_bad_rows="skip")
    m = summary.manifest
    assert (m.events_through, m.event_purchases, m.event_units) == (3, 1, 1)
    assert [(r.table, r.file, r.location, r.column) for r in summary.rejections] == [
        ("events", day, "line 2", "item_id"),
        ("events", day, "line 3", "timestamp"),
    ]
    kept = pq.read_table(ws.offline / REJECTED_FILE).to_pylist()
    assert [(r["table"], r["file"], r["location"]) for r in kept] == [
        ("events", day, "line 2"),
        ("events", day, "line 3"),
    ]
    assert m.rejected["logged purchase of an unknown item (not in articles.csv)"] == 1
    assert is_current(ws, source)  # rejected, not forgotten: no re-ingest for them
