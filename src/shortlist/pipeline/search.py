"""Personalized search: where the text index meets the funnel's users, filters and ranker.

    result = pipeline.search("black trousers", user_id, context={"filters": {...}}, k=24)

1. **match**: the text index (retrieval/text.py) finds the query's items on two sides, BM25
   (every item holding enough of the query's terms) and sentence embeddings (the nearest
   items above a similarity floor), both among the items the request's attribute filters
   allow.
2. **filter**: the matches pass the pipeline's business filters as recommendations do (stock,
   region, age; bought-before for a known user when configured; the request's exclusions);
   `total` counts those that pass, and the facets are counted over them. The stock there is
   the build's inventory; the items shown also pass the live stock that events set.
3. **personal** (a known user): the user's nearest items in the two-tower space among the
   BM25 matches join the candidates, and every candidate is scored for the user as the pipeline
   ranks recommendations: the same features (the user's from the online store, the source
   ranks of the user's own candidates, the two-tower similarity) and the same ranker, or the
   order the guard chose instead of it (pipeline/guard.py); without a ranker, the two-tower
   similarity.
4. **fuse**: reciprocal rank fusion of the BM25 rank, the semantic rank and, for a known user,
   the personal rank among the BM25 matches (weight `personal_weight`; among all candidates
   when none holds the query's words): two users typing the same query see different orders;
   without a user, or with an unknown one, the order is the same for all.
5. **refine**: facet counts for the most useful categorical attributes (`TextIndex.facets`),
   usable as filters; a query no item holds says so and suggests the closest one that some
   do (a typo corrected, fewer words).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shortlist.data.candidates import CandidateSet
from shortlist.data.filters import AttrType
from shortlist.errors import RequestError, StoreUnavailable, WorkspaceError
from shortlist.pipeline.cold_start import (
    CONTEXT_KEYS,
    anonymous_chain,
    anonymous_context,
    bound_funnel,
    check_context,
    request_segment,
)
from shortlist.pipeline.funnel import Funnel
from shortlist.retrieval.text import TextIndex, rrf_scores

if TYPE_CHECKING:
    from shortlist.pipeline.core import Pipeline

DEFAULT_K = 24
MAX_QUERY = 200  # characters of a query


@dataclass(frozen=True)
class FoundItem:
    """One search result: its fused score, its rank on each side that ranked it (lexical,
    semantic, personal) and its display attributes."""

    item_id: str
    score: float
    sources: dict[str, int]
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.attributes,  # first: an attribute called "score" cannot hide the score
            "item_id": self.item_id,
            "score": self.score,
            "sources": self.sources,
        }


@dataclass(frozen=True)
class SearchResult:
    query: str
    user_id: str | None
    items: list[FoundItem]
    facets: dict[str, list[dict[str, Any]]]  # attribute -> [{"value", "count"}], most first
    total: int  # matches passing the filters, before k
    suggestion: str | None  # a close query with matches, when this one has none (lexically)
    personalized: bool  # ordered for the user (a known user, personalization available)
    cold_start: bool  # a user id was given that the workspace does not know
    degraded: bool = False  # the online store failed: the order is not personal
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "user_id": self.user_id,
            "items": [i.to_dict() for i in self.items],
            "facets": self.facets,
            "total": self.total,
            "suggestion": self.suggestion,
            "personalized": self.personalized,
            "cold_start": self.cold_start,
            "degraded": self.degraded,
            "trace": self.trace,
        }


def text_index(pipeline: Pipeline) -> TextIndex:
    """The pipeline's text index. Raises WorkspaceError (what to run) when it has none."""
    text = getattr(pipeline, "text_", None)
    if text is None:
        why = getattr(pipeline, "text_error_", None) or ("search is off ([search] enabled = false)")
        raise WorkspaceError(f"search unavailable: {why}")
    return text


def check_query(query: object, field_name: str = "query") -> str:
    """The query, stripped. Raises RequestError for one that is not a string, has no
    character but spaces, or is longer than MAX_QUERY."""
    if not isinstance(query, str):
        raise RequestError(f"must be text, got {query!r}", field=field_name)
    text = query.strip()
    if not text:
        raise RequestError("the query is empty", field=field_name)
    if len(text) > MAX_QUERY:
        raise RequestError(f"at most {MAX_QUERY} characters, got {len(text)}", field=field_name)
    return text


