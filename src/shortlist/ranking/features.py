"""Ranking features for (user, candidate item) pairs, computed as of a cutoff.

Everything is fitted from the interactions strictly before the cutoff (so a training week's
features cannot see its labels) into item-indexed arrays, user-indexed arrays and sorted key
tables for user x item and user x attribute-value counts. Transforming a candidate set is then
gathers and binary searches only: the same code builds the training set (millions of rows) and
scores one request (300 rows, well under a millisecond), so training and serving cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np
import pandas as pd

from shortlist.config import AttributeKind
from shortlist.data.arrays import US_PER_DAY, TrainData
from shortlist.data.candidates import CandidateSet
from shortlist.data.memo import per_table

HALF_LIFE_DAYS = 30.0


class KeyTable:
    """Values keyed by sorted int64 keys; lookups are binary searches (NaN where absent)."""

    def __init__(self, keys: np.ndarray, values: dict[str, np.ndarray]):
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = {name: v[order].astype(np.float32) for name, v in values.items()}

    @classmethod
    def aggregate(cls, keys: np.ndarray, columns: dict[str, tuple[np.ndarray, str]]) -> KeyTable:
        """Group rows by key; each column is (per-row values, "sum" | "max")."""
        uniq, inverse = np.unique(keys, return_inverse=True)
        out = {}
        for name, (values, how) in columns.items():
            if how == "sum":
                out[name] = np.bincount(inverse, weights=values, minlength=len(uniq))
            else:
                agg = np.full(len(uniq), -np.inf)
                np.maximum.at(agg, inverse, values)
                out[name] = agg
        return cls(uniq, out)

    def lookup(self, keys: np.ndarray) -> dict[str, np.ndarray]:
        # A request's keys share one user, i.e. one short run of the table: search that run
        # (a few cache lines) rather than the whole table (one cache miss per probe).
        lo, hi = 0, len(self.keys)
        if len(keys) and hi:
            lo = int(np.searchsorted(self.keys, keys.min()))
            hi = max(lo, int(np.searchsorted(self.keys, keys.max(), side="right")))
        run = self.keys[lo:hi]
        pos = lo + np.minimum(np.searchsorted(run, keys), max(len(run) - 1, 0))
        pos = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), bool)
        return {
            name: np.where(found, v[pos] if len(v) else np.nan, np.nan).astype(np.float32)
            for name, v in self.values.items()
        }


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int32), len(uniques)


def choose_attributes(
    frame: pd.DataFrame | None, kinds: dict[str, AttributeKind], max_values: int
) -> dict[str, np.ndarray]:
    """Categorical columns with 2..max_values values, as int codes (-1 missing).

    Columns that only rename another one (product_type_no and product_type_name split the items
    the same way) are kept once, so no feature is counted twice. Computed once per table
    object (every period of a ranking set fits on the same tables).
    """
    if frame is None:
        return {}
    key = ("choose_attributes", tuple(kinds.items()), max_values)
    return per_table(frame, key, lambda: _choose_attributes(frame, kinds, max_values))


def _choose_attributes(
    frame: pd.DataFrame, kinds: dict[str, AttributeKind], max_values: int
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, kind in kinds.items():
        if kind != AttributeKind.CATEGORICAL or name not in frame.columns:
            continue
        codes, n = _codes(frame[name])
        if not 2 <= n <= max_values:
            continue
        if any(_same_partition(codes, other) for other in out.values()):
            continue
        out[name] = codes
    return out


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two code columns (-1 missing, at most max_values codes each) split the rows the
    same way: as many distinct (a, b) pairs as distinct values of either."""

    def distinct(x: np.ndarray) -> int:
        return int(np.count_nonzero(np.bincount(x)))

    nb = int(b.max()) + 2
    return distinct((a.astype(np.int64) + 1) * nb + b + 1) == distinct(a + 1) == distinct(b + 1)


def numeric_attributes(
    frame: pd.DataFrame | None, kinds: dict[str, AttributeKind]
) -> dict[str, np.ndarray]:
    if frame is None:
        return {}
    return {
        name: pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float32)
        for name, kind in kinds.items()
        if kind == AttributeKind.NUMERIC and name in frame.columns
    }


