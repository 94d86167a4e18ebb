"""The embedded online store: one LMDB environment per version under <workspace>/online.

    online/
      CURRENT          {"version": 7}: the pointer, replaced with os.replace (atomic)
      v7/data.mdb      the current version: one named sub-database per group, 8-byte
                       big-endian keys (entity indices, sorted, so writes append), packed values;
                       `__meta__` holds the version's JSON metadata and the dictionaries
      v7/lock.mdb      LMDB's lock table: the snapshots readers hold, the in-place write lock
      .v8.partial/     a version being written (readers never open it)
      .writer.lock     flock held by the one writer of new versions

A new version is written by one writer (`begin`: flock, no lock table), then committed: the
environment is synced, the folder renamed into place, CURRENT replaced, and the previous folder
deleted; a process that still has it open keeps its memory map (the files live on until it lets
go) and moves to the new version on its next read, because every read first stats CURRENT
(about a microsecond).

A committed version may still change **in place** (`update_many`, `add_groups`: real-time
events). So every process opens it with LMDB's lock table: a reader registers the snapshot it
reads, and an in-place write never reuses a page some reader still reads; in-place writers take
LMDB's write lock, one at a time across processes. In-place writes are not fsync'd (the event
log is the durable record; LMDB keeps the environment consistent, and a machine crash loses at
most the last writes, which the log replays). A process opens each version **once** however many
`LmdbStore` objects read it (LMDB forbids opening one environment twice in a process: closing
the second handle would drop the locks of the first), writable, with room for in-place writes to
grow: the file's size plus `[online] lmdb_map_size_mb`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from shortlist.config import OnlineSettings
from shortlist.errors import ConfigError, StoreUnavailable, WorkspaceError
from shortlist.features.online.base import (
    GroupLayout,
    GroupStats,
    OnlineStore,
    OnlineVersion,
    OnlineWriter,
    VersionChanged,
    normalize_keys,
)

POINTER = "CURRENT"
LOCK = ".writer.lock"
META_DB = b"__meta__"
META_KEY = b"version"
_VERSION_DIR = re.compile(r"^v(\d+)$")
_PARTIAL_DIR = re.compile(r"^\.v(\d+)\.partial$")
_OPEN_RETRIES = 5
MAX_GROUPS = 1000  # named sub-databases a reader can open
MAX_READERS = 1024  # read transactions open at once on one version, all processes together


def _key_bytes(keys: np.ndarray | list[str]) -> list[bytes]:
    """8-byte big-endian keys (byte order = numeric order), or UTF-8 for str keys."""
    if isinstance(keys, list):
        return [k.encode() for k in keys]
    return [k.to_bytes(8, "big") for k in keys.tolist()]


def _dict_key(group: str, column: str) -> bytes:
    return f"dict/{group}/{column}".encode()


class _Opened:
    """One committed version, open for reads and in-place writes; one per process and version
    (`_shared`), whatever number of stores read it."""

    def __init__(self, path: Path, headroom: int):
        size = os.path.getsize(path / "data.mdb")
        self.path = path
        self.env = lmdb.open(
            str(path),
            subdir=True,
            create=False,
            readonly=False,
            lock=True,
            max_dbs=MAX_GROUPS + 1,
            max_readers=MAX_READERS,
            map_size=size + headroom,
            sync=False,  # in-place writes: the event log is the durable record
            metasync=False,
        )
        self.env.reader_check()  # slots of readers that died without ending their snapshot
        self.lock = threading.RLock()  # LMDB: one process opens sub-databases one at a time
        self.raw = b""
        self.dbs: dict[str, Any] = {}
        # (a handle opened in a transaction lives on after it commits; py-lmdb opens one in
        # a short write transaction of its own, LMDB's write lock held for microseconds)
        self.meta_db = self.env.open_db(META_DB, create=False)
        self.meta: OnlineVersion = self.reload()

    def reload(self) -> OnlineVersion:
        """The metadata as stored now (groups added in place since are opened)."""
        with self.lock:
            with self.env.begin(db=self.meta_db) as txn:
                raw = txn.get(META_KEY)
                raw = None if raw is None else bytes(raw)
            if raw is None:
                raise WorkspaceError(f"online version at {self.path} has no metadata")
            if raw == self.raw:
                return self.meta
            meta = OnlineVersion.model_validate_json(raw)
            dbs = dict(self.dbs)
            for name in meta.groups:
                if name not in dbs:
                    dbs[name] = self.env.open_db(name.encode(), create=False)
            # the handles first: a reader that sees the new metadata finds its groups
            self.dbs = dbs
            self.meta, self.raw = meta, raw
            return meta


_SHARED: weakref.WeakValueDictionary[tuple[str, int], _Opened] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _shared(path: Path, headroom: int) -> _Opened:
    """The process's one handle on the version in `path` (a folder of that name deleted and
    written again is another version: the data file's inode tells them apart)."""
    key = (str(path.resolve()), os.stat(path / "data.mdb").st_ino, os.getpid())
    with _SHARED_LOCK:
        opened = _SHARED.get(key)
        if opened is None:
            opened = _Opened(path, headroom)
            _SHARED[key] = opened
        return opened


