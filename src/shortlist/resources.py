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
LMDB, FAISS) into the page cache when it loads them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
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


def spawned_pool(workers: int, **kwargs: Any) -> Any:
    """A `ProcessPoolExecutor` of `workers` fresh processes (spawned: none of this process's
    thread pools, connections or locks are inherited), for the work `side_by_side` allows."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), **kwargs)


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
    Freed but kept, it stays counted as the process's own: at full H&M scale about 120 MB
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
    files = [p for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file()]
    size = 0
    for p in files:
        try:
            size += p.stat().st_size
        except OSError:  # removed meanwhile (an old version)
            continue
    if share <= 0:
        return len(files), size, "off ([service] prefetch = 0)"
    if not hasattr(os, "posix_fadvise"):
        return len(files), size, "this platform has no posix_fadvise"
    free = available_memory()
    if free is not None and size > share * free:
        return (
            len(files),
            size,
            (
                f"{size / 2**20:,.0f} MiB is more than {share:g} of the available memory "
                f"({free / 2**20:,.0f} MiB)"
            ),
        )
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
