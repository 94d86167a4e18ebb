"""The service's request and response models: what /openapi.json publishes.

Every bound a client could abuse is declared here, so pydantic answers 422 before any work:
k from 1 to MAX_K, ids and strings of bounded length, lists of bounded size, ages from 0 to
150, finite numbers, filters of bounded shape (`check_filter_spec`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_K = 1000  # items per answer
MAX_ID = 256  # characters in a user or item id
MAX_TEXT = 200  # characters in a region name, an attribute name or value
MAX_ITEMS = 200  # ids in a cart or an exclusion list
MAX_FILTER = 4096  # characters of a filter given as JSON in a query parameter
LARGEST_INT = 2**53  # beyond it a JSON number loses precision as a float

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


def check_filter_spec(spec: Any, where: str = "filters") -> Any:
    """A filter in the JSON language of docs/index.md, bounded in shape and numbers: an object
    of at most 50 attributes, each a scalar or an object of operators whose values are scalars
    or lists of at most 1,000 scalars; strings of at most 200 characters; integers within
    +-2**53. What the shape allows but the language does not (unknown operators, wrong types)
    is left to the filter parser, whose messages name the attribute."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object of attribute conditions")
    if len(spec) > 50:
        raise ValueError(f"{where} has {len(spec)} attributes (at most 50)")

    def scalar(value: Any, at: str) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int) and abs(value) > LARGEST_INT:
            raise ValueError(f"{at}: the number {value} is out of range (at most 2**53)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{at}: numbers must be finite, got {value}")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"{at}: strings are at most {MAX_TEXT} characters")

    for attr, cond in spec.items():
        if len(attr) > MAX_TEXT:
            raise ValueError(f"{where}: attribute names are at most {MAX_TEXT} characters")
        at = f"{where}.{attr}"
        for op, value in cond.items() if isinstance(cond, dict) else [("eq", cond)]:
            if isinstance(value, list):
                if len(value) > 1000:
                    raise ValueError(f"{at}.{op}: at most 1000 values")
                for v in value:
                    if isinstance(v, dict | list):
                        raise ValueError(f"{at}.{op}: values are strings, numbers or booleans")
                    scalar(v, f"{at}.{op}")
            elif isinstance(value, dict):
                raise ValueError(f"{at}.{op}: values are strings, numbers or booleans")
            else:
                scalar(value, f"{at}.{op}")
    return spec


FilterSpec = Annotated[
    dict[str, Any],
    AfterValidator(check_filter_spec),
    Field(
        description="Attribute conditions, all of which must hold (docs/index.md): "
        '`{"price": {"gte": 0.01, "lte": 0.05}, "product_group_name": {"in": ["Shoes"]}}`',
        examples=[{"price": {"lte": 0.05}, "product_group_name": {"in": ["Garment Upper body"]}}],
    ),
]

K = Annotated[
    int,
    Field(ge=1, le=MAX_K, strict=True, description="How many items (default: the pipeline's k)"),
]
Age = Annotated[
    float,
    Field(
        ge=0,
        le=150,
        allow_inf_nan=False,
        strict=True,
        description="The user's age in years, 0 to 150",
    ),  # fmt: skip
]


# -- requests ------------------------------------------------------------------------------------


class RecommendRequest(BaseModel):
    """POST /v1/recommendations: one user and the context of the request."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    k: K | None = None
    cart: list[Id] = Field(default_factory=list, max_length=MAX_ITEMS,
                           description="Items in the cart: never recommended")  # fmt: skip
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_ITEMS,
                              description="Items never to recommend")  # fmt: skip
    filters: FilterSpec | None = None
    region: Text | None = Field(None, description="Region name, overriding the user's")
    age: Age | None = None
    explain: bool = Field(False, description="The reasons for each item")
    trace: bool = Field(False, description="Candidates in and out and milliseconds per stage")


class CartRequest(BaseModel):
    """POST /v1/cart/recommendations: the cart, and optionally who it belongs to."""

    model_config = ConfigDict(extra="forbid")

    cart: list[Id] = Field(min_length=1, max_length=MAX_ITEMS, description="Item ids in the cart")
    user_id: Id | None = Field(
        None, description="The shopper, when known: their region, age and history filters apply"
    )
    k: K | None = None
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_ITEMS)
    filters: FilterSpec | None = None
    region: Text | None = None
    age: Age | None = None
    explain: bool = False
    trace: bool = False


# -- events ----------------------------------------------------------------------------------------

MAX_EVENTS = 1000  # events per batch
EVENT_TYPES = ("purchase", "stock", "view", "click", "impression")
Timestamp = Annotated[
    datetime,
    Field(
        description="When it happened: ISO 8601 (a date, or a time with or without an offset; "
        "without one it is UTC) or unix seconds",
        examples=["2020-09-23T10:15:00Z"],
    ),
]


class PurchaseEvent(BaseModel):
    """A user bought an item: their features, history and the item's sales change at once."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["purchase"]
    user_id: Id = Field(description="An unknown user is logged; only the item's sales count")
    item_id: Id
    timestamp: Timestamp
    price: float | None = Field(None, ge=0, allow_inf_nan=False, description="Unit price paid")
    quantity: int = Field(1, ge=1, le=10_000, strict=True, description="Units bought")


