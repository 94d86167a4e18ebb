"""What the endpoints call: the loaded pipeline and item search of one workspace, and the
requests turned into pipeline calls (filters from query parameters, ids checked, errors
naming the request's fields).

The request methods (`recommend`, `cart`, `similar`, `offload`) are coroutines: they check
the request on the event loop and await the funnel's CPU-bound work in the full-pipeline threads
(`[service] concurrency`). Loads, reloads and events are synchronous; the app runs them in its
threadpool.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np
import orjson
from starlette.requests import Request

from shortlist import resources
from shortlist.config import API_KEY_ENV
from shortlist.data.filters import AttrType
from shortlist.errors import NotFoundError, ShortlistError, StoreUnavailable
from shortlist.pipeline import Pipeline
from shortlist.pipeline.cart import cart_recommendations
from shortlist.pipeline.cold_start import (
    anonymous_chain,
    anonymous_context,
    request_segment,
    take_filtered,
)
from shortlist.pipeline.cold_start import cold_start as cold_start_for
from shortlist.pipeline.degraded import degraded
from shortlist.pipeline.events import CatchUp, EventRecorder, EventsRejected, Recorded
from shortlist.pipeline.funnel import Funnel
from shortlist.pipeline.live import store_bypassed
from shortlist.pipeline.saved import MANIFEST
from shortlist.retrieval.similar import ItemSearch
from shortlist.service.errors import ApiError, translated
from shortlist.service.models import MAX_FILTER, check_filter_spec
from shortlist.workspace import Workspace, open_workspace

PRICE = "price"  # the filterable last price (the catalogue's and the item search's)
RELOAD_FILE = "models/reload"  # touched by a reload; the other workers' watch sees it
# what the parent of forked workers answered to the last reload it made (JSON, see `follow`)
RELOADED_FILE = "models/reload.result"
PARENT_RELOAD_SECONDS = 600.0  # a forked worker waits this long for its parent's reload
SLOW_IN_A_ROW = 3  # requests past their budget in a row that open the breaker

log = logging.getLogger("shortlist.service")
T = TypeVar("T")


@dataclass
class Loaded:
    """One loaded version of the workspace: all a request uses, swapped whole by a reload (a
    request takes it once, at its start, and uses nothing else: no request sees half of two
    versions)."""

    pipeline: Pipeline
    search: ItemSearch | None  # similar items; None: `similar_error` says why
    similar_error: str | None
    recorder: EventRecorder | None  # real-time events (POST /v1/events)
    events_error: str | None  # why events cannot be recorded
    replayed: CatchUp | None  # what the load applied from the event log
    version: str  # the build: a digest of models/pipeline.json
    seconds: float  # the load's duration
    loaded_at: float  # time.time() of the switch
    locked: resources.LockedFiles | None = None  # its mapped files, locked in memory

    @property
    def funnel(self) -> Funnel:
        funnel = self.pipeline.funnel_
        assert funnel is not None  # a Loaded is made of a loaded pipeline
        return funnel


class StoreBreaker:
    """After a store failure, or `SLOW_IN_A_ROW` requests in a row past their budget (a store
    that hangs; one slow request alone is more likely a busy machine), requests skip the store
    for `retry_after` seconds; then one tries it again, and a success closes the breaker."""

    def __init__(self, retry_after: float):
        self.retry_after = retry_after
        self.slow_in_a_row = 0
        self.reason: str | None = None  # the last failure, while open or half-open
        self.since: float | None = None  # time.time() of the first failure of this outage
        self._until = 0.0  # monotonic time before which requests skip the store
        self._lock = threading.Lock()

    def skip(self) -> str | None:
        """Why to skip the store now, or None: try it."""
        if self.reason is not None and time.monotonic() < self._until:
            return self.reason
        return None

    def trip(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.since = time.time()
                log.warning("shortlist: degraded answers for %g s: %s", self.retry_after, reason)
            self.reason = reason
            self._until = time.monotonic() + self.retry_after

    def slow(self, reason: str) -> None:
        """A request ran past its budget: the breaker opens at the `SLOW_IN_A_ROW`th in a row."""
        with self._lock:
            self.slow_in_a_row += 1
            trip = self.slow_in_a_row >= SLOW_IN_A_ROW
        if trip:
            self.trip(reason)

    def success(self) -> None:
        self.slow_in_a_row = 0
        if self.reason is None:
            return
        with self._lock:
            if self.reason is not None:
                log.warning(
                    "shortlist: the online store answers again after %.1f s: full answers",
                    time.time() - (self.since or time.time()),
                )
                self.reason = self.since = None


MAPPED = ("models", "index", "online")  # what requests read through memory maps


def prefetch_workspace(root: Path, share: float) -> tuple[int, int, str | None]:
    """`resources.prefetch` of what requests read through memory maps in the workspace at
    `root`: the saved state and models, the indexes, the LMDB online store. What a load does
    before it says ready (benchmarks measuring the request path do the same)."""
    return resources.prefetch([root / name for name in MAPPED], share)


def lock_workspace(root: Path, share: float) -> tuple[resources.LockedFiles, str | None]:
    """`resources.lock_in_memory` of the files `prefetch_workspace` reads ([service] lock)."""
    return resources.lock_in_memory([root / name for name in MAPPED], share)


class ServiceState:
    """The service's workspace: its loaded version (`current`), reloads, and the guarded calls
    that answer from memory when the online store fails.

    `load` is called by the app's lifespan, in a worker thread; `ready` turns true when the
    first version is loaded (the item search may fail alone: `similar_error` then says why,
    and only the similar-items endpoint answers 503). `reload` loads a new version beside the
    serving one and switches atomically; a watch thread does it when a build replaces
    models/pipeline.json, or another worker was asked to reload (models/reload).
    """

    def __init__(self, workspace: Workspace | str | Path, pipeline: Pipeline | None = None):
        self.workspace = (
            workspace if isinstance(workspace, Workspace) else open_workspace(workspace)
        )
        self._given = pipeline  # the first version's pipeline, when the caller gives one
        self.current: Loaded | None = None
        self.status = "loading"
        self.detail: str | None = None
        self.reload_error: str | None = None  # the last reload's failure (the old one serves)
        self.reloads = 0
        settings = self.workspace.settings()
        service = settings.service
        # the write key: the environment wins over shortlist.toml; never a default
        self.api_key = os.environ.get(API_KEY_ENV) or service.api_key
        self.read_key_required = service.read_key_required
        self.budget = service.budget_ms / 1000
        self.watch_seconds = service.watch
        self.threads = service.threads
        self.concurrency = service.concurrency
        self.prefetch_share = service.prefetch
        self.lock = service.lock
        self.accept_turn = service.accept_turn_ms / 1000  # between forked workers (server.py)
        # requests read the online store with short timeouts and no retries: the breaker and
        # the budget decide, not the client library's patience
        self.online = settings.online.model_copy(
            update={"redis_timeout": service.store_timeout, "redis_retries": 0}
        )
        self.breaker = StoreBreaker(service.retry_after)
        self._executor: ThreadPoolExecutor | None = None  # made on first use, after a close too
        self._reload_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._seen: tuple[Any, ...] | None = None  # the watched files' state when loaded
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._releaser: threading.Thread | None = None  # a reload's collection of the old
        self.forked = False  # a worker forked by `shortlist serve --workers N`: its parent reloads

    # -- the current version -----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def loaded(self) -> Loaded:
        """The serving version (take it once per request); ApiError 503 until there is one."""
        cur = self.current
        if not self.ready or cur is None:
            detail = self.detail or "the workspace is still loading"
            raise ApiError(503, None, None, f"not ready: {detail}")
        return cur

    @property
    def pipeline(self) -> Pipeline | None:
        return self.current.pipeline if self.current is not None else self._given

    @property
    def search(self) -> ItemSearch | None:
        return self.current.search if self.current is not None else None

    @property
    def similar_error(self) -> str | None:
        return self.current.similar_error if self.current is not None else None

    @property
    def recorder(self) -> EventRecorder | None:
        return self.current.recorder if self.current is not None else None

    @property
    def replayed(self) -> CatchUp | None:
        return self.current.replayed if self.current is not None else None

    @property
    def load_seconds(self) -> float | None:
        return self.current.seconds if self.current is not None else None

    def load(self, *, watch: bool = True) -> None:
        """Loads the workspace (once: a second call, e.g. a second lifespan, does nothing),
        then starts the watch ([service] watch seconds; 0: none). watch=False: no watch
        thread; the caller looks with `follow` (`shortlist serve --workers N`'s supervisor)."""
        if self.ready:
            return
        try:
            self._seen = self._signature()
            self.current = self._load_version(self._given)
        except Exception as exc:
            self.status, self.detail = "failed", str(exc)
            raise
        self.status = "ready"
        if watch and self.watch_seconds > 0 and self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name="shortlist-watch", daemon=True
            )
            self._watcher.start()

    def close(self) -> None:
        """Stops the watch and the full-pipeline threads, unlocks the mapped files (the app's
        shutdown)."""
        self._stop.set()
        with self._events_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        current = self.current
        if current is not None and current.locked is not None:
            current.locked.release()

    def _threads(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._events_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.concurrency, thread_name_prefix="shortlist-full"
                    )
                executor = self._executor
        return executor

    def _load_version(self, pipeline: Pipeline | None = None) -> Loaded:
        started = time.perf_counter()
        with ThreadPoolExecutor(1, thread_name_prefix="shortlist-prefetch") as reads:
            # the mapped files are read from the disk while the pipeline loads (CPU)
            prefetched = reads.submit(self._prefetch)
            version = _digest(self.workspace.root / MANIFEST)
            pipeline = (pipeline or Pipeline.from_config(self.workspace)).load(self.online)
            resources.set_threads(self.threads)  # the load sized them for fitting, not serving
            search, similar_error = None, None
            try:
                search = ItemSearch(self.workspace)
            except ShortlistError as exc:
                similar_error = str(exc)
            recorder, events_error, replayed = self._start_events(pipeline)
            locked = prefetched.result()  # in the page cache before the first request
        _warm(pipeline)
        return Loaded(
            pipeline, search, similar_error, recorder, events_error, replayed, version,
            time.perf_counter() - started, time.time(), locked,
        )  # fmt: skip

    def _prefetch(self) -> resources.LockedFiles | None:
        """The files requests read through memory maps (the saved state, the item index, the
        LMDB online store) read into the page cache, so that the first requests after a load
        do not each wait on the disk for the pages they touch first, and with `[service]
        lock` locked there until the next version serves. Says so in the log."""
        files, size, skipped = prefetch_workspace(self.workspace.root, self.prefetch_share)
        what = f"{files:,} files, {size / 2**20:,.0f} MiB"
        if skipped:
            log.info("shortlist: %s not read into the page cache: %s", what, skipped)
            return None
        if not self.lock:
            log.info("shortlist: %s read into the page cache", what)
            return None
        locked, why = lock_workspace(self.workspace.root, self.prefetch_share)
        if why:
            log.warning("shortlist: %s read into the page cache, not locked there: %s", what, why)
            return None
        log.info("shortlist: %s read into the page cache and locked there", what)
        return locked

    @staticmethod
    def _start_events(
        pipeline: Pipeline,
    ) -> tuple[EventRecorder | None, str | None, CatchUp | None]:
        """The event recorder, and the events the log holds that the online store's current
        version has not applied yet (a crash after a log append, a new version): applied now,
        before the first request. A store that fails here does not stop the service: reads
        go on, and the next batch of events applies what is left."""
        try:
            recorder = EventRecorder(pipeline)
        except (ShortlistError, OSError) as exc:
            return None, str(exc), None
        try:
            return recorder, None, recorder.catch_up()
        except ShortlistError as exc:  # read on; the next batch applies what is left
            return recorder, f"events logged but not applied yet: {exc}", None

    # -- reloads -----------------------------------------------------------------------------------
    def reload(self, *, tell_others: bool = False) -> dict[str, Any]:
        """Loads the workspace's version now beside the serving one, then switches to it
        atomically (requests in flight finish on the old one). With `tell_others`, the other
        processes serving the workspace reload too, by their watch (with `--workers N`, the
        parent's: it forks new workers from the new version).

        Raises:
            ApiError 409: a reload is already running. ApiError 503: the new version cannot be
            loaded (the old one keeps serving; the message says why).
        """
        if not self._reload_lock.acquire(blocking=False):
            raise ApiError(409, None, None, "a reload is already running: try again when it ends")
        try:
            previous = self.loaded()
            seen = self._signature()
            try:
                new = self._load_version()
            except Exception as exc:
                self.reload_error = f"{type(exc).__name__}: {exc}"
                log.error("shortlist: reload failed, %s keeps serving: %s", previous.version, exc)
                raise ApiError(
                    503, None, None,
                    f"reload failed, version {previous.version} keeps serving: {exc}",
                ) from None  # fmt: skip
            with self._events_lock:  # no batch is applied by the old recorder after this
                self.current = new
                if new.recorder is not None:
                    try:  # what the old recorder applied to the old version meanwhile
                        new.recorder.catch_up()
                    except ShortlistError:
                        pass  # the next batch applies what is left
            self._seen = seen
            self.reload_error = None
            self.reloads += 1
            if tell_others:
                _touch(self.workspace.root / RELOAD_FILE)
                self._seen = self._signature()
            log.info(
                "shortlist: reloaded %s in %.1f s (was %s)", new.version, new.seconds,
                previous.version,
            )  # fmt: skip
            was = previous.version
            if previous.locked is not None:  # requests in flight read on, unlocked
                previous.locked.release()
            del previous
            self._releaser = threading.Thread(target=_release, args=(self.budget,), daemon=True)
            self._releaser.start()
            return {"version": new.version, "previous": was, "seconds": round(new.seconds, 3)}
        finally:
            self._reload_lock.release()

    def _signature(self) -> tuple[Any, ...]:
        """What the watch compares: models/pipeline.json and models/reload as stat() sees them."""
        out: list[Any] = []
        for path in (MANIFEST, RELOAD_FILE):
            try:
                st = (self.workspace.root / path).stat()
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_seconds):
            self.follow()

    def follow(self) -> dict[str, Any] | None:
        """One look of the watch: reloads when models/pipeline.json or models/reload changed
        since the serving version loaded. None when it did not try; else what the reload
        answered, or {"error": why} (logged; the old version serves on, and the next change
        of the files tries again), with "requested": the models/reload time (ns) the reload
        acted on."""
        seen = self._signature()
        if seen == self._seen or seen[0] is None:
            return None
        try:
            outcome = self.reload()
        except ApiError as exc:
            if exc.status == 409:  # another reload runs: the next look
                return None
            self._seen = seen
            outcome = {"error": exc.message}
        # the models/reload the reload acted on (its own look, taken before it loaded: a
        # worker's touch between the two looks is answered by this reload, not a later one)
        acted = self._seen[1] if self._seen is not None else None
        return {**outcome, "requested": acted[2] if acted is not None else 0}

    def tell_reloaded(self, outcome: dict[str, Any]) -> None:
        """The parent of forked workers: what its reload answered, for the worker that was
        asked (`reload_by_parent`)."""
        _replace(self.workspace.root / RELOADED_FILE, orjson.dumps(outcome))

    def reload_by_parent(self, timeout: float = PARENT_RELOAD_SECONDS) -> dict[str, Any]:
        """A forked worker's reload: the parent loads the new version (once, for every
        worker) and forks new workers from it, which replace this one after it answers.
        Touches models/reload, then waits for the parent's answer to that touch or a later
        one.

        Raises:
            ApiError 503: the parent's reload failed (the old version serves on), or did not
            end within `timeout` seconds.
        """
        path = self.workspace.root / RELOAD_FILE
        _touch(path)
        asked = path.stat().st_mtime_ns
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                outcome = orjson.loads((self.workspace.root / RELOADED_FILE).read_bytes())
            except (OSError, orjson.JSONDecodeError):
                outcome = None
            if isinstance(outcome, dict) and outcome.get("requested", 0) >= asked:
                if "error" in outcome:
                    raise ApiError(503, None, None, str(outcome["error"]))
                return {k: outcome[k] for k in ("version", "previous", "seconds")}
            time.sleep(0.05)
        raise ApiError(
            503, None, None,
            f"the reload did not end within {timeout:g} s: the workers follow when it does",
        )  # fmt: skip

    def released(self) -> None:
        """Waits for the last reload's release of the old version (its garbage collection):
        a fork while that thread runs would leave the child's collector mid-collection."""
        releaser = self._releaser
        if releaser is not None:
            releaser.join()

    def after_fork(self) -> None:
        """In a worker process forked from the one that loaded the workspace: threads do not
        survive a fork, so the full-pipeline threads and the locks start anew (the online
        store reopens itself: LMDB forbids a parent's environment, redis-py its sockets). The
        mapped files stay locked in memory by the parent (`mlock` is not inherited), whose
        supervisor runs the watch."""
        self._executor = None
        self._reload_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._watcher, self._stop, self._releaser = None, threading.Event(), None
        self.forked = True
        self.breaker = StoreBreaker(self.breaker.retry_after)

    # -- guarded calls -----------------------------------------------------------------------------
    async def offload(self, work: Callable[[], T]) -> T:
        """`work()` in the full-pipeline threads, awaited (for answers without a fallback)."""
        return await asyncio.wrap_future(
            self._threads().submit(contextvars.copy_context().run, work)
        )

    async def guarded(
        self, full: Callable[[], T], fallback: Callable[[str], T]
    ) -> tuple[T, str | None]:
        """`full()` within the request's budget, or `fallback(reason)` from memory (the online
        store bypassed) when the store fails, the budget runs out, or the breaker is open; and
        the reason, None for a full answer. Request errors of `full` propagate.

        `full` runs in the full-pipeline threads ([service] concurrency), awaited by the event
        loop: one hand-over per request, and the loop stays free meanwhile. The fallback runs
        in the loop's worker threads, never queued behind full answers that wait on a store."""
        reason = self.breaker.skip()
        if reason is None:
            future = self._threads().submit(contextvars.copy_context().run, full)
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(future), self.budget)
            except TimeoutError:
                future.cancel()  # still queued: never run (running: finishes, unheard)
                reason = f"slow: no answer within the budget of {self.budget * 1000:g} ms"
                self.breaker.slow(reason)
            except StoreUnavailable as exc:
                reason = f"the online store failed: {exc}"
                self.breaker.trip(reason)
            else:
                self.breaker.success()
                return result, None
        with store_bypassed():
            bypassed = contextvars.copy_context()
        return await anyio.to_thread.run_sync(bypassed.run, fallback, reason), reason

    # -- auth --------------------------------------------------------------------------------------
    def authorize(self, credentials: str | None, *, write: bool) -> None:
        """Raises ApiError 401 unless `credentials` (the Authorization header's bearer token)
        is the key, for a write or, with read_key_required, a read; 503 when a key is needed
        but none is set."""
        if not write and not self.read_key_required:
            return
        what = "write endpoints" if write else "read endpoints ([service] read_key_required)"
        if not self.api_key:
            raise ApiError(
                503, None, None,
                f"{what} need an API key and none is set: set the environment variable "
                f"{API_KEY_ENV} (or [service] api_key in shortlist.toml) and restart the service",
            )  # fmt: skip
        challenge = {"WWW-Authenticate": 'Bearer realm="shortlist"'}
        if not credentials:
            raise ApiError(
                401, "authorization", None,
                "authorization: this endpoint needs the header `Authorization: Bearer KEY`",
                headers=challenge,
            )  # fmt: skip
        if not hmac.compare_digest(credentials.encode(), self.api_key.encode()):
            raise ApiError(
                401, "authorization", None, "authorization: wrong API key", headers=challenge
            )

    # -- events ------------------------------------------------------------------------------------
    async def read_access(self, request: Request) -> None:
        """The read endpoints' dependency: the key too when [service] read_key_required (not
        in the schema: they are open by default)."""
        if self.read_key_required:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            self.authorize(token.strip() if scheme.lower() == "bearer" else None, write=False)

    def record_events(self, events: list[dict[str, Any]]) -> tuple[Recorded, dict[str, Any]]:
        """Check, log and apply a batch: (what was done, the answer's body)."""
        with self._events_lock:  # a reload switches recorders between two batches
            cur = self.loaded()
            if cur.recorder is None:
                raise ApiError(503, None, None, f"events unavailable: {cur.events_error}")
            try:
                recorded = cur.recorder.record(events)
            except EventsRejected as exc:
                more = [(p.field, p.value, p.message) for p in exc.problems[1:]]
                first = exc.problems[0]
                raise ApiError(422, first.field, first.value, first.message, more=more) from None
        body = {
            "accepted": recorded.accepted,
            "first_seq": recorded.first_seq,
            "last_seq": recorded.last_seq,
            "applied": recorded.applied,
            "version": recorded.version,
            "counts": recorded.counts,
            "notes": recorded.notes,
        }
        if recorded.error is not None:
            body["error"] = recorded.error
        return recorded, body

    # -- the loaded parts ----------------------------------------------------------------------
    def check_ready(self) -> None:
        """Raises ApiError 503 until the workspace is loaded."""
        self.loaded()

    @property
    def funnel(self) -> Funnel:
        """The serving version's funnel (ApiError 503 until loaded)."""
        return self.loaded().funnel

    @staticmethod
    def is_known_user(cur: Loaded, user_id: str) -> bool:
        try:
            cur.funnel.catalog.user_idx(user_id)
        except NotFoundError:
            return False
        return True

    @staticmethod
    def check_items(cur: Loaded, ids: Sequence[str], field: str) -> None:
        """Raises ApiError 404 naming the field and the first id the catalogue lacks."""
        if not ids:
            return
        catalog = cur.funnel.catalog
        try:
            catalog.item_idx(list(ids))
        except NotFoundError:
            for i, item in enumerate(ids):
                try:
                    catalog.item_idx([item])
                except NotFoundError:
                    at = field if field == "item_id" else f"{field}.{i}"
                    raise ApiError(404, at, item, f"{at}: unknown item {item!r}") from None

    # -- the requests ----------------------------------------------------------------------------
    async def recommend(
        self,
        user_id: str,
        context: dict[str, Any],
        *,
        k: int | None,
        explain: bool,
        origin: Mapping[str, tuple[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The answer's dict (user_id, items, trace, degraded, version) and whether it was a
        cold start."""
        cur = self.loaded()
        self.check_items(cur, context.get("cart") or [], "cart")
        self.check_items(cur, context.get("exclude") or [], "exclude")
        pipeline = cur.pipeline
        known = self.is_known_user(cur, user_id)

        def full() -> Any:
            if known:
                return pipeline.recommend(user_id, context, explain=explain, k=k)
            return cold_start_for(pipeline, context, user_id=user_id, k=k, explain=explain)

        def fallback(reason: str) -> Any:
            return degraded(pipeline, user_id, context, k=k, explain=explain, reason=reason)[0]

        values = {**context, "k": k}
        with translated(values, origin or _origin(context.get("filters"), "filters")):
            result, reason = await self.guarded(full, fallback)
        return _answered(result.to_dict(), cur, reason), not known

    async def cart(
        self,
        cart: list[str],
        context: dict[str, Any],
        *,
        user_id: str | None,
        k: int | None,
        explain: bool,
    ) -> tuple[dict[str, Any], bool]:
        """The answer's dict and whether a given user was unknown (a cold start)."""
        cur = self.loaded()
        self.check_items(cur, cart, "cart")
        self.check_items(cur, context.get("exclude") or [], "exclude")
        cold = user_id is not None and not self.is_known_user(cur, user_id)
        pipeline = cur.pipeline

        def full() -> Any:
            return cart_recommendations(
                pipeline, cart, context, user_id=user_id, k=k, explain=explain
            )

        values = {**context, "cart": cart, "k": k, "user_id": user_id}
        with translated(values, _origin(context.get("filters"), "filters")):
            result, reason = await self.guarded(full, lambda reason: full())
        return _answered(result.to_dict(), cur, reason), cold

    async def similar(
        self,
        item_id: str,
        *,
        k: int,
        filters: dict[str, Any] | None,
        origin: Mapping[str, tuple[str, Any]],
        region: str | None,
        age: float | None,
    ) -> dict[str, Any]:
        """The k items nearest to `item_id` in the two-tower space that pass the attribute
        filters and the pipeline's business filters (stock; region and age when given)."""
        cur = self.loaded()
        if cur.search is None:
            raise ApiError(503, None, None, f"similar items unavailable: {cur.similar_error}")
        self.check_items(cur, [item_id], "item_id")
        values = {"region": region, "age": age, "filters": filters, "k": k}

        def full() -> dict[str, Any]:
            return _similar(cur, item_id, k, filters, region, age)

        with translated(values, origin):
            body, reason = await self.guarded(full, lambda reason: full())
        return _answered(body, cur, reason)

    # -- query parameters ------------------------------------------------------------------------
    def schema(self, for_similar: bool = False) -> dict[str, AttrType]:
        cur = self.loaded()
        if for_similar and cur.search is not None:
            return cur.search.attributes.schema
        return cur.funnel.catalog.attributes.schema


def _answered(body: dict[str, Any], cur: Loaded, reason: str | None) -> dict[str, Any]:
    """The body with the version that answered and whether it was degraded (the reason is the
    trace's first stage)."""
    if reason is not None and not (body.get("trace") or [{}])[0].get("stage") == "degraded":
        body.setdefault("trace", []).insert(0, {"stage": "degraded", "reason": reason, "ms": 0.0})
    body["degraded"] = reason is not None
    body["version"] = cur.version
    return body


def _similar(
    cur: Loaded,
    item_id: str,
    k: int,
    filters: dict[str, Any] | None,
    region: str | None,
    age: float | None,
) -> dict[str, Any]:
    funnel, search = cur.funnel, cur.search
    assert search is not None
    segment = request_segment(funnel, {"region": region, "age": age})
    ctx = anonymous_context(funnel, segment)  # attribute filters ran in the search
    chain = anonymous_chain(funnel)
    catalog = funnel.catalog
    n_items = len(catalog.item_ids)
    want = min(n_items, max(2 * k, k + 16))
    search_s = filter_s = 0.0
    while True:  # over-fetch until k pass the business filters, or none are left
        started = time.perf_counter()
        matches = search.similar(item_id, want, filters)
        search_s += time.perf_counter() - started
        started = time.perf_counter()
        ranked = np.asarray(
            catalog.item_idx([m.item_id for m in matches]) if matches else [], np.int64
        )
        taken = take_filtered(funnel, ctx, chain, ranked, k, top_up=False)
        filter_s += time.perf_counter() - started
        if len(taken.items) >= k or len(matches) < want or want >= n_items:
            break
        want = min(n_items, want * 4)
    trace = [
        {"stage": "search", "asked": want, "out": len(matches), "ms": _ms(search_s)},
        {
            "stage": "filter",
            "in": taken.examined,
            "out": int(len(taken.items)),
            "removed": taken.removed,
            "skipped": funnel.skipped,
            "ms": _ms(filter_s),
        },
    ]
    score = {m.item_id: m.score for m in matches}
    items = []
    for rank, item in enumerate(taken.items.tolist(), 1):
        item_id_ = str(catalog.item_ids[item])
        items.append(
            {
                **catalog.describe(item),
                "item_id": item_id_,
                "score": score.get(item_id_),
                "sources": {"similar": rank},
            }
        )
    return {"item_id": item_id, "items": items, "trace": trace}


def _warm(pipeline: Pipeline) -> None:
    """One recommendation before the version serves: the first request's one-time costs (lazy
    imports, compiled code, first pages of the mapped arrays) are paid by the load, not by a
    client. A failure here (a store down) is left for the requests to meet."""
    funnel = pipeline.funnel_
    if funnel is None or not len(funnel.catalog.user_ids):
        return
    try:
        pipeline.recommend(str(funnel.catalog.user_ids[0]))
    except ShortlistError as exc:
        log.warning("shortlist: the warm-up request failed: %s", exc)


def _digest(path: Path) -> str:
    """A short digest of a file (the build a version is): 12 hex digits."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "none"


def _touch(path: Path) -> None:
    """Writes the time into `path` (its mtime is what the other workers' watch sees)."""
    _replace(path, f"{time.time()}\n".encode())


def _replace(path: Path, data: bytes) -> None:
    """`path` replaced by `data` at once: written beside it under a name of this process and
    thread alone (workers and threads writing the same file at once never share one), then
    renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _release(delay: float) -> None:
    """After a switch, once the requests in flight on the old version are done: the old
    version's objects back to the garbage collector (a load freezes what it loaded), then the
    serving one frozen again."""
    time.sleep(delay)
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _origin(filters: Mapping[str, Any] | None, field: str) -> dict[str, tuple[str, Any]]:
    return {attr: (f"{field}.{attr}", cond) for attr, cond in (filters or {}).items()}


def query_filters(
    schema: Mapping[str, AttrType],
    *,
    filter_json: str | None,
    price_min: float | None,
    price_max: float | None,
    attribute: str | None,
    values: Sequence[str] | None,
) -> tuple[dict[str, Any] | None, dict[str, tuple[str, Any]]]:
    """A filter in the filter language from a query's parameters, and where each attribute's
    condition came from (request field, value) for error messages.

    `filter`: the JSON language itself; `price_min`/`price_max`: a price range; `attribute`
    with one or more `values`: the attribute is one of them (typed as the attribute is).
    """
    spec: dict[str, Any] = {}
    origin: dict[str, tuple[str, Any]] = {}
    if filter_json is not None:
        if len(filter_json) > MAX_FILTER:
            raise ApiError(422, "filter", filter_json, f"filter: at most {MAX_FILTER} characters")
        try:
            parsed = orjson.loads(filter_json)
        except orjson.JSONDecodeError as exc:
            raise ApiError(422, "filter", filter_json, f"filter: not valid JSON ({exc})") from None
        try:
            spec = dict(check_filter_spec(parsed, "filter"))
        except ValueError as exc:
            raise ApiError(422, "filter", filter_json, str(exc)) from None
        origin = _origin(spec, "filter")
    if price_min is not None or price_max is not None:
        field = "price_min" if price_min is not None else "price_max"
        value = price_min if price_min is not None else price_max
        if PRICE in spec:
            raise ApiError(422, field, value, f"{field}: the price is already filtered by `filter`")
        if price_min is not None and price_max is not None and price_min > price_max:
            raise ApiError(
                422, "price_min", price_min,
                f"price_min: {price_min} is above price_max {price_max}: an empty range",
            )  # fmt: skip
        spec[PRICE] = {op: v for op, v in (("gte", price_min), ("lte", price_max)) if v is not None}
        origin[PRICE] = (field, value)
    if attribute is not None or values:
        if attribute is None:
            raise ApiError(422, "attribute", None, "attribute: name the attribute `values` are of")
        if not values:
            raise ApiError(
                422, "values", None, f"values: give at least one value of attribute {attribute!r}"
            )
        if attribute in spec:
            raise ApiError(
                422, "attribute", attribute,
                f"attribute: {attribute!r} is already filtered by `filter`",
            )  # fmt: skip
        kind = schema.get(attribute)
        if kind is None:
            known = ", ".join(sorted(schema))
            raise ApiError(
                422, "attribute", attribute,
                f"attribute: unknown attribute {attribute!r} (known: {known})",
            )  # fmt: skip
        spec[attribute] = {"in": [_typed(kind, v) for v in values]}
        origin[attribute] = ("values", list(values))
    return (spec or None), origin


def _typed(kind: AttrType, value: str) -> Any:
    """A query string value as the attribute's type (422 naming `values` when it does not fit)."""
    if kind is AttrType.NUMBER:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ApiError(422, "values", value, f"values: {value!r} is not a number")
        return number
    if kind is AttrType.BOOL:
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise ApiError(422, "values", value, f"values: {value!r} is not true or false")
    return value


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
