"""Real-time events: checked against the catalogue, logged durably, applied to the online store.

`EventRecorder(pipeline).record(events)` takes a batch (purchases, stock changes, views, clicks,
impressions), checks it whole (an unknown item, or a malformed field, rejects the batch with
every problem named by the event's position: nothing is logged, nothing changes), appends it to
the workspace's event log (shortlist.data.events: fsync'd), then applies it to the **current**
online version in place, through `OnlineStore.update_many`:

* a purchase: the user's `users` row (counters, recency), `user_items` and `user_category`
  records, `history`, the `recent` records (purchases since the cutoff, which the sources and the
  bought-before filter read per request), and the everyone-alike `sales` counters;
* a stock event: the item's `stock` units (the in-stock filter reads them per request);
* views, clicks and impressions are only logged (for training).

Every in-place write also records, in the same atomic write, the sequence number of the last
event it applied (`applied`), so applying is exactly-once: `catch_up` (run when a service
starts, and before every batch) applies whatever the log holds after that number; a crash
between the log's fsync and the store's write loses nothing. A version without that number (a
new build, a new materialization) starts from its batch values, and the events of the log
dated at or after its cutoff are replayed into it, with every purchase logged after the
last event its data learnt from (the offline manifest's `events_through`: the purchases up to
it are in its interactions, shortlist.data.logged). The log's lock is held from the append to
the store's write: processes sharing the workspace (workers, replicas on one machine) apply
batches one at a time, in the log's order.

Values are "as of the cutoff", as the batch features are: a purchase made after the cutoff
counts as one made at the cutoff (0 days ago). Exact: units_all, items_all, user_items
purchases, user_category purchases and shares, the recent purchases, sales. Approximations:
the 7- and 28-day windows count the purchase but never age older units out; the recency
fields become 0; active_days counts a new day unless a purchase since the cutoff (or the last
one before it) fell on that UTC day; price_mean treats every earlier unit as priced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from shortlist.data.arrays import US_PER_DAY
from shortlist.data.events import EventLog, LoggedEvent
from shortlist.errors import (
    RequestError,
    ShortlistError,
    StoreUnavailable,
    WorkspaceError,
)
from shortlist.features.online.base import OnlineVersion, Ragged, VersionChanged
from shortlist.features.online.live import (
    APPLIED,
    GLOBAL_KEY,
    LIVE_GROUPS,
    RECENT,
    SALES,
    STOCK,
    live_layouts,
    live_tag,
)
from shortlist.pipeline.core import Pipeline
from shortlist.pipeline.funnel import Funnel

PURCHASE, STOCK_EVENT = "purchase", "stock"
LOGGED_ONLY = ("view", "click", "impression")
EVENT_TYPES = (PURCHASE, STOCK_EVENT, *LOGGED_ONLY)
RECENT_CAP = 100  # purchases since the cutoff kept per user (the newest)
SALES_CAP = 4096  # items kept in the everyone-alike sales counters (the best sellers)
CHUNK = 512  # events per in-place write
MAX_BATCH = 1000  # events per batch
USER_GROUPS = ("users", "user_items", "user_category", "history")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Problem:
    """What is wrong with one event of a batch: the field (events.3.item_id), its value, why."""

    field: str
    value: Any
    message: str


class EventsRejected(RequestError):
    """A batch with bad events: nothing of it was logged or applied. `problems` names each."""

    def __init__(self, problems: Sequence[Problem]):
        first = problems[0]
        super().__init__(first.message, field=None)
        self.field = first.field
        self.problems = list(problems)


@dataclass
class Recorded:
    """What `record` did with a batch."""

    accepted: int
    first_seq: int
    last_seq: int
    applied: bool  # False: logged, to be applied when the store answers again
    version: int | None  # the online version it was applied to
    counts: dict[str, int] = field(default_factory=dict)  # events by type
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why it was not applied
    ms: float = 0.0


@dataclass
class CatchUp:
    """What `catch_up` applied: events after `after` (None: a fresh version, from the cutoff)."""

    version: int
    after: int | None
    applied: int
    last_seq: int


# -- checking -------------------------------------------------------------------------------------


def parse_time(value: Any, where: str) -> datetime:
    """An aware UTC datetime from a datetime (naive: UTC), an ISO 8601 string or unix seconds.

    Raises:
        ValueError: anything else, naming `where`.
    """
    if isinstance(value, datetime):
        out = value
    elif isinstance(value, bool):
        raise ValueError(f"{where}: a time, not {value!r}")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: a time, not {value!r}")
        out = datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str):
        try:
            out = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where}: cannot read {value!r} as an ISO 8601 time") from None
    else:
        raise ValueError(f"{where}: a time, not {type(value).__name__}")
    out = out.replace(tzinfo=UTC) if out.tzinfo is None else out.astimezone(UTC)
    if not 1970 <= out.year <= 2200:
        raise ValueError(f"{where}: {value!r} is not between 1970 and 2200")
    return out


def to_us(when: datetime) -> int:
    """Microseconds since the epoch (exact)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- the recorder ---------------------------------------------------------------------------------