def search(
    pipeline: Pipeline,
    query: str,
    user_id: object = None,
    context: Mapping[str, Any] | None = None,
    *,
    k: int = DEFAULT_K,
    personalize: bool = True,
) -> SearchResult:
    """The top k items for a query, for a user when given (see the module).

    context: "filters" (the attribute filter language), "exclude" (item ids), "region" and
    "age" (overriding the user's, or telling an unknown user's). personalize=False: the
    non-personal order even for a known user (same filters; what evaluation compares).

    Raises:
        RequestError: an empty or over-long query, k out of 1..1000, an unknown region or
        context key, an impossible age (the field and value named). FilterError: a
        malformed filter. NotFoundError: an excluded item the catalogue lacks.
        WorkspaceError: the workspace has no (current) text index.
    """
    funnel = bound_funnel(pipeline)
    text = text_index(pipeline)
    query = check_query(query)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise RequestError(f"must be a whole number from 1 to 1000, got {k!r}", field="k")
    context = dict(context or {})
    check_context(context, CONTEXT_KEYS)
    user = funnel.catalog.find_user(user_id) if user_id is not None else -1
    return run_search(
        funnel,
        text,
        query,
        user,
        context,
        k=k,
        personalize=personalize,
        user_id=None if user_id is None else str(user_id),
    )


def run_search(
    funnel: Funnel,
    text: TextIndex,
    query: str,
    user: int,
    context: Mapping[str, Any],
    *,
    k: int = DEFAULT_K,
    personalize: bool = True,
    user_id: str | None = None,
    vector: np.ndarray | None = None,
) -> SearchResult:
    """`search` on a bound funnel for a user idx (-1: anonymous). `vector`: the query's
    embedding when already computed (evaluation embeds each distinct query once)."""
    settings = text.settings
    catalog = funnel.catalog
    trace: list[dict[str, Any]] = []
    filters = context.get("filters")
    allowed = catalog.attributes.mask(filters) if filters else None
    excluded = list(context.get("exclude") or [])
    exclude = catalog.item_idx(excluded) if excluded else np.zeros(0, np.int64)

    # -- who, and the filters that apply to them
    users = np.array([max(user, 0)], np.int64)
    degraded: str | None = None
    signals = None
    if user >= 0:
        try:
            signals = funnel.signals(users)
        except StoreUnavailable as exc:
            degraded = str(exc)
        ctx = funnel.context(users, context, signals)
        chain = funnel.chain
    else:
        ctx = anonymous_context(funnel, request_segment(funnel, context), filters)
        chain = anonymous_chain(funnel)
    started = time.perf_counter()
    lexical = text.lexical(query, allowed)
    trace.append(
        {
            "stage": "lexical",
            "terms": lexical.terms,
            "required": lexical.required,
            "out": int(len(lexical.items)),
            "ms": _ms(started),
        }
    )
    started = time.perf_counter()
    if vector is None:
        vector = text.embed(query)
    embedded = _ms(started)
    sem_items, _ = text.semantic(vector, settings.semantic_k, allowed)
    trace.append(
        {
            "stage": "semantic",
            "out": int(len(sem_items)),
            "embed_ms": embedded,
            "ms": _ms(started),
        }
    )

    started = time.perf_counter()
    n_items = len(catalog.item_ids)
    is_lexical = _mask(n_items, lexical.items)  # masks over the catalogue: no sorting
    matched = is_lexical | _mask(n_items, sem_items)
    removed: dict[str, int] = {}
    if len(exclude):
        found = int(matched.sum())
        matched[exclude] = False
        removed["exclude"] = found - int(matched.sum())
    matches = np.flatnonzero(matched)
    kept = matches
    if len(matches):  # the build's stock here: every match, cheaply
        passed = chain.apply(ctx, matches[None, :])
        kept = matches[passed.keep[0]]
        removed.update(passed.removed)
    trace.append(
        {
            "stage": "filter",
            "in": int(len(matches) + removed.get("exclude", 0)),
            "out": int(len(kept)),
            "removed": removed,
            "skipped": funnel.skipped,
            "ms": _ms(started),
        }
    )

    # -- the candidates: each side's best, and the user's nearest among the matches
    personal = user >= 0 and personalize and settings.personal_weight > 0 and degraded is None
    pool_parts = [lexical.items[: settings.lexical_k], sem_items]
    own: CandidateSet | None = None
    queries = None
    started = time.perf_counter()
    tt = funnel.retrieval.two_tower
    nearest = np.zeros(0, np.int64)
    if personal:
        try:
            own, queries = user_candidates(funnel, users, signals)
        except StoreUnavailable as exc:
            degraded, personal = str(exc), False
    if (
        personal
        and queries is not None
        and tt is not None
        and settings.personal_k > 0
        and len(kept)
    ):
        among = _relevant(kept, is_lexical)
        assert tt.index_ is not None
        _, found = tt.index_.search(
            queries, min(settings.personal_k, len(among)), _mask(n_items, among)
        )
        nearest = found[0][found[0] >= 0].astype(np.int64)
        pool_parts.append(nearest)
    pool = np.concatenate(pool_parts)
    pool = pool[np.sort(np.unique(pool, return_index=True)[1])]  # each once, first place kept
    pool = pool[_mask(n_items, kept)[pool]]
    stock_removed = 0
    try:  # the live stock (stock events) of the candidates shown
        if len(pool):
            live = chain.apply(funnel.with_stock(ctx, pool), pool[None, :])
            pool = pool[live.keep[0]]
            stock_removed = int((~live.keep[0]).sum())
    except StoreUnavailable as exc:
        degraded, personal = str(exc), False
    trace[-1]["live_stock_removed"] = stock_removed

    ranks = {
        "lexical": lexical.rank_of(pool),
        "semantic": _ranks_in(sem_items, pool),
    }
    weights = {"lexical": 1.0, "semantic": 1.0}
    scorer = None
    if personal and len(pool):
        # the user's order among the relevant candidates only: a semantic neighbour that holds
        # none of the query's words is not lifted by the user's taste (nor scored)
        relevant = _relevant(pool, is_lexical)
        try:
            scored = personal_scores(funnel, users, relevant, own, queries)
        except StoreUnavailable as exc:
            degraded, scored = str(exc), None
        if scored is not None:
            scores, scorer = scored
            order = np.argsort(-scores, kind="stable")
            r = np.zeros(len(relevant), np.int64)
            r[order] = np.arange(1, len(relevant) + 1)
            r[~np.isfinite(scores)] = 0
            position = _ranks_in(relevant, pool)  # 1-based place in `relevant`, 0 if not there
            ranks["personal"] = np.where(position > 0, r[np.maximum(position - 1, 0)], 0)
            weights["personal"] = settings.personal_weight
        trace.append(
            {
                "stage": "personal",
                "scorer": scorer or "none",
                "nearest": int(len(nearest)),
                "ms": _ms(started),
            }
        )
    started = time.perf_counter()
    fused = rrf_scores(ranks, settings.rrf_k, weights)
    order = np.argsort(-fused, kind="stable")[:k]
    items = [
        FoundItem(
            str(catalog.item_ids[pool[j]]),
            round(float(fused[j]), 6),
            {side: int(r[j]) for side, r in ranks.items() if r[j] > 0},
            catalog.describe(int(pool[j])),
        )
        for j in order.tolist()
    ]
    trace.append({"stage": "fuse", "in": int(len(pool)), "weights": weights, "ms": _ms(started)})
    started = time.perf_counter()
    facets = facet_counts(funnel, text, kept, settings.max_facets, settings.facet_values)
    suggestion = text.suggest(query, allowed) if not len(lexical.items) else None
    trace.append({"stage": "refine", "facets": len(facets), "ms": _ms(started)})
    trace.append({"stage": "take", "k": k, "out": len(items), "ms": 0.0})
    if degraded is not None:
        trace.insert(0, {"stage": "degraded", "reason": degraded, "ms": 0.0})
    return SearchResult(
        query,
        user_id,
        items,
        facets,
        int(len(kept)),
        suggestion,
        scorer is not None,
        user_id is not None and user < 0,
        degraded is not None,
        trace,
    )


