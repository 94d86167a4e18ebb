"""Thread pools, sized in one place: `[resources] threads` of shortlist.toml.

Every engine here keeps a pool: PyTorch (the two-tower), FAISS (the index), LightGBM (the
ranker), `implicit` (ALS), BLAS (numpy and scipy) and DuckDB (ingest, features). Left alone,
each starts one thread per core, and the OpenMP ones spin while they wait for work. Next to
another busy process, threads that spin take the cores from the threads that work: a training
that takes seconds alone can take minutes. So:

* OpenMP threads sleep instead of spinning when they wait (`OMP_WAIT_POLICY=PASSIVE`, set when
  `shortlist` is imported, before any engine loads, unless the environment already says);
* `configure(settings)` sizes every pool to `[resources] threads` (0: the cores this process
  may use), once per process; the CLI and the API's entry points call it.

Memory: `memory_share` sizes DuckDB's limit; `prefetch` reads the files a server maps (arrays,
LMDB, FAISS) into the page cache when it loads them, and `lock_in_memory` keeps them there.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shortlist.errors import ShortlistError, WorkspaceError

_configured: int | None = None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def thread_count(requested: int = 0) -> int:
    """`requested` threads, or (0) the configured count, or the available cores."""
    return requested or _configured or available_cores()


def configure(settings: Any = None) -> int:
    """Size the thread pools of every engine to `settings.resources.threads` (0: the available
    cores). Engines already loaded are resized now; the others read the environment when they
    load. Returns the thread count."""
    wanted = getattr(getattr(settings, "resources", None), "threads", 0) or available_cores()
    return set_threads(wanted)


def set_threads(wanted: int) -> int:
    """Size the thread pools of every engine to `wanted` threads (see `configure`)."""
    global _configured
    if wanted == _configured:
        return wanted
    _configured = wanted
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(wanted)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(wanted)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(wanted)
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(wanted)  # BLAS and OpenMP libraries loaded so far, until exit
    return wanted


SIDE_BY_SIDE_ROWS = 5_000_000  # interactions up to which work runs in processes side by side


def side_by_side(interactions: int) -> bool:
    """Whether independent steps (evaluation windows; the search index next to the pipeline's
    training) may run in processes side by side, each holding its own copy of the data:
    on data up to SIDE_BY_SIDE_ROWS interactions (a process peaks near 2.3 GB on hm-sample's
    12 windows, 4 GB at medium scale), on a machine with more than one core. A window's or a
    build's training keeps about 1.2 of 2 cores busy, so a second process fills the rest."""
    return interactions <= SIDE_BY_SIDE_ROWS and available_cores() > 1


def spawned_pool(
    workers: int,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Any:
    """A `ProcessPoolExecutor` of `workers` fresh processes (spawned: none of this process's
    thread pools, connections or locks are inherited), for the work `side_by_side` allows.

    Each process ends as soon as this one does, however it ends: a killed `evaluate` or
    `build` leaves no process behind computing for nobody (each holds its own copy of the
    data, a GB or more)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(initializer, initargs),
    )


def _start_worker(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """In a spawned process, first: a thread that ends the process when its parent ends. The
    parent's end of the pipe the process was started through closes only then (the parent
    holds it open while it runs; the kernel closes it however the parent dies, SIGKILL
    included), which `parent_process().sentinel` waits for."""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is not None:

        def watch() -> None:
            wait([parent.sentinel])
            os._exit(1)  # no clean-up: the results have no one to go to

        threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def process_died(what: str, instead: str) -> ShortlistError:
    """The error for a spawned process that died (`BrokenProcessPool`), naming both causes:
    memory, or a calling script without a main guard (a spawned process imports it again)."""
    return WorkspaceError(
        f"{what} died: out of memory ({instead}), or started from a script whose top level "
        'has no `if __name__ == "__main__":` guard (a spawned process imports the script again)'
    )


def release_unused_memory() -> None:
    """Hand back to the system the memory a load used on the way and freed: Arrow's pool
    (DuckDB's results and pandas' strings live there) and glibc's heap (`malloc_trim`).
    Freed but kept, it stays counted as the process's own: at full H&M scale about 110 MB
    of each serving process after `Pipeline.load`."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_share(fraction: float) -> str:
    """`fraction` of this machine's physical memory, as DuckDB writes a memory limit ("6GB")."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(1.0, total * fraction / 1024**3):.1f}GB"


def available_memory() -> int | None:
    """Bytes of memory the kernel says can be taken without swapping (MemAvailable), or None
    where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _files_under(folders: Iterable[Path]) -> tuple[list[Path], int]:
    """The files under `folders` and their total size (a file removed meanwhile: left out)."""
    files, size = [], 0
    for p in (p for folder in folders if folder.is_dir() for p in folder.rglob("*")):
        try:
            if p.is_file():
                size += p.stat().st_size
                files.append(p)
        except OSError:  # removed meanwhile (an old version)
            continue
    return files, size


