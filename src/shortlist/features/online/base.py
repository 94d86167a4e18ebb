"""The online store's interface: per-entity packed values, versioned, read in one batch per call.

Two backends implement it (`lmdb_store`, `redis_store`); `open_online_store(url, workspace)`
picks one. Values are packed the same way in both (docs/online.md):

* a **row** group holds one fixed-width float32 vector per entity (categorical and string
  columns as integer codes into a dictionary stored with the version, NaN for null);
* a **records** group holds a variable-length array of one numpy structured dtype per entity
  (a user's purchases, their category counts, an item's neighbours), optionally preceded by a
  few float32 "head" columns that have one value per entity.

Both decode with `np.frombuffer`: raw little-endian bytes, no pickle. Metadata is JSON.

Versions: `begin()` opens a writer for a new version beside the current one; `commit()` makes it
current in one atomic step and removes the old one; `abort()` (or an exception inside
`with store.begin(...)`) removes the partial one. Readers only ever read the version the
current-version pointer names, and check the pointer on every batch.

In place: `update` / `update_many` write values into the **current** version (what real-time
events do: a purchase changes a user's counters), atomically across the groups of one call;
`add_groups` adds empty groups to the current version (the event groups). A new version starts
from what its writer wrote, never from the updates made to the previous one.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shortlist.config import OnlineSettings
from shortlist.errors import (
    ConfigError,
    RequestError,
    ShortlistError,
    StoreUnavailable,
    WorkspaceError,
)
from shortlist.workspace import Workspace

ONLINE_DIR = "online"  # <workspace>/online: the LMDB backend's files
FORMAT_VERSION = 1
ROW, RECORDS = "row", "records"
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ROW_DTYPE = np.dtype("<f4")
# numpy type strings a records field may have (fixed width, little-endian)
FIELD_TYPES = ("|i1", "<i2", "<i4", "<i8", "<f4", "<f8")


class GroupLayout(BaseModel):
    """How one group's values are packed; stored in the version's metadata (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["row", "records"]
    key: str  # the entity column the values are keyed by (user_idx, item_idx, ...)
    key_type: Literal["int", "str"] = "int"
    # row: the vector's columns; records: the per-entity float32 head before the records
    columns: list[str] = Field(default_factory=list)
    # records: the structured dtype as (field, numpy type string) pairs, e.g. ("day", "<f4")
    fields: list[tuple[str, str]] = Field(default_factory=list)
    # columns or fields holding codes into a dictionary (NaN or -1 for null); the values are
    # stored beside the version, see OnlineStore.dictionary()
    codes: list[str] = Field(default_factory=list)
    source: dict[str, Any] = Field(default_factory=dict)  # e.g. feature group, version, cutoff

    def model_post_init(self, _context: Any) -> None:
        if not _GROUP_NAME.match(self.name):
            raise ConfigError(
                f"online group name {self.name!r}: letters, digits, '_', '.', '-' only, "
                "starting with a letter or digit"
            )
        if self.kind == RECORDS and not self.fields:
            raise ConfigError(f"records group {self.name!r} needs at least one field")
        if self.kind == ROW and self.fields:
            raise ConfigError(f"row group {self.name!r} takes columns, not fields")
        for name, kind in self.fields:
            if kind not in FIELD_TYPES:
                raise ConfigError(
                    f"group {self.name!r} field {name!r}: type {kind!r} is not one "
                    f"of {', '.join(FIELD_TYPES)}"
                )
        known = set(self.columns) | {f for f, _ in self.fields}
        if unknown := [c for c in self.codes if c not in known]:
            raise ConfigError(f"group {self.name!r}: coded columns {unknown} are not in it")

    @property
    def dtype(self) -> np.dtype:
        """The records' structured dtype (packed, little-endian); float32 for a row group."""
        if self.kind == ROW:
            return _ROW_DTYPE
        return np.dtype([(name, kind) for name, kind in self.fields])

    @property
    def width(self) -> int:
        """Float32 values per entity: the row, or the records' head."""
        return len(self.columns)


class GroupStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entities: int = 0  # keys written (a key written twice counts twice)
    bytes: int = 0  # bytes of the values


class OnlineVersion(BaseModel):
    """One version's metadata: its groups' layouts and sizes, and what the writer noted."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    version: int
    created_at: datetime
    groups: dict[str, GroupLayout]
    stats: dict[str, GroupStats] = Field(default_factory=dict)
    buckets: int = 1  # Redis: how many hash-tag buckets the keys are spread over
    info: dict[str, Any] = Field(default_factory=dict)

    def layout(self, group: str) -> GroupLayout:
        try:
            return self.groups[group]
        except KeyError:
            known = ", ".join(sorted(self.groups)) or "none"
            raise RequestError(
                f"unknown online group {group!r}; version {self.version} has: {known}",
                field="group",
            ) from None


@dataclass(frozen=True)
class Ragged:
    """Variable-length records of n entities in one flat array: entity i owns
    `flat[offsets[i]:offsets[i + 1]]`; `head` (n, width) float32 when the layout has columns."""

    flat: np.ndarray
    offsets: np.ndarray  # n + 1 non-decreasing positions, from 0 to len(flat)
    head: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_arrays(
        cls, arrays: Sequence[np.ndarray], dtype: np.dtype, head: np.ndarray | None = None
    ) -> Ragged:
        """One array (or list of tuples) per entity; each is converted to `dtype`."""
        parts = [_as_records(a, dtype) for a in arrays]
        sizes = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        offsets = np.zeros(len(parts) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        flat = np.concatenate(parts) if parts else np.empty(0, dtype)
        return cls(flat, offsets, head)


@dataclass(frozen=True)
class RowBatch:
    """A row group's values for a batch of keys: NaN rows where `found` is False."""

    version: int
    columns: list[str]
    values: np.ndarray  # (n_keys, n_columns) float32
    found: np.ndarray  # (n_keys,) bool


@dataclass(frozen=True)
class RecordsBatch:
    """A records group's values for a batch of keys: an empty array where `found` is False.

    The arrays are read-only views of the bytes read (copy one to change it)."""

    version: int
    records: list[np.ndarray]  # one structured array per key
    found: np.ndarray  # (n_keys,) bool
    head: np.ndarray  # (n_keys, n_head_columns) float32, NaN where not found


def _as_records(values: Any, dtype: np.dtype) -> np.ndarray:
    """`values` as a packed array of `dtype` (fields matched by name, or tuples by position)."""
    arr = values if isinstance(values, np.ndarray) else np.array(values, dtype=dtype)
    if arr.dtype == dtype:
        return arr
    if arr.dtype.names is None:
        raise RequestError(f"records must have the fields {list(dtype.names or [])}")
    missing = [n for n in dtype.names or () if n not in arr.dtype.names]
    if missing:
        raise RequestError(f"records lack the field(s) {missing}")
    out = np.empty(len(arr), dtype)
    for name in dtype.names or ():
        out[name] = arr[name]
    return out


def normalize_keys(layout: GroupLayout, keys: Any) -> np.ndarray | list[str]:
    """Keys as int64 (non-negative) or as str, as the group's layout says; in the given order."""
    if layout.key_type == "str":
        if isinstance(keys, str):
            raise RequestError(f"group {layout.name!r} takes a list of keys", field="keys")
        out = [str(k) for k in keys]
        return out
    arr = np.asarray(keys)
    if arr.ndim != 1:
        raise RequestError(f"group {layout.name!r} takes a 1-d list of keys", field="keys")
    if arr.size == 0:
        return np.empty(0, np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise RequestError(
            f"group {layout.name!r} is keyed by integer {layout.key}, got {arr.dtype} keys",
            field="keys",
        )
    if arr.min() < 0:
        raise RequestError(f"{layout.key} keys must not be negative", field="keys")
    return arr.astype(np.int64, copy=False)


def encode_rows(layout: GroupLayout, values: Any, n: int) -> list[bytes]:
    """A row group's (n, width) matrix as one float32 value per entity."""
    matrix = np.ascontiguousarray(np.asarray(values, dtype=_ROW_DTYPE))
    if matrix.ndim == 1 and layout.width == 1:
        matrix = matrix.reshape(-1, 1)
    if matrix.shape != (n, layout.width):
        raise RequestError(
            f"group {layout.name!r} takes ({n}, {layout.width}) values for {n} keys, got "
            f"shape {matrix.shape}"
        )
    buf, w = matrix.tobytes(), 4 * layout.width
    return [buf[i : i + w] for i in range(0, n * w, w)]


def encode_records(layout: GroupLayout, values: Ragged | Sequence[Any], n: int) -> list[bytes]:
    """A records group's values (a Ragged, or one array per entity) as bytes per entity."""
    dtype = layout.dtype
    ragged = values if isinstance(values, Ragged) else Ragged.from_arrays(values, dtype)
    if len(ragged) != n:
        raise RequestError(f"group {layout.name!r}: {len(ragged)} values for {n} keys")
    flat = _as_records(ragged.flat, dtype)
    offsets = np.asarray(ragged.offsets, np.int64)
    if offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
        raise RequestError(
            f"group {layout.name!r}: offsets must rise from 0 to the {len(flat)} records"
        )
    buf, size = flat.tobytes(), dtype.itemsize
    ends = (offsets * size).tolist()
    if layout.width:
        if ragged.head is None:
            raise RequestError(f"group {layout.name!r} needs a head of {layout.columns}")
        head = np.ascontiguousarray(np.asarray(ragged.head, dtype=_ROW_DTYPE))
        if head.shape != (n, layout.width):
            raise RequestError(
                f"group {layout.name!r}: head of shape {head.shape}, expected ({n}, {layout.width})"
            )
        hb, w = head.tobytes(), 4 * layout.width
        return [hb[i * w : (i + 1) * w] + buf[ends[i] : ends[i + 1]] for i in range(n)]
    return [buf[ends[i] : ends[i + 1]] for i in range(n)]


class VersionChanged(StoreUnavailable):
    """An in-place update named a version that is no longer current (a new one was committed
    meanwhile): nothing was written; read the new version and try again."""


def same_shape(a: GroupLayout, b: GroupLayout) -> bool:
    """Two layouts pack values the same way (their `source` notes may differ)."""
    fields = ("kind", "key", "key_type", "columns", "fields", "codes")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def pack(layout: GroupLayout, keys: Any, values: Any) -> tuple[np.ndarray | list[str], list[bytes]]:
    """`values` of `keys` packed as the group's layout says: (distinct keys ascending, their
    bytes), a repeated key's last value winning. Rows: an (n, width) array; records: a
    `Ragged` or one array (or list of tuples) per key."""
    norm = normalize_keys(layout, keys)
    n = len(norm)
    if n == 0:
        return norm, []
    packed = (
        encode_rows(layout, values, n) if layout.kind == ROW else encode_records(layout, values, n)
    )
    ordered, index = _unique_last(norm)
    if len(index) != n or np.any(index != np.arange(n)):
        packed = [packed[i] for i in index.tolist()]
    return ordered, packed


def _unique_last(keys: np.ndarray | list[str]) -> tuple[np.ndarray | list[str], np.ndarray]:
    """Sorted distinct keys and, for each, the position of its last occurrence."""
    if isinstance(keys, list):
        last = {k: i for i, k in enumerate(keys)}
        ordered = sorted(last)
        return ordered, np.fromiter((last[k] for k in ordered), np.int64, len(ordered))
    rev = keys[::-1]
    uniq, first_in_rev = np.unique(rev, return_index=True)
    return uniq, len(keys) - 1 - first_in_rev


class OnlineStore(ABC):
    """Batched reads of the current version; `begin()` writes the next one.

    Thread-safe for readers. Every read checks which version is current (LMDB: one stat of
    the pointer file; Redis: one GET pipelined with the MGET), so a new version is picked up on
    the next batch, and a batch never mixes two versions.
    """

    url: str  # how to name the store in messages (no password)

    # -- reading -------------------------------------------------------------------------------

    @abstractmethod
    def current(self) -> OnlineVersion | None:
        """The current version's metadata, None when nothing was committed yet."""

    @abstractmethod
    def _fetch(self, group: str, keys: Any) -> tuple[OnlineVersion, GroupLayout, list[Any]]:
        """The raw values of `keys` (None where absent) from one version, with its layout."""

    @abstractmethod
    def dictionary(self, group: str, column: str) -> list[str]:
        """The values of a coded column of the current version (code i is values[i])."""

    def _require(self) -> OnlineVersion:
        meta = self.current()
        if meta is None:
            raise WorkspaceError(
                f"the online store {self.url} holds no version yet: run `shortlist materialize`"
            )
        return meta

    def layout(self, group: str) -> GroupLayout:
        return self._require().layout(group)

    def groups(self) -> list[str]:
        return list(self._require().groups)

    def get(self, group: str, keys: Any) -> RowBatch | RecordsBatch:
        """Values of `keys` (entity indices, or strings for a str-keyed group) in one batch."""
        meta, layout, raw = self._fetch(group, keys)
        if layout.kind == ROW:
            return _decode_rows(meta.version, layout, raw)
        return _decode_records(meta.version, layout, raw)

    def get_rows(self, group: str, keys: Any) -> RowBatch:
        batch = self.get(group, keys)
        if not isinstance(batch, RowBatch):
            raise RequestError(f"group {group!r} holds records, not rows", field="group")
        return batch

    def get_records(self, group: str, keys: Any) -> RecordsBatch:
        batch = self.get(group, keys)
        if not isinstance(batch, RecordsBatch):
            raise RequestError(f"group {group!r} holds rows, not records", field="group")
        return batch

    # -- writing -------------------------------------------------------------------------------

    @abstractmethod
    def begin(
        self, layouts: Sequence[GroupLayout], info: Mapping[str, Any] | None = None
    ) -> OnlineWriter:
        """A writer for a new version beside the current one (which keeps serving)."""

    # -- in place ------------------------------------------------------------------------------

    @abstractmethod
    def reload(self) -> OnlineVersion | None:
        """The current version's metadata read again from the store (not from this reader's
        cache): groups another process added in place since are in it."""

    def update(self, group: str, keys: Any, values: Any, *, version: int | None = None) -> int:
        """Write the values of `keys` into the **current** version, in place (a key repeated:
        its last value wins). Same values as `OnlineWriter.put_many`. See `update_many`."""
        return self.update_many({group: (keys, values)}, version=version)

    def update_many(
        self, changes: Mapping[str, tuple[Any, Any]], *, version: int | None = None
    ) -> int:
        """Write `{group: (keys, values)}` into the current version in place, all or nothing:
        a reader sees every group's new values or none of them (LMDB: one write transaction;
        Redis: one MULTI/EXEC). Returns the bytes written.

        version: write only if this version is still the current one, else raise
        `VersionChanged` and write nothing (read-modify-write: the version the values were
        read from). A version committed while the write runs is not written to; a later
        `materialize` starts from its own values (the updates of the previous version are not
        carried over: replaying the event log is the caller's business, see
        shortlist.pipeline.events).

        Raises:
            WorkspaceError: no version yet. RequestError: an unknown group, values of the
            wrong shape. VersionChanged: `version` is no longer current. StoreUnavailable:
            the store failed (nothing written).
        """
        meta = self.reload()
        if meta is None:
            self._require()
            raise AssertionError  # unreachable
        if version is not None and meta.version != version:
            raise VersionChanged(
                f"the online store {self.url} moved from version {version} to {meta.version}"
            )
        packed = {}
        for group, (keys, values) in changes.items():
            layout = meta.layout(group)
            ordered, values_ = pack(layout, keys, values)
            if values_:
                packed[group] = (layout, ordered, values_)
        if not packed:
            return 0
        self._update(meta, packed)
        return sum(len(v) for _, _, written in packed.values() for v in written)

    def add_groups(
        self, layouts: Sequence[GroupLayout], info: Mapping[str, Any] | None = None
    ) -> OnlineVersion:
        """Make sure the current version has these groups: the ones it lacks are added to it
        in place, empty (readers find them at their next read of them); with no version yet, a
        first version holding only these groups is committed (`info` is its note).

        Raises:
            WorkspaceError: the version has a group of that name packed another way.
        """
        meta = self.reload()
        if meta is None:
            with self.begin(layouts, info) as writer:
                pass
            meta = self.reload()
            assert meta is not None and writer.state == "committed"
            return meta
        for layout in layouts:
            held = meta.groups.get(layout.name)
            if held is not None and not same_shape(held, layout):
                raise WorkspaceError(
                    f"the online store {self.url} (version {meta.version}) has a group "
                    f"{layout.name!r} packed another way: run `shortlist materialize`"
                )
        missing = [g for g in layouts if g.name not in meta.groups]
        return self._add_groups(meta, missing) if missing else meta

    @abstractmethod
    def _update(
        self,
        meta: OnlineVersion,
        packed: Mapping[str, tuple[GroupLayout, np.ndarray | list[str], list[bytes]]],
    ) -> None:
        """Write packed values (distinct keys, ascending, per group) into version `meta` in one
        atomic step; raise VersionChanged when it is not current."""

    @abstractmethod
    def _add_groups(self, meta: OnlineVersion, layouts: Sequence[GroupLayout]) -> OnlineVersion:
        """Add empty groups to version `meta` (if still missing) and return its new metadata."""

    def close(self) -> None:  # noqa: B027 - optional for a backend
        """Release connections and maps (a later read reopens them)."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_rows(version: int, layout: GroupLayout, raw: list[Any]) -> RowBatch:
    n, width = len(raw), layout.width
    if n and width and None not in raw:  # the common case: every key found
        values = np.frombuffer(b"".join(raw), _ROW_DTYPE).reshape(n, width).copy()
        return RowBatch(version, list(layout.columns), values, np.ones(n, bool))
    values = np.full((n, width), np.nan, _ROW_DTYPE)
    found = np.fromiter((v is not None for v in raw), bool, n)
    if found.any() and width:
        joined = b"".join(v for v in raw if v is not None)
        values[found] = np.frombuffer(joined, _ROW_DTYPE).reshape(-1, width)
    return RowBatch(version, list(layout.columns), values, found)


def _decode_records(version: int, layout: GroupLayout, raw: list[Any]) -> RecordsBatch:
    n, width, dtype = len(raw), layout.width, layout.dtype
    found = np.fromiter((v is not None for v in raw), bool, n)
    head = np.full((n, width), np.nan, _ROW_DTYPE)
    empty = np.empty(0, dtype)
    empty.flags.writeable = False
    offset = 4 * width
    records = [empty if v is None else np.frombuffer(v, dtype, offset=offset) for v in raw]
    if width and found.any():
        joined = b"".join(bytes(v[:offset]) for v in raw if v is not None)
        head[found] = np.frombuffer(joined, _ROW_DTYPE).reshape(-1, width)
    return RecordsBatch(version, records, found, head)


class OnlineWriter(ABC):
    """Writes one new version; invisible to readers until `commit()`.

    In a `with` block: commits at the end, aborts on an exception (and re-raises it).
    """

    def __init__(
        self,
        store: OnlineStore,
        version: int,
        layouts: Sequence[GroupLayout],
        info: Mapping[str, Any] | None = None,
    ):
        self.store = store
        self.version = version
        self.layouts = {g.name: g for g in layouts}
        if len(self.layouts) != len(layouts):
            raise ConfigError("two online groups with the same name")
        self.info = dict(info or {})
        self.stats = {name: GroupStats() for name in self.layouts}
        self.state: Literal["open", "committed", "aborted"] = "open"

    def _layout(self, group: str) -> GroupLayout:
        self._check_open()
        try:
            return self.layouts[group]
        except KeyError:
            known = ", ".join(self.layouts)
            raise RequestError(
                f"unknown online group {group!r}; this version has: {known}", field="group"
            ) from None

    def _check_open(self) -> None:
        if self.state != "open":
            raise WorkspaceError(f"online version {self.version} is already {self.state}")

    def put_many(self, group: str, keys: Any, values: Any) -> int:
        """Write the values of `keys` (a key repeated in the batch: its last value wins).

        Row group: an (n, width) array. Records group: a `Ragged`, or one structured array
        (or list of tuples) per key. Returns the bytes written.
        """
        layout = self._layout(group)
        ordered, packed = pack(layout, keys, values)
        if not packed:
            return 0
        self._put(layout, ordered, packed)
        size = sum(len(v) for v in packed)
        stats = self.stats[group]
        stats.entities += len(packed)
        stats.bytes += size
        return size

    def put_dictionary(self, group: str, column: str, values: Sequence[str]) -> None:
        """The values of a coded column: code i stands for values[i]."""
        layout = self._layout(group)
        if column not in layout.codes:
            raise RequestError(f"group {group!r} has no coded column {column!r}")
        self._put_dictionary(group, column, [str(v) for v in values])

    def metadata(self) -> OnlineVersion:
        return OnlineVersion(
            version=self.version,
            created_at=datetime.now(UTC),
            groups=self.layouts,
            stats=self.stats,
            info=self.info,
        )

    def commit(self) -> OnlineVersion:
        """Make this version current (atomically), then remove the previous one."""
        self._check_open()
        meta = self.metadata()
        self._commit(meta)
        self.state = "committed"
        # Best effort: what is left (the server went away) goes at the next begin().
        with contextlib.suppress(ShortlistError, OSError):
            self._remove_previous()
        return meta

    def abort(self) -> None:
        """Remove what was written; the current version keeps serving."""
        if self.state != "open":
            return
        self.state = "aborted"
        self._abort()

    @abstractmethod
    def _put(self, layout: GroupLayout, keys: np.ndarray | list[str], values: list[bytes]):
        """Write values of distinct keys, in ascending key order."""

    @abstractmethod
    def _put_dictionary(self, group: str, column: str, values: list[str]) -> None: ...

    @abstractmethod
    def _commit(self, meta: OnlineVersion) -> None:
        """Store the metadata and switch the pointer to this version (atomically)."""

    @abstractmethod
    def _remove_previous(self) -> None:
        """Remove the versions before this one, once it is current."""

    @abstractmethod
    def _abort(self) -> None: ...

    def __enter__(self) -> OnlineWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            if self.state == "open":
                self.commit()
            return
        try:
            self.abort()
        except Exception:  # noqa: BLE001 - the original error matters more; begin() cleans up
            pass


def open_online_store(
    url: str | None, workspace: Workspace, settings: OnlineSettings | None = None
) -> OnlineStore:
    """The online store at `url`: "lmdb" (files in <workspace>/online) or
    "redis://HOST:PORT/DB[?prefix=NAME]"; None: the workspace's `[online] url`.

    Raises:
        ConfigError: an unknown kind of URL.
    """
    settings = settings or workspace.settings().online
    url = url or settings.url
    if url == "lmdb":
        from shortlist.features.online.lmdb_store import LmdbStore

        return LmdbStore(workspace.root / ONLINE_DIR, settings)
    if url.startswith(("redis://", "rediss://")):
        from shortlist.features.online.redis_store import RedisStore

        return RedisStore(url, settings)
    raise ConfigError(
        f"unknown online store {url!r}: use lmdb or redis://HOST:PORT/DB", key="online.url"
    )
