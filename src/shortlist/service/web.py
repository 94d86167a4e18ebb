"""The web page at `/` (a customer, their purchases, recommendations, the funnel's trace, search,
cart and buying) and the evaluation report at `/report`: plain HTML, CSS and JavaScript shipped
in the package (shortlist/service/static/), nothing loaded from elsewhere. The pages call the
service's JSON endpoints, and these, which `register` adds beside them:

* `GET /v1/showcase`: customers worth a look (a heavy buyer, a repurchaser, the latest buyer, a
  new customer), picked once per loaded version from what the pipeline holds in memory (the
  two-tower source's purchase histories, else the repurchase source's matrix): no interaction
  table is read;
* `GET /v1/users/{user_id}/history`: a user's latest purchases, newest first: those recorded by
  events since the cutoff (the online store's `recent` group, read per request, so a purchase
  shows at once), then the pipeline's histories;
* `GET /v1/items?ids=...`: items as a card shows them (name, display attributes, price);
* `GET /v1/reports/evaluation`: the workspace's evaluation report, `<workspace>/evaluation.json`
  as `shortlist evaluate --json PATH` writes it (read per request: the latest one).

Every request takes the serving pipeline once (`state.pipeline`, after `state.check_ready()`),
so a reload switches whole versions between requests.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from datetime import UTC, date, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.staticfiles import StaticFiles

from shortlist.config import AttributeKind
from shortlist.data.arrays import US_PER_DAY, from_us
from shortlist.errors import StoreUnavailable
from shortlist.pipeline import Pipeline
from shortlist.pipeline.catalog import Catalog
from shortlist.pipeline.funnel import Funnel
from shortlist.retrieval.history import HistoryIndex
from shortlist.retrieval.sources import RepurchaseSource
from shortlist.service.engine import ServiceState
from shortlist.service.errors import ApiError
from shortlist.service.models import MAX_ID, MAX_ITEMS, ErrorOut

STATIC = FilePath(__file__).with_name("static")
REPORT_FILE = "evaluation.json"  # in the workspace: what GET /v1/reports/evaluation serves

SHOWCASE = "/v1/showcase"
HISTORY = "/v1/users/{user_id}/history"
ITEMS = "/v1/items"
REPORT = "/v1/reports/evaluation"

MAX_HISTORY = 100  # purchases per history answer
SHOWCASE_SCAN = 500  # the heaviest buyers examined for a repurchaser
NEW_CUSTOMER = "new-customer"
EPOCH = date(1970, 1, 1)

# the pages load only what the service serves: scripts, styles, fetches and images from here
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "The API key is required (read_key_required)"},
    422: {"model": ErrorOut, "description": "Invalid parameter"},
    503: {"model": ErrorOut, "description": "The workspace is not loaded (yet)"},
}


# -- response models -------------------------------------------------------------------------------


class ShowcaseUser(BaseModel):
    user_id: str
    kind: Literal["heavy_buyer", "repurchaser", "latest_buyer", "new_customer"]
    label: str = Field(description="What the page calls them")
    description: str = Field(description="Why they are interesting, in a sentence")
    purchases: int | None = Field(
        None, description="Purchases before the cutoff (the pipeline's histories)"
    )
    known: bool = Field(description="The workspace knows them (false: a cold start)")


class ShowcaseOut(BaseModel):
    users: list[ShowcaseUser]
    k: int = Field(description="The pipeline's number of recommendations")
    cutoff: str | None = Field(description="The pipeline's cutoff (ISO 8601)")
    notes: list[str] = Field(description="Kinds of customer that could not be offered, and why")


class CardItem(BaseModel):
    """An item as a card shows it; its display attributes come as extra keys."""

    model_config = ConfigDict(extra="allow")

    item_id: str
    name: str | None = Field(description="The item's name (its name column), when it has one")
    price: float | None = Field(None, description="The price the item last sold at")


class HistoryItem(CardItem):
    date: str | None = Field(description="Day of the purchase (YYYY-MM-DD), when known")
    quantity: float | None = Field(None, description="Units, when recorded by an event")
    since_cutoff: bool = Field(description="Recorded by an event after the pipeline's cutoff")


class HistoryOut(BaseModel):
    user_id: str
    items: list[HistoryItem] = Field(description="The latest purchases, newest first")
    purchases: int = Field(description="All their purchases the pipeline knows (before + since)")
    since_cutoff: int = Field(description="Purchases recorded by events since the cutoff")
    cold_start: bool = Field(description="The workspace does not know the user")
    degraded: bool = Field(description="The online store failed: purchases since the cutoff are "
                                       "missing")  # fmt: skip


class ItemsOut(BaseModel):
    items: list[CardItem]


class EvaluationReport(BaseModel):
    """`shortlist evaluate --json PATH`'s report (docs: eval), as written, plus `file`."""

    model_config = ConfigDict(extra="allow")

    dataset: dict[str, Any] | None = None
    protocol: dict[str, Any] = Field(description="holdout_days, windows, k, cutoffs")
    methods: dict[str, dict[str, Any]] = Field(
        description="Per method: map@k, recall@k, ..., per_window [{cutoff, map@k, ...}]"
    )
    candidates: dict[str, dict[str, float | None]] | None = Field(
        None, description="With --candidates: per source, recall@N and mean_candidates@N"
    )
    file: dict[str, str] = Field(description="Where it was read ({path, modified})")


