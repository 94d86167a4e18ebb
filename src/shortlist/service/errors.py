"""Errors as answers: every failure a client can cause becomes a 4xx whose JSON names the field
and the value; anything else is a 500 that says nothing of the internals (and is counted).

One body for all of them (`ErrorOut`): {"error", "status", "field", "value", "message",
"errors": [{"field", "value", "message"}, ...]}.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shortlist.errors import (
    ConfigError,
    FilterError,
    NotFoundError,
    RequestError,
    ShortlistError,
)
from shortlist.service.models import EVENT_TYPES

log = logging.getLogger("shortlist.service")

KINDS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}
SHOWN = 120  # characters of a value echoed back


class ApiError(Exception):
    """A failure with its HTTP status and the field and value at fault (`more`: further
    problems, (field, value, message) each, listed in the body's `errors` after the first)."""

    def __init__(
        self,
        status: int,
        field: str | None,
        value: Any,
        message: str,
        *,
        more: list[tuple[str | None, Any, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.field, self.value, self.message = status, field, value, message
        self.more, self.headers = more or [], headers


def shown(value: Any) -> Any:
    """A value as echoed in an error: JSON scalars as they are, long strings and containers
    shortened (a hostile request must not get its megabytes back), numbers JSON cannot carry
    as text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else _cut(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value)
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # integers over 64 bits, objects
        text = repr(value)
    else:
        if len(text) <= SHOWN:
            return orjson.loads(text)
    return _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def json_response(status: int, body: Mapping[str, Any], headers: dict | None = None) -> Response:
    try:
        content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:  # what orjson cannot carry (integers over 64 bits): as text
        content = json.dumps(body, default=str).encode()
    return Response(
        content,
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_body(status: int, problems: list[tuple[str | None, Any, str]]) -> dict[str, Any]:
    errors = [{"field": f, "value": shown(v), "message": m} for f, v, m in problems]
    first = errors[0]
    return {
        "error": KINDS.get(status, "error"),
        "status": status,
        "field": first["field"],
        "value": first["value"],
        "message": first["message"],
        "errors": errors,
    }


def error_response(status: int, problems: list[tuple[str | None, Any, str]]) -> Response:
    return json_response(status, error_body(status, problems))


def _named(field: str | None, message: str) -> str:
    """The message, starting with the field when it does not name it already."""
    if field is None or field.split(".")[0] in message:
        return message
    return f"{field}: {message}"


@contextmanager
def translated(
    values: Mapping[str, Any], origin: Mapping[str, tuple[str, Any]] | None = None
) -> Iterator[None]:
    """Turns the package's errors raised inside into ApiErrors naming the request's field and
    value: `values` maps a request field to what the client sent (region, age, ...), `origin`
    maps a filtered attribute to the request field and condition it came from."""
    origin = origin or {}
    try:
        yield
    except FilterError as exc:
        where = origin.get(exc.field) if exc.field else None
        if where is None:
            field = f"filters.{exc.field}" if exc.field else "filters"
            value = (values.get("filters") or {}).get(exc.field) if exc.field else None
            value = values.get("filters") if exc.field is None else value
        else:
            field, value = where
        raise ApiError(422, field, value, _named(field, str(exc))) from None
    except RequestError as exc:
        field = exc.field
        raise ApiError(422, field, values.get(field or ""), _named(field, str(exc))) from None
    except ConfigError as exc:  # on a request's path: something the request asked for
        raise ApiError(422, exc.key, values.get(exc.key or ""), str(exc)) from None
    except NotFoundError as exc:
        raise ApiError(404, None, None, str(exc)) from None


def validation_problems(exc: RequestValidationError) -> list[tuple[str | None, Any, str]]:
    """Pydantic's errors as (field, value, message): the field without its "query"/"path"/
    "body" prefix, scalar values repeated in the message."""
    out = []
    for e in exc.errors():
        raw = list(e.get("loc", ()))
        # an event's type (the tag of the union of event models) is not a field: events.3.price
        loc = [
            str(x)
            for i, x in enumerate(raw)
            if not (i > 0 and isinstance(raw[i - 1], int) and x in EVENT_TYPES)
        ]
        kind = e.get("type")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("type")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "json_invalid":
            where = (e.get("ctx") or {}).get("error", "")
            out.append(("body", None, f"body: not valid JSON ({where or msg})"))
            continue
        field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else None)
        value = None if kind == "missing" else e.get("input")
        message = f"{field}: {msg}"
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            message += f" (got {shown(value)!r})"
        out.append((field, value, message))
    return out or [(None, None, "invalid request")]


def install(app: FastAPI) -> None:
    """The exception handlers: ApiError, the package's errors, validation, HTTP, the rest."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> Response:
        problems = [(exc.field, exc.value, exc.message), *exc.more]
        return json_response(exc.status, error_body(exc.status, problems), exc.headers)

    @app.exception_handler(ShortlistError)
    async def _shortlist(request: Request, exc: ShortlistError) -> Response:
        status = 422 if isinstance(exc, ConfigError) else exc.http_status
        field = getattr(exc, "field", None) or getattr(exc, "key", None)
        return error_response(status, [(field, None, str(exc))])

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, validation_problems(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        status, field = exc.status_code, None
        if status == 404:
            message = f"no such endpoint: {request.method} {request.url.path[:SHOWN]}"
        elif status == 400:  # FastAPI's answer to a body it cannot decode: a bad value too
            status, field = 422, "body"
            message = f"body: not valid JSON ({message[:1].lower()}{message[1:]})"
        response = error_response(status, [(field, None, message)])
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path[:SHOWN])
        return error_response(500, [(None, None, "internal error: see the service's log")])
