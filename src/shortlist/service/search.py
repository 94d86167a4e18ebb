"""`GET /v1/search`: a text query's items, ordered for the user when the workspace knows them.

    curl 'localhost:8000/v1/search?q=black+trousers&user_id=00b9e2a8...&k=24&price_max=0.05'

The pipeline does the work (`Pipeline.search`, pipeline/search.py): this module turns the query
parameters into its arguments (the filter parameters of the recommendation endpoints) and its
answer into the declared `SearchOut`, with errors naming the parameter at fault. The loaded
pipeline is read from the service's state at each request (a reload swaps it, with its text
index); the sentence model is loaded once per process when the app starts, so the first
search does not pay for it. Parameters and answer: docs/search.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from shortlist.errors import WorkspaceError
from shortlist.pipeline.search import DEFAULT_K, MAX_QUERY
from shortlist.service.engine import query_filters
from shortlist.service.errors import ApiError, translated
from shortlist.service.metrics import ServiceMetrics
from shortlist.service.models import MAX_FILTER, MAX_ID, MAX_ITEMS, MAX_K, MAX_TEXT, ErrorOut

log = logging.getLogger("shortlist.service")

SEARCH = "/v1/search"


# -- the answer ----------------------------------------------------------------------------------


class FoundItemOut(BaseModel):
    """One search result; its display attributes (names, colour, ...) come as extra keys, as
    in the recommendation endpoints."""

    model_config = ConfigDict(extra="allow")

    item_id: str
    score: float = Field(description="The fused score (reciprocal rank fusion): higher first")
    sources: dict[str, int] = Field(
        description="The item's rank on each side that ranked it: `lexical` (BM25), `semantic` "
        "(sentence embeddings), `personal` (the user's order, when personalized)"
    )
    price: float | None = Field(None, description="The price the item last sold at")


class FacetValueOut(BaseModel):
    value: str | float | bool = Field(
        description="A value of the attribute: filter on it with `attribute` and `values`"
    )
    count: int = Field(description="Matching items (all of them, not only the first k) with it")


class SearchOut(BaseModel):
    query: str = Field(description="The query, as searched (spaces stripped)")
    user_id: str | None
    items: list[FoundItemOut]
    facets: dict[str, list[FacetValueOut]] = Field(
        description="Refinements: for the most useful categorical attributes on which the "
        "matches differ, their most frequent values and counts"
    )
    total: int = Field(description="Items matching the query and passing the filters, before k")
    suggestion: str | None = Field(
        description="When no item holds the query's words: the closest query some do hold (a "
        "typo corrected, fewer words); null otherwise"
    )
    personalized: bool = Field(description="Ordered for the user (a user the workspace knows)")
    cold_start: bool = Field(
        description="A user_id was given that the workspace does not know: the order is the "
        "non-personal one"
    )
    degraded: bool = Field(
        description="The online store failed: the answer is not personalized (the trace says why)"
    )
    trace: list[dict[str, Any]] | None = Field(
        None, description="With trace=true: per stage, items in and out and milliseconds"
    )


# -- the parameters ------------------------------------------------------------------------------

QueryText = Annotated[
    str,
    Query(min_length=1, max_length=MAX_QUERY,
          description=f"The query, 1 to {MAX_QUERY} characters: words of names, descriptions "
                      "and attribute values (`black trousers`), or a description"),
]  # fmt: skip
UserId = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_ID,
          description="The shopper: a known user gets their own order; an unknown one the "
                      "non-personal order (cold_start: true)"),
]  # fmt: skip
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"How many items, 1 to {MAX_K}")]
Trace = Annotated[bool, Query(description="Items in and out and milliseconds per stage")]
PriceMin = Annotated[
    float | None, Query(allow_inf_nan=False, description="Lowest price (the last sold at)")
]
PriceMax = Annotated[float | None, Query(allow_inf_nan=False, description="Highest price")]
Attribute = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_TEXT,
          description="An item attribute that must be one of `values` (e.g. a facet's)"),
]  # fmt: skip
Values = Annotated[
    list[Annotated[str, Query(max_length=MAX_TEXT)]] | None,
    Query(max_length=MAX_ITEMS, description="The values `attribute` may take (repeat it)"),
]
FilterJson = Annotated[
    str | None,
    Query(alias="filter", max_length=MAX_FILTER,
          description="Any filter of the language of docs/index.md, as JSON"),
]  # fmt: skip
Region = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_TEXT, description="Region name (overrides the user's)"),
]
AgeQuery = Annotated[
    float | None,
    Query(ge=0, le=150, allow_inf_nan=False, description="Age in years (overrides the user's)"),
]
Exclude = Annotated[
    list[Annotated[str, Query(max_length=MAX_ID)]] | None,
    Query(max_length=MAX_ITEMS, description="Item ids never to return (repeat it)"),
]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "The API key is required (read_key_required)"},
    404: {"model": ErrorOut, "description": "An excluded item the catalogue does not hold"},
    422: {"model": ErrorOut, "description": "Invalid parameter (an empty query), filter, "
          "region or age"},
    503: {"model": ErrorOut, "description": "The workspace is not loaded (yet), or has no "
          "search index"},
}  # fmt: skip


def register(app: FastAPI, state: Any, metrics: ServiceMetrics) -> None:
    """Add `GET /v1/search` to the app over `state` (the service's `ServiceState`), and the
    sentence model's loading to the app's startup."""

    @app.get(
        SEARCH,
        response_model=SearchOut,
        response_model_exclude_unset=True,
        responses=ERRORS,
        dependencies=[Depends(state.read_access)],
        tags=["search"],
        summary="Items matching a text query, ordered for the user",
    )
    async def search_items(
        q: QueryText,
        user_id: UserId = None,
        k: K = DEFAULT_K,
        trace: Trace = False,
        price_min: PriceMin = None,
        price_max: PriceMax = None,
        attribute: Attribute = None,
        values: Values = None,
        filter_json: FilterJson = None,
        region: Region = None,
        age: AgeQuery = None,
        exclude: Exclude = None,
    ) -> dict[str, Any]:
        """The k items that best match the query: BM25 over the item texts and sentence
        embeddings, fused; for a user the workspace knows, re-ranked with their two-tower
        vector and the ranker's features. The same filters as recommendations (stock,
        region, age, the request's), facet counts to refine by, and a suggestion when no
        item holds the query's words."""
        state.check_ready()
        pipeline = state.pipeline  # read once: a reload may swap it while this one answers
        query = q.strip()
        if not query:
            raise ApiError(422, "q", q, "q: the query has no characters but spaces")
        spec, origin = query_filters(
            state.schema(),
            filter_json=filter_json,
            price_min=price_min,
            price_max=price_max,
            attribute=attribute,
            values=values,
        )
        catalog = pipeline.funnel_.catalog
        for i, item in enumerate(exclude or []):
            if catalog.find_item(item) < 0:
                raise ApiError(404, f"exclude.{i}", item, f"exclude.{i}: unknown item {item!r}")
        context = {
            key: value
            for key, value in (
                ("filters", spec), ("region", region), ("age", age), ("exclude", exclude),
            )
            if value is not None and value != []
        }  # fmt: skip
        fields = {**context, "k": k, "q": q, "user_id": user_id}
        try:
            with translated(fields, origin):
                result = await state.offload(lambda: pipeline.search(query, user_id, context, k=k))
        except WorkspaceError as exc:  # no (current) search index: the message says what to run
            raise ApiError(503, None, None, str(exc)) from None
        body = result.to_dict()
        metrics.observe_answer(SEARCH, body.get("trace") or [], cold_start=result.cold_start)
        if result.degraded:
            metrics.fallbacks.labels(SEARCH, "degraded").inc()
        if not trace:
            body.pop("trace", None)
        return body

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as value:
            await anyio.to_thread.run_sync(warm, state)
            yield value

    app.router.lifespan_context = lifespan


def warm(state: Any) -> None:
    """Load the sentence model of the loaded pipeline's text index (once per process: a reload
    finds it loaded), so that the first search answers as fast as the next."""
    pipeline = getattr(state, "pipeline", None)
    text = getattr(pipeline, "text_", None)
    if text is None or text.encoder is None:
        return
    try:
        text.embed("warm up")
    except Exception as exc:  # the first search will say what is wrong
        log.warning("shortlist: the sentence model of search did not load: %s", exc)
