"""The page-cache read a serving load makes (`resources.prefetch`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

import numpy as np
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
def test_prefetch_reads_every_file_under_the_folders(folders):
    assert resources.prefetch(folders, 0.5) == (3, 12002, None)


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


def resident(path) -> float:
    """The share of the file's pages in the page cache (mincore(2) on a mapping of it)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    view = np.frombuffer(mapped, np.uint8)
    pages = -(-size // mmap.PAGESIZE)
    flags = (ctypes.c_ubyte * pages)()
    rc = libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), flags)
    del view
    mapped.close()
    assert rc == 0, os.strerror(ctypes.get_errno())
    return sum(f & 1 for f in flags) / pages


@pytest.mark.skipif(
    not hasattr(os, "posix_fadvise") or not ctypes.util.find_library("c"),
    reason="needs posix_fadvise and mincore (Linux)",
)
def test_prefetch_leaves_the_files_in_the_page_cache(tmp_path):
    path = tmp_path / "state" / "a.npy"
    path.parent.mkdir()
    with path.open("wb") as f:
        f.write(os.urandom(4 << 20))
        f.flush()
        os.fsync(f.fileno())  # clean pages: the kernel may drop them
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    if resident(path) > 0.5:
        pytest.skip("this file system keeps the pages whatever is asked (tmpfs?)")
    assert resources.prefetch([tmp_path], 0.5) == (1, 4 << 20, None)
    assert resident(path) == 1.0
