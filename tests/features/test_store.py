"""The feature store: versions, manifest, read-back, snapshot series; materialize and its CLI."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from click.testing import CliRunner

from shortlist import columns as C
from shortlist.cli import features as cli_features
from shortlist.cli.features import features as features_command
from shortlist.errors import ConfigError, WorkspaceError
from shortlist.features import groups
from shortlist.features.base import FEATURE_TIME
from shortlist.features.engine import ENGINES, load_tables
from shortlist.features.materialize import materialize
from shortlist.features.store import FeatureStore
from shortlist.workspace import open_workspace
from tests.features.conftest import CUTOFF, requires_spark
from tests.features.reference import assert_same, keyed

EARLIER = datetime(2020, 2, 20)


def test_versions_manifest_and_read_back(tiny_fresh, duck):
    first = materialize(tiny_fresh, EARLIER, con=duck)
    second = materialize(tiny_fresh, CUTOFF, con=duck)
    store = FeatureStore(tiny_fresh)
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert list(manifest["groups"]) == list(groups.GROUPS)
    src = load_tables(tiny_fresh, duck)
    for name in groups.GROUPS:
        listed = manifest["groups"][name]
        assert [v["version"] for v in listed] == [1, 2]
        assert [v["cutoff"] for v in listed] == [EARLIER.isoformat(), CUTOFF.isoformat()]
        assert {v["engine"] for v in listed} == {"duckdb"}
        latest = store.read(name)
        assert listed[1]["rows"] == latest.num_rows
        keys = listed[1]["keys"]
        assert list(listed[1]["features"]) == [
            c for c in latest.column_names if c not in (*keys, FEATURE_TIME)
        ]
        assert (tiny_fresh.root / "features" / name / "v2").is_dir()
        # what was written is what the group computes
        frame = groups.build(name, src, CUTOFF)
        assert_same(keyed(latest, keys), keyed(duck.to_pyarrow(frame.table), keys))
        # the files have the types the expression declares (no HUGEINT-as-double surprises)
        declared = frame.table.schema().to_pyarrow()
        assert [(f.name, f.type) for f in latest.schema] == [(f.name, f.type) for f in declared]
        assert set(store.read(name, 1).column(FEATURE_TIME).to_pylist()) == {EARLIER}
    assert [v.version for v in first.written] == [1] * len(groups.GROUPS)
    assert [v.version for v in second.written] == [2] * len(groups.GROUPS)
    assert second.folder == store.root


def test_snapshot_series(tiny_fresh, duck):
    materialize(tiny_fresh, EARLIER, con=duck)
    materialize(tiny_fresh, CUTOFF, con=duck)
    materialize(tiny_fresh, EARLIER, groups=["users"], con=duck)  # v3 replaces v1's cutoff
    store = FeatureStore(tiny_fresh)
    assert [v.version for v in store.snapshot_versions("users")] == [3, 2]
    assert [v.version for v in store.snapshot_versions("items")] == [1, 2]
    series = store.read_snapshots("users")
    assert series.num_rows == 2 * 5  # five users per snapshot
    assert sorted(set(series.column(FEATURE_TIME).to_pylist())) == [EARLIER, CUTOFF]
    lazy = duck.to_pyarrow(store.table(duck, "users"))
    keys = [C.USER_IDX, FEATURE_TIME]
    assert_same(keyed(lazy, keys), keyed(series, keys))
    only = duck.to_pyarrow(store.table(duck, "users", versions=[2]))
    assert set(only.column(FEATURE_TIME).to_pylist()) == {CUTOFF}


@pytest.mark.pyspark
@requires_spark
def test_snapshot_series_on_pyspark(tiny_fresh, duck, spark):
    materialize(tiny_fresh, EARLIER, groups=["history"], con=duck)
    materialize(tiny_fresh, CUTOFF, groups=["history"], con=duck)
    store = FeatureStore(tiny_fresh)
    got = spark.to_pyarrow(store.table(spark, "history"))
    keys = [C.USER_IDX, FEATURE_TIME]
    assert_same(keyed(got, keys), keyed(store.read_snapshots("history"), keys))


def test_errors(tiny_fresh, duck, tmp_path):
    store = FeatureStore(tiny_fresh)
    with pytest.raises(WorkspaceError, match="shortlist features"):
        store.read("items")
    materialize(tiny_fresh, CUTOFF, groups=["items"], con=duck)
    with pytest.raises(WorkspaceError, match="no version 5"):
        store.read("items", 5)
    with pytest.raises(ConfigError, match="engine"):
        materialize(tiny_fresh, CUTOFF, engine="polars")
    with pytest.raises(ConfigError, match="cutoff"):
        materialize(tiny_fresh, "next tuesday", con=duck)
    with pytest.raises(ConfigError, match="unknown feature group"):
        materialize(tiny_fresh, CUTOFF, groups=["item"], con=duck)
    with pytest.raises(WorkspaceError, match="ingest"):
        materialize(open_workspace(tmp_path / "empty"), CUTOFF, con=duck)


def test_cutoffs_and_leftover_folders(tiny_fresh, duck):
    s = materialize(tiny_fresh, groups=["history"], con=duck)
    assert s.cutoff == datetime(2020, 3, 6)  # midnight after the last interaction (03-05 10:00)
    s = materialize(tiny_fresh, "2020-03-01T01:00:00+01:00", groups=["history"], con=duck)
    assert s.cutoff == CUTOFF
    (tiny_fresh.root / "features" / "history" / "v7").mkdir()  # left by a crash: never reused
    s = materialize(tiny_fresh, CUTOFF, groups=["history"], con=duck)
    assert s.written[0].version == 8
    assert [v.version for v in FeatureStore(tiny_fresh).versions("history")] == [1, 2, 8]


def test_cli_command(tiny_fresh):
    result = CliRunner().invoke(
        features_command,
        ["--cutoff", "2020-03-01", "--group", "items", "--group", "history"],
        obj=tiny_fresh.root,
    )
    assert result.exit_code == 0, result.output
    assert "items" in result.output and "history" in result.output
    store = FeatureStore(tiny_fresh)
    assert store.get("items").cutoff == CUTOFF
    assert store.read("history").num_rows == 4  # u4 never bought
    assert "users" not in store.manifest().groups


def test_cli_choices_match_the_library():
    assert cli_features.ENGINE_CHOICES == ENGINES
    assert cli_features.GROUP_CHOICES == tuple(groups.GROUPS)
