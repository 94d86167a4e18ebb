"""The HTTP service: a FastAPI app over one built workspace (`create_app`), served by uvicorn
(`shortlist serve`). Endpoints, parameters and errors: docs/service.md.

The workspace is loaded once per process, at startup (the lifespan), never per request. The
read endpoints are coroutines: they check the request on the event loop, then hand the funnel's
work (numpy, FAISS, torch and compiled trees, most of which release the GIL) to the full-pipeline
threads and await it, so the loop stays free to accept connections and answer /healthz and
/metrics meanwhile. That is one hand-over per request, where a plain function costs three
(FastAPI runs a plain function's dependencies, its body and its answer's serialization each in a
worker thread). The write endpoints (events, reload) stay plain functions: they wait on files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path as FilePath
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from shortlist.pipeline import Pipeline
from shortlist.service import errors, search, web
from shortlist.service.engine import ServiceState, query_filters
from shortlist.service.metrics import CONTENT_TYPE, ObservedApp, ServiceMetrics
from shortlist.service.models import (
    MAX_FILTER,
    MAX_ID,
    MAX_ITEMS,
    MAX_K,
    MAX_TEXT,
    CartOut,
    CartRequest,
    ErrorOut,
    EventsOut,
    EventsRequest,
    HealthOut,
    ReadyOut,
    RecommendationsOut,
    RecommendRequest,
    ReloadOut,
    SimilarOut,
)
from shortlist.workspace import Workspace

log = logging.getLogger("shortlist.service")

WORKSPACE_ENV = "SHORTLIST_WORKSPACE"  # what `app_from_env` serves (as the CLI's option)
MAX_BODY = 1 << 20  # bytes of a request body

USER_RECOMMENDATIONS = "/v1/users/{user_id}/recommendations"
RECOMMENDATIONS = "/v1/recommendations"
SIMILAR = "/v1/items/{item_id}/similar"
CART = "/v1/cart/recommendations"
EVENTS = "/v1/events"
RELOAD = "/v1/admin/reload"

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "Unknown item"},
    422: {"model": ErrorOut, "description": "Invalid parameter, filter, region or age"},
    503: {"model": ErrorOut, "description": "The workspace is not loaded (yet)"},
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: {"model": ErrorOut, "description": "The body is too large"},
}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "The API key is required (read_key_required)"},
}
EVENT_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {"model": EventsOut, "description": "Logged, not applied yet (the store failed)"},
    401: {"model": ErrorOut, "description": "No API key given, or a wrong one"},
    413: {"model": ErrorOut, "description": "The body is too large"},
    422: {"model": ErrorOut, "description": "A bad event (its position and field named): "
          "nothing of the batch was recorded"},
    503: {"model": ErrorOut, "description": "Not loaded yet, no API key set on the server, or "
          "the event log cannot be written (not acknowledged)"},
}  # fmt: skip

# the write endpoints' key, `Authorization: Bearer KEY` (published as the security scheme)
BEARER = HTTPBearer(auto_error=False, description="The service's API key ([service] api_key)")

# -- query parameters shared by the GET endpoints ------------------------------------------------
Bounded = Annotated[str, Query(min_length=1, max_length=MAX_TEXT)]
KQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_K, description=f"How many items, 1 to {MAX_K} (default: the pipeline's k)"),
]
Explain = Annotated[bool, Query(description="The reasons for each item")]
Trace = Annotated[bool, Query(description="Items in and out and milliseconds per stage")]
PriceMin = Annotated[
    float | None, Query(allow_inf_nan=False, description="Lowest price (the last sold at)")
]
PriceMax = Annotated[float | None, Query(allow_inf_nan=False, description="Highest price")]
Attribute = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_TEXT,
          description="An item attribute that must be one of `values` "
                      "(e.g. product_group_name)"),
]  # fmt: skip
Values = Annotated[
    list[Annotated[str, Query(max_length=MAX_TEXT)]] | None,
    Query(max_length=MAX_ITEMS, description="The values `attribute` may take (repeat it)"),
]
FilterJson = Annotated[
    str | None,
    Query(alias="filter", max_length=MAX_FILTER,
          description='Any filter of the language of docs/index.md, as JSON: '
                      '{"price": {"lte": 0.05}, "colour_group_name": "Black"}'),
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
    Query(max_length=MAX_ITEMS, description="Item ids never to recommend (repeat it)"),
]


def _version() -> str:
    try:
        return version("shortlist")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without install
        return "0"


def create_app(
    workspace: Workspace | str | FilePath,
    *,
    pipeline: Pipeline | None = None,
    metrics: ServiceMetrics | None = None,
    max_body: int = MAX_BODY,
) -> FastAPI:
    """The service over one built workspace.

    pipeline: serve this `Pipeline` (loaded at startup if it is not) instead of the one of the
    workspace's shortlist.toml. metrics: where to count (a fresh registry by default).
    max_body: the largest request body accepted, in bytes (413 beyond).
    """
    state = ServiceState(workspace, pipeline)
    metrics = metrics or ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.ready:  # loaded before this worker was forked (`shortlist serve --workers N`)
            log.info(
                "shortlist: worker %d serves version %s of workspace %s",
                os.getpid(), state.loaded().version, state.workspace.root,
            )  # fmt: skip
            yield
            state.close()
            return
        log.info("shortlist: loading workspace %s", state.workspace.root)
        await anyio.to_thread.run_sync(state.load)
        log.info(
            "shortlist: workspace %s loaded in %.1f s%s",
            state.workspace.root,
            state.load_seconds or 0.0,
            f" (similar items unavailable: {state.similar_error})" if state.similar_error else "",
        )
        yield
        state.close()

    app = FastAPI(
        title="shortlist",
        version=_version(),
        summary="Personalized recommendations and similar items from a built workspace",
        description="Endpoints, parameters and errors: docs/service.md. Every error answers "
        "`ErrorOut`, naming the field and the value at fault.",
        lifespan=lifespan,
    )
    app.state.shortlist = state
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(ObservedApp, metrics=metrics, max_body=max_body, routes=lambda: app.routes)

    def write_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        """Write endpoints: `Authorization: Bearer KEY` (401 without it, or with a wrong key)."""
        state.authorize(credentials.credentials if credentials else None, write=True)

    ReadKey = Depends(state.read_access)  # noqa: N806 - a dependency, named as FastAPI's are

    def answer(
        endpoint: str, body: dict[str, Any], *, cold_start: bool, trace: bool
    ) -> dict[str, Any]:
        metrics.observe_answer(endpoint, body.get("trace") or [], cold_start=cold_start)
        if body.get("degraded"):
            metrics.fallbacks.labels(endpoint, "degraded").inc()
        if not trace:
            body.pop("trace", None)
        return body

    # -- recommendations -----------------------------------------------------------------------
    @app.get(
        USER_RECOMMENDATIONS,
        response_model=RecommendationsOut,
        response_model_exclude_unset=True,
        responses=ERRORS | UNAUTHORIZED,
        dependencies=[ReadKey],
        tags=["recommendations"],
        summary="A user's recommendations",
    )
    async def user_recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
        k: KQuery = None,
        explain: Explain = False,
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
        """The top k for a user, from the whole pipeline. A user the workspace does not know
        gets the best sellers of their segment (`region`, `age`), with `cold_start: true`."""
        state.check_ready()
        spec, origin = query_filters(
            state.schema(),
            filter_json=filter_json,
            price_min=price_min,
            price_max=price_max,
            attribute=attribute,
            values=values,
        )
        context = _context(exclude=exclude, filters=spec, region=region, age=age)
        body, cold = await state.recommend(user_id, context, k=k, explain=explain, origin=origin)
        body.update(cold_start=cold)
        return answer(USER_RECOMMENDATIONS, body, cold_start=cold, trace=trace)

    @app.post(
        RECOMMENDATIONS,
        response_model=RecommendationsOut,
        response_model_exclude_unset=True,
        responses=BODY_ERRORS | UNAUTHORIZED,
        dependencies=[ReadKey],
        tags=["recommendations"],
        summary="Recommendations for a user in a context (cart, exclusions, filters)",
    )
    async def recommendations(request: RecommendRequest) -> dict[str, Any]:
        """As the GET, with the whole context in the body: `cart` and `exclude` are never
        recommended, `filters` is the filter language of docs/index.md."""
        state.check_ready()
        context = _context(
            cart=request.cart,
            exclude=request.exclude,
            filters=request.filters,
            region=request.region,
            age=request.age,
        )
        body, cold = await state.recommend(
            request.user_id, context, k=request.k, explain=request.explain
        )
        body.update(cold_start=cold)
        return answer(RECOMMENDATIONS, body, cold_start=cold, trace=request.trace)

    @app.get(
        SIMILAR,
        response_model=SimilarOut,
        response_model_exclude_unset=True,
        responses=ERRORS | UNAUTHORIZED,
        dependencies=[ReadKey],
        tags=["items"],
        summary="Items similar to an item",
    )
    async def similar_items(
        item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items")] = 10,
        trace: Trace = False,
        price_min: PriceMin = None,
        price_max: PriceMax = None,
        attribute: Attribute = None,
        values: Values = None,
        filter_json: FilterJson = None,
        region: Region = None,
        age: AgeQuery = None,
    ) -> dict[str, Any]:
        """The k items nearest to the item in the two-tower space, among those passing the
        filters and the pipeline's business rules (stock; region and age when given)."""
        state.check_ready()
        spec, origin = query_filters(
            state.schema(for_similar=True),
            filter_json=filter_json,
            price_min=price_min,
            price_max=price_max,
            attribute=attribute,
            values=values,
        )
        body = await state.similar(
            item_id, k=k, filters=spec, origin=origin, region=region, age=age
        )
        return answer(SIMILAR, body, cold_start=False, trace=trace)

    @app.post(
        CART,
        response_model=CartOut,
        response_model_exclude_unset=True,
        responses=BODY_ERRORS
        | UNAUTHORIZED
        | {409: {"model": ErrorOut, "description": "No co-purchase source"}},
        dependencies=[ReadKey],
        tags=["recommendations"],
        summary="Items bought with the cart's contents",
    )
    async def cart_recommendations(request: CartRequest) -> dict[str, Any]:
        """Items most bought together with those in the cart: never the cart's own, nor any
        the pipeline's filters remove (out of stock, not sold in the region, ...)."""
        state.check_ready()
        context = _context(
            exclude=request.exclude, filters=request.filters, region=request.region, age=request.age
        )
        body, cold = await state.cart(
            request.cart, context, user_id=request.user_id, k=request.k, explain=request.explain
        )
        body.update(user_id=request.user_id, cart=request.cart, cold_start=cold)
        return answer(CART, body, cold_start=cold, trace=request.trace)

    # -- events --------------------------------------------------------------------------------
    @app.post(
        EVENTS,
        response_model=EventsOut,
        response_model_exclude_none=True,
        responses=EVENT_ERRORS,
        dependencies=[Depends(write_key)],
        tags=["events"],
        summary="Record purchases, stock changes, views, clicks and impressions",
    )
    def post_events(request: EventsRequest) -> Any:
        """A batch of events, checked whole: one bad event (an unknown item, a malformed
        field) rejects the batch with a 422 naming its position and field, and nothing is
        recorded. Otherwise the batch is appended to the workspace's event log (fsync'd), then
        applied to the online store: the next recommendation, from any process serving the
        workspace, reflects it (200). When the store fails after the append, the answer is a
        202: logged, and applied by the next batch or the next start. Needs
        `Authorization: Bearer KEY`."""
        events = [e.model_dump(exclude_none=True) for e in request.events]
        try:
            recorded, body = state.record_events(events)
        except errors.ApiError as exc:
            if exc.status == 422:
                metrics.event_batches.labels("rejected").inc()
            raise
        for kind, n in recorded.counts.items():
            metrics.events.labels(kind).inc(n)
        metrics.event_batches.labels("applied" if recorded.applied else "logged").inc()
        if not recorded.applied:
            return errors.json_response(202, body)
        return body

    # -- operations ----------------------------------------------------------------------------
    @app.post(
        RELOAD,
        response_model=ReloadOut,
        responses={
            401: {"model": ErrorOut, "description": "No API key given, or a wrong one"},
            409: {"model": ErrorOut, "description": "A reload is already running"},
            503: {"model": ErrorOut, "description": "Not loaded yet, no API key set, or the "
                  "new version failed to load (the old one keeps serving; the message says why)"},
        },
        dependencies=[Depends(write_key)],
        tags=["operations"],
        summary="Serve the workspace's latest build, without downtime",
    )  # fmt: skip
    def reload() -> dict[str, Any]:
        """Loads the workspace's current build (models, index, state, online store) beside the
        serving one, then switches to it atomically: requests in flight finish on the old
        version, every later one is answered by the new (their `version` says which). The
        other processes serving the workspace start loading it within `[service] watch`
        seconds. A worker of `serve --workers N` has its parent load it instead (once for all
        workers) and answers with the parent's load; the parent then forks new workers from
        the new version and stops the old ones. Needs `Authorization: Bearer KEY`."""
        watch = state.watch_seconds
        if state.forked and watch > 0:  # the parent loads it once and forks new workers
            body = state.reload_by_parent()
            body["workers"] = (
                "every worker of this `shortlist serve` is replaced by one forked "
                "from the new version (this one after it answers)"
            )
        else:
            body = state.reload(tell_others=True)
            body["workers"] = (
                f"the other workers serving this workspace start reloading within {watch:g} s"
                if watch > 0
                else "no watch ([service] watch = 0): call this on each worker or restart them"
            )
        metrics.reloads.inc()
        return body

    @app.get("/healthz", response_model=HealthOut, tags=["operations"], summary="Alive")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=ReadyOut,
        response_model_exclude_none=True,
        responses={503: {"model": ReadyOut, "description": "Loading, or failed to load"}},
        tags=["operations"],
        summary="The workspace is loaded",
    )
    async def readyz() -> Any:
        body = {
            "status": state.status,
            "workspace": str(state.workspace.root),
            "detail": state.detail
            or (
                f"similar items unavailable: {state.similar_error}" if state.similar_error else None
            ),
            "similar": (state.search is not None) if state.ready else None,
            "version": state.current.version if state.current is not None else None,
            "store": (f"degraded: {state.breaker.reason}" if state.breaker.reason else "ok")
            if state.ready
            else None,
            "reload_error": state.reload_error,
        }
        if not state.ready:
            return errors.json_response(503, {k: v for k, v in body.items() if v is not None})
        return body

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}},
                         "description": "Prometheus text exposition"}},
        tags=["operations"],
        summary="Prometheus metrics",
    )  # fmt: skip
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    web.register(app, state)  # the web page (/, /report) and its JSON endpoints
    search.register(app, state, metrics)  # GET /v1/search (service/search.py)
    return app


def _context(**parts: Any) -> dict[str, Any]:
    """A pipeline request context without the parts the request left out."""
    return {k: v for k, v in parts.items() if v is not None and v != []}


def app_from_env() -> FastAPI:
    """The app over $SHORTLIST_WORKSPACE (default ./workspace): what `shortlist serve` builds
    with one worker (with more, `server.serve` builds and loads it before forking them)."""
    return create_app(os.environ.get(WORKSPACE_ENV) or "workspace")