# -- what each loaded version gives the pages ----------------------------------------------------


class PageData:
    """What the pages need from one loaded pipeline, derived once: item names, the purchase
    histories and the showcase."""

    def __init__(self, pipeline: Pipeline, funnel: Funnel):
        self.catalog = funnel.catalog
        self.cutoff: int | None = pipeline.cutoff_
        self.k = funnel.k
        self.name_column = name_column(self.catalog)
        items = self.catalog.data.items
        self.names = (
            items[self.name_column].astype("string").to_numpy(dtype=object, na_value=None)
            if items is not None and self.name_column is not None
            else None
        )
        two_tower = funnel.retrieval.two_tower
        history = getattr(two_tower, "history_", None) if two_tower is not None else None
        self.history: HistoryIndex | None = history if isinstance(history, HistoryIndex) else None
        self.repurchase = next(
            (s for s, _ in funnel.retrieval.sources if isinstance(s, RepurchaseSource)), None
        )
        self.showcase = self._showcase()

    # -- items -------------------------------------------------------------------------------
    def card(self, item: int) -> dict[str, Any]:
        name = self.names[item] if self.names is not None else None
        return {
            **self.catalog.describe(item),
            "item_id": str(self.catalog.item_ids[item]),
            "name": name,
        }

    # -- purchases ---------------------------------------------------------------------------
    def rows(self, user: int) -> tuple[int, int]:
        """The user's rows [lo, hi) in the history index (sorted by user, then day)."""
        assert self.history is not None
        lo, hi = np.searchsorted(self.history.user, [user, user + 1], side="left")
        return int(lo), int(hi)

    def past(self, user: int, k: int) -> tuple[list[tuple[int, str | None]], int]:
        """(item, day) of the user's latest k purchases before the cutoff, newest first, and
        how many purchases they made before it."""
        if self.history is not None:
            lo, hi = self.rows(user)
            start = max(lo, hi - k)
            items = self.history.item[start:hi][::-1].tolist()
            days = self.history.day[start:hi][::-1].tolist()
            return [(int(i), _day(d)) for i, d in zip(items, days, strict=True)], hi - lo
        if self.repurchase is not None and self.repurchase.scores_ is not None:
            # no histories: the items by their recency-weighted units, without days
            row = self.repurchase.scores_[user]
            order = np.argsort(-row.data, kind="stable")[:k]
            return [(int(row.indices[j]), None) for j in order], int(row.nnz)
        return [], 0

    def _showcase(self) -> dict[str, Any]:
        catalog = self.catalog
        users: list[dict[str, Any]] = []
        notes: list[str] = []
        n_users = len(catalog.user_ids)

        def offer(idx: int, kind: str, label: str, description: str, purchases: int | None):
            users.append(
                {
                    "user_id": str(catalog.user_ids[idx]),
                    "kind": kind,
                    "label": label,
                    "description": description,
                    "purchases": purchases,
                    "known": True,
                }
            )

        history = self.history
        if history is not None and len(history.user) and n_users:
            counts = np.bincount(history.user, minlength=n_users)
            heavy = int(np.argmax(counts))
            offer(heavy, "heavy_buyer", "Heavy buyer",
                  f"{int(counts[heavy]):,} purchases before the cutoff, the most of anyone",
                  int(counts[heavy]))  # fmt: skip
            found = self._repurchaser(counts, skip=heavy)
            if found is None:
                notes.append("no repurchaser: nobody bought an item on two different days")
            else:
                user, repeated, item, times = found
                offer(user, "repurchaser", "Repurchaser",
                      f"bought {repeated} item{'s' * (repeated > 1)} on more than one day, "
                      f"e.g. {self._label(item)} on {times} days", int(counts[user]))  # fmt: skip
            latest = int(np.argmax(history.day))
            last_user = int(history.user[latest])
            if last_user not in {catalog.find_user(u["user_id"]) for u in users}:
                offer(last_user, "latest_buyer", "Latest buyer",
                      f"bought on {_day(history.day[latest])}, the last day before the cutoff",
                      int(counts[last_user]))  # fmt: skip
        elif self.repurchase is not None and self.repurchase.scores_ is not None and n_users:
            distinct = np.diff(self.repurchase.scores_.indptr)
            heavy = int(np.argmax(distinct))
            offer(
                heavy,
                "heavy_buyer",
                "Heavy buyer",
                f"bought {int(distinct[heavy]):,} different items, the most of anyone",
                None,
            )
            notes.append("no repurchaser: the pipeline holds no purchase histories (no "
                         "two-tower source)")  # fmt: skip
        else:
            notes.append("no known customer offered: the pipeline holds no purchases (neither a "
                         "two-tower nor a repurchase source)")  # fmt: skip
        new = NEW_CUSTOMER
        n = 1
        while catalog.find_user(new) >= 0:
            n += 1
            new = f"{NEW_CUSTOMER}-{n}"
        users.append(
            {
                "user_id": new,
                "kind": "new_customer",
                "label": "New customer",
                "description": "an id the workspace does not know: a cold start (the best "
                "sellers of their segment)",
                "purchases": 0,
                "known": False,
            }
        )
        return {
            "users": users,
            "k": self.k,
            "cutoff": from_us(self.cutoff).isoformat() if self.cutoff is not None else None,
            "notes": notes,
        }

    def _repurchaser(self, counts: np.ndarray, skip: int) -> tuple[int, int, int, int] | None:
        """Among the heaviest buyers, the one whose purchases most often re-buy an item bought
        on an earlier day (the largest share, at least 2 such purchases): (user, how many
        items they bought on two days or more, the most repeated one, its days)."""
        assert self.history is not None
        best: tuple[float, int, tuple[int, int, int, int]] | None = None
        for user in np.argsort(-counts, kind="stable")[:SHOWCASE_SCAN].tolist():
            if counts[user] < 2:
                break
            if user == skip:
                continue
            lo, hi = self.rows(user)
            item = self.history.item[lo:hi].astype(np.int64)
            day = self.history.day[lo:hi].astype(np.int64)
            pairs = np.unique(np.stack([item, day]), axis=1)  # (item, day) once each
            items, days = np.unique(pairs[0], return_counts=True)
            again = int((days - 1).sum())  # purchase days of an item bought before
            if again < 2:
                continue
            share = again / pairs.shape[1]
            if best is None or (share, again) > best[:2]:
                top = int(np.argmax(days))
                best = (
                    share,
                    again,
                    (user, int((days >= 2).sum()), int(items[top]), int(days[top])),
                )
        return best[2] if best is not None else None

    def _label(self, item: int) -> str:
        name = self.names[item] if self.names is not None else None
        item_id = str(self.catalog.item_ids[item])
        return f"{name} ({item_id})" if name else item_id


