"""What real-time events changed since the cutoff, read per request from the online store.

A loaded pipeline serves from arrays fitted at its cutoff; events (shortlist.pipeline.events)
write what happened since into the online store's event groups (features/online/live.py).
`LiveReader` reads them back for each request, one batched read per group, through the same
store the ranking features come from, so every process serving the workspace (every worker,
every replica on one Redis) sees an event at its next request:

* `signals(users)`: the users' purchases since the cutoff (`recent`, one key per user) and,
  when the pipeline has an everyone-alike trending source, the units sold since (`sales`, one
  key), for the retrieval stage (`LiveSignals`) and the bought-before filter;
* `stock(items)`: the units of the candidates that stock events set (`stock`, one key per
  item), for the in-stock filter.

A version without the event groups (a store `shortlist materialize` wrote outside a build, or
none at all) or whose event groups belong to another build is read as "nothing happened"; the
reader looks again every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from shortlist.errors import RequestError, WorkspaceError
from shortlist.features.online.base import OnlineStore
from shortlist.features.online.live import GLOBAL_KEY, RECENT, SALES, STOCK, live_tag
from shortlist.retrieval.sources import LiveSignals

RETRY_SECONDS = 2.0  # how long a missing group is taken as missing before looking again

# set while answering without the online store (the service's degraded answers): the reader
# then reads nothing and reports nothing happened since the cutoff
_BYPASSED: ContextVar[bool] = ContextVar("shortlist_store_bypassed", default=False)


@contextmanager
def store_bypassed() -> Iterator[None]:
    """Within: every `LiveReader` of this thread (context) reads nothing from the online store
    (stock and purchases as of the cutoff), for answers that must not wait on a failing store."""
    token = _BYPASSED.set(True)
    try:
        yield
    finally:
        _BYPASSED.reset(token)


class LiveReader:
    """Reads the event groups of the pipeline (data fingerprint and cutoff: `tag`)."""

    def __init__(self, store: OnlineStore, tag: dict[str, Any], *, sales: bool, stock: bool):
        self.store, self.tag = store, dict(tag)
        self.reads_sales, self.reads_stock = sales, stock
        self._missing: dict[str, float] = {}  # group -> monotonic time to look again
        self._checked: dict[tuple[str, int], bool] = {}  # (group, version) -> ours
        self._lock = threading.Lock()

    def _read(self, group: str, keys: Any) -> Any:
        """The group's batch, or None: missing (for a while), another build's, or the store
        bypassed (`store_bypassed`)."""
        if _BYPASSED.get():
            return None
        until = self._missing.get(group)
        if until is not None and time.monotonic() < until:
            return None
        try:
            batch = self.store.get(group, keys)
        except (RequestError, WorkspaceError):  # no such group, or no version at all
            with self._lock:
                self._missing[group] = time.monotonic() + RETRY_SECONDS
            return None
        ours = self._checked.get((group, batch.version))
        if ours is None:
            ours = live_tag(self.store.layout(group)) == self.tag
            with self._lock:
                self._checked[(group, batch.version)] = ours
        return batch if ours else None

    def signals(self, users: np.ndarray) -> LiveSignals | None:
        """The users' purchases since the cutoff and the units sold since; None when the
        store holds no event group of this pipeline."""
        recent = self._read(RECENT, users)
        sold = None
        if self.reads_sales:
            sales = self._read(SALES, [GLOBAL_KEY])
            if sales is not None and len(sales.records[0]):
                records = sales.records[0]
                order = np.argsort(records["item_idx"], kind="stable")
                sold = (
                    records["item_idx"][order].astype(np.int64),
                    records["units"][order].astype(np.float64),
                )
        if recent is None and sold is None:
            return None
        if recent is None:
            empty = tuple(np.empty(0, np.int64) for _ in range(len(users)))
            return LiveSignals(empty, empty, empty, sold)
        items = tuple(r["item_idx"].astype(np.int64) for r in recent.records)
        ages = tuple(-r["day"].astype(np.float64) for r in recent.records)
        units = tuple(r["quantity"].astype(np.float64) for r in recent.records)
        return LiveSignals(items, ages, units, sold)

    def stock(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(item idx ascending, units) of the given items that stock events set; None: none."""
        if not self.reads_stock:
            return None
        keys = np.unique(np.asarray(items, np.int64))
        keys = keys[keys >= 0]
        if not len(keys):
            return None
        batch = self._read(STOCK, keys)
        if batch is None or not batch.found.any():
            return None
        return keys[batch.found], batch.values[batch.found, 0].astype(np.float64)