@dataclass
class RankingFeatures:
    """Fit on the past (`fit(TrainData)`), then `transform` candidate sets into a matrix.

    max_values: categorical attributes with more values are not used (ids, postal codes).
    affinity_attributes: how many item attributes get user x value purchase counts (the
    most specific first, plus the item_group role): each adds a key table, so memory grows.
    """

    max_values: int = 256
    affinity_attributes: int = 5
    recent_days: float = 28
    names_: list[str] = field(default_factory=list)
    categorical_: list[str] = field(default_factory=list)

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, data: TrainData) -> Self:
        ds = data.dataset
        inter = data.interactions
        self.cutoff_ = data.cutoff
        n_users, n_items = data.n_users, data.n_items
        age_days = ((data.cutoff - inter.time) / US_PER_DAY).astype(np.float64)
        qty = inter.quantity.astype(np.float64)
        recent = age_days < self.recent_days
        week = age_days < 7
        price = inter.price

        def per_item(mask: np.ndarray | None, weights: np.ndarray | None = None) -> np.ndarray:
            idx = inter.item if mask is None else inter.item[mask]
            w = weights if mask is None or weights is None else weights[mask]
            return np.bincount(idx, weights=w, minlength=n_items).astype(np.float32)

        def per_user(mask: np.ndarray | None, weights: np.ndarray | None = None) -> np.ndarray:
            idx = inter.user if mask is None else inter.user[mask]
            w = weights if mask is None or weights is None else weights[mask]
            return np.bincount(idx, weights=w, minlength=n_users).astype(np.float32)

        item: dict[str, np.ndarray] = {}
        item["item_units_7d"] = per_item(week, qty)
        item["item_units_28d"] = per_item(recent, qty)
        item["item_units_all"] = per_item(None, qty)
        item["item_trend"] = item["item_units_7d"] / (item["item_units_28d"] / 4 + 1)
        first, last = _first_last(inter.item, age_days, n_items)
        item["item_days_since_first"], item["item_days_since_last"] = first, last
        pair_keys = inter.user.astype(np.int64) * n_items + inter.item
        uniq_pairs, pair_counts = np.unique(pair_keys, return_counts=True)
        pair_item = (uniq_pairs % n_items).astype(np.int64)
        item["item_buyers"] = np.bincount(pair_item, minlength=n_items).astype(np.float32)
        repeat = np.bincount(pair_item, weights=pair_counts > 1, minlength=n_items)
        item["item_repeat_share"] = (repeat / np.maximum(item["item_buyers"], 1)).astype(np.float32)
        user: dict[str, np.ndarray] = {}
        user["user_purchases_all"] = per_user(None, qty)
        user["user_purchases_28d"] = per_user(recent, qty)
        user["user_purchases_7d"] = per_user(week, qty)
        user["user_days_since_last"] = _first_last(inter.user, age_days, n_users)[1]
        if price is not None:
            known = ~np.isnan(price)
            item["item_price"] = _mean(inter.item, price, known & recent, n_items, fallback=known)
            user["user_price"] = _mean(inter.user, price, known, n_users)
        age = data.user_age
        if age is not None:
            known_age = ~np.isnan(age[inter.user])
            item["item_buyer_age"] = _mean(
                inter.item, age[inter.user].astype(np.float32), known_age, n_items
            )
            user["user_age"] = age.astype(np.float32)
        items, users = (ds.items, ds.users) if ds is not None else (None, None)
        item_kinds, user_kinds = (ds.item_kinds, ds.user_kinds) if ds is not None else ({}, {})
        self.item_numeric_ = {**item, **numeric_attributes(items, item_kinds)}
        self.user_numeric_ = {**user, **numeric_attributes(users, user_kinds)}
        self.item_cats_ = choose_attributes(items, item_kinds, self.max_values)
        self.user_cats_ = choose_attributes(users, user_kinds, self.max_values)
        # user x item: units, last purchase, recency-weighted units
        decay = np.power(0.5, age_days / HALF_LIFE_DAYS) * qty
        self.pairs_ = KeyTable.aggregate(
            pair_keys,
            {"ui_units": (qty, "sum"), "ui_last": (-age_days, "max"), "ui_decayed": (decay, "sum")},
        )
        # user x attribute value: units (all time and recent), for the most specific attributes
        self.affinity_ = {}
        groups = dict(
            sorted(self.item_cats_.items(), key=lambda kv: -int(kv[1].max()))[
                : self.affinity_attributes
            ]
        )
        if ds is not None and ds.item_group is not None:
            groups["item_group"] = ds.item_group
        for name, codes in groups.items():
            n_values = int(codes.max()) + 2
            keys = inter.user.astype(np.int64) * n_values + codes[inter.item] + 1
            table = KeyTable.aggregate(keys, {"all": (qty, "sum"), "recent": (qty * recent, "sum")})
            self.affinity_[name] = (codes, n_values, table)
        self.n_items_, self.n_users_ = n_items, n_users
        self.blocks_ = self._blocks()
        self._name_columns(data)
        return self

    def _name_columns(self, data: TrainData) -> None:
        self.source_names_: list[str] = []
        self.names_ = (
            list(self.item_numeric_)
            + [f"item_{n}" for n in self.item_cats_]
            + list(self.user_numeric_)
            + [f"user_{n}" for n in self.user_cats_]
            + ["ui_units", "ui_days_since_last", "ui_decayed"]
            + [f"{k}_{n}" for n in self.affinity_ for k in ("share", "recent")]
            + (["price_ratio"] if "item_price" in self.item_numeric_ else [])
            + (["age_gap"] if "item_buyer_age" in self.item_numeric_ else [])
            + ["day_of_year"]
        )
        self.categorical_ = [f"item_{n}" for n in self.item_cats_] + [
            f"user_{n}" for n in self.user_cats_
        ]

    # -- transforming -----------------------------------------------------------------------
    def feature_names(self, sources: list[str], columns: list[str]) -> list[str]:
        """Column order of `transform`: the candidate set's own features first (each source's
        rank and score, how many sources proposed the item, the sources' extra columns such as
        the two-tower similarity), then the fitted ones."""
        src = [f"{s}_{k}" for s in sources for k in ("rank", "score")] + ["n_sources"]
        return src + list(columns) + self.names_

    def transform(self, cs: CandidateSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features of every non-padding candidate, in row-major order.

        Returns:
            X (pairs, features) float32, and the (row, column) of each pair in `cs.items`.
        """
        rows, cols = np.nonzero(cs.items >= 0)
        flat = rows * cs.items.shape[1] + cols
        users = cs.users[rows].astype(np.int64)
        items = cs.items.ravel()[flat].astype(np.int64)
        item_block, user_block = self.blocks_
        head = 2 * len(cs.sources) + 1 + len(cs.columns)
        X = np.empty((len(rows), head + len(self.names_)), np.float32)
        n_sources = np.zeros(len(rows), np.float32)
        for j, name in enumerate(cs.sources):
            rank = cs.ranks[name].ravel()[flat]
            n_sources += rank > 0
            X[:, 2 * j] = np.where(rank > 0, rank, np.nan)
            X[:, 2 * j + 1] = cs.scores[name].ravel()[flat]
        X[:, 2 * len(cs.sources)] = n_sources
        for j, column in enumerate(cs.columns.values()):
            X[:, 2 * len(cs.sources) + 1 + j] = column.ravel()[flat]
        inside = items < self.n_items_  # items newer than the fit: unknown, NaN features
        safe = np.where(inside, items, 0)
        # one gather per table instead of one per column: most of a request's feature cost
        X[:, head : head + item_block.shape[1]] = item_block[np.where(inside, items, -1)]
        at = head + item_block.shape[1] + user_block.shape[1]
        X[:, head + item_block.shape[1] : at] = user_block[users]
        out: list[np.ndarray] = []  # the remaining columns, in order, copied into X at the end
        pairs = self.pairs_.lookup(users * self.n_items_ + items)
        out += [pairs["ui_units"], -pairs["ui_last"], pairs["ui_decayed"]]
        total = np.maximum(self.user_numeric_["user_purchases_all"][users], 1)
        for codes, n_values, table in self.affinity_.values():
            value = np.where(inside, codes[safe], -1)
            got = table.lookup(users * n_values + value + 1)
            out += [np.nan_to_num(got["all"]) / total, np.nan_to_num(got["recent"])]
        if "item_price" in self.item_numeric_:
            item_price = np.where(inside, self.item_numeric_["item_price"][safe], np.nan)
            out.append(item_price / self.user_numeric_["user_price"][users])
        if "item_buyer_age" in self.item_numeric_:
            buyer_age = np.where(inside, self.item_numeric_["item_buyer_age"][safe], np.nan)
            out.append(self.user_numeric_["user_age"][users] - buyer_age)
        day = (self.cutoff_ // US_PER_DAY) % 365.2425
        out.append(np.full(len(rows), day, np.float32))
        assert at + len(out) == X.shape[1], "columns out of step with names_"
        for j, column in enumerate(out):
            X[:, at + j] = column
        return X, rows, cols

    def _blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """The item and user columns of `transform` as two matrices: one gather each per
        request. The item matrix has one more row, all NaN, for items unknown at the fit."""

        def block(numeric: dict, cats: dict, n: int, extra: int) -> np.ndarray:
            columns = [*numeric.values(), *(np.where(c >= 0, c, np.nan) for c in cats.values())]
            out = np.full((n + extra, len(columns)), np.nan, np.float32)
            for j, column in enumerate(columns):
                out[:n, j] = column
            return out

        return (
            block(self.item_numeric_, self.item_cats_, self.n_items_, 1),
            block(self.user_numeric_, self.user_cats_, self.n_users_, 0),
        )


def _first_last(keys: np.ndarray, age_days: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Days since the first and the last row of each key (NaN for keys without rows)."""
    first = np.full(n, -np.inf)
    last = np.full(n, np.inf)
    np.maximum.at(first, keys, age_days)
    np.minimum.at(last, keys, age_days)
    first[np.isinf(first)] = np.nan
    last[np.isinf(last)] = np.nan
    return first.astype(np.float32), last.astype(np.float32)


def _mean(
    keys: np.ndarray,
    values: np.ndarray,
    mask: np.ndarray,
    n: int,
    fallback: np.ndarray | None = None,
) -> np.ndarray:
    """Mean of values per key over masked rows; keys without any use the fallback mask."""
    total = np.bincount(keys[mask], weights=values[mask], minlength=n)
    count = np.bincount(keys[mask], minlength=n)
    out = np.divide(total, count, out=np.full(n, np.nan), where=count > 0)
    if fallback is not None:
        wide = _mean(keys, values, fallback, n)
        out = np.where(count > 0, out, wide)
    return out.astype(np.float32)
