"""Answers without the online store: what the service serves when the store is unreachable or
slower than a request's budget (docs/service.md, "Degradation").

A failing store must never turn into random recommendations (or errors): the answer is still
the user's segment's best sellers, from the trending lists the pipeline holds in memory, through
the business filters with what memory knows: stock, regions and age limits as of the build, and
the user's purchases up to the cutoff for the bought-before filter. Nothing is read from the
store (`store_bypassed`), so the answer cannot wait on it. The trace's first stage says why
(`"stage": "degraded", "reason": ...`).

A known user's segment is their own (region and age from the workspace's tables, in memory),
unless the request names one; an unknown user's is the request's, as for a cold start.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from shortlist.errors import NotFoundError
from shortlist.features.buckets import age_bucket as bucket_of_age
from shortlist.pipeline.cold_start import (
    CONTEXT_KEYS,
    Segment,
    bound_funnel,
    check_context,
    cold_start,
    request_segment,
    segment_answer,
)
from shortlist.pipeline.core import Pipeline, Recommendation
from shortlist.pipeline.funnel import Funnel
from shortlist.pipeline.live import store_bypassed

WHO = "degraded answer (from memory, without the online store)"


def user_segment(funnel: Funnel, user: int, context: Mapping[str, Any]) -> Segment:
    """A known user's segment: their region and age from the workspace, unless the request
    overrides them (checked as any request's: an unknown region or impossible age raises)."""
    asked = request_segment(funnel, context)
    region, code = asked.region, asked.region_code
    rules = funnel.catalog.rules
    if region is None and rules is not None and rules.user_region is not None:
        code = int(rules.user_region[user])
        region = rules.region_names[code] if 0 <= code < len(rules.region_names) else None
        code = code if region is not None else -1
    age, bucket = asked.age, asked.age_bucket
    ages = funnel.catalog.data.user_age
    if age is None and ages is not None and np.isfinite(ages[user]):
        age = float(ages[user])
        bucket = int(bucket_of_age(np.array([age]))[0])
    return Segment(region, code, age, bucket)


def degraded(
    pipeline: Pipeline,
    user_id: str,
    context: Mapping[str, Any] | None = None,
    *,
    k: int | None = None,
    explain: bool = False,
    reason: str = "the online store is unavailable",
) -> tuple[Recommendation, bool]:
    """The top k for `user_id` from memory alone, and whether the user was unknown (a cold
    start). Same context as `Pipeline.recommend`; raises the same request errors."""
    started = time.perf_counter()
    funnel = bound_funnel(pipeline)
    context = dict(context or {})
    check_context(context, CONTEXT_KEYS | {"cart"})
    try:
        user: int | None = int(funnel.catalog.user_idx(user_id))
    except NotFoundError:
        user = None
    with store_bypassed():
        if user is None:
            result = cold_start(pipeline, context, user_id=user_id, k=k, explain=explain)
        else:
            segment = user_segment(funnel, user, context)
            # region and age as the funnel sets them; bought before: as of the cutoff
            ctx = funnel.context(np.array([user]), context)
            result = segment_answer(
                funnel, segment, ctx, funnel.chain, context, user_id=str(user_id),
                k=funnel.k if k is None else int(k), explain=explain, stage="fallback",
                who=WHO, started=started,
            )  # fmt: skip
    result.trace.insert(0, {"stage": "degraded", "reason": reason, "ms": 0.0})
    return result, user is None
