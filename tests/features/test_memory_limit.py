"""[features] settings reach the engine: a memory cap too small fails with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

from shortlist.config import load_settings
from shortlist.data.generator import generate
from shortlist.features.base import FeatureOptions


def test_too_small_a_memory_limit_names_the_setting_and_the_group(tmp_path):
    generate(tmp_path / "src", scale="tiny", seed=1)
    run = [sys.executable, "-m", "shortlist.cli", "--workspace", str(tmp_path / "ws")]
    ingest = subprocess.run(
        [*run, "ingest", "--source", str(tmp_path / "src"), "--format", "hm"],
        capture_output=True,
        text=True,
    )
    assert ingest.returncode == 0, ingest.stderr
    result = subprocess.run(
        [*run, "features"],
        capture_output=True,
        text=True,
        env={**os.environ, "SHORTLIST_FEATURES_MEMORY_LIMIT": "1MB"},
    )
    assert result.returncode == 1
    assert "features.memory_limit: out of memory computing the 'items' features" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_settings_section_can_be_set_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTLIST_FEATURES_HISTORY_LENGTH", "7")
    monkeypatch.setenv("SHORTLIST_RETRIEVAL_MIN_STEPS", "9")
    settings = load_settings(tmp_path)
    assert settings.features.history_length == 7
    assert FeatureOptions.from_settings(settings.features).history_length == 7
    assert settings.retrieval.min_steps == 9


def test_features_cover_the_rankers_attributes_unless_asked_for_every_one(tmp_path):
    """`shortlist features` computes user_category for the item attributes the ranker reads
    (what the pipeline computes; every eligible one does not fit 8 GB at full H&M scale), and
    for every eligible attribute with --every-attribute."""
    from shortlist.data.arrays import load_dataset
    from shortlist.data.offline import OfflineStore
    from shortlist.features.affinity import eligible_attributes
    from shortlist.features.engine import OfflineTables, connect
    from shortlist.features.store import FeatureStore
    from shortlist.ranking.features import ranker_category_attributes
    from shortlist.workspace import open_workspace

    generate(tmp_path / "src", scale="tiny", seed=1)
    run = [sys.executable, "-m", "shortlist.cli", "--workspace", str(tmp_path / "ws")]
    ingest = subprocess.run(
        [*run, "ingest", "--source", str(tmp_path / "src"), "--format", "hm"],
        capture_output=True,
        text=True,
    )
    assert ingest.returncode == 0, ingest.stderr
    ws = open_workspace(tmp_path / "ws")
    data = load_dataset(OfflineStore(ws))
    tables = OfflineTables.from_dataset(connect("duckdb"), data)
    options = FeatureOptions.from_settings(ws.settings().features)
    every = set(eligible_attributes(tables, options))
    r = ws.settings().ranking
    ranker = set(
        ranker_category_attributes(
            tables,
            data,
            max_values=r.max_category_values,
            affinity_attributes=r.affinity_attributes,
            options=options,
        )
    )
    assert ranker and ranker < every  # fewer, and the item_group role among them
    assert "product_code" in ranker

    def covered() -> set[str]:
        table = FeatureStore(ws).read("user_category")
        return set(table.column("attribute").to_pylist())

    for flags, want in (([], ranker), (["--every-attribute"], every)):
        result = subprocess.run(
            [*run, "features", "--group", "user_category", *flags], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert covered() == want
