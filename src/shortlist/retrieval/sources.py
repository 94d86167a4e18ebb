"""Candidate sources: each proposes up to k items per user, with a score, tagged by name.

Sources share one signature (fit on the past, then `candidates(users, k)`), so the union can
keep, for every candidate, which sources proposed it and at what rank: the single most useful
ranking feature found by the 3rd-place H&M team.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self

import numpy as np
import scipy.sparse as sp

from shortlist.config import RetrievalSettings
from shortlist.data.arrays import US_PER_DAY, Interactions, State, TrainData, prefixed, under
from shortlist.features.buckets import age_bucket
from shortlist.retrieval.signals import basket_cooccurrence, decayed_matrix, top_items
from shortlist.retrieval.sparse import (
    Entries,
    csr_restore,
    csr_state,
    drop_entries,
    gather_rows,
    sum_duplicates,
    top_k_entries,
    top_k_products,
    truncate_rows,
)

if TYPE_CHECKING:
    from shortlist.retrieval.index import ExactIndex, HNSWIndex
    from shortlist.retrieval.two_tower import TwoTowerModel


class Candidates(NamedTuple):
    """One source's answer for a batch of users."""

    items: np.ndarray  # (n, k) int32, -1 padded
    scores: np.ndarray  # (n, k) float32, NaN at padding
    state: Any = None  # what the source's `columns` reuses for the same call (user vectors)


@dataclass(frozen=True)
class LiveSignals:
    """What real-time events recorded since the pipeline's cutoff, for one batch of users, read
    per request from the online store (shortlist.pipeline.live): each user's purchases since the
    cutoff, and the units every item sold since (all users).

    Sources that take it (`reads_live = True`) answer as if those purchases had been in their
    data at the cutoff: a purchase after the cutoff counts as one made at the cutoff (its age
    is 0 days, never negative). Without purchases (`any()` False) they answer exactly as
    without signals.
    """

    items: tuple[np.ndarray, ...]  # per user of the batch: item idx (int64), oldest first
    ages: tuple[np.ndarray, ...]  # per user: days before the cutoff (negative: after it)
    units: tuple[np.ndarray, ...]  # per user: units bought
    sold: tuple[np.ndarray, np.ndarray] | None = None  # (item idx ascending, units) since

    def any(self) -> bool:
        """Some user of the batch bought something since the cutoff."""
        return any(len(x) for x in self.items)

    def entries(self, half_life_days: float | None = None) -> Entries:
        """(position in the batch, item, weight) of the purchases: units, times
        0.5 ** (age / half-life) with the age at least 0 when a half-life is given."""
        sizes = [len(x) for x in self.items]
        owner = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        if not owner.size:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float64)
        items = np.concatenate(self.items).astype(np.int64)
        weight = np.concatenate(self.units).astype(np.float64)
        if half_life_days is not None:
            age = np.maximum(np.concatenate(self.ages).astype(np.float64), 0.0)
            weight = weight * np.power(0.5, age / half_life_days)
        return owner, items, weight


def _with_live(base: Entries, live: LiveSignals, half_life_days: float) -> Entries:
    """`base` (entries grouped by row, ascending columns) plus the live purchases' weights,
    one entry per (row, item), as `top_k_entries` wants."""
    owner, items, weight = live.entries(half_life_days)
    return sum_duplicates(
        np.concatenate([base[0], owner]),
        np.concatenate([base[1], items]),
        np.concatenate([np.asarray(base[2], np.float64), weight]),
    )


class Source(Protocol):
    """Fitted on the past, then asked for its k best items per user.

    What `fit` computed is `state()`: named arrays a saved pipeline writes beside its models
    and hands back to `restore` at load (memory-mapped), so serving refits nothing and reads no
    interactions. `restore(state())` answers exactly as the fitted source did.

    A source may also define `columns(users, items, state) -> {name: (n, m) float32}`: values
    for every candidate of the union (e.g. the two-tower similarity of items other sources
    proposed), given the `state` its own `candidates` returned for the same call; their names
    are its `column_names`.

    A source with `reads_live = True` takes `candidates(users, k, live=LiveSignals)`: the
    purchases real-time events recorded since the cutoff (see `LiveSignals`).
    """

    name: str

    def fit(self, data: TrainData) -> Self: ...

    def candidates(self, users: np.ndarray, k: int) -> Candidates: ...

    def state(self) -> State: ...

    def restore(self, state: State) -> Self: ...