def _too_big(size: int, share: float) -> str | None:
    """Why `size` bytes should not be held in memory under `[service] prefetch` = `share`."""
    if share <= 0:
        return "off ([service] prefetch = 0)"
    free = available_memory()
    if free is not None and size > share * free:
        return (
            f"{size / 2**20:,.0f} MiB is more than {share:g} of the available memory "
            f"({free / 2**20:,.0f} MiB)"
        )
    return None


def prefetch(folders: Iterable[Path], share: float) -> tuple[int, int, str | None]:
    """Reads every file under `folders` into the page cache: the memory-mapped files a server
    reads (arrays, LMDB, FAISS) are then in memory before the requests that touch them, instead
    of each first touch waiting on the disk. The kernel is asked for all of them first
    (`posix_fadvise(WILLNEED)`), then each is read through once, so they are cached when this
    returns (at the disk's speed: about 450 MiB/s here). Nothing is read when the files are
    more than `share` of the available memory (they would push out each other), when `share`
    is 0, or where the platform has no posix_fadvise.

    Returns (files, bytes, why nothing was read: None when they were).
    """
    files, size = _files_under(folders)
    skipped = _too_big(size, share)
    if skipped is None and not hasattr(os, "posix_fadvise"):
        skipped = "this platform has no posix_fadvise"
    if skipped is not None:
        return len(files), size, skipped
    for p in files:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
    buffer = bytearray(1 << 22)
    for p in files:
        try:
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass
        except OSError:  # removed meanwhile (an old version)
            continue
    return len(files), size, None


class LockedFiles:
    """Files mapped read-only and locked in memory (`mlock`): the kernel keeps their pages
    resident, so no request waits on the disk for a page that was reclaimed while unused
    (under memory pressure, or on a host that pages idle memory out: on this machine a
    reclaim daemon did, and requests for users not asked about for a minute waited on the
    disk, up to 0.7 s). The pages are the page cache's, shared with every process mapping
    the files; `release` (or the object's end) unlocks them."""

    def __init__(self) -> None:
        self._maps: list[Any] = []
        self.files, self.bytes = 0, 0

    def _add(self, mapped: Any) -> None:
        self._maps.append(mapped)
        self.files, self.bytes = self.files + 1, self.bytes + len(mapped)

    def release(self) -> None:
        maps, self._maps = self._maps, []
        self.files, self.bytes = 0, 0
        for mapped in maps:
            with contextlib.suppress(BufferError, ValueError):
                mapped.close()  # the unmapping unlocks

    def __del__(self) -> None:
        self.release()


def lock_in_memory(folders: Iterable[Path], share: float) -> tuple[LockedFiles, str | None]:
    """Maps every file under `folders` and locks it in memory (see LockedFiles). Nothing is
    locked, as for `prefetch`, when the files are more than `share` of the available memory
    or `share` is 0; nor where the platform has no `mlock`, or when one fails (the process
    may lock less: `ulimit -l`, or the CAP_IPC_LOCK capability): what was locked is then
    released.

    Returns (the locks, why nothing is locked: None when every file is).
    """
    import ctypes
    import mmap

    import numpy as np

    locked = LockedFiles()
    files, size = _files_under(folders)
    skipped = _too_big(size, share)
    if skipped is not None:
        return locked, skipped
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mlock = libc.mlock
    except (OSError, AttributeError):
        return locked, "this platform has no mlock"
    mlock.argtypes, mlock.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_int
    for p in files:
        try:
            with open(p, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    continue
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # removed meanwhile (an old version), or emptied
            continue
        address = np.frombuffer(mapped, np.uint8).ctypes.data  # the view ends here
        if mlock(address, len(mapped)) != 0:
            why = os.strerror(ctypes.get_errno())
            mapped.close()
            locked.release()
            return (
                locked,
                f"mlock failed on {p.name} ({why}): raise `ulimit -l`, or give the process "
                "CAP_IPC_LOCK",
            )
        locked._add(mapped)
    return locked, None