class StockEvent(BaseModel):
    """An item's units in stock now (0 or fewer: out of stock, removed from answers)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["stock"]
    item_id: Id
    units: int = Field(ge=-(10**9), le=10**9, strict=True)
    timestamp: Timestamp | None = Field(None, description="When it was counted (default: now)")


class InteractionEvent(BaseModel):
    """A view, click or impression: logged for training, not applied."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["view", "click", "impression"]
    user_id: Id
    item_id: Id
    timestamp: Timestamp


Event = Annotated[PurchaseEvent | StockEvent | InteractionEvent, Field(discriminator="type")]


class EventsRequest(BaseModel):
    """POST /v1/events: a batch, applied whole or rejected whole."""

    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsOut(BaseModel):
    accepted: int = Field(description="Events logged (all of the batch)")
    first_seq: int = Field(description="Sequence number of the batch's first event in the log")
    last_seq: int
    applied: bool = Field(
        description="Applied to the online store (the next request reflects it); false: logged "
        "only, applied when the store answers again (status 202)"
    )
    version: int | None = Field(description="The online store's version it was applied to")
    counts: dict[str, int] = Field(description="Events by type")
    notes: list[str] = Field(description="What did not apply in full (an unknown user, ...)")
    error: str | None = Field(None, description="Why it was not applied (with a 202)")


# -- responses -----------------------------------------------------------------------------------


class ItemOut(BaseModel):
    """One recommended item; its display attributes (names, colour, ...) come as extra keys."""

    model_config = ConfigDict(extra="allow")

    item_id: str
    score: float | None = Field(
        description="The ranker's score (or the order's: higher first); null for items topped up "
        "from the most sold recently"
    )
    sources: dict[str, int] = Field(
        description="Candidate source -> the rank at which it proposed the item"
    )
    price: float | None = Field(None, description="The price the item last sold at")
    reasons: list[str] | None = Field(None, description="With explain=true: why it is there")


class RecommendationsOut(BaseModel):
    user_id: str
    items: list[ItemOut]
    cold_start: bool = Field(
        description="The user is unknown: the best sellers of their segment (region, age)"
    )
    degraded: bool = Field(
        description="Answered from memory (the segment's best sellers) instead of the full "
        "pipeline: the online store failed or was slower than the budget (the trace says why)"
    )
    version: str | None = Field(
        None,
        description="The workspace version (build) that answered: a digest of models/pipeline.json",
    )
    trace: list[dict[str, Any]] | None = Field(
        None, description="With trace=true: per stage, items in and out and milliseconds"
    )


class CartOut(BaseModel):
    user_id: str | None
    cart: list[str]
    items: list[ItemOut]
    cold_start: bool = Field(description="A user_id was given that the workspace does not know")
    degraded: bool
    version: str | None = Field(
        None,
        description="The workspace version (build) that answered: a digest of models/pipeline.json",
    )
    trace: list[dict[str, Any]] | None = None


class SimilarOut(BaseModel):
    item_id: str
    items: list[ItemOut]
    degraded: bool
    version: str | None = Field(
        None,
        description="The workspace version (build) that answered: a digest of models/pipeline.json",
    )
    trace: list[dict[str, Any]] | None = None


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str = Field(description='"ready", or "loading" / "failed" (with a 503)')
    workspace: str
    detail: str | None = None
    similar: bool | None = Field(None, description="The similar-items endpoint can answer")
    version: str | None = Field(None, description="The workspace version (build) serving")
    store: str | None = Field(
        None,
        description='"ok", or "degraded: <why>" while answers come from memory (the '
        "service stays ready: degraded answers are answers)",
    )
    reload_error: str | None = Field(
        None, description="Why the last reload failed (the version above keeps serving)"
    )


class ReloadOut(BaseModel):
    version: str = Field(description="The version now serving (a digest of models/pipeline.json)")
    previous: str = Field(description="The version it replaced")
    seconds: float = Field(description="How long the new version took to load")
    workers: str = Field(description="When the other processes serving the workspace follow")


class ErrorDetail(BaseModel):
    field: str | None = Field(description="The request field at fault (query, path or body)")
    value: Any = Field(None, description="The value it had (long values shortened)")
    message: str


class ErrorOut(BaseModel):
    """Every error answer: the first problem at the top, all of them in `errors`."""

    error: str = Field(description="not_found, invalid_request, ...")
    status: int
    field: str | None
    value: Any = None
    message: str
    errors: list[ErrorDetail]