@dataclass
class RepurchaseSource:
    """The user's own purchases, weighted by units and recency (half-life in days)."""

    half_life_days: float = 30
    name: str = "repurchase"
    scores_: sp.csr_matrix | None = None
    reads_live = True  # purchases since the cutoff are proposed too

    def fit(self, data: TrainData) -> Self:
        self.scores_ = decayed_matrix(
            data.interactions, data.cutoff, data.n_users, data.n_items, self.half_life_days
        )
        self.scores_.sort_indices()
        return self

    def candidates(self, users: np.ndarray, k: int, live: LiveSignals | None = None) -> Candidates:
        assert self.scores_ is not None, "fit first"
        entries = gather_rows(self.scores_, users)
        if live is not None and live.any():  # what they bought since: units at weight 1
            entries = _with_live(entries, live, self.half_life_days)
        return Candidates(*top_k_entries(entries, len(users), k))

    def state(self) -> State:
        return prefixed("scores", csr_state(self.scores_))

    def restore(self, state: State) -> Self:
        self.scores_ = csr_restore(under("scores", state))
        return self


@dataclass
class CoPurchaseSource:
    """Items bought in the same baskets as the user's recent purchases (seeds excluded).

    The scores of the copurchase baseline (co-occurrence in the last `basket_days` of baskets,
    seeds weighted by recency), bounded for serving: each item keeps only its `neighbours` most
    co-bought items and each user only the `max_seeds` heaviest recent purchases, so a request
    costs at most max_seeds x neighbours lookups however long the catalogue's co-occurrence
    lists and the user's history grow (0 = no bound, exact scores).
    """

    neighbours: int = 200
    max_seeds: int = 50
    basket_days: float = 56
    half_life_days: float = 14
    name: str = "copurchase"
    reads_live = True  # purchases since the cutoff seed it too, and are excluded

    def fit(self, data: TrainData) -> Self:
        cooc = basket_cooccurrence(data.last_days(self.basket_days), data.n_items)
        seeds = decayed_matrix(
            data.interactions, data.cutoff, data.n_users, data.n_items, self.half_life_days
        )
        seeds.sort_indices()
        self.bought_ = seeds  # every purchase is excluded, however old
        self.neighbours_ = truncate_rows(cooc, self.neighbours) if self.neighbours else cooc
        self.weights_ = truncate_rows(seeds, self.max_seeds) if self.max_seeds else seeds
        self.neighbours_.sort_indices()
        return self

    def candidates(self, users: np.ndarray, k: int, live: LiveSignals | None = None) -> Candidates:
        items, scores = top_k_products(self.weights_, self.neighbours_, users, k, self.bought_)
        if live is not None and live.any():
            rows = np.flatnonzero([len(x) > 0 for x in live.items])
            sub = LiveSignals(
                tuple(live.items[r] for r in rows),
                tuple(live.ages[r] for r in rows),
                tuple(live.units[r] for r in rows),
            )
            items[rows], scores[rows] = self._with_purchases(users[rows], sub, k)
        return Candidates(items, scores)

    def _with_purchases(
        self, users: np.ndarray, live: LiveSignals, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The answer for users with purchases since the cutoff: those purchases are seeds
        beside the saved ones (units at weight 1 after the cutoff) and are excluded."""
        seeds = _with_live(gather_rows(self.weights_, users), live, self.half_life_days)
        owner, middle, weight = seeds
        of, col, value = gather_rows(self.neighbours_, middle)
        entries = sum_duplicates(owner[of], col, weight[of] * value)
        banned = gather_rows(self.bought_, users)
        new_owner, new_items, _ = live.entries()
        banned = (
            np.concatenate([banned[0], new_owner]),
            np.concatenate([banned[1], new_items]),
            np.zeros(len(banned[0]) + len(new_owner)),
        )
        return top_k_entries(drop_entries(entries, banned), len(users), k)

    def state(self) -> State:
        return {
            **prefixed("bought", csr_state(self.bought_)),
            **prefixed("neighbours", csr_state(self.neighbours_)),
            **prefixed("weights", csr_state(self.weights_)),
        }

    def restore(self, state: State) -> Self:
        self.bought_ = csr_restore(under("bought", state))
        self.neighbours_ = csr_restore(under("neighbours", state))
        self.weights_ = csr_restore(under("weights", state))
        return self


@dataclass
class TrendingSource:
    """Most units sold in the last `days`, within the user's segment when one is known.

    segment: "age" (age bucket), "region" (the user_region role) or None (everyone alike).
    Users outside any segment, and segments with too few sales, fall back to the global list.
    """

    days: float = 7
    segment: str | None = None
    name: str = "trending"
    global_: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    by_segment_: dict[int, np.ndarray] = field(default_factory=dict)
    ranked_: dict[int, np.ndarray] = field(default_factory=dict)
    segment_of_: np.ndarray | None = None
    units_: np.ndarray = field(default_factory=lambda: np.empty(0))
    reads_live = True  # everyone-alike lists: units sold since the cutoff are added

    def _segments(self, data: TrainData) -> np.ndarray | None:
        ds = data.dataset
        if self.segment == "age" and data.user_age is not None:
            return age_bucket(data.user_age).astype(np.int32)
        if self.segment == "region" and ds is not None and ds.user_region is not None:
            return ds.user_region
        return None

    def fit(self, data: TrainData, cap: int = 1000) -> Self:
        recent = data.last_days(self.days)
        self.units_ = np.bincount(recent.item, weights=recent.quantity, minlength=data.n_items)
        self.global_ = top_items(recent, data.n_items, cap)
        self.segment_of_ = self._segments(data)
        self.by_segment_ = {}
        if self.segment_of_ is not None:
            seg = self.segment_of_[recent.user]
            for s in np.unique(seg[seg >= 0]):
                m = seg == s
                sub = Interactions(
                    recent.user[m], recent.item[m], recent.time[m], recent.quantity[m]
                )
                self.by_segment_[int(s)] = top_items(sub, data.n_items, cap)
        # each segment's list topped up with the global one, once, not per request
        self.ranked_ = {
            s: np.concatenate([own, self.global_[~np.isin(self.global_, own)]])
            for s, own in self.by_segment_.items()
        }
        return self

    def state(self) -> State:
        """The global list, units sold, each user's segment and each segment's topped-up list
        (concatenated, with offsets)."""
        keys = np.asarray(sorted(self.ranked_), np.int64)
        lists = [self.ranked_[int(s)] for s in keys]
        out: State = {
            "global": self.global_,
            "units": self.units_,
            "segments": keys,
            "offsets": np.cumsum([0] + [len(x) for x in lists]).astype(np.int64),
            "ranked": np.concatenate(lists) if lists else np.empty(0, np.int32),
        }
        if self.segment_of_ is not None:
            out["segment_of"] = self.segment_of_
        return out

    def restore(self, state: State) -> Self:
        self.global_, self.units_ = state["global"], state["units"]
        self.segment_of_ = state.get("segment_of")
        offsets, ranked = state["offsets"], state["ranked"]
        self.ranked_ = {
            int(s): ranked[offsets[i] : offsets[i + 1]] for i, s in enumerate(state["segments"])
        }
        self.by_segment_ = {}  # only `fit` needs the lists before the top-up
        return self

    def candidates(self, users: np.ndarray, k: int, live: LiveSignals | None = None) -> Candidates:
        sold = live.sold if live is not None else None
        if self.segment is None and sold is not None and len(sold[0]):
            return self._with_sales(len(users), k, sold)
        items = np.full((len(users), k), -1, np.int32)
        segs = self.segment_of_[users] if self.segment_of_ is not None else np.full(len(users), -1)
        for s in np.unique(segs):
            ranked = self.ranked_.get(int(s), self.global_)[:k]
            items[np.flatnonzero(segs == s), : len(ranked)] = ranked
        scores = np.where(items >= 0, self.units_[np.maximum(items, 0)], np.nan)
        return Candidates(items, scores.astype(np.float32))

    def _with_sales(self, n_users: int, k: int, sold: tuple[np.ndarray, np.ndarray]) -> Candidates:
        """The everyone-alike list with the units sold since the cutoff added to the units of
        the last `days`: the saved list (the `cap` best sellers at the cutoff) and every item
        sold since, ranked by the sum (ties keep the saved order). The window does not slide:
        what sold just before the cutoff keeps counting until the next build."""
        items, units = sold
        pool = np.concatenate([self.global_, items[~np.isin(items, self.global_)]])
        score = self.units_[pool].astype(np.float64)
        at = np.searchsorted(items, pool)
        hit = (at < len(items)) & (items[np.minimum(at, len(items) - 1)] == pool)
        score[hit] += units[at[hit]]
        best = np.argsort(-score, kind="stable")[:k]
        out_i = np.full((n_users, k), -1, np.int32)
        out_s = np.full((n_users, k), np.nan, np.float32)
        out_i[:, : len(best)] = pool[best]
        out_s[:, : len(best)] = score[best]
        return Candidates(out_i, out_s)


@dataclass
class SameGroupSource:
    """Other items of the groups the user bought from (e.g. other colours of one product).

    Needs the item_group role; without it the source proposes nothing. Score: the user's
    recency-weighted purchases in the group times the item's share of the group's recent sales.
    """

    half_life_days: float = 30
    popularity_days: float = 28
    name: str = "same_group"
    user_groups_: sp.csr_matrix | None = None
    group_items_: sp.csr_matrix | None = None
    bought_: sp.csr_matrix | None = None

    def fit(self, data: TrainData) -> Self:
        group = data.dataset.item_group if data.dataset is not None else None
        if group is None:
            return self
        n_groups = int(group.max()) + 1
        item_to_group = sp.csr_matrix(
            (np.ones(data.n_items), (np.arange(data.n_items), group)),
            shape=(data.n_items, n_groups),
        )
        self.bought_ = decayed_matrix(
            data.interactions, data.cutoff, data.n_users, data.n_items, self.half_life_days
        )
        self.user_groups_ = (self.bought_ @ item_to_group).tocsr()
        recent = data.last_days(self.popularity_days)
        units = np.bincount(recent.item, weights=recent.quantity, minlength=data.n_items) + 0.1
        group_units = np.bincount(group, weights=units, minlength=n_groups)
        share = units / group_units[group]
        self.group_items_ = sp.csr_matrix(
            (share, (group, np.arange(data.n_items))), shape=(n_groups, data.n_items)
        )
        for m in (self.bought_, self.user_groups_, self.group_items_):
            m.sort_indices()
        return self

    def state(self) -> State:
        return {
            **prefixed("user_groups", csr_state(self.user_groups_)),
            **prefixed("group_items", csr_state(self.group_items_)),
            **prefixed("bought", csr_state(self.bought_)),
        }

    def restore(self, state: State) -> Self:
        self.user_groups_ = csr_restore(under("user_groups", state))
        self.group_items_ = csr_restore(under("group_items", state))
        self.bought_ = csr_restore(under("bought", state))
        return self

    def candidates(self, users: np.ndarray, k: int) -> Candidates:
        if self.user_groups_ is None or self.group_items_ is None or self.bought_ is None:
            return Candidates(
                np.full((len(users), k), -1, np.int32),
                np.full((len(users), k), np.nan, np.float32),
            )
        return Candidates(
            *top_k_products(self.user_groups_, self.group_items_, users, k, self.bought_)
        )


@dataclass
class TwoTowerSource:
    """Nearest items to the user's two-tower vector, from the ANN index (exact when small).

    The first `fit` trains the model on the data before its cutoff and indexes the item
    vectors; later fits keep both and only move the cutoff (the history the user tower reads).
    A ranking set spanning several weeks thus uses one model trained before its first week, so
    no week's candidates come from a model that saw its labels, and the same model serves
    after. A source built `from_model` (loaded from a workspace) starts trained.

    Besides its own candidates, it gives every candidate of the union its similarity to the
    user's vector (`columns`): a ranking feature for items other sources proposed.

    exact: search every item vector (no HNSW graph, whatever the catalogue's size). For
    measuring the model itself on a few hundred users, where building a graph costs more than
    it saves; a pipeline keeps the index it serves with.
    """

    settings: RetrievalSettings | None = None
    name: str = "two_tower"
    exact: bool = False
    model_: TwoTowerModel | None = None
    index_: ExactIndex | HNSWIndex | None = None
    reads_live = True  # purchases since the cutoff join the history the user tower pools

    @classmethod
    def from_model(
        cls,
        model: TwoTowerModel,
        index: ExactIndex | HNSWIndex,
        settings: RetrievalSettings | None = None,
    ) -> TwoTowerSource:
        """A trained source: the next `fit` only sets its cutoff."""
        return cls(settings=settings or model.settings, model_=model, index_=index)

    @property
    def is_trained(self) -> bool:
        return self.model_ is not None and self.index_ is not None

    @property
    def item_vectors(self) -> np.ndarray | None:
        """(n_items, dim) unit vectors of the catalogue, once trained."""
        return self.model_.item_vectors_ if self.model_ is not None else None

    def save(self, model_folder: Path, index_folder: Path) -> dict[str, str]:
        """The model and its index, each in its folder; returns their fingerprints
        ({"two_tower": ..., "index": ...}), which the index also records for the model."""
        assert self.model_ is not None and self.index_ is not None, "fit first"
        self.model_.save(model_folder)
        self.index_.save(index_folder, model=self.model_.fingerprint_)
        return {"two_tower": self.model_.fingerprint_, "index": str(self.index_.fingerprint_)}

    def summary(self) -> dict[str, Any]:
        """How the model was trained (examples, batch, epochs) and which index it has."""
        assert self.model_ is not None and self.index_ is not None, "fit first"
        return {
            **self.model_.schedule_,
            "epochs_run": len(self.model_.history_),
            "index": "exact" if self.index_.is_exact else "hnsw",
        }

    def fit(self, data: TrainData) -> Self:
        from shortlist.retrieval.history import HistoryIndex
        from shortlist.retrieval.index import index_vectors
        from shortlist.retrieval.two_tower import TwoTowerModel

        history = HistoryIndex(data.interactions)
        if not self.is_trained:
            ds = data.dataset
            if ds is None or ds.items is None or ds.users is None:
                raise ValueError("the two-tower source needs the item and user tables")
            model = TwoTowerModel(self.settings).fit(
                ds.items, ds.item_kinds, ds.users, ds.user_kinds, data.interactions, data.cutoff
            )
            # Exact below 20k items, HNSW above, tuned on recent users: as `shortlist index`.
            self.model_ = model
            self.index_ = index_vectors(
                model.item_vectors_,
                model.query_sample_,
                exact_below=len(model.item_vectors_) if self.exact else None,
            )
        self.history_ = history
        self.day_ = data.cutoff // US_PER_DAY
        return self

    def state(self) -> State:
        """The purchase histories the user tower reads, the day it reads them as of, and the
        model's encoded item and user inputs (`TwoTowerModel.load` takes them back; the model
        and its index are saved on their own, by `save`)."""
        assert self.model_ is not None, "fit first"
        return {
            **prefixed("history", self.history_.state()),
            "day": np.asarray([self.day_]),
            **prefixed("inputs", self.model_.inputs_state()),
        }

    def restore(self, state: State) -> Self:
        from shortlist.retrieval.history import HistoryIndex

        assert self.is_trained, "a restored two-tower source starts from a loaded model"
        self.history_ = HistoryIndex.restore(under("history", state))
        self.day_ = int(state["day"][0])
        return self

    def queries(self, users: np.ndarray, live: LiveSignals | None = None) -> np.ndarray:
        """(len(users), dim) user vectors as of the cutoff; with `live`, the purchases since
        the cutoff are the most recent entries of the history the user tower pools."""
        from shortlist.retrieval.history import WithRecent

        assert self.model_ is not None, "fit first"
        history = self.history_
        if live is not None and live.any():
            recent = {}
            for user, items, ages in zip(users.tolist(), live.items, live.ages, strict=True):
                if len(items):  # newest first, days before the query day (at least 0)
                    order = np.argsort(ages, kind="stable")
                    event_day = np.floor(self.day_ - np.asarray(ages, np.float64)[order])
                    age = np.maximum(self.day_ - event_day, 0.0)
                    recent[user] = (np.asarray(items, np.int64)[order], age)
            history = WithRecent(self.history_, recent)
        return self.model_.encode_users(users, np.full(len(users), self.day_), history)

    def candidates(self, users: np.ndarray, k: int, live: LiveSignals | None = None) -> Candidates:
        assert self.index_ is not None, "fit first"
        queries = self.queries(users, live)
        out_i = np.full((len(users), k), -1, np.int32)
        out_s = np.full((len(users), k), np.nan, np.float32)
        for lo in range(0, len(users), 4096):
            scores, ids = self.index_.search(queries[lo : lo + 4096], k)
            found = ids >= 0
            out_i[lo : lo + 4096] = np.where(found, ids, -1)
            out_s[lo : lo + 4096] = np.where(found, scores, np.nan)
        return Candidates(out_i, out_s, queries)

    @property
    def column_names(self) -> list[str]:
        """The names of what `columns` returns."""
        return [f"{self.name}_similarity"]

    def columns(
        self, users: np.ndarray, items: np.ndarray, queries: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """{"two_tower_similarity": (n, m)}: each candidate's dot product with its user's
        vector (NaN at padding); `queries`, the vectors `candidates` computed, are reused."""
        assert self.model_ is not None, "fit first"
        vectors = self.model_.item_vectors_
        out = np.full(items.shape, np.nan, np.float32)
        for lo in range(0, len(users), 1024):
            q = self.queries(users[lo : lo + 1024]) if queries is None else queries[lo : lo + 1024]
            block = items[lo : lo + 1024]
            inside = (block >= 0) & (block < len(vectors))
            sim = np.einsum("nd,nmd->nm", q, vectors[np.where(inside, block, 0)])
            out[lo : lo + 1024] = np.where(inside, sim, np.nan)
        return {self.column_names[0]: out}


def union(
    results: dict[str, Candidates], budget: int, chunk: int = 4096
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Round-robin by rank over the sources (in order) until `budget` distinct items per user.

    Returns:
        items (n, budget) int32, -1 padded, and per source a (n, budget) int16 matrix of the
        rank (1-based) at which that source proposed each candidate, 0 where it did not.
    """
    names = list(results)
    n = next(iter(results.values()))[0].shape[0] if results else 0
    items = np.full((n, budget), -1, np.int32)
    ranks = {name: np.zeros((n, budget), np.int16) for name in names}
    depth = max((results[name][0].shape[1] for name in names), default=0)
    width = len(names)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        # (rows, depth, sources) -> (rows, depth * sources): rank 1 of each source, then rank 2...
        stack = np.full((hi - lo, depth, width), -1, np.int64)
        for j, name in enumerate(names):
            cand = results[name][0][lo:hi]
            stack[:, : cand.shape[1], j] = cand
        seq = stack.reshape(hi - lo, -1)
        rows, cols = np.nonzero(seq >= 0)  # row-major: each row's entries in union order
        keys = (rows << 32) | seq[rows, cols]
        # the distinct (row, item) pairs, in order of first appearance; slot: place in the row
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        by_first = np.argsort(first, kind="stable")
        in_row = rows[first[by_first]]
        slot_of = np.empty(len(uniq), np.int64)
        slot_of[by_first] = np.arange(len(uniq)) - np.searchsorted(in_row, in_row)
        kept = first[slot_of < budget]
        items[lo + rows[kept], slot_of[inverse[kept]]] = seq[rows[kept], cols[kept]]
        # each source's rank of each kept candidate: its first (best) entry of that item
        source = cols % width
        _, best = np.unique(inverse * width + source, return_index=True)
        slot = slot_of[inverse[best]]
        best, slot = best[slot < budget], slot[slot < budget]
        for j, name in enumerate(names):
            mine = source[best] == j
            ranks[name][lo + rows[best[mine]], slot[mine]] = cols[best[mine]] // width + 1
    return items, ranks


def default_sources(
    settings: RetrievalSettings | None = None, *, exact: bool = False
) -> list[Source]:
    """The sources in their union order: personal signals first, then popularity."""
    return [
        RepurchaseSource(),
        SameGroupSource(),
        CoPurchaseSource(),
        TwoTowerSource(settings=settings, exact=exact),
        TrendingSource(segment="age", name="trending_age"),
        TrendingSource(),
    ]
