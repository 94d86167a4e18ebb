"""Items bought with a cart's contents: the "add to cart" recommendation.

The co-purchase source of the pipeline (`CoPurchaseSource.neighbours_`: for each item, its
most co-bought items in recent baskets, weighted) gives every item a score: the sum of its
co-occurrence weights with the items in the cart. Items in the cart and excluded ones never
come back; the pipeline's filters run as for any recommendation (stock, region, age, the
request's attribute filters; bought-before too when the request names a known user). When
fewer than k co-bought items pass, the list is topped up from the fallback order (most sold
recently), through the same filters, as the funnel does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shortlist.errors import NotFoundError, RequestError, WorkspaceError
from shortlist.pipeline.cold_start import (
    CONTEXT_KEYS,
    _ms,
    anonymous_chain,
    anonymous_context,
    bound_funnel,
    check_context,
    request_segment,
    take_filtered,
)
from shortlist.pipeline.core import Pipeline, Recommendation, RecommendedItem
from shortlist.pipeline.funnel import Funnel
from shortlist.retrieval.sources import CoPurchaseSource

SOURCE = "copurchase"


def copurchase_source(funnel: Funnel) -> CoPurchaseSource:
    """The pipeline's fitted co-purchase source.

    Raises:
        WorkspaceError: the pipeline has none (the message says what to add).
    """
    for source, _ in funnel.retrieval.sources:
        if isinstance(source, CoPurchaseSource) and hasattr(source, "neighbours_"):
            return source
    raise WorkspaceError(
        "the pipeline has no co-purchase source, which cart recommendations need: add "
        '{ name = "copurchase", k = 100 } to [pipeline] sources and run `shortlist build` again'
    )


def co_bought(neighbours, cart: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items co-bought with the cart, best first: (item idx, summed weight, the cart position
    contributing most to each item)."""
    rows = neighbours[cart].tocoo()
    if rows.nnz == 0:
        empty = np.asarray([], np.int64)
        return empty, np.asarray([], np.float64), empty
    items, inverse = np.unique(rows.col, return_inverse=True)
    scores = np.bincount(inverse, weights=rows.data, minlength=len(items))
    # the heaviest contributor of each item: sort by (item, weight) and keep each item's last
    order = np.lexsort((rows.data, inverse))
    last = np.r_[np.flatnonzero(np.diff(inverse[order])), len(order) - 1]
    by = np.empty(len(items), np.int64)
    by[inverse[order][last]] = rows.row[order][last]
    ranked = np.lexsort((items, -scores))
    return items[ranked].astype(np.int64), scores[ranked], by[ranked]


def cart_recommendations(
    pipeline: Pipeline,
    cart: Sequence[object],
    context: Mapping[str, Any] | None = None,
    *,
    user_id: object | None = None,
    k: int | None = None,
    explain: bool = False,
) -> Recommendation:
    """The k items most bought with the cart's contents, without the cart's own items, the
    excluded ones, or anything the pipeline's filters remove (e.g. out of stock).

    context: "exclude" (item ids), "filters" (the attribute filter language), "region" and
    "age" (overriding what the workspace knows of `user_id`, or telling about an anonymous
    visitor). With a `user_id` the workspace knows, its region and age apply and so do the
    filters keyed by its history (bought before); an unknown or absent user is anonymous.
    `score` is the summed co-occurrence weight (None for topped-up items), `sources` gives the
    rank in the co-bought order.

    Raises:
        NotFoundError: an item of the cart or of `exclude` the catalogue does not hold.
        RequestError: unknown region, impossible age (field and value named), an empty cart.
        FilterError: a malformed filter. WorkspaceError: the pipeline has no co-purchase source.
    """
    funnel = bound_funnel(pipeline)
    context = dict(context or {})
    check_context(context, CONTEXT_KEYS)
    k = funnel.k if k is None else int(k)
    if not len(cart):
        raise RequestError("the cart is empty: give at least one item id", field="cart")
    catalog = funnel.catalog
    source = copurchase_source(funnel)
    trace: list[dict[str, Any]] = []

    started = time.perf_counter()
    in_cart = catalog.item_idx(list(cart))
    excluded = list(context.get("exclude") or [])
    exclude = in_cart
    if excluded:
        exclude = np.concatenate([in_cart, catalog.item_idx(excluded)])
    items, scores, by = co_bought(source.neighbours_, in_cart)
    trace.append(
        {
            "stage": SOURCE,
            "cart": int(len(in_cart)),
            "out": int(len(items)),
            "ms": _ms(started),
        }
    )

    started = time.perf_counter()
    user = None
    if user_id is not None:
        try:
            user = catalog.user_idx(user_id)
        except NotFoundError:
            user = None
    if user is not None:
        users = np.array([user])
        ctx = funnel.context(users, context, funnel.signals(users))  # bought since: excluded too
        chain = funnel.chain
    else:
        ctx = anonymous_context(funnel, request_segment(funnel, context), context.get("filters"))
        chain = anonymous_chain(funnel)
    taken = take_filtered(funnel, ctx, chain, items, k, exclude)
    trace.append(taken.trace(funnel, started))

    started = time.perf_counter()
    rank = {int(item): r for r, item in enumerate(items.tolist())}
    out = []
    for item in taken.items.tolist():
        r = rank.get(item)
        sources = {} if r is None else {SOURCE: r + 1}
        reasons = None
        if explain:
            if r is None:
                reasons = ["among the most sold items recently (top-up: too few co-bought items)"]
            else:
                with_id = str(cart[int(by[r])])
                reasons = [
                    f"often bought together with {with_id}, in the cart (#{r + 1} from {SOURCE})"
                ]
        out.append(
            RecommendedItem(
                str(catalog.item_ids[item]),
                None if r is None else float(scores[r]),
                sources,
                reasons,
                catalog.describe(item),
            )
        )
    trace.append(
        {"stage": "take", "k": k, "out": len(out), "topped_up": taken.topped_up, "ms": _ms(started)}
    )
    return Recommendation("" if user_id is None else str(user_id), out, trace)
