"""The embedded online store: one LMDB environment per version under <workspace>/online.

    online/
      CURRENT          {"version": 7}: the pointer, replaced with os.replace (atomic)
      v7/data.mdb      the current version: one named sub-database per group, 8-byte
                       big-endian keys (entity indices, sorted, so writes append), packed values;
                       `__meta__` holds the version's JSON metadata and the dictionaries
      .v8.partial/     a version being written (readers never open it)
      .writer.lock     flock held by the one writer

A version's environment is written once and never changed after its commit, so readers open it
read-only without LMDB's lock table (`readonly=True, lock=False`): no lock file, no reader
slots, nothing to clean after a crashed reader. A commit syncs the environment, renames the
folder into place and replaces CURRENT, then deletes the previous folder; a process that still
has it open keeps its memory map (the files live on until it lets go) and moves to the new
version on its next read, because every read first stats CURRENT (about a microsecond).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from shortlist.config import OnlineSettings
from shortlist.errors import ConfigError, StoreUnavailable, WorkspaceError
from shortlist.features.online.base import (
    GroupLayout,
    OnlineStore,
    OnlineVersion,
    OnlineWriter,
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


def _key_bytes(keys: np.ndarray | list[str]) -> list[bytes]:
    """8-byte big-endian keys (byte order = numeric order), or UTF-8 for str keys."""
    if isinstance(keys, list):
        return [k.encode() for k in keys]
    return [k.to_bytes(8, "big") for k in keys.tolist()]


def _dict_key(group: str, column: str) -> bytes:
    return f"dict/{group}/{column}".encode()


class _Opened:
    """One committed version, open read-only."""

    def __init__(self, path: Path):
        self.env = lmdb.open(
            str(path), readonly=True, lock=False, subdir=True, max_dbs=MAX_GROUPS + 1
        )
        meta_db = self.env.open_db(META_DB, create=False)
        with self.env.begin(db=meta_db) as txn:
            raw = txn.get(META_KEY)
        if raw is None:
            raise WorkspaceError(f"online version at {path} has no metadata")
        self.meta = OnlineVersion.model_validate_json(bytes(raw))
        self.meta_db = meta_db
        self.dbs = {
            name: self.env.open_db(name.encode(), create=False) for name in self.meta.groups
        }


class LmdbStore(OnlineStore):
    def __init__(self, root: Path, settings: OnlineSettings | None = None):
        self.root = Path(root)
        self.url = f"lmdb ({self.root})"
        self.settings = settings or OnlineSettings()
        self._opened: _Opened | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------

    def _pointer(self) -> int | None:
        try:
            return int(json.loads((self.root / POINTER).read_text())["version"])
        except FileNotFoundError:
            return None

    def _refresh(self) -> _Opened | None:
        """The current version, reopened when CURRENT changed since the last look."""
        try:
            st = os.stat(self.root / POINTER)
        except FileNotFoundError:
            self._opened, self._stamp = None, None
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        opened = self._opened
        if stamp == self._stamp and opened is not None:
            return opened
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
                    self._opened = _Opened(self.root / f"v{version}")
                    self._stamp = stamp
                    return self._opened
                except lmdb.Error:
                    # Replaced and deleted between reading CURRENT and opening it: look again.
                    st = os.stat(self.root / POINTER)
                    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        raise StoreUnavailable(
            f"the online store {self.url} changed version {_OPEN_RETRIES} times while opening "
            "it, or its current version's folder is missing: check who writes to it"
        )

    def current(self) -> OnlineVersion | None:
        opened = self._refresh()
        return None if opened is None else opened.meta

    def _fetch(self, group: str, keys: Any) -> tuple[OnlineVersion, GroupLayout, list[Any]]:
        opened = self._refresh()
        if opened is None:
            self._require()  # raises the "run shortlist materialize" error
            raise AssertionError  # unreachable
        layout = opened.meta.layout(group)
        kb = _key_bytes(normalize_keys(layout, keys))
        if not kb:
            return opened.meta, layout, []
        with opened.env.begin(db=opened.dbs[group]) as txn:
            get = txn.get
            raw = [get(k) for k in kb]
        return opened.meta, layout, raw

    def dictionary(self, group: str, column: str) -> list[str]:
        opened = self._refresh()
        if opened is None:
            self._require()
            raise AssertionError  # unreachable
        if column not in opened.meta.layout(group).codes:
            raise WorkspaceError(f"group {group!r} has no coded column {column!r}")
        with opened.env.begin(db=opened.meta_db) as txn:
            raw = txn.get(_dict_key(group, column))
        return [] if raw is None else json.loads(bytes(raw))

    def close(self) -> None:
        with self._lock:
            self._opened, self._stamp = None, None

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
