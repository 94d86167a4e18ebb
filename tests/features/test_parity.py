"""The same feature definitions on DuckDB and PySpark give the same tables (and the same store)."""

from __future__ import annotations

import shutil

import pytest

from shortlist.features import groups
from shortlist.features.materialize import compute_groups, materialize
from shortlist.features.store import FeatureStore
from shortlist.workspace import open_workspace
from tests.features.conftest import CUTOFF, RANDOM_CUTOFF, in_memory, requires_spark
from tests.features.reference import assert_same, keyed

pytestmark = [pytest.mark.pyspark, requires_spark]


@pytest.mark.parametrize("data", ["tiny", "random"])
def test_duckdb_and_pyspark_write_the_same_features(request, tmp_path, duck, spark, data):
    source = request.getfixturevalue(f"{data}_ws")
    ws = open_workspace(tmp_path / "ws")
    shutil.copytree(source.offline, ws.offline)
    cutoff = CUTOFF if data == "tiny" else RANDOM_CUTOFF
    on_duck = materialize(ws, cutoff, con=duck)
    on_spark = materialize(ws, cutoff, con=spark)
    assert [v.engine for v in on_spark.written] == ["pyspark"] * len(groups.GROUPS)
    store = FeatureStore(ws)
    for d, s in zip(on_duck.written, on_spark.written, strict=True):
        name = d.path.split("/")[0]
        assert (d.version, s.version) == (1, 2)
        assert d.rows == s.rows > 0
        assert d.features == s.features
        a, b = store.read(name, 1), store.read(name, 2)
        # same columns and types in the files (nullability aside), same values
        assert [(f.name, f.type) for f in a.schema] == [(f.name, f.type) for f in b.schema]
        assert_same(keyed(b, d.keys), keyed(a, d.keys))


def test_in_memory_frames_on_pyspark_match_duckdb(tiny_ws, duck, spark):
    on_duck = compute_groups(in_memory(duck, tiny_ws), CUTOFF)
    on_spark = compute_groups(in_memory(spark, tiny_ws), CUTOFF)
    for name, table in on_duck.items():
        got = on_spark[name]
        assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in table.schema]
        assert_same(keyed(got, groups.KEYS[name]), keyed(table, groups.KEYS[name]))
