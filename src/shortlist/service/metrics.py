"""Prometheus metrics of the service, and the ASGI layer that times every request.

Latency per endpoint (the route's template, so ids do not make new series), per funnel stage
(the stages of each answer's trace and their milliseconds), and counters of requests by
status, errors, cold starts and fallbacks. Each app has its own registry; with several
worker processes (`shortlist serve --workers N`) `PROMETHEUS_MULTIPROC_DIR` is set and
/metrics adds up every worker's files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import Match

from shortlist.service.errors import error_response

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0)  # fmt: skip
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
                 0.1, 0.25, 1.0)  # fmt: skip
UNMATCHED = "unmatched"  # the endpoint label of requests no route answered
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServiceMetrics:
    """The service's metric families, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "shortlist_http_requests",
            "Requests answered, by endpoint (route template), method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "shortlist_http_request_duration_seconds",
            "Time from the request to the end of the answer, per endpoint",
            ["endpoint", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "shortlist_http_errors",
            "Answers with a status of 400 or more, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.stages = Histogram(
            "shortlist_stage_duration_seconds",
            "Time per funnel stage of an answer (the stages of its trace)",
            ["endpoint", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.cold_starts = Counter(
            "shortlist_cold_starts",
            "Answers for users the workspace does not know (segment best sellers)",
            ["endpoint"],
            registry=r,
        )
        self.events = Counter(
            "shortlist_events",
            "Events recorded (logged, and applied or to be applied), by type",
            ["type"],
            registry=r,
        )
        self.event_batches = Counter(
            "shortlist_event_batches",
            "Batches of events: 'applied', 'logged' (the store failed: applied later), "
            "'rejected' (a bad event: nothing recorded)",
            ["outcome"],
            registry=r,
        )
        self.fallbacks = Counter(
            "shortlist_fallbacks",
            "Answers that needed a fallback: 'top_up' (filled from the most sold recently), "
            "'degraded' (a store failed: answered from memory)",
            ["endpoint", "reason"],
            registry=r,
        )

        self.reloads = Counter(
            "shortlist_reloads", "Workspace versions switched to by POST /v1/admin/reload",
            registry=r,
        )  # fmt: skip

    def observe_answer(
        self, endpoint: str, trace: Iterable[Mapping[str, Any]], *, cold_start: bool = False
    ) -> None:
        """Stage times, cold start and top-up of one answer, from its trace."""
        topped_up = 0
        for stage in trace:
            ms = stage.get("ms")
            if isinstance(ms, int | float):
                self.stages.labels(endpoint, str(stage.get("stage"))).observe(ms / 1000)
            topped_up += int(stage.get("topped_up") or 0)
        if cold_start:
            self.cold_starts.labels(endpoint).inc()
        if topped_up:
            self.fallbacks.labels(endpoint, "top_up").inc()

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's files."""
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class ObservedApp:
    """ASGI middleware: times and counts every HTTP request by its route's template, refuses
    bodies over `max_body` bytes (413) before they are read, and counts the 500s of failures
    that escape the app."""

    def __init__(
        self,
        app: Any,
        metrics: ServiceMetrics,
        max_body: int = 1 << 20,
        routes: Callable[[], Iterable[Any]] = tuple,
    ):
        self.app, self.metrics, self.max_body, self.routes = app, metrics, max_body, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                limit = f"the body is over {self.max_body:,} bytes"
                await error_response(413, [("body", None, limit)])(scope, receive, sending)
            else:
                await self.app(scope, self._bounded(receive), sending)
        except Exception:
            status["code"] = 500
            raise
        finally:
            endpoint = self._endpoint(scope)
            method = scope.get("method", "")
            code = status["code"]
            m = self.metrics
            m.requests.labels(endpoint, method, str(code)).inc()
            m.latency.labels(endpoint, method).observe(time.perf_counter() - started)
            if code >= 400:
                m.errors.labels(endpoint, str(code)).inc()

    def _endpoint(self, scope: dict) -> str:
        """The template of the route that answered (Starlette records it in the scope; older
        versions do not, and the routes are matched again)."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes() if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", None) or UNMATCHED

    def _bounded(self, receive: Any) -> Any:
        """`receive`, failing once a body without a declared length grows past the limit."""
        seen = {"bytes": 0}
        limit = self.max_body

        async def receiving() -> dict:
            message = await receive()
            if message.get("type") == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    raise ValueError(f"the body is over {limit:,} bytes")
            return message

        return receiving
