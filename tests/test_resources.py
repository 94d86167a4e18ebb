"""The page-cache prefetch a serving load asks for (`resources.prefetch`)."""

from __future__ import annotations

import os

import pytest

from shortlist import resources


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "models" / "state").mkdir(parents=True)
    (tmp_path / "models" / "state" / "a.npy").write_bytes(b"x" * 5000)
    (tmp_path / "models" / "pipeline.json").write_text("{}")
    (tmp_path / "online").mkdir()
    (tmp_path / "online" / "data.mdb").write_bytes(b"y" * 7000)
    return [tmp_path / "models", tmp_path / "online", tmp_path / "index"]  # index/ is missing


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_prefetch_asks_for_every_file_under_the_folders(folders):
    assert resources.prefetch(folders, 0.5) == (3, 12002, None)
    assert resources.prefetch(folders, 0.5, wait=True) == (3, 12002, None)


def test_prefetch_is_off_at_zero(folders):
    files, size, why = resources.prefetch(folders, 0)
    assert (files, size) == (3, 12002) and why == "off ([service] prefetch = 0)"


def test_prefetch_skips_files_larger_than_the_share_of_available_memory(folders):
    free = resources.available_memory()
    if free is None:
        pytest.skip("/proc/meminfo does not say the available memory")
    share = 12002 / free / 2  # the files are twice the share
    files, size, why = resources.prefetch(folders, share)
    assert (files, size) == (3, 12002)
    assert why is not None and why.startswith("0 MiB is more than") and "available memory" in why
