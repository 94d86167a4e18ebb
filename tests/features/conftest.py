"""Feature test data (a hand-made set with window edges, a random set) and shared backends."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from shortlist.data.ingest import ingest
from shortlist.data.offline import OfflineStore
from shortlist.data.schema import Manifest
from shortlist.features.engine import OfflineTables, connect, java_available
from shortlist.workspace import Workspace, open_workspace
from tests.conftest import write

CUTOFF = datetime(2020, 3, 1)

TINY_ITEMS = """
item_id,colour,section,weight,title
A,red,men,1.5,Soft cotton jersey top with straps
B,blue,men,2,Slim denim trousers in blue
C,red,women,3.25,Wool coat with a wide collar
D,green,women,1,Knitted hat with a bobble
"""
TINY_USERS = """
user_id,age,region
u1,25,north
u2,,south
u3,61,north
u4,19,east
u5,45,south
"""
# Each row sits on or next to a window edge relative to CUTOFF (2020-03-01 00:00).
TINY_INTERACTIONS = """
user_id,item_id,timestamp,price,channel,quantity
u1,A,2020-03-01T00:00:00,10,web,1
u1,A,2020-02-29T23:59:59,10,web,1
u2,A,2020-02-29T00:00:00,12,store,2
u5,A,2020-02-29T00:00:00,8,web,1
u3,A,2020-02-28T23:59:59,,web,1
u1,B,2020-02-29T23:59:59,21,web,1
u3,B,2020-02-29T23:59:59,25,web,3
u1,B,2020-02-23T00:00:00,20,store,1
u2,B,2020-02-22T23:59:59,22,,1
u3,B,2020-02-16T00:00:00,18,web,1
u5,C,2020-02-02T00:00:00,30,web,1
u5,C,2020-02-01T23:59:59,31,store,1
u1,C,2019-06-01T12:00:00,35,web,3
u2,A,2020-03-05T10:00:00,99,web,5
"""

RANDOM_START = datetime(2020, 1, 1)
RANDOM_CUTOFF = datetime(2020, 2, 20)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pyspark: needs PySpark and Java (skipped without Java)")
    # PySpark 4 warns on each pandas conversion under pandas 3; the columns used here convert fine.
    # Library noise under pandas 3 / DuckDB 2 (PySpark's and Ibis' own calls), not our code's.
    for message in (
        "PySpark does not yet fully support pandas",
        "The copy keyword is deprecated",
        "The 'future.infer_string' option is deprecated",
        r"fetch_arrow_table\(\) is deprecated",
    ):
        config.addinivalue_line("filterwarnings", f"ignore:{message}")


requires_spark = pytest.mark.skipif(
    not java_available(), reason="PySpark tests need Java: set JAVA_HOME or put java on the PATH"
)


def tiny_source(folder: Path, interactions: str = TINY_INTERACTIONS) -> Path:
    write(folder, "items.csv", TINY_ITEMS)
    write(folder, "users.csv", TINY_USERS)
    write(folder, "interactions.csv", interactions)
    return folder


def random_rows(seed: int = 7, n: int = 300) -> list[dict[str, object]]:
    """Interactions over 60 days at whole seconds, with missing prices and channels."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ts = RANDOM_START + timedelta(seconds=rng.randrange(60 * 86_400))
        rows.append(
            {
                "user_id": f"u{rng.randrange(15)}",
                "item_id": f"i{min(rng.randrange(14), rng.randrange(14))}",  # skewed popularity
                "timestamp": ts.isoformat(),
                "price": "" if rng.random() < 0.1 else f"{rng.uniform(1, 50):.2f}",
                "channel": rng.choice(["web", "store", "App Store", ""]),
                "quantity": rng.choice([1, 1, 1, 2, 3]),
            }
        )
    return rows


def random_source(folder: Path, rows: list[dict[str, object]] | None = None) -> Path:
    rng = random.Random(3)
    items = ["item_id,colour,shape,size"] + [
        f"i{i},{rng.choice(['red', 'blue', 'green', ''])},{rng.choice('abcde')},{i % 4 + 1}"
        for i in range(14)
    ]
    users = ["user_id,age,club"] + [
        f"u{u},{'' if u % 5 == 0 else rng.randrange(15, 80)},{rng.choice(['gold', 'none'])}"
        for u in range(16)  # u15 never buys
    ]
    header = "user_id,item_id,timestamp,price,channel,quantity"
    inter = [header] + [
        ",".join(str(r[c]) for c in header.split(",")) for r in rows or random_rows()
    ]
    # the regions business-rule table: every user but u3 and u7, in 3 regions
    regions = ["user_id,region"] + [
        f"u{u},{['north', 'south', 'east'][u % 3]}" for u in range(16) if u not in (3, 7)
    ]
    write(folder, "items.csv", "\n".join(items))
    write(folder, "users.csv", "\n".join(users))
    write(folder, "interactions.csv", "\n".join(inter))
    write(folder, "user_regions.csv", "\n".join(regions))
    return folder


def ingested(root: Path, source: Path) -> Workspace:
    ws = open_workspace(root)
    ingest(ws, source, format="generic")
    return ws


def frames(ws: Workspace) -> tuple[Manifest, pd.DataFrame, pd.DataFrame, pa.Table]:
    """The offline store's tables in memory: items and users as pandas, interactions as Arrow."""
    store = OfflineStore(ws)
    return (
        store.manifest,
        store.items().df(),
        store.users().df(),
        store.interactions().to_arrow_table(),
    )


def in_memory(con, ws: Workspace, interactions: Any = None) -> OfflineTables:
    manifest, items, users, inter = frames(ws)
    chosen = inter if interactions is None else interactions
    regions = OfflineStore(ws).rule_table("user_regions")
    regions = regions.to_arrow_table() if regions is not None else None
    return OfflineTables.from_frames(con, manifest, items, users, chosen, regions)


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Read-only for tests: materializing tests make their own workspace."""
    root = tmp_path_factory.mktemp("tiny")
    return ingested(root / "ws", tiny_source(root / "src"))


@pytest.fixture(scope="session")
def random_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("random")
    return ingested(root / "ws", random_source(root / "src"))


@pytest.fixture
def tiny_fresh(tmp_path: Path) -> Workspace:
    return ingested(tmp_path / "ws", tiny_source(tmp_path / "src"))


@pytest.fixture(scope="session")
def duck():
    con = connect("duckdb")
    yield con
    con.disconnect()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole run (JVM start-up costs seconds)."""
    if not java_available():
        pytest.skip("PySpark tests need Java: set JAVA_HOME or put java on the PATH")
    pytest.importorskip("pyspark", reason="pyspark not installed")
    con = connect("pyspark")
    yield con
    con.disconnect()  # stops the session