class LmdbStore(OnlineStore):
    def __init__(self, root: Path, settings: OnlineSettings | None = None):
        self.root = Path(root)
        self._pointer_path = str(self.root / POINTER)  # stat'ed at every read: a str is faster
        self.url = f"lmdb ({self.root})"
        self.settings = settings or OnlineSettings()
        self._opened: _Opened | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    # -- reading -------------------------------------------------------------------------------

    def _pointer(self) -> int | None:
        try:
            return int(json.loads((self.root / POINTER).read_text())["version"])
        except FileNotFoundError:
            return None

    def _refresh(self) -> _Opened | None:
        """The current version, reopened when CURRENT changed since the last look."""
        try:
            st = os.stat(self._pointer_path)
        except FileNotFoundError:
            self._opened, self._stamp = None, None
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._pid != os.getpid():  # a forked child: LMDB forbids the parent's environment
            self._opened, self._stamp, self._pid = None, None, os.getpid()
        opened = self._opened
        if stamp == self._stamp and opened is not None:
            return opened
        headroom = self.settings.lmdb_map_size_mb << 20
        last: Exception | None = None
        with self._lock:
            for _ in range(_OPEN_RETRIES):
                version = self._pointer()
                if version is None:
                    self._opened, self._stamp = None, None
                    return None
                if self._opened is not None and self._opened.meta.version == version:
                    self._stamp = stamp
                    return self._opened
                try:
                    # The old environment is not closed here: a thread may still be reading
                    # it. It closes when the last reference goes.
                    self._opened = _shared(self.root / f"v{version}", headroom)
                    self._stamp = stamp
                    return self._opened
                except (lmdb.Error, FileNotFoundError) as e:
                    # Replaced and deleted between reading CURRENT and opening it: look again.
                    last = e
                    st = os.stat(self.root / POINTER)
                    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        raise StoreUnavailable(
            f"the online store {self.url} changed version {_OPEN_RETRIES} times while opening "
            "it, or its current version's folder is missing or not writable (readers keep "
            f"LMDB's lock table in it): check who writes to it ({last})"
        )

    def current(self) -> OnlineVersion | None:
        opened = self._refresh()
        return None if opened is None else opened.meta

    def reload(self) -> OnlineVersion | None:
        opened = self._refresh()
        return None if opened is None else opened.reload()

    def _opened_with(self, group: str) -> _Opened:
        """The current version, its metadata read again if it lacks `group` (another process
        may have added it in place)."""
        opened = self._refresh()
        if opened is None:
            self._require()  # raises the "run shortlist materialize" error
            raise AssertionError  # unreachable
        if group not in opened.meta.groups:
            opened.reload()
        return opened

    def _fetch(self, group: str, keys: Any) -> tuple[OnlineVersion, GroupLayout, list[Any]]:
        opened = self._opened_with(group)
        meta = opened.meta
        layout = meta.layout(group)
        kb = _key_bytes(normalize_keys(layout, keys))
        if not kb:
            return meta, layout, []
        with opened.env.begin(db=opened.dbs[group]) as txn:
            get = txn.get
            raw = [get(k) for k in kb]
        return meta, layout, raw

    def dictionary(self, group: str, column: str) -> list[str]:
        opened = self._opened_with(group)
        if column not in opened.meta.layout(group).codes:
            raise WorkspaceError(f"group {group!r} has no coded column {column!r}")
        with opened.env.begin(db=opened.meta_db) as txn:
            raw = txn.get(_dict_key(group, column))
        return [] if raw is None else json.loads(bytes(raw))

    def close(self) -> None:
        with self._lock:
            self._opened, self._stamp = None, None

    # -- in place ------------------------------------------------------------------------------

    def _current_for(self, meta: OnlineVersion) -> _Opened:
        opened = self._refresh()
        if opened is None or opened.meta.version != meta.version:
            now = None if opened is None else opened.meta.version
            raise VersionChanged(
                f"the online store {self.url} moved from version {meta.version} to {now}"
            )
        return opened

    def _write_in_place(self, opened: _Opened, version: int, write: Any) -> None:
        """`write(txn)` in one write transaction of the version, if it is still current."""
        try:
            with opened.env.begin(write=True) as txn:
                if self._pointer() != version:
                    raise VersionChanged(
                        f"the online store {self.url} moved on from version {version}"
                    )
                write(txn)
        except lmdb.MapFullError:
            raise StoreUnavailable(
                f"the online store {self.url}: version {version} has no room left for "
                "in-place updates; raise [online] lmdb_map_size_mb and restart, or run "
                "`shortlist materialize` (a new version starts with that much room again)"
            ) from None
        except lmdb.Error as e:
            raise StoreUnavailable(f"the online store {self.url} failed a write: {e}") from None

    def _update(
        self,
        meta: OnlineVersion,
        packed: Mapping[str, tuple[GroupLayout, np.ndarray | list[str], list[bytes]]],
    ) -> None:
        opened = self._current_for(meta)

        def write(txn: Any) -> None:
            for group, (_, keys, values) in packed.items():
                items = list(zip(_key_bytes(keys), values, strict=True))
                txn.cursor(db=opened.dbs[group]).putmulti(items)

        self._write_in_place(opened, meta.version, write)

    def _add_groups(self, meta: OnlineVersion, layouts: Sequence[GroupLayout]) -> OnlineVersion:
        opened = self._current_for(meta)
        if len(meta.groups) + len(layouts) > MAX_GROUPS:
            raise ConfigError(f"at most {MAX_GROUPS} groups per online version")

        def write(txn: Any) -> None:
            held = OnlineVersion.model_validate_json(bytes(txn.get(META_KEY, db=opened.meta_db)))
            added = {g.name: g for g in layouts if g.name not in held.groups}
            if not added:
                return
            for name in added:
                opened.env.open_db(name.encode(), txn=txn, create=True)
            grown = held.model_copy(
                update={
                    "groups": {**held.groups, **added},
                    "stats": {**held.stats, **{name: GroupStats() for name in added}},
                }
            )
            txn.put(META_KEY, grown.model_dump_json().encode(), db=opened.meta_db)

        with opened.lock:  # sub-databases are opened one transaction at a time per process
            self._write_in_place(opened, meta.version, write)
            return opened.reload()

    # -- writing -------------------------------------------------------------------------------

    def versions_on_disk(self) -> list[int]:
        """Committed version folders present (normally just the current one)."""
        if not self.root.is_dir():
            return []
        return sorted(
            int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION_DIR.match(p.name))
        )

    def begin(
        self, layouts: Sequence[GroupLayout], info: Mapping[str, Any] | None = None
    ) -> LmdbWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.root / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise WorkspaceError(
                f"another process is writing the online store in {self.root} "
                "(`shortlist materialize`): wait for it to finish"
            ) from None
        try:
            current = self._pointer()
            seen = [current or 0]
            for p in self.root.iterdir():
                if p.name.startswith(f".{POINTER}.") and p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)  # a pointer never switched to
                if m := (_VERSION_DIR.match(p.name) or _PARTIAL_DIR.match(p.name)):
                    seen.append(int(m.group(1)))
                    if int(m.group(1)) != current:  # left by a crash: never served, or old
                        shutil.rmtree(p, ignore_errors=True)
            return LmdbWriter(self, max(seen) + 1, layouts, info, lock)
        except BaseException:
            os.close(lock)
            raise


