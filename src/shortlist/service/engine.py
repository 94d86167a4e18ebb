"""What the endpoints call: the loaded pipeline and item search of one workspace, and the
requests turned into pipeline calls (filters from query parameters, ids checked, errors
naming the request's fields).

Everything here is synchronous and CPU-bound; the app runs it in its threadpool.
"""

from __future__ import annotations

import hmac
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from shortlist.config import API_KEY_ENV
from shortlist.data.filters import AttrType
from shortlist.errors import NotFoundError, ShortlistError
from shortlist.pipeline import Pipeline
from shortlist.pipeline.cart import cart_recommendations
from shortlist.pipeline.cold_start import (
    anonymous_chain,
    anonymous_context,
    request_segment,
    take_filtered,
)
from shortlist.pipeline.cold_start import cold_start as cold_start_for
from shortlist.pipeline.events import CatchUp, EventRecorder, EventsRejected, Recorded
from shortlist.pipeline.funnel import Funnel
from shortlist.retrieval.similar import ItemSearch
from shortlist.service.errors import ApiError, translated
from shortlist.service.models import MAX_FILTER, check_filter_spec
from shortlist.workspace import Workspace, open_workspace

PRICE = "price"  # the filterable last price (the catalogue's and the item search's)


class ServiceState:
    """One workspace, loaded once: the pipeline (bound funnel) and the item search.

    `load` is called by the app's lifespan, in a worker thread; `ready` turns true when both
    are loaded (the item search may fail alone: `similar_error` then says why, and only the
    similar-items endpoint answers 503).
    """

    def __init__(self, workspace: Workspace | str | Path, pipeline: Pipeline | None = None):
        self.workspace = (
            workspace if isinstance(workspace, Workspace) else open_workspace(workspace)
        )
        self.pipeline = pipeline
        self.search: ItemSearch | None = None
        self.similar_error: str | None = None
        self.recorder: EventRecorder | None = None  # real-time events (POST /v1/events)
        self.events_error: str | None = None  # why events cannot be recorded
        self.replayed: CatchUp | None = None  # what the start applied from the event log
        self.status = "loading"
        self.detail: str | None = None
        self.load_seconds: float | None = None
        settings = self.workspace.settings().service
        # the write key: the environment wins over shortlist.toml; never a default
        self.api_key = os.environ.get(API_KEY_ENV) or settings.api_key
        self.read_key_required = settings.read_key_required
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def load(self) -> None:
        """Loads the workspace (once: a second call, e.g. a second lifespan, does nothing)."""
        if self.ready:
            return
        started = time.perf_counter()
        try:
            pipeline = self.pipeline or Pipeline.from_config(self.workspace)
            self.pipeline = pipeline.load()
            try:
                self.search = ItemSearch(self.workspace)
            except ShortlistError as exc:
                self.similar_error = str(exc)
            self._start_events()
        except Exception as exc:
            self.status, self.detail = "failed", str(exc)
            raise
        self.load_seconds = time.perf_counter() - started
        self.status = "ready"

    def _start_events(self) -> None:
        """The event recorder, and the events the log holds that the online store's current
        version has not applied yet (a crash after a log append, a new version): applied now,
        before the first request. A store that fails here does not stop the service: reads
        go on, and the next batch of events applies what is left."""
        assert self.pipeline is not None
        try:
            self.recorder = EventRecorder(self.pipeline)
        except (ShortlistError, OSError) as exc:
            self.events_error = str(exc)
            return
        try:
            self.replayed = self.recorder.catch_up()
        except ShortlistError as exc:  # read on; the next batch applies what is left
            self.events_error = f"events logged but not applied yet: {exc}"

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
    def record_events(self, events: list[dict[str, Any]]) -> tuple[Recorded, dict[str, Any]]:
        """Check, log and apply a batch: (what was done, the answer's body)."""
        self.check_ready()
        if self.recorder is None:
            raise ApiError(503, None, None, f"events unavailable: {self.events_error}")
        try:
            recorded = self.recorder.record(events)
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
        _ = self.funnel

    @property
    def funnel(self) -> Funnel:
        if not self.ready or self.pipeline is None or self.pipeline.funnel_ is None:
            detail = self.detail or "the workspace is still loading"
            raise ApiError(503, None, None, f"not ready: {detail}")
        return self.pipeline.funnel_

    def is_known_user(self, user_id: str) -> bool:
        try:
            self.funnel.catalog.user_idx(user_id)
        except NotFoundError:
            return False
        return True

    def check_items(self, ids: Sequence[str], field: str) -> None:
        """Raises ApiError 404 naming the field and the first id the catalogue lacks."""
        if not ids:
            return
        catalog = self.funnel.catalog
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
    def recommend(
        self,
        user_id: str,
        context: dict[str, Any],
        *,
        k: int | None,
        explain: bool,
        origin: Mapping[str, tuple[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The answer's dict (user_id, items, trace) and whether it was a cold start."""
        self.check_items(context.get("cart") or [], "cart")
        self.check_items(context.get("exclude") or [], "exclude")
        values = {**context, "k": k}
        with translated(values, origin or _origin(context.get("filters"), "filters")):
            if self.is_known_user(user_id):
                result = self.pipeline.recommend(user_id, context, explain=explain, k=k)
                return result.to_dict(), False
            assert self.pipeline is not None
            result = cold_start_for(self.pipeline, context, user_id=user_id, k=k, explain=explain)
            return result.to_dict(), True

    def cart(
        self,
        cart: list[str],
        context: dict[str, Any],
        *,
        user_id: str | None,
        k: int | None,
        explain: bool,
    ) -> tuple[dict[str, Any], bool]:
        """The answer's dict and whether a given user was unknown (a cold start)."""
        self.check_items(cart, "cart")
        self.check_items(context.get("exclude") or [], "exclude")
        cold = user_id is not None and not self.is_known_user(user_id)
        values = {**context, "cart": cart, "k": k, "user_id": user_id}
        with translated(values, _origin(context.get("filters"), "filters")):
            assert self.pipeline is not None
            result = cart_recommendations(
                self.pipeline, cart, context, user_id=user_id, k=k, explain=explain
            )
        return result.to_dict(), cold

    def similar(
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
        funnel = self.funnel
        if self.search is None:
            raise ApiError(503, None, None, f"similar items unavailable: {self.similar_error}")
        self.check_items([item_id], "item_id")
        values = {"region": region, "age": age, "filters": filters, "k": k}
        with translated(values, origin):
            segment = request_segment(funnel, {"region": region, "age": age})
            ctx = anonymous_context(funnel, segment)  # attribute filters ran in the search
            chain = anonymous_chain(funnel)
            catalog = funnel.catalog
            n_items = len(catalog.item_ids)
            want = min(n_items, max(2 * k, k + 16))
            search_s = filter_s = 0.0
            while True:  # over-fetch until k pass the business filters, or none are left
                started = time.perf_counter()
                matches = self.search.similar(item_id, want, filters)
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

    # -- query parameters ------------------------------------------------------------------------
    def schema(self, for_similar: bool = False) -> dict[str, AttrType]:
        if for_similar and self.search is not None:
            return self.search.attributes.schema
        return self.funnel.catalog.attributes.schema


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