def _relevant(items: np.ndarray, is_lexical: np.ndarray) -> np.ndarray:
    """The items whose relevance the user's order may weigh in: the BM25 matches among them
    (they hold the query's words; `is_lexical` marks them over the catalogue), or all of them
    when none holds the words (a query only the sentence embeddings understand)."""
    matched = items[is_lexical[items]]
    return matched if len(matched) else items


def _mask(n: int, items: np.ndarray) -> np.ndarray:
    """(n,) bool: True at `items`."""
    out = np.zeros(n, bool)
    out[items] = True
    return out


def _ranks_in(listed: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1-based position of each of `items` in `listed` (0: not listed)."""
    if not len(listed) or not len(items):
        return np.zeros(len(items), np.int64)
    size = int(max(listed.max(), items.max())) + 1
    position = np.zeros(size, np.int64)
    position[listed[::-1]] = np.arange(len(listed), 0, -1)  # the first place of a repeat
    return position[items]


def user_candidates(
    funnel: Funnel, users: np.ndarray, signals: Any = None
) -> tuple[CandidateSet | None, np.ndarray | None]:
    """The user's own candidates (every source, with the events since the cutoff), when the
    pipeline ranks with the ranker or a source order, and the user's two-tower vector (one
    encoding for both), when it has a two-tower."""
    tt = funnel.retrieval.two_tower
    ranked = funnel.order is not None or (funnel.scorer is not None and funnel.features is not None)
    if not ranked:
        return None, tt.queries(users, signals) if tt is not None else None
    states: dict[str, Any] = {}
    own = funnel.retrieval.candidates(users, live=signals, states=states)
    queries = states.get(tt.name) if tt is not None else None
    return own, queries


def personal_scores(
    funnel: Funnel,
    users: np.ndarray,
    items: np.ndarray,
    own: CandidateSet | None = None,
    queries: np.ndarray | None = None,
) -> tuple[np.ndarray, str] | None:
    """(m,) the user's score of each item (higher first; -inf where none) as the pipeline
    ranks recommendations, and the scorer's name; None when the pipeline has nothing personal
    to score with (no ranker, no source order, no two-tower).

    The items become a candidate set for the user: each keeps the rank and score it has among
    the user's own candidates (`own`, from `user_candidates`), and the two-tower similarity to
    the user's vector (`queries`); the ranker's features and model then score it, or the
    guard's source order orders it."""
    retrieval = funnel.retrieval
    tt = retrieval.two_tower
    row = items.astype(np.int32)[None, :]
    ranked_by_order = funnel.order is not None and not funnel.order.needs_ranker
    has_ranker = funnel.scorer is not None and funnel.features is not None
    if (own is None and (ranked_by_order or has_ranker)) or (tt is not None and queries is None):
        computed = user_candidates(funnel, users)
        own = own if own is not None else computed[0]
        queries = queries if queries is not None else computed[1]
    columns: dict[str, np.ndarray] = {}
    for source, _ in retrieval.sources:
        if hasattr(source, "columns"):
            columns.update(source.columns(users, row, queries if source is tt else None))
    if not ranked_by_order and not has_ranker:
        if tt is None:
            return None
        similarity = columns[tt.column_names[0]][0].astype(np.float64)
        return np.where(np.isfinite(similarity), similarity, -np.inf), "two-tower similarity"
    assert own is not None
    at = _ranks_in(own.items[0][own.items[0] >= 0].astype(np.int64), items) - 1
    found = at >= 0
    safe = np.maximum(at, 0)
    cs = CandidateSet(
        users,
        row,
        {n: np.where(found, r[0, safe], 0)[None, :].astype(np.int16) for n, r in own.ranks.items()},
        {
            n: np.where(found, s[0, safe], np.nan)[None, :].astype(np.float32)
            for n, s in own.scores.items()
        },
        {},
        columns,
    )
    if ranked_by_order:
        assert funnel.order is not None
        return funnel.order.scores(cs)[0].astype(np.float64), funnel.order.name
    assert funnel.features is not None and funnel.scorer is not None
    X, rows, cols = funnel.features.transform(cs)
    scores = np.full(row.shape, -np.inf)
    scores[0, cols] = funnel.scorer.predict(X)
    scores = funnel.new_customers_scores(cs, X, rows, cols, scores)
    name = f"ranker ({funnel.scorer.name})"
    if funnel.order is not None:  # a blend: its sources first, the ranker after
        scores = funnel.order.scores(cs, scores)
        name = f"{funnel.order.name} ({funnel.scorer.name})"
    return scores[0].astype(np.float64), name


