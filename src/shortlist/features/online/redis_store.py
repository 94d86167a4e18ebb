"""The online store on Redis: one packed value per entity, a batch read with one MGET.

Keys (prefix `sl` by default, `?prefix=NAME` in the URL to share a database):

    sl:current                          the current version's number (the pointer)
    sl:next_version                     INCR gives each writer a new number
    sl:versions                         set of versions present (current, or being written)
    sl:{meta}:v7:meta                   version 7's metadata (JSON)
    sl:{meta}:v7:dict:items:colour      a coded column's dictionary (JSON list)
    sl:{12}:v7:items:3340               item 3340's packed value in version 7

The part in braces is the Redis Cluster hash tag: only it decides the slot. An entity's tag is
its bucket, `key mod buckets` (`[online] redis_buckets`, 64; CRC32 for string keys), so all
groups of one entity share a slot, entities spread over `buckets` slots, and a batch of keys
touches at most `buckets` slots. On one server a batch is one MGET; under Cluster a batch must
be split per slot (a multi-key command may not cross slots): one MGET per bucket, pipelined to
the nodes (redis-py's `RedisCluster.mget_nonatomic` does exactly that). Writes are already one
MSET per bucket. See docs/online.md.

Readers pipeline `MGET keys-of-version-v` with `GET sl:current` (one round trip) and retry with
the new version if the pointer no longer names v. Since old keys are deleted only after the
pointer moved, a pointer still naming v after the MGET proves the MGET saw all of v.

In place (`update_many`, `add_groups`: real-time events): one MULTI/EXEC of MSETs under WATCH of
the pointer, so a reader's MGET sees all of an update or none of it, and an update never lands in
a version a new commit replaced meanwhile (the EXEC fails: `VersionChanged`). A group added in
place is written into the version's metadata; readers holding older metadata read it again when
they are asked for a group it lacks. (Under Cluster a MULTI must stay within one slot: in-place
updates are wired for the single server only, as reads are.)
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

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

DEFAULT_PREFIX = "sl"
_MSET_BYTES = 4 << 20  # split a bucket's MSET beyond this many bytes
_SCAN_COUNT = 5000
_READ_RETRIES = 5


def _redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _bucket_of(keys: np.ndarray | list[str], buckets: int) -> list[int]:
    if isinstance(keys, list):
        return [zlib.crc32(k.encode()) % buckets for k in keys]
    return (keys % buckets).tolist()


class RedisStore(OnlineStore):
    def __init__(self, url: str, settings: OnlineSettings | None = None):
        self.settings = settings or OnlineSettings()
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("prefix", DEFAULT_PREFIX)
        if not self.prefix or any(c in self.prefix for c in "{}*?[]\\: "):
            raise ConfigError(
                f"prefix {self.prefix!r}: no braces, spaces, ':' or glob characters",
                key="online.url",
            )
        self.url = _redact(url)
        self._target = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        timeout = self.settings.redis_timeout
        try:
            self.client = redis.Redis.from_url(
                urlunsplit(parts._replace(query=urlencode(query))),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(ConstantBackoff(0.05), self.settings.redis_retries),
                health_check_interval=0,
            )
        except ValueError as e:
            raise ConfigError(f"{self.url}: {e}", key="online.url") from None
        self._meta: OnlineVersion | None = None
        self._lock = threading.Lock()
        p = self.prefix
        self.k_current, self.k_next, self.k_versions = (
            f"{p}:current",
            f"{p}:next_version",
            (f"{p}:versions"),
        )

    # -- keys ----------------------------------------------------------------------------------

    def k_meta(self, version: int) -> str:
        return f"{self.prefix}:{{meta}}:v{version}:meta"

    def k_dict(self, version: int, group: str, column: str) -> str:
        return f"{self.prefix}:{{meta}}:v{version}:dict:{group}:{column}"

    def data_keys(
        self, version: int, group: str, keys: np.ndarray | list[str], buckets: int
    ) -> list[str]:
        head, mid = f"{self.prefix}:{{", f"}}:v{version}:{group}:"
        listed = keys if isinstance(keys, list) else keys.tolist()
        return [
            f"{head}{b}{mid}{k}" for b, k in zip(_bucket_of(keys, buckets), listed, strict=True)
        ]

    def version_pattern(self, version: int) -> str:
        """Every key of one version (data, metadata, dictionaries)."""
        return f"{self.prefix}:{{*}}:v{version}:*"

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Redis failures as StoreUnavailable, naming the server and what to check."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            raise StoreUnavailable(
                f"cannot reach the online store's Redis at {self.url} while {doing} ({e}): "
                f"check that redis-server is running and reachable at {self._target} from "
                "this machine, the URL's password and database, and [online] redis_timeout"
            ) from None
        except redis.exceptions.RedisError as e:
            raise StoreUnavailable(
                f"the online store's Redis at {self.url} refused {doing}: {e}"
            ) from None

    # -- reading -------------------------------------------------------------------------------

    def _load(self, version: int) -> OnlineVersion:
        with self.guard("reading the version's metadata"):
            raw = self.client.get(self.k_meta(version))
        if raw is None:
            raise StoreUnavailable(
                f"{self.url}: version {version} is current but its metadata "
                f"{self.k_meta(version)} is missing (was the database flushed?): run "
                "`shortlist materialize` again"
            )
        return OnlineVersion.model_validate_json(raw)

    def _switch(self, pointer: bytes | None) -> OnlineVersion | None:
        if pointer is None:
            self._meta = None
            return None
        version = int(pointer)
        meta = self._meta
        if meta is None or meta.version != version:
            meta = self._load(version)
            self._meta = meta
        return meta

    def current(self) -> OnlineVersion | None:
        with self.guard("reading the current version"):
            pointer = self.client.get(self.k_current)
        return self._switch(pointer)

    def reload(self) -> OnlineVersion | None:
        with self.guard("reading the current version"):
            pointer = self.client.get(self.k_current)
        if pointer is None:
            self._meta = None
            return None
        self._meta = self._load(int(pointer))
        return self._meta

    def _fetch(self, group: str, keys: Any) -> tuple[OnlineVersion, GroupLayout, list[Any]]:
        meta = self._meta or self._require()
        for _ in range(_READ_RETRIES):
            if group not in meta.groups:  # a newer version, or one added in place, has it?
                meta = self.reload() or self._require()
            layout = meta.layout(group)
            norm = normalize_keys(layout, keys)
            if len(norm) == 0:
                return meta, layout, []
            names = self.data_keys(meta.version, group, norm, meta.buckets)
            with self.guard(f"reading {len(names)} key(s) of {group!r}"):
                pipe = self.client.pipeline(transaction=False)
                pipe.mget(names)
                pipe.get(self.k_current)  # after the MGET: see the module's docstring
                raw, pointer = pipe.execute()
            if pointer is not None and int(pointer) == meta.version:
                return meta, layout, raw
            switched = self._switch(pointer)
            if switched is None:
                self._require()  # raises the "run shortlist materialize" error
                raise AssertionError  # unreachable
            meta = switched
        raise StoreUnavailable(
            f"{self.url}: the current version changed {_READ_RETRIES} times during one read"
        )

    def dictionary(self, group: str, column: str) -> list[str]:
        meta = self._require()
        if group not in meta.groups:
            meta = self.reload() or meta
        if column not in meta.layout(group).codes:
            raise WorkspaceError(f"group {group!r} has no coded column {column!r}")
        with self.guard("reading a dictionary"):
            raw = self.client.get(self.k_dict(meta.version, group, column))
        return [] if raw is None else json.loads(raw)

    def close(self) -> None:
        self.client.close()

    # -- in place ------------------------------------------------------------------------------

    def _in_place(self, meta: OnlineVersion, doing: str, watch: Sequence[str], write: Any) -> Any:
        """`write(pipe)` (queueing commands) in one MULTI/EXEC, if version `meta` is current
        from the WATCH to the EXEC; returns what the EXEC answered."""
        with self.guard(doing), self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.k_current, *watch)
                pointer = pipe.get(self.k_current)
                if pointer is None or int(pointer) != meta.version:
                    raise VersionChanged(
                        f"the online store {self.url} moved from version {meta.version} to "
                        f"{None if pointer is None else int(pointer)}"
                    )
                prepared = write(pipe)  # reads run now, between WATCH and MULTI
                pipe.multi()
                prepared(pipe)
                return pipe.execute()
            except redis.exceptions.WatchError:
                raise VersionChanged(
                    f"the online store {self.url} changed during an update of version "
                    f"{meta.version}"
                ) from None

    def _update(
        self,
        meta: OnlineVersion,
        packed: Mapping[str, tuple[GroupLayout, np.ndarray | list[str], list[bytes]]],
    ) -> None:
        chunks: list[dict[str, bytes]] = []
        for group, (_, keys, values) in packed.items():
            names = self.data_keys(meta.version, group, keys, meta.buckets)
            by_bucket: dict[int, dict[str, bytes]] = {}
            for b, name, value in zip(_bucket_of(keys, meta.buckets), names, values, strict=True):
                by_bucket.setdefault(b, {})[name] = value
            chunks.extend(by_bucket.values())  # one slot per MSET, as the writer does

        def write(_: Any) -> Any:
            def queue(pipe: Any) -> None:
                for chunk in chunks:
                    pipe.mset(chunk)

            return queue

        self._in_place(meta, f"updating {', '.join(packed)} in place", (), write)

    def _add_groups(self, meta: OnlineVersion, layouts: Sequence[GroupLayout]) -> OnlineVersion:
        key = self.k_meta(meta.version)
        grown: list[OnlineVersion] = []

        def write(pipe: Any) -> Any:
            raw = pipe.get(key)
            if raw is None:
                raise StoreUnavailable(f"{self.url}: the metadata {key} is missing")
            held = OnlineVersion.model_validate_json(raw)
            added = {g.name: g for g in layouts if g.name not in held.groups}
            new = held.model_copy(
                update={
                    "groups": {**held.groups, **added},
                    "stats": {**held.stats, **{name: GroupStats() for name in added}},
                }
            )
            grown.append(new)

            def queue(p: Any) -> None:
                p.set(key, new.model_dump_json())

            return queue

        self._in_place(meta, "adding groups in place", (key,), write)
        self._meta = grown[-1]
        return grown[-1]

    # -- writing -------------------------------------------------------------------------------

    def versions_present(self) -> list[int]:
        with self.guard("listing versions"):
            return sorted(int(v) for v in self.client.smembers(self.k_versions))

    def key_count(self, version: int) -> int:
        """Keys of a version still present (for tests and checks; scans the database)."""
        with self.guard("scanning keys"):
            return sum(1 for _ in self.client.scan_iter(self.version_pattern(version), _SCAN_COUNT))

    def remove_version(self, version: int) -> int:
        """Delete every key of a version; returns how many."""
        removed = 0
        with self.guard(f"removing version {version}"):
            batch: list[bytes] = []
            for key in self.client.scan_iter(self.version_pattern(version), _SCAN_COUNT):
                batch.append(key)
                if len(batch) >= _SCAN_COUNT:
                    removed += self.client.unlink(*batch)
                    batch = []
            if batch:
                removed += self.client.unlink(*batch)
            self.client.srem(self.k_versions, version)
        return removed

    def begin(
        self, layouts: Sequence[GroupLayout], info: Mapping[str, Any] | None = None
    ) -> RedisWriter:
        with self.guard("starting a new version"):
            current = self.client.get(self.k_current)
            # Versions listed but not current were left by a writer that crashed or lost its
            # connection: never served, removed now.
            for stale in self.versions_present():
                if current is None or stale != int(current):
                    self.remove_version(stale)
            version = int(self.client.incr(self.k_next))
            self.client.sadd(self.k_versions, version)
        return RedisWriter(self, version, layouts, info)


class RedisWriter(OnlineWriter):
    store: RedisStore

    def __init__(
        self,
        store: RedisStore,
        version: int,
        layouts: Sequence[GroupLayout],
        info: Mapping[str, Any] | None,
    ):
        super().__init__(store, version, layouts, info)
        self.buckets = store.settings.redis_buckets

    def _put(self, layout: GroupLayout, keys: np.ndarray | list[str], values: list[bytes]):
        s = self.store
        names = s.data_keys(self.version, layout.name, keys, self.buckets)
        by_bucket: dict[int, list[int]] = {}
        for i, b in enumerate(_bucket_of(keys, self.buckets)):
            by_bucket.setdefault(b, []).append(i)
        with s.guard(f"writing {len(names)} value(s) of {layout.name!r}"):
            pipe = s.client.pipeline(transaction=False)
            for positions in by_bucket.values():  # one slot per MSET (Redis Cluster)
                chunk: dict[str, bytes] = {}
                size = 0
                for i in positions:
                    chunk[names[i]] = values[i]
                    size += len(values[i]) + len(names[i])
                    if size >= _MSET_BYTES:
                        pipe.mset(chunk)
                        chunk, size = {}, 0
                if chunk:
                    pipe.mset(chunk)
            pipe.execute()

    def _put_dictionary(self, group: str, column: str, values: list[str]) -> None:
        s = self.store
        with s.guard("writing a dictionary"):
            s.client.set(s.k_dict(self.version, group, column), json.dumps(values))

    def metadata(self) -> OnlineVersion:
        meta = super().metadata()
        meta.buckets = self.buckets
        return meta

    def _commit(self, meta: OnlineVersion) -> None:
        s = self.store
        with s.guard(f"committing version {self.version}"):
            s.client.set(s.k_meta(self.version), meta.model_dump_json())
            s.client.set(s.k_current, self.version)  # the switch

    def _remove_previous(self) -> None:
        for old in self.store.versions_present():
            if old < self.version:
                self.store.remove_version(old)

    def _abort(self) -> None:
        s = self.store
        with s.guard(f"removing version {self.version}"):
            current = s.client.get(s.k_current)
        # A commit that timed out may still have switched: then this version is serving.
        if current is None or int(current) != self.version:
            s.remove_version(self.version)
