"""Diversity re-rankers: re-order a ranker's candidates so the top k is not ten near-copies.

Input is a batch of candidate rows: `items` (n, m) int item idx with -1 padding, `scores`
(n, m) float, higher is better (NaN at padding). Every re-ranker returns the same items of
each row re-ordered, padding last, so that the first k positions follow its rule as far as
the row's items allow. Only the top k is worth the effort; the rest keeps its score order.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from shortlist.errors import ConfigError

PAD = -1  # the item id filling candidate rows shorter than m
_LAST = np.iinfo(np.int64).max  # sort key of padding: after every real item
_CHUNK = 1 << 22  # floats gathered at once for vector work (16 MiB), bounding batch memory


@runtime_checkable
class Diversifier(Protocol):
    """What a pipeline needs from a re-ranker: a trace label and `rerank`."""

    name: str

    def rerank(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray: ...


class RoundRobin:
    """The best item of each value (e.g. product type), values in order of their best score,
    then every value's second best, and so on: the top k shows as many values as it can,
    each by its strongest item. Unknown (-1) is a value of its own."""

    name = "round_robin"

    def __init__(self, values: ArrayLike):
        self.values = _codes(values, "round_robin.values")

    def rerank(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        s_items, valid, _ = _by_score(items, scores, k, len(self.values), "RoundRobin values")
        rank, lead = _rank_in_value(np.where(valid, self.values[s_items], _LAST))
        key = np.where(valid, rank * s_items.shape[1] + lead, _LAST)
        return _gather(s_items, np.argsort(key, axis=1))

    def __repr__(self) -> str:
        return f"RoundRobin({len(self.values):,} items)"


class MaxPerValue:
    """At most `limit` items of one value in the top k, taken greedily in score order; the
    skipped items follow the top k in score order. A row with too few values to fill k
    under the cap is topped up with its best skipped items rather than shown short."""

    name = "max_per_value"

    def __init__(self, values: ArrayLike, limit: int):
        self.values = _codes(values, "max_per_value.values")
        if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
            raise ConfigError(f"must be an integer >= 1, got {limit!r}", key="max_per_value.limit")
        self.limit = int(limit)

    def rerank(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        s_items, valid, _ = _by_score(items, scores, k, len(self.values), "MaxPerValue values")
        rank, _ = _rank_in_value(np.where(valid, self.values[s_items], _LAST))
        # an item passes the cap iff fewer than `limit` better items share its value, so
        # the greedy top k is simply the first k items passing it
        passes = valid & (rank < self.limit)
        top = passes & (np.cumsum(passes, axis=1) <= k)
        key = np.where(top, 0, np.where(valid, 1, 2)).astype(np.int8)
        return _gather(s_items, np.argsort(key, axis=1, kind="stable"))

    def __repr__(self) -> str:
        return f"MaxPerValue({len(self.values):,} items, limit={self.limit})"


class MMR:
    """Maximal marginal relevance: pick by `lambda_ * relevance - (1 - lambda_) * max cosine
    to the items already picked`, relevance being the row's scores min-max scaled to [0, 1].
    `lambda_=1` keeps the score order; lower trades relevance for dissimilar embeddings.
    The first pick is always the top-scored item. `vectors` are stored unit-normalised
    (a zero vector is dissimilar to everything)."""

    name = "mmr"

    def __init__(self, vectors: ArrayLike, lambda_: float = 0.7):
        vec = _real(vectors, "mmr.vectors")
        if vec.ndim != 2 or vec.shape[0] < 1 or vec.shape[1] < 1:
            raise ConfigError(f"must be (n_items, d), got shape {vec.shape}", key="mmr.vectors")
        if not np.isfinite(vec).all():
            raise ConfigError("must be finite", key="mmr.vectors")
        if isinstance(lambda_, bool) or not isinstance(lambda_, int | float | np.number):
            raise ConfigError(f"must be a number in [0, 1], got {lambda_!r}", key="mmr.lambda_")
        if not 0.0 <= lambda_ <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {lambda_!r}", key="mmr.lambda_")
        self.vectors = _unit(vec.astype(np.float32))
        self.lambda_ = float(lambda_)

    def rerank(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        s_items, valid, s = _by_score(items, scores, k, len(self.vectors), "MMR vectors")
        n, m = s_items.shape
        out = np.full((n, m), PAD, np.int32)
        if m == 0:
            return out
        step = max(1, _CHUNK // max(1, m * self.vectors.shape[1]))
        for lo in range(0, n, step):
            rows = slice(lo, lo + step)
            out[rows] = self._chunk(s_items[rows], valid[rows], s[rows], min(k, m))
        return out

    def _chunk(self, s_items: np.ndarray, valid: np.ndarray, s: np.ndarray, k: int) -> np.ndarray:
        b, m = s_items.shape
        rows = np.arange(b)
        steps = min(k, int(valid.sum(axis=1).max()))
        vec = self.vectors[s_items]  # padding (-1) gathers the last item; it is never picked
        # relevance term, -inf where nothing may be picked (padding, picks so far)
        base = np.where(valid, np.float32(self.lambda_) * _minmax(s), -np.inf).astype(np.float32)
        mu = np.float32(1.0 - self.lambda_)
        picks = np.zeros((b, max(steps, 1)), np.intp)  # rows are in score order: first pick 0
        gains = np.zeros((b, max(steps, 1)), np.float32)
        gains[:, 0] = base[:, 0]
        near = np.full((b, m), -np.inf, np.float32)
        for t in range(steps):
            if t:
                gain = base - mu * near
                picks[:, t] = pick = np.argmax(gain, axis=1)
                gains[:, t] = gain[rows, pick]
            pick = picks[:, t]
            base[rows, pick] = -np.inf
            np.maximum(near, np.matmul(vec, vec[rows, pick][:, :, None])[:, :, 0], out=near)
        # picks get keys 0..k-1; the rest keep their score order after them, padding last
        key = np.where(valid, k + np.arange(m), _LAST)
        ok = np.isfinite(gains)  # a row out of items picks padding at -inf: ignored
        key[np.broadcast_to(rows[:, None], ok.shape)[ok], picks[ok]] = np.nonzero(ok)[1]
        return _gather(s_items, np.argsort(key, axis=1))

    def __repr__(self) -> str:
        n, d = self.vectors.shape
        return f"MMR({n:,} items x {d}, lambda_={self.lambda_})"


class ExpectedRevenue:
    """Order by P(buy) * price, so a likely purchase of a cheap item does not always beat a
    plausible one of an expensive item. P(buy) is sigmoid(score) for logit scores (the
    default, any real score), or the score itself with `scores_are_logits=False` (must be
    >= 0). Unknown prices (NaN) count as the median known price. Computed in log space, so
    very negative logits still order correctly; ties keep the score order."""

    name = "expected_revenue"

    def __init__(self, price: ArrayLike, *, scores_are_logits: bool = True):
        p = _real(price, "expected_revenue.price").astype(np.float64)
        if p.ndim != 1:
            raise ConfigError(
                f"must be 1-D over item idx, got {p.shape}", key="expected_revenue.price"
            )
        known = p[~np.isnan(p)]
        if known.size == 0:
            raise ConfigError("has no known price", key="expected_revenue.price")
        if not np.isfinite(known).all() or (known < 0).any():
            raise ConfigError("prices must be finite and >= 0", key="expected_revenue.price")
        if not isinstance(scores_are_logits, bool):
            raise ConfigError(
                f"must be true or false, got {scores_are_logits!r}",
                key="expected_revenue.scores_are_logits",
            )
        self.price = np.where(np.isnan(p), np.median(known), p)
        self.scores_are_logits = scores_are_logits
        with np.errstate(divide="ignore"):
            self._log_price = np.log(self.price)  # a free item: -inf, last

    def rerank(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        s_items, valid, s = _by_score(items, scores, k, len(self.price), "ExpectedRevenue price")
        if self.scores_are_logits:
            with np.errstate(invalid="ignore"):  # padding scores are NaN
                log_p = -np.logaddexp(0.0, -s)  # log sigmoid, exact where sigmoid underflows
        else:
            if (s[valid & ~np.isneginf(s)] < 0).any():  # -inf: a NaN score, ranked last
                raise ValueError(
                    "scores must be >= 0 with scores_are_logits=False; "
                    "pass logits with scores_are_logits=True"
                )
            with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf: last
                log_p = np.log(s)
        with np.errstate(invalid="ignore"):
            value = log_p + self._log_price[s_items]
        value = np.where(valid, np.where(np.isnan(value), -np.inf, value), np.nan)
        return _gather(s_items, np.argsort(-value, axis=1, kind="stable"))

    def __repr__(self) -> str:
        return f"ExpectedRevenue({len(self.price):,} items, logits={self.scores_are_logits})"


def intra_list_diversity(
    recs: ArrayLike,
    vectors: ArrayLike | None = None,
    values: ArrayLike | None = None,
    k: int = 12,
) -> float:
    """Mean over rows of the mean pairwise dissimilarity in the top k: 1 - cosine of
    `vectors`, or 1 where `values` differ. Padding is ignored and rows with fewer than 2
    items do not count (NaN when no row has 2). Give exactly one of vectors and values."""
    if (vectors is None) == (values is None):
        raise ValueError("give exactly one of vectors and values")
    if vectors is not None:
        table = _real(vectors, "vectors")
        if table.ndim != 2:
            raise ConfigError(f"must be (n_items, d), got shape {table.shape}", key="vectors")
    else:
        table = _codes(values, "values")
    top = _top(recs, k, len(table))
    valid = top >= 0
    keep = valid.sum(axis=1) >= 2
    top, valid = top[keep], valid[keep]
    if not len(top):
        return float("nan")
    width = top.shape[1]
    pairs = valid[:, :, None] & valid[:, None, :] & np.triu(np.ones((width, width), bool), 1)
    total = np.empty(len(top))
    step = max(1, _CHUNK // (width * (table.shape[1] if table.ndim == 2 else 1)))
    for lo in range(0, len(top), step):
        rows = slice(lo, lo + step)
        if vectors is not None:
            u = _unit(table[top[rows]].astype(np.float32))
            dis = np.clip(1.0 - np.matmul(u, u.transpose(0, 2, 1)), 0.0, 2.0)
        else:
            v = table[top[rows]]
            dis = v[:, :, None] != v[:, None, :]
        total[rows] = np.where(pairs[rows], dis, 0).sum(axis=(1, 2))
    return float(np.mean(total / pairs.sum(axis=(1, 2))))


def distinct_values(recs: ArrayLike, values: ArrayLike, k: int = 12) -> float:
    """Mean number of distinct values in each row's top k (padding ignored, -1 is a value
    of its own, an empty row counts 0; NaN for no rows)."""
    table = _codes(values, "values")
    top = _top(recs, k, len(table))
    if not len(top):
        return float("nan")
    v = np.sort(np.where(top >= 0, table[top], _LAST), axis=1)
    new = np.ones(v.shape, bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    return float(np.mean((new & (v != _LAST)).sum(axis=1)))


def _codes(values: ArrayLike, key: str) -> np.ndarray:
    """Item-indexed integer codes (-1 unknown) as an int64 copy."""
    arr = np.array(values, copy=True)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"must be 1-D integer codes, got {arr.dtype} {arr.shape}", key=key)
    if arr.size == 0:
        raise ConfigError("is empty: needs one code per item", key=key)
    if arr.min() < -1:
        raise ConfigError(f"codes must be >= -1 (unknown), got {arr.min()}", key=key)
    return arr.astype(np.int64, copy=False)


def _real(values: ArrayLike, key: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ConfigError(f"must be a real numeric array, got {arr.dtype}", key=key)
    return arr


def _unit(vec: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), so dot products are cosines."""
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    return np.divide(vec, norm, out=np.zeros_like(vec), where=norm > 0)


