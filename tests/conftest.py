"""Shared fixtures: workspaces in tmp folders and the real H&M sample (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortlist.workspace import Workspace, open_workspace

HM_SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hm-sample"


@pytest.fixture
def hm_sample() -> Path:
    if not (HM_SAMPLE / "transactions_train.csv").is_file():
        pytest.skip("../shared/data/hm-sample not present")
    return HM_SAMPLE.resolve()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return open_workspace(tmp_path / "ws")


def write(folder: Path, name: str, text: str) -> Path:
    """Write a small source file (dedented lines) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return path
