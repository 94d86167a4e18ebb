"""Values derived from an item or user table, computed once while that table object lives.

The tables do not change with time, but the funnel's training refits per period and per
evaluation window: choosing the ranker's categorical attributes or hashing every item's text
for the two-tower would otherwise run again for each of them, on the same frame.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

import pandas as pd

T = TypeVar("T")
_SIZE = 32
_cache: OrderedDict[tuple[int, Hashable], tuple[weakref.ref, object]] = OrderedDict()
_lock = threading.Lock()


def per_table(frame: pd.DataFrame, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()` for this frame object and `key`, reused while the frame is alive (a new
    frame at a reused address is told apart by the weak reference). The result must not be
    mutated by callers."""
    slot = (id(frame), key)
    with _lock:
        hit = _cache.get(slot)
        if hit is not None and hit[0]() is frame:
            _cache.move_to_end(slot)
            return hit[1]  # type: ignore[return-value]
    value = compute()
    with _lock:
        _cache[slot] = (weakref.ref(frame), value)
        while len(_cache) > _SIZE:
            _cache.popitem(last=False)
    return value