# -- refinements ------------------------------------------------------------------------------


def facet_codes(funnel: Funnel, text: TextIndex, attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes by item idx, -1 missing; values) of a categorical attribute, made once per
    text index (every window of an evaluation has the same items)."""
    key = ("facet", attribute)
    if key not in text.cache:
        items = funnel.catalog.data.items
        if items is None or attribute not in items.columns:
            text.cache[key] = (np.full(len(funnel.catalog.item_ids), -1), np.zeros(0, object))
        else:
            codes, values = pd.factorize(items[attribute], sort=True)
            text.cache[key] = (codes.astype(np.int64), np.asarray(values, dtype=object))
    return text.cache[key]


def facet_counts(
    funnel: Funnel, text: TextIndex, items: np.ndarray, most: int, values: int
) -> dict[str, list[dict[str, Any]]]:
    """For the first `most` attributes of `text.facets` on which `items` differ (two values
    or more), the `values` most frequent values among them with their counts, most first
    (ties by value). Values are typed as the attribute is for filters (numbers, booleans,
    text), so `{"attr": {"in": [value]}}` refines by one."""
    out: dict[str, list[dict[str, Any]]] = {}
    schema = funnel.catalog.attributes.schema
    for attribute in text.facets:
        if len(out) >= most:
            break
        codes, names = facet_codes(funnel, text, attribute)
        got = codes[items]
        got = got[got >= 0]
        if not len(got):
            continue
        counts = np.bincount(got, minlength=len(names))
        present = np.flatnonzero(counts)
        if len(present) < 2:
            continue
        order = present[np.lexsort((present, -counts[present]))][:values]
        kind = schema.get(attribute, AttrType.STRING)
        out[attribute] = [
            {"value": _typed(names[c], kind), "count": int(counts[c])} for c in order.tolist()
        ]
    return out


def _typed(value: Any, kind: AttrType) -> Any:
    if kind is AttrType.NUMBER:
        return float(value)
    if kind is AttrType.BOOL:
        return bool(value)
    return str(value)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