def _check_items(items: ArrayLike, k: int, n_items: int, what: str) -> np.ndarray:
    arr = np.asarray(items)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"items must be an (n, m) integer matrix, got {arr.dtype} {arr.shape}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < PAD:
            raise ValueError(f"item idx must be >= 0, or -1 for padding; got {lo}")
        if hi >= n_items:
            raise ValueError(
                f"item idx {hi} is beyond the {n_items:,} items of the {what} "
                f"(valid idx 0..{n_items - 1}); rebuild it for the current catalogue"
            )
    return arr


def _top(recs: ArrayLike, k: int, n_items: int) -> np.ndarray:
    return _check_items(recs, k, n_items, "item table")[:, :k]


def _by_score(
    items: ArrayLike, scores: ArrayLike, k: int, n_items: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by score descending (stable; NaN-scored items last among real ones,
    padding after them): items, the real-item mask, and scores (-inf for NaN)."""
    items = _check_items(items, k, n_items, what)
    s = np.asarray(scores)
    if s.shape != items.shape:
        raise ValueError(f"scores have shape {s.shape}, items {items.shape}")
    s = s.astype(np.float64, copy=False) if s.dtype.kind != "f" else s
    valid = items >= 0
    s = np.where(valid, np.where(np.isnan(s), -np.inf, s), np.nan)
    order = np.argsort(-s, axis=1, kind="stable")  # NaN (padding) sorts last
    rows = np.arange(len(order))[:, None]
    return items[rows, order], valid[rows, order], s[rows, order]


def _rank_in_value(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For codes in score order: each item's rank within its value (0 = the value's best)
    and the position of its value's best item."""
    n, m = codes.shape
    rows = np.arange(n)[:, None]
    group = np.argsort(codes, axis=1, kind="stable")  # by value, score order inside
    grouped = codes[rows, group]
    pos = np.arange(m)
    start = np.ones((n, m), bool)
    start[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    first = np.maximum.accumulate(np.where(start, pos, 0), axis=1)
    rank, lead = np.empty((n, m), np.int64), np.empty((n, m), np.int64)
    rank[rows, group] = pos - first
    lead[rows, group] = group[rows, first]
    return rank, lead


def _minmax(s: np.ndarray) -> np.ndarray:
    """Scores scaled to [0, 1] per row over the finite ones (+inf -> 1, -inf -> 0; a row of
    equal scores -> all 1; padding (NaN) -> 1, callers mask it)."""
    finite = np.where(np.isfinite(s), s, np.nan)
    lo = np.fmin.reduce(finite, axis=1, keepdims=True)  # fmin skips NaN
    hi = np.fmax.reduce(finite, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (s - lo) / (hi - lo)
    rel = np.clip(np.where(np.isnan(rel), 1.0, rel), 0.0, 1.0)  # 0/0: equal scores
    return np.where(s == -np.inf, 0.0, rel)


def _gather(items: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Each row's items in `order` (plain fancy indexing: take_along_axis costs more per call)."""
    return items[np.arange(len(order))[:, None], order].astype(np.int32, copy=False)
