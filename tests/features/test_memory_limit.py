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