def name_column(catalog: Catalog) -> str | None:
    """The item column that names an item for a person: a text or categorical column called
    name or title (prod_name, product_name, title, ...), else none (cards then show the display
    attributes)."""
    items = catalog.data.items
    if items is None:
        return None
    kinds = catalog.data.item_kinds
    candidates = [
        c
        for c in items.columns
        if kinds.get(c) in (AttributeKind.TEXT, AttributeKind.CATEGORICAL)
        and c.lower() in {"name", "title", "prod_name", "product_name", "item_name", "article_name"}
    ]
    if candidates:
        return candidates[0]
    # a text column ending in name (not the type or colour names, which are categorical)
    return next(
        (c for c in items.columns if kinds.get(c) == AttributeKind.TEXT
         and c.lower().endswith(("name", "title"))),
        None,
    )  # fmt: skip


def _day(day: Any) -> str:
    """A day number (days since 1970-01-01) as YYYY-MM-DD."""
    return (EPOCH + timedelta(days=int(day))).isoformat()


class _PerVersion:
    """PageData of the serving pipeline, made on first use and again after a reload."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ref: weakref.ref | None = None
        self._data: PageData | None = None

    def get(self, pipeline: Pipeline) -> PageData:
        funnel = pipeline.funnel_
        if funnel is None:
            raise ApiError(503, None, None, "not ready: the workspace is still loading")
        with self._lock:
            if self._data is None or self._ref is None or self._ref() is not funnel:
                self._data = PageData(pipeline, funnel)
                self._ref = weakref.ref(funnel)
            return self._data


# -- the routes ----------------------------------------------------------------------------------


def register(app: FastAPI, state: ServiceState) -> None:
    """The pages (`/`, `/report`), their files (`/static/...`) and their JSON endpoints."""
    per_version = _PerVersion()

    def serving() -> tuple[Pipeline, PageData]:
        """The serving pipeline, taken once for the request, and what the pages derive."""
        state.check_ready()
        pipeline = state.pipeline
        if pipeline is None:
            raise ApiError(503, None, None, "not ready: the workspace is still loading")
        return pipeline, per_version.get(pipeline)

    router = APIRouter(dependencies=[Depends(state.read_access)], tags=["web page"])

    @router.get(
        SHOWCASE,
        response_model=ShowcaseOut,
        responses=READ_ERRORS,
        summary="Customers worth a look: a heavy buyer, a repurchaser, a new customer",
    )
    def showcase() -> dict[str, Any]:
        """Picked once per loaded version from the pipeline's purchase histories (what its
        two-tower source reads; else the repurchase source's matrix), plus an id the workspace
        does not know (a cold start)."""
        return serving()[1].showcase

    @router.get(
        HISTORY,
        response_model=HistoryOut,
        responses=READ_ERRORS,
        summary="A user's latest purchases",
    )
    def history(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
        k: Annotated[int, Query(ge=1, le=MAX_HISTORY, description="How many purchases")] = 12,
    ) -> dict[str, Any]:
        """Newest first: the purchases events recorded since the cutoff (read from the online
        store per request: a purchase posted to /v1/events shows at once), then those before
        it (the pipeline's histories). A user the workspace does not know has none
        (`cold_start: true`)."""
        pipeline, data = serving()
        user = data.catalog.find_user(user_id)
        if user < 0:
            return {"user_id": user_id, "items": [], "purchases": 0, "since_cutoff": 0,
                    "cold_start": True, "degraded": False}  # fmt: skip
        degraded = False
        recent: list[dict[str, Any]] = []
        try:
            signals = pipeline.funnel_.signals(np.array([user], np.int64))
        except StoreUnavailable:
            signals, degraded = None, True
        if signals is not None and len(signals.items[0]):
            items, ages, units = signals.items[0], signals.ages[0], signals.units[0]
            for item, age, quantity in zip(
                items[::-1].tolist(), ages[::-1].tolist(), units[::-1].tolist(), strict=True
            ):
                when = None
                if data.cutoff is not None and math.isfinite(age):
                    when = from_us(data.cutoff - int(age * US_PER_DAY)).date().isoformat()
                recent.append(
                    {**data.card(int(item)), "date": when, "quantity": quantity,
                     "since_cutoff": True}
                )  # fmt: skip
        since = len(recent)
        past, before = data.past(user, max(0, k - since))
        rows = recent[:k] + [
            {**data.card(item), "date": day, "since_cutoff": False} for item, day in past
        ]
        return {
            "user_id": user_id,
            "items": rows[:k],
            "purchases": before + since,
            "since_cutoff": since,
            "cold_start": False,
            "degraded": degraded,
        }

    @router.get(
        ITEMS,
        response_model=ItemsOut,
        responses=READ_ERRORS | {404: {"model": ErrorOut, "description": "Unknown item"}},
        summary="Items as a card shows them",
    )
    def items(
        ids: Annotated[
            list[Annotated[str, Query(min_length=1, max_length=MAX_ID)]],
            Query(min_length=1, max_length=MAX_ITEMS, description="Item ids (repeat it)"),
        ],
    ) -> dict[str, Any]:
        """Name (the item's name column, when it has one), display attributes and last price
        of each item, in the order asked. An unknown id is a 404 naming it."""
        _, data = serving()
        out = []
        for i, item_id in enumerate(ids):
            item = data.catalog.find_item(item_id)
            if item < 0:
                raise ApiError(404, f"ids.{i}", item_id, f"ids.{i}: unknown item {item_id!r}")
            out.append(data.card(item))
        return {"items": out}

    @router.get(
        REPORT,
        response_model=EvaluationReport,
        response_model_exclude_unset=True,
        responses={
            404: {"model": ErrorOut, "description": "No report in the workspace yet"},
            401: READ_ERRORS[401],
            503: {"model": ErrorOut, "description": "The report cannot be read"},
        },
        summary="The workspace's evaluation report (shortlist evaluate --json)",
    )
    def evaluation_report() -> dict[str, Any]:
        """`<workspace>/evaluation.json`, read at each request (`make demo` writes it; so does
        `shortlist evaluate --json WORKSPACE/evaluation.json`). Numbers JSON cannot carry
        (NaN) come as null."""
        return read_report(state.workspace.root / REPORT_FILE)

    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/report", include_in_schema=False)
    async def report_page() -> FileResponse:
        return FileResponse(STATIC / "report.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def read_report(path: FilePath) -> dict[str, Any]:
    """The report at `path` with its `file`; ApiError 404 when there is none, 503 when it is
    not a report."""
    try:
        raw = path.read_bytes()
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        raise ApiError(
            404, None, None,
            f"no evaluation report in the workspace: {path} does not exist; write one with "
            f"`shortlist evaluate --json {path}` (`--candidates` adds candidate recall; "
            "`make demo` writes one)",
        ) from None  # fmt: skip
    except OSError as exc:
        message = f"the evaluation report {path} cannot be read: {exc}"
        raise ApiError(503, None, None, message) from None
    try:
        report = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # Python's json writes NaN, which orjson refuses
            report = json.loads(raw)
        except ValueError as exc:
            raise ApiError(503, None, None, f"{path} is not JSON: {exc}") from None
    if isinstance(report, dict):
        report = {**_finite(report), "file": {"path": str(path), "modified": modified.isoformat()}}
    try:
        EvaluationReport.model_validate(report)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "the top level"
        raise ApiError(
            503, None, None,
            f"{path} is not an evaluation report of `shortlist evaluate --json` "
            f"({where}: {first.get('msg')})",
        ) from None  # fmt: skip
    return report


def _finite(value: Any) -> Any:
    """NaN and infinities as None, in any nesting (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
