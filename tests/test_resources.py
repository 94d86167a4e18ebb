"""The page-cache read a serving load makes (`resources.prefetch`), and its lock; the spawned
processes of `resources.spawned_pool`."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import signal
import subprocess
import sys
import time

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


needs_page_cache_calls = pytest.mark.skipif(
    not hasattr(os, "posix_fadvise") or not ctypes.util.find_library("c"),
    reason="needs posix_fadvise and mincore (Linux)",
)


def written(path, size: int):
    """A file of `size` random bytes at `path`, on the disk (clean pages: the kernel may drop
    them)."""
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    return path


def drop(path) -> None:
    """Asks the kernel to drop the file's pages from the page cache (POSIX_FADV_DONTNEED)."""
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def dropped_or_skip(path) -> None:
    """`drop`, then skips the test where the file system kept the pages (tmpfs)."""
    drop(path)
    if resident(path) > 0.5:
        pytest.skip("this file system keeps the pages whatever is asked (tmpfs?)")


@needs_page_cache_calls
def test_prefetch_leaves_the_files_in_the_page_cache(tmp_path):
    path = written(tmp_path / "state" / "a.npy", 4 << 20)
    dropped_or_skip(path)
    assert resources.prefetch([tmp_path], 0.5) == (1, 4 << 20, None)
    assert resident(path) == 1.0


def locked_kib() -> int:
    """This process's locked memory (VmLck of /proc/self/status), KiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    pytest.skip("/proc/self/status does not say the locked memory")


def lock_or_skip(folders, share=0.5) -> resources.LockedFiles:
    locked, why = resources.lock_in_memory(folders, share)
    if why is not None and why.startswith("mlock failed"):
        # a process without CAP_IPC_LOCK and a small `ulimit -l`: refused, said, none kept
        assert "ulimit -l" in why and locked.files == 0 and locked.bytes == 0
        pytest.skip(f"this process may not lock that much: {why}")
    assert why is None
    return locked


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_lock_in_memory_locks_every_file_until_released(folders):
    before = locked_kib()
    locked = lock_or_skip(folders)
    assert (locked.files, locked.bytes) == (3, 12002)
    # each file whole, in pages: 5000 B, 2 B and 7000 B files take 2 + 1 + 2 pages of 4 KiB
    pages = sum(-(-n // mmap.PAGESIZE) for n in (5000, 2, 7000))
    assert locked_kib() - before == pages * mmap.PAGESIZE // 1024
    locked.release()
    assert locked_kib() == before and (locked.files, locked.bytes) == (0, 0)
    locked.release()  # twice: nothing left to release


def test_lock_in_memory_follows_the_prefetch_share(folders):
    before = locked_kib() if os.path.exists("/proc/self/status") else 0
    locked, why = resources.lock_in_memory(folders, 0)
    assert why == "off ([service] prefetch = 0)" and locked.files == 0
    free = resources.available_memory()
    if free is not None:
        locked, why = resources.lock_in_memory(folders, 12002 / free / 2)
        assert why is not None and "available memory" in why and locked.files == 0
    if os.path.exists("/proc/self/status"):
        assert locked_kib() == before


@needs_page_cache_calls
def test_locked_pages_stay_in_memory_when_the_kernel_is_told_to_drop_them(tmp_path):
    path = written(tmp_path / "online" / "data.mdb", 4 << 20)
    dropped_or_skip(path)
    locked = lock_or_skip([tmp_path])
    assert resident(path) == 1.0  # locking read them in
    drop(path)
    assert resident(path) == 1.0  # and the kernel kept them
    locked.release()
    drop(path)
    assert resident(path) < 0.5


# A parent that starts one worker through `spawned_pool`, has it run os.getpid's task and then
# a task that would sleep an hour, prints the worker's pid and waits.
PARENT = """
import os, sys, time
from shortlist import resources
if __name__ == "__main__":
    pool = resources.spawned_pool(1, initializer=resources.set_threads, initargs=(1,))
    pid = pool.submit(os.getpid).result()
    pool.submit(time.sleep, 3600)
    print(pid, flush=True)
    time.sleep(3600)
"""


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_spawned_worker_ends_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    try:
        assert _running(worker)
        time.sleep(1.0)  # the worker is inside its hour-long task now
        assert _running(worker)
        parent.send_signal(signal.SIGKILL)  # no clean-up of any kind in the parent
        parent.wait()
        # it ends at once; this bound is not a speed limit, only how long a failure waits
        deadline = time.monotonic() + 120
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(worker), "the worker outlived its parent"
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