class EventRecorder:
    """Records events for one loaded pipeline: checks them against its catalogue, appends them
    to the workspace's event log and applies them to the online store it reads."""

    def __init__(self, pipeline: Pipeline, log: EventLog | None = None):
        pipeline.load()
        if pipeline.workspace is None or pipeline.online_ is None or pipeline.cutoff_ is None:
            raise WorkspaceError("events need a pipeline loaded from a workspace")
        self.pipeline = pipeline
        funnel = pipeline.funnel_
        assert funnel is not None
        self.funnel: Funnel = funnel
        self.store = pipeline.online_
        self.log = log or EventLog.of(pipeline.workspace)
        self.cutoff = pipeline.cutoff_
        self.tag = pipeline.live_tag()
        self.layouts = live_layouts(self.tag)
        self.history_length = pipeline.workspace.settings().features.history_length
        self._versions = _feature_versions(pipeline)
        self._codes: dict[int, list[tuple[int, np.ndarray]]] = {}  # version -> category codes

    # -- checking ---------------------------------------------------------------------------------
    def check(self, events: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        """The events as the log keeps them, and notes on what will not apply in full.

        Raises:
            EventsRejected: naming every bad event (position and field): an unknown type or
            item, a missing or malformed field; nothing is recorded then.
        """
        if not events:
            raise EventsRejected([Problem("events", [], "events: give at least one event")])
        if len(events) > MAX_BATCH:
            raise EventsRejected(
                [Problem("events", len(events), f"events: at most {MAX_BATCH} per batch")]
            )
        catalog = self.funnel.catalog
        problems: list[Problem] = []
        notes: list[str] = []
        out: list[dict[str, Any]] = []
        for i, event in enumerate(events):
            at = f"events.{i}"
            try:
                logged = self._one(event, at)
            except ValueError as exc:
                field_, _, message = str(exc).partition("|")
                value = event.get(field_.rsplit(".", 1)[-1]) if isinstance(event, Mapping) else None
                problems.append(Problem(field_, value, message))
                continue
            item = logged["item_id"]
            if catalog.find_item(item) < 0:
                problems.append(
                    Problem(
                        f"{at}.item_id",
                        item,
                        f"{at}.item_id: unknown item {item!r} (not in the catalogue); nothing "
                        "of the batch was recorded",
                    )
                )
                continue
            user = logged.get("user_id")
            if logged["type"] == PURCHASE and catalog.find_user(user) < 0:
                notes.append(
                    f"{at}.user_id: unknown user {user!r}: logged, and only the item's sales "
                    "counted (the user's features start at their next build)"
                )
            out.append(logged)
        if problems:
            raise EventsRejected(problems)
        return out, notes

    def _one(self, event: Mapping[str, Any], at: str) -> dict[str, Any]:
        """One event as logged (strings and numbers); ValueError "field|message" when bad."""

        def bad(name: str, message: str) -> ValueError:
            return ValueError(f"{at}.{name}|{at}.{name}: {message}")

        if not isinstance(event, Mapping):
            raise ValueError(f"{at}|{at}: an event is an object with a type")
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            raise bad("type", f"{kind!r} is not one of {', '.join(EVENT_TYPES)}")
        out: dict[str, Any] = {"type": kind}
        names = ["item_id"] if kind == STOCK_EVENT else ["user_id", "item_id"]
        for name in names:
            value = event.get(name)
            if not isinstance(value, str) or not value or len(value) > 256:
                raise bad(name, "an id of 1 to 256 characters is required")
            out[name] = value
        stamp = event.get("timestamp")
        if stamp is None:
            if kind != STOCK_EVENT:
                raise bad("timestamp", "required (ISO 8601, or unix seconds)")
        else:
            try:
                out["timestamp"] = iso(parse_time(stamp, f"{at}.timestamp"))
            except ValueError as exc:
                raise bad("timestamp", str(exc).split(": ", 1)[-1]) from None
        if kind == PURCHASE:
            quantity = event.get("quantity", 1)
            quantity = 1 if quantity is None else quantity
            if (
                isinstance(quantity, bool)
                or not isinstance(quantity, int)
                or not (1 <= quantity <= 10_000)
            ):
                raise bad("quantity", f"a whole number of units from 1 to 10000, got {quantity!r}")
            out["quantity"] = quantity
            price = event.get("price")
            if price is not None:
                if isinstance(price, bool) or not isinstance(price, int | float):
                    raise bad("price", f"a number, got {price!r}")
                if not math.isfinite(price) or price < 0:
                    raise bad("price", f"a finite number >= 0, got {price!r}")
                out["price"] = float(price)
        if kind == STOCK_EVENT:
            units = event.get("units")
            if isinstance(units, bool) or not isinstance(units, int) or abs(units) > 10**9:
                raise bad("units", f"a whole number of units (negative: oversold), got {units!r}")
            out["units"] = units
        return out

    # -- recording --------------------------------------------------------------------------------
    def record(self, events: Sequence[Mapping[str, Any]]) -> Recorded:
        """Check the batch whole, append it to the log (fsync'd), then apply it to the online
        store. When the store fails after the append, the batch stays logged (`applied` False,
        `error` says why) and is applied by the next batch or the next start (`catch_up`).

        Raises:
            EventsRejected: the batch has bad events; nothing was recorded.
            StoreUnavailable: the log cannot be written: the batch is not acknowledged.
        """
        started = time.perf_counter()
        checked, notes = self.check(events)
        counts: dict[str, int] = {}
        for e in checked:
            counts[e["type"]] = counts.get(e["type"], 0) + 1
        try:
            with self.log.locked():
                logged = self.log.append(checked)
                try:
                    caught = self._catch_up(logged)
                    applied, version, error = True, caught.version, None
                except (ShortlistError, OSError) as exc:  # logged: applied later, by the next
                    applied, version, error = False, None, str(exc)
        except OSError as exc:  # the log cannot be written: the batch is not acknowledged
            raise StoreUnavailable(
                f"cannot append to the event log in {self.log.root}: {exc}"
            ) from None
        return Recorded(
            accepted=len(logged),
            first_seq=logged[0].seq,
            last_seq=logged[-1].seq,
            applied=applied,
            version=version,
            counts=counts,
            notes=notes,
            error=error,
            ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def catch_up(self) -> CatchUp:
        """Apply what the log holds after the last event the current version applied (a fresh
        version: every event dated at or after the cutoff). Run at a service's start."""
        try:
            with self.log.locked():
                return self._catch_up(None)
        except OSError as exc:
            raise StoreUnavailable(f"cannot read the event log in {self.log.root}: {exc}") from None

    def _catch_up(self, batch: list[LoggedEvent] | None) -> CatchUp:
        for _ in range(3):
            meta = self._version()
            marker = self._marker(meta)
            if marker is None:  # a fresh version: the events its data lacks
                events = [e for e in self.log.read(0) if self._not_learnt(e)]
                last = self.log.last_seq()
            elif batch and marker == batch[0].seq - 1:  # the usual case: just this batch
                events, last = batch, batch[-1].seq
            else:  # a batch logged but not applied (a crash, a store that failed)
                events = list(self.log.read(marker))
                last = events[-1].seq if events else marker
            try:
                for lo in range(0, len(events), CHUNK):
                    chunk = events[lo : lo + CHUNK]
                    self._apply(meta, chunk, chunk[-1].seq)
                if last and marker != last and (not events or events[-1].seq != last):
                    self._apply(meta, [], last)  # the number alone (events before the cutoff)
            except VersionChanged:
                continue
            now = self.store.reload()
            if now is not None and now.version == meta.version:
                return CatchUp(meta.version, marker, len(events), last)
            # a new version was committed meanwhile: what went to the old one is replayed
        raise StoreUnavailable(
            f"the online store {self.store.url} changed version three times while events were "
            "applied; they are logged and will be applied by the next batch or start"
        )

    def _version(self) -> OnlineVersion:
        """The current version, checked to be this pipeline's, with the event groups."""
        meta = self.store.reload()
        if meta is not None:
            held = (meta.info.get("features") or {}) if meta.info else {}
            for group, version in self._versions.items():
                mine = (held.get(group) or {}).get("feature_version")
                if group in held and mine != version:
                    raise WorkspaceError(
                        f"the online store {self.store.url} holds version {mine} of the "
                        f"'{group}' feature group, this process serves version {version}: "
                        "restart the service to load the workspace's current pipeline"
                    )
        if meta is None or any(g not in meta.groups for g in LIVE_GROUPS):
            meta = self.store.add_groups(
                self.layouts, {"events": "the event groups alone (no feature group)"}
            )
        for group in LIVE_GROUPS:
            tag = live_tag(meta.groups[group])
            if tag != self.tag:
                raise WorkspaceError(
                    f"the online store {self.store.url} (version {meta.version}) holds the "
                    f"events of another build (data {tag.get('data')}, cutoff "
                    f"{tag.get('cutoff')}): restart the service to load the workspace's "
                    "current pipeline"
                )
        return meta

    def _marker(self, meta: OnlineVersion) -> int | None:
        batch = self.store.get_records(APPLIED, [GLOBAL_KEY])
        if batch.version != meta.version:
            raise VersionChanged(f"{self.store.url} moved on from version {meta.version}")
        records = batch.records[0]
        return int(records["seq"][-1]) if len(records) else None

    def _not_learnt(self, event: LoggedEvent) -> bool:
        """An event a fresh version replays: dated at or after the cutoff, or a purchase after
        the last event the pipeline's data learnt from the log (not in its interactions)."""
        data = self.funnel.catalog.data.manifest
        through = data.events_through if data is not None else None
        if through is not None and event.seq > through and event.event.get("type") == PURCHASE:
            return True
        return self._since_cutoff(event)

    def _since_cutoff(self, event: LoggedEvent) -> bool:
        stamp = event.event.get("timestamp") or event.event.get("received_at")
        return stamp is not None and to_us(parse_time(stamp, "timestamp")) >= self.cutoff

    # -- applying ---------------------------------------------------------------------------------
    def _apply(self, meta: OnlineVersion, events: Sequence[LoggedEvent], seq: int) -> None:
        """One in-place write: what `events` change, and `seq` as the last applied event."""
        catalog = self.funnel.catalog
        purchases: list[tuple[int, int, float, float, float | None, int]] = []
        stock: dict[int, float] = {}
        for e in events:
            kind = e.event["type"]
            if kind not in (PURCHASE, STOCK_EVENT):
                continue
            item = catalog.find_item(e.event.get("item_id"))
            if item < 0:  # logged under an earlier build's catalogue
                continue
            if kind == STOCK_EVENT:
                stock[item] = float(e.event["units"])
                continue
            user = catalog.find_user(e.event.get("user_id"))
            t = to_us(parse_time(e.event["timestamp"], "timestamp"))
            before = (self.cutoff - t) / US_PER_DAY  # days before the cutoff (< 0: after)
            price = e.event.get("price")
            purchases.append(
                (user, item, before, float(e.event.get("quantity", 1)), price, t // US_PER_DAY)
            )
        changes: dict[str, tuple[Any, Any]] = {}
        if purchases:
            changes.update(self._user_changes(meta, [p for p in purchases if p[0] >= 0]))
            changes[SALES] = self._sales(purchases)
        if stock:
            keys = np.fromiter(stock, np.int64, len(stock))
            changes[STOCK] = (keys, np.fromiter(stock.values(), np.float32, len(stock))[:, None])
        applied = np.array([(seq,)], meta.groups[APPLIED].dtype)
        changes[APPLIED] = ([GLOBAL_KEY], [applied])
        self.store.update_many(changes, version=meta.version)

    def _sales(self, purchases: Sequence[tuple]) -> tuple[list[int], list[np.ndarray]]:
        batch = self.store.get_records(SALES, [GLOBAL_KEY])
        held = batch.records[0]
        units = dict(zip(held["item_idx"].tolist(), held["units"].tolist(), strict=True))
        for _, item, _, quantity, _, _ in purchases:
            units[item] = units.get(item, 0.0) + quantity
        if len(units) > SALES_CAP:  # the best sellers (ties: the lower item idx)
            units = dict(sorted(units.items(), key=lambda kv: (-kv[1], kv[0]))[:SALES_CAP])
        items = sorted(units)
        out = np.zeros(len(items), np.dtype([("item_idx", "<i4"), ("units", "<f4")]))
        out["item_idx"], out["units"] = items, [units[i] for i in items]
        return [GLOBAL_KEY], [out]

    def _user_changes(
        self, meta: OnlineVersion, purchases: Sequence[tuple]
    ) -> dict[str, tuple[Any, Any]]:
        """The users' rows and records after their purchases (read once, changed in order)."""
        if not purchases:
            return {}
        users = np.unique(np.asarray([p[0] for p in purchases], np.int64))
        pos = {int(u): j for j, u in enumerate(users.tolist())}
        groups = [g for g in (*USER_GROUPS, RECENT) if g in meta.groups]
        read = {g: self.store.get(g, users) for g in groups}
        state = [_UserState.read(j, read, meta) for j in range(len(users))]
        codes = self._category_codes(meta) if "user_category" in read else []
        cutoff_day = self.cutoff / US_PER_DAY
        for user, item, before, quantity, price, day in purchases:
            s = state[pos[user]]
            s.purchase(item, before, quantity, price, day, cutoff_day, codes, self)
        out: dict[str, tuple[Any, Any]] = {}
        for g in groups:
            layout = meta.groups[g]
            values = [s.value(g) for s in state]
            keep = [j for j, v in enumerate(values) if v is not None]
            if not keep:
                continue
            keys = users[keep]
            if layout.kind == "row":
                out[g] = (keys, np.stack([values[j] for j in keep]))
            else:
                arrays = [values[j][0] for j in keep]
                head = np.stack([values[j][1] for j in keep]) if layout.width else None
                out[g] = (keys, Ragged.from_arrays(arrays, layout.dtype, head))
        return out

    def _category_codes(self, meta: OnlineVersion) -> list[tuple[int, np.ndarray]]:
        """Per attribute of the `user_category` dictionary that the items have: its code, and
        each item's value code (-1: no value, or one no user had bought at the cutoff, which
        the dictionary lacks: those are not counted until the next build)."""
        if meta.version not in self._codes:
            names = self.store.dictionary("user_category", "attribute")
            values = pd.Index(self.store.dictionary("user_category", "value"))
            items = self.funnel.catalog.data.items
            out = []
            for a, name in enumerate(names):
                if items is None or name not in items.columns:
                    continue
                column = items[name]
                codes = values.get_indexer(column.astype(str).to_numpy())
                codes[column.isna().to_numpy()] = -1
                out.append((a, codes.astype(np.int64)))
            self._codes[meta.version] = out
        return self._codes[meta.version]


class _UserState:
    """One user's values, changed purchase by purchase."""

    def __init__(self) -> None:
        self.row: np.ndarray | None = None
        self.columns: dict[str, int] = {}
        self.items: np.ndarray | None = None
        self.category: np.ndarray | None = None
        self.history: np.ndarray | None = None
        self.history_head: np.ndarray | None = None
        self.recent: np.ndarray | None = None

    @classmethod
    def read(cls, j: int, read: Mapping[str, Any], meta: OnlineVersion) -> _UserState:
        s = cls()
        if "users" in read and read["users"].found[j]:
            s.row = read["users"].values[j].copy()
            s.columns = {c: i for i, c in enumerate(read["users"].columns)}
        for group, attr in (
            ("user_items", "items"),
            ("user_category", "category"),
            ("history", "history"),
            (RECENT, "recent"),
        ):
            if group in read:
                setattr(s, attr, read[group].records[j].copy())
        if "history" in read:
            s.history_head = np.nan_to_num(read["history"].head[j].copy())
        return s

    def _col(self, name: str) -> float:
        return float(self.row[self.columns[name]]) if name in self.columns else math.nan

    def _set(self, name: str, value: float) -> None:
        if name in self.columns:
            self.row[self.columns[name]] = value

    def purchase(
        self,
        item: int,
        before: float,
        quantity: float,
        price: float | None,
        day: int,
        cutoff_day: float,
        codes: Sequence[tuple[int, np.ndarray]],
        recorder: EventRecorder,
    ) -> None:
        ago = max(before, 0.0)  # days before the cutoff: after it counts as at it
        new_pair = True
        if self.items is not None:
            new_pair = not bool(np.any(self.items["item_idx"] == item))
        new_day = self._new_day(day, cutoff_day)
        if self.row is not None:
            old = self._col("units_all")
            old = 0.0 if math.isnan(old) else old
            total = old + quantity
            self._set("units_all", total)
            for name, window in (("units_7d", 7), ("units_28d", 28)):
                if ago < window:
                    self._set(name, _z(self._col(name)) + quantity)
            if new_pair:
                self._set("items_all", _z(self._col("items_all")) + 1)
            if new_day:
                self._set("active_days", _z(self._col("active_days")) + 1)
            last = self._col("days_since_last_purchase")
            self._set("days_since_last_purchase", ago if math.isnan(last) else min(last, ago))
            first = self._col("days_since_first_purchase")
            self._set("days_since_first_purchase", ago if math.isnan(first) else max(first, ago))
            if price is not None:
                mean = self._col("price_mean")
                self._set(
                    "price_mean",
                    price if math.isnan(mean) else (mean * old + price * quantity) / total,
                )
            for name, j in self.columns.items():  # a unit without a channel: shares shrink
                if name.startswith("channel_") and name.endswith("_share") and total > 0:
                    self.row[j] = self.row[j] * old / total
        decay = 0.5 ** (ago / 30.0)  # shortlist.features.user_items.HALF_LIFE_DAYS
        if self.items is not None:
            self.items = _bump(
                self.items,
                {"item_idx": item},
                {"purchases": quantity, "decayed_purchases": quantity * decay},
                {"days_since_last": ago},
            )
        if self.category is not None:
            for attribute, values in codes:
                value = int(values[item])
                if value < 0:
                    continue
                self.category = _bump(
                    self.category,
                    {"attribute": attribute, "value": value},
                    {"purchases": quantity, "purchases_28d": quantity if ago < 28 else 0.0},
                    {"days_since_last": ago},
                )
            total = self._col("units_all")
            if "share" in (self.category.dtype.names or ()) and total > 0:
                self.category["share"] = self.category["purchases"] / total
        if self.history is not None:
            entry = np.zeros(1, self.history.dtype)
            names = self.history.dtype.names or ()
            entry[names[0]] = item
            if len(names) > 1:
                entry[names[1]] = ago
            self.history = np.concatenate([entry, self.history])[: recorder.history_length]
        if self.recent is not None:
            entry = np.zeros(1, self.recent.dtype)
            entry["item_idx"], entry["day"], entry["quantity"] = item, -before, quantity
            self.recent = np.concatenate([self.recent, entry])[-RECENT_CAP:]

    def _new_day(self, day: int, cutoff_day: float) -> bool:
        """The purchase's UTC day is not one the user is known to have bought on already."""
        if self.recent is not None and len(self.recent):
            days = np.floor(cutoff_day + self.recent["day"].astype(np.float64))
            if np.any(days == day):
                return False
        last = self._col("days_since_last_purchase") if self.row is not None else math.nan
        return math.isnan(last) or math.floor(cutoff_day - last) != day

    def value(self, group: str) -> Any:
        """The group's new value: a row, or (records, head); None: nothing to write."""
        if group == "users":
            return self.row
        records = {
            "user_items": self.items,
            "user_category": self.category,
            "history": self.history,
            RECENT: self.recent,
        }[group]
        if records is None:
            return None
        head = None
        if group == "history" and self.history_head is not None:
            head = self.history_head.copy()
            if len(head):
                head[0] = len(records)  # history_length, its one column
        return records, head


def _z(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _bump(
    records: np.ndarray,
    key: Mapping[str, int],
    add: Mapping[str, float],
    least: Mapping[str, float],
) -> np.ndarray:
    """`records` with the one matching `key` changed (fields in `add` increased, those in
    `least` lowered to the value), or a new one inserted in key order when none matches."""
    names = records.dtype.names or ()
    match = np.ones(len(records), bool)
    for k, v in key.items():
        match &= records[k] == v
    hit = np.flatnonzero(match)
    if len(hit):
        j = int(hit[0])
        for k, v in add.items():
            if k in names:
                records[k][j] = records[k][j] + v
        for k, v in least.items():
            if k in names:
                old = float(records[k][j])
                records[k][j] = v if math.isnan(old) else min(old, v)
        return records
    entry = np.zeros(1, records.dtype)
    for k, v in {**key, **add, **least}.items():
        if k in names:
            entry[k] = v
    target = tuple(key.values())  # records are kept in key order, as materialize wrote them
    at = sum(1 for x in zip(*(records[k].tolist() for k in key), strict=True) if x < target)
    return np.concatenate([records[:at], entry, records[at:]])


def _feature_versions(pipeline: Pipeline) -> dict[str, int]:
    """The versions of the user feature groups the pipeline was saved with ({} without)."""
    from shortlist.pipeline.saved import read_manifest

    assert pipeline.workspace is not None
    if pipeline.spec.ranker != "lightgbm":
        return {}
    saved = read_manifest(pipeline.workspace).get("features") or {}
    versions = saved.get("versions") or {}
    return {g: int(v) for g, v in versions.items() if g in ("users", "user_items", "user_category")}