class LmdbWriter(OnlineWriter):
    store: LmdbStore

    def __init__(
        self,
        store: LmdbStore,
        version: int,
        layouts: Sequence[GroupLayout],
        info: Mapping[str, Any] | None,
        lock_fd: int,
    ):
        self._lock_fd = lock_fd
        self.path = store.root / f".v{version}.partial"
        self.final = store.root / f"v{version}"
        try:
            if len(layouts) > MAX_GROUPS:
                raise ConfigError(f"at most {MAX_GROUPS} groups per online version")
            super().__init__(store, version, layouts, info)
            # Readers never open this folder, and flock keeps other writers out: no lock file.
            # sync off while writing; commit syncs once before the switch.
            self.env = lmdb.open(
                str(self.path),
                map_size=store.settings.lmdb_map_size_mb << 20,
                subdir=True,
                max_dbs=len(self.layouts) + 1,
                lock=False,
                sync=False,
                metasync=False,
            )
            self.dbs = {name: self.env.open_db(name.encode()) for name in self.layouts}
            self.meta_db = self.env.open_db(META_DB)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            self._release()
            raise
        self._last: dict[str, bytes] = {}

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _write(self, db: Any, items: list[tuple[bytes, bytes]], append: bool) -> None:
        """One transaction; the map doubles (a sparse file: only used pages take disk) when full."""
        while True:
            try:
                with self.env.begin(write=True, db=db) as txn:
                    txn.cursor().putmulti(items, append=append)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _put(self, layout: GroupLayout, keys: np.ndarray | list[str], values: list[bytes]):
        kb = _key_bytes(keys)
        last = self._last.get(layout.name)
        # Sorted keys beyond everything written so far: LMDB appends without searching.
        append = last is None or kb[0] > last
        self._write(self.dbs[layout.name], list(zip(kb, values, strict=True)), append)
        if last is None or kb[-1] > last:
            self._last[layout.name] = kb[-1]

    def _put_dictionary(self, group: str, column: str, values: list[str]) -> None:
        self._write(self.meta_db, [(_dict_key(group, column), json.dumps(values).encode())], False)

    def _commit(self, meta: OnlineVersion) -> None:
        root = self.store.root
        try:
            self._write(self.meta_db, [(META_KEY, meta.model_dump_json().encode())], False)
            self.env.sync(True)
            self.env.close()
            os.replace(self.path, self.final)
            tmp = root / f".{POINTER}.{self.version}.tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps({"version": self.version}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, root / POINTER)  # the switch
            dir_fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            if not (root / POINTER).is_file() or self.store._pointer() != self.version:
                shutil.rmtree(self.path, ignore_errors=True)
                shutil.rmtree(self.final, ignore_errors=True)
            self._release()
            raise

    def _remove_previous(self) -> None:
        try:  # still holding the writer's lock
            for p in self.store.root.iterdir():  # the previous version (and anything older)
                m = _VERSION_DIR.match(p.name)
                if m and int(m.group(1)) < self.version:
                    shutil.rmtree(p, ignore_errors=True)
        finally:
            self._release()

    def _abort(self) -> None:
        try:
            self.env.close()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
            self._release()
