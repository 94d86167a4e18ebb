"""Ranking features for (user, candidate item) pairs, as of a cutoff.

Every value is defined once, in the feature pipelines (`shortlist.features`: the `items`,
`users`, `user_items` and `user_category` groups, the same Ibis code on DuckDB or PySpark),
computed from the interactions strictly before the cutoff, so a training period's features
cannot see its labels. `group_features` computes those groups as of a cutoff and lays them out
as item-indexed arrays, user-indexed arrays and sorted key tables (user x item, user x
attribute value); `transform` then combines a user's and an item's values (ratios, gaps,
shares) with gathers and binary searches only. The same two functions build the training set
(each period's rows as of its cutoff: a point-in-time join) and score a request, so training
and serving cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shortlist import columns as C
from shortlist.config import AttributeKind
from shortlist.data.arrays import US_PER_DAY, Dataset, from_us
from shortlist.data.candidates import CandidateSet
from shortlist.data.memo import per_table
from shortlist.features.affinity import eligible_attributes
from shortlist.features.base import FeatureOptions
from shortlist.features.engine import OfflineTables
from shortlist.features.materialize import compute_groups
from shortlist.features.segments import lifts, user_segments


class KeyTable:
    """Values keyed by sorted int64 keys; lookups are binary searches (NaN where absent)."""

    def __init__(self, keys: np.ndarray, values: dict[str, np.ndarray]):
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = {name: v[order].astype(np.float32) for name, v in values.items()}

    def lookup(self, keys: np.ndarray, fill: float = np.nan) -> dict[str, np.ndarray]:
        """The values of `keys`, `fill` where a key is absent."""
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
            name: np.where(found, v[pos] if len(v) else fill, fill).astype(np.float32, copy=False)
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
    """Laid out from the feature groups (`from_groups`, or `group_features`), then
    `transform` candidate sets into a matrix.

    max_values: categorical attributes with more values are not used (ids, postal codes).
    affinity_attributes: how many item attributes get user x value purchase counts (the
    most specific first, plus the item_group role): each adds a key table, so memory grows.
    """

    max_values: int = 256
    affinity_attributes: int = 5
    names_: list[str] = field(default_factory=list)
    categorical_: list[str] = field(default_factory=list)
    # serving: the user side read per request from the online store (ranking/online.py)
    online_: Any = None

    # -- from the feature groups ------------------------------------------------------------
    def from_groups(
        self,
        groups: Mapping[str, pa.Table],
        cutoff: int,
        dataset: Dataset,
        eligible: Collection[str],
    ) -> Self:
        """Take every value from the feature groups computed as of `cutoff` (features/: one
        definition per feature, the same on DuckDB and PySpark) instead of fitting them here.

        `groups` holds the `items`, `users`, `user_items` and `user_category` tables as of
        the cutoff; `dataset` gives the static parts (attribute codes, the age role) and the
        sizes; `eligible`, the item attributes the user_category group covers. What the
        ranker sees is then exactly what the feature pipelines computed.
        """
        n_items, n_users = dataset.n_items, dataset.n_users
        has_price = dataset.interactions.price is not None
        self.cutoff_ = cutoff
        items = _by_key(groups["items"], C.ITEM_IDX, n_items)
        users = _by_key(groups["users"], C.USER_IDX, n_users)
        item = {name: items(col, fill) for name, (col, fill) in ITEM_COLUMNS.items()}
        user = {name: users(col, fill) for name, (col, fill) in USER_COLUMNS.items()}
        if has_price:
            item["item_price"] = items("price_recent", np.nan)
            user["user_price"] = users("price_mean", np.nan)
        if dataset.user_age is not None:
            item["item_buyer_age"] = items("buyer_age_mean", np.nan)
            user["user_age"] = dataset.user_age.astype(np.float32)
        self._static(dataset, item, user)
        pairs = groups["user_items"]
        keys = _col(pairs, C.USER_IDX, np.int64) * n_items + _col(pairs, C.ITEM_IDX, np.int64)
        self.pairs_ = KeyTable(
            keys,
            {
                "ui_units": _col(pairs, "purchases"),
                "ui_last": -_col(pairs, "days_since_last"),
                "ui_decayed": _col(pairs, "decayed_purchases"),
            },
        )
        self.affinity_ = {}
        category = groups["user_category"]
        for name, codes in self._affinity_groups(dataset, eligible).items():
            column = self.affinity_column(name, dataset)
            n_values = int(codes.max()) + 2
            rows = category.filter(pc.equal(category.column("attribute"), column or ""))
            # the group writes each value as a string: the item codes of those strings
            values = dataset.items[column] if column is not None else pd.Series([], dtype=str)
            known = codes >= 0
            lookup = pd.DataFrame({"v": values.astype(str).to_numpy()[known], "c": codes[known]})
            lookup = lookup.drop_duplicates("v")
            at = pc.index_in(rows.column("value"), value_set=pa.array(lookup["v"], pa.string()))
            found = ~np.asarray(at.is_null().to_numpy(zero_copy_only=False))
            value_code = lookup["c"].to_numpy()[at.fill_null(0).to_numpy()][found]
            user_of = _col(rows, C.USER_IDX, np.int64)[found]
            table = KeyTable(
                user_of * n_values + value_code + 1,
                {
                    "all": _col(rows, "purchases")[found],
                    "recent": _col(rows, "purchases_28d")[found],
                },
            )
            self.affinity_[name] = (codes, n_values, table)
        self.segments_, self.segment_share_ = segment_lifts(
            groups.get("item_segments"), user_segments(dataset), n_items
        )
        self.n_items_, self.n_users_ = n_items, n_users
        self.blocks_ = self._blocks()
        self._name_columns()
        return self

    def _static(self, ds: Dataset, item: dict, user: dict) -> None:
        """Attributes as ingested: numeric ones as they are, categorical ones as codes."""
        self.item_numeric_ = {**item, **numeric_attributes(ds.items, ds.item_kinds)}
        self.user_numeric_ = {**user, **numeric_attributes(ds.users, ds.user_kinds)}
        self.item_cats_ = choose_attributes(ds.items, ds.item_kinds, self.max_values)
        self.user_cats_ = choose_attributes(ds.users, ds.user_kinds, self.max_values)

    def _affinity_groups(self, ds: Dataset, eligible: Collection[str]) -> dict[str, np.ndarray]:
        """The item attributes that get user x value counts: the most specific ones (most
        values) of those the user_category group covers, plus the item_group role."""
        covered = [kv for kv in self.item_cats_.items() if kv[0] in eligible]
        groups = dict(sorted(covered, key=lambda kv: -int(kv[1].max()))[: self.affinity_attributes])
        if ds.item_group is not None:
            groups["item_group"] = ds.item_group
        return groups

    @staticmethod
    def affinity_column(name: str, ds: Dataset) -> str | None:
        """The item attribute behind an affinity table's name ("item_group": the role's)."""
        return _item_group_attribute(ds) if name == "item_group" else name

    def affinity_columns(self, ds: Dataset, eligible: Collection[str]) -> list[str]:
        """The item attributes whose user x value counts the ranker reads (the user_category
        rows it needs): its most specific eligible ones, and the item_group role's."""
        self._static(ds, {}, {})
        names = [n for n in self._affinity_groups(ds, eligible) if n != "item_group"]
        role = _item_group_attribute(ds)
        return list(dict.fromkeys(names + ([role] if role is not None else [])))

    def _name_columns(self) -> None:
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
            + [f"segment_{kind}_lift" for kind in self.segments_]
            + (["segment_share"] if self.segments_ else [])
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
        if self.online_ is not None:  # serving: the users' side read now, for them alone
            view, local = self.online_.view(cs.users)
            return view.transform(replace(cs, users=local))
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
            got = table.lookup(users * n_values + value + 1, fill=0.0)  # counts: none is 0
            out += [got["all"] / total, got["recent"]]
        if "item_price" in self.item_numeric_:
            item_price = np.where(inside, self.item_numeric_["item_price"][safe], np.nan)
            out.append(item_price / self.user_numeric_["user_price"][users])
        if "item_buyer_age" in self.item_numeric_:
            buyer_age = np.where(inside, self.item_numeric_["item_buyer_age"][safe], np.nan)
            out.append(self.user_numeric_["user_age"][users] - buyer_age)
        if self.segments_:
            at_item = np.where(inside, items, -1)  # the last column: items unknown at the fit
            share = self.segment_share_[at_item]
            for codes, lift in self.segments_.values():
                value = codes[users]  # -1 (unknown): the last row, all ones
                got = lift[value, at_item]
                out.append(got)
                share = share * got
            out.append(share)
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


# The ranker's names for the feature groups' columns (docs/features.md defines each), and
# the value of an entity the group has no row for, or a null (counts 0, days and prices NaN).
ITEM_COLUMNS: dict[str, tuple[str, float]] = {
    "item_units_7d": ("units_7d", 0.0),
    "item_units_28d": ("units_28d", 0.0),
    "item_units_all": ("units_all", 0.0),
    "item_trend": ("trend_28d", 0.0),
    "item_days_since_first": ("days_since_first_sale", np.nan),
    "item_days_since_last": ("days_since_last_sale", np.nan),
    "item_buyers": ("buyers_all", 0.0),
    "item_repeat_share": ("repeat_buyer_share", 0.0),
}
USER_COLUMNS: dict[str, tuple[str, float]] = {
    "user_purchases_all": ("units_all", 0.0),
    "user_purchases_28d": ("units_28d", 0.0),
    "user_purchases_7d": ("units_7d", 0.0),
    "user_days_since_last": ("days_since_last_purchase", np.nan),
}


def _col(table: pa.Table, name: str, dtype: type = np.float32) -> np.ndarray:
    """A numeric column as numpy (nulls as NaN)."""
    return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)


def _by_key(table: pa.Table, key: str, n: int) -> Callable[[str, float], np.ndarray]:
    """column(name, fill) -> (n,) float32 by entity idx; entities without a row get `fill`."""
    idx = _col(table, key, np.int64)

    def column(name: str, fill: float) -> np.ndarray:
        out = np.full(n, fill, np.float32)
        values = _col(table, name)
        out[idx] = values if np.isnan(fill) else np.where(np.isnan(values), fill, values)
        return out

    return column


MAX_SEGMENT_VALUES = 256  # a segment kind with more values (ids, postcodes) is not used


def segment_lifts(
    table: pa.Table | None, users: Mapping[str, np.ndarray], n_items: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """From the `item_segments` group: per segment kind, (each user's value, lift matrix), and
    each item's share of the window's units.

    The lifts are features.segments.lifts' (units bought over units expected, with
    pseudo-units). The matrix has a last row of ones (users of unknown value) and a last
    column of NaN (items unknown at the fit). A kind with more than MAX_SEGMENT_VALUES values
    is left out. A pair's `segment_share` is p(i) (averaged over the kinds) times its lifts:
    the item's share of what the user's segments buy, were the kinds independent.
    """
    share = np.full(n_items + 1, np.nan, np.float32)
    share[:n_items] = 0.0
    rows = {} if table is None else _segment_rows(table, n_items)
    out, shares = {}, []
    for kind, codes in users.items():
        n_values = int(codes.max()) + 1 if len(codes) else 0
        if n_values > MAX_SEGMENT_VALUES:  # more values than a segment has (ids, postcodes)
            continue
        counts = np.zeros((n_values, n_items))
        got = rows.get(kind, counts)[:n_values]
        counts[: len(got)] = got
        lift = np.ones((n_values + 1, n_items + 1), np.float32)
        lift[:n_values, :n_items], p = lifts(counts)  # p over the users of known value
        lift[:, n_items] = np.nan
        out[kind] = (codes, lift)
        shares.append(p)
    if shares:
        share[:n_items] = np.mean(shares, axis=0)
    return out, share


def _segment_rows(table: pa.Table, n_items: int) -> dict[str, np.ndarray]:
    """(values, items) unit counts per segment kind of an `item_segments` table."""
    kinds = np.asarray(table.column("segment").to_numpy(zero_copy_only=False), dtype=object)
    value = _col(table, "value", np.int64)
    item = _col(table, C.ITEM_IDX, np.int64)
    units = _col(table, "units_7d", np.float64)
    out = {}
    for kind in np.unique(kinds) if len(kinds) else []:
        m = (kinds == kind) & (value >= 0) & (value < MAX_SEGMENT_VALUES) & (item < n_items)
        counts = np.zeros((int(value[m].max()) + 1 if m.any() else 0, n_items))
        np.add.at(counts, (value[m], item[m]), units[m])
        out[str(kind)] = counts
    return out


RANKING_GROUPS = ("items", "users", "user_category", "user_items", "item_segments")


def group_features(
    tables: OfflineTables,
    dataset: Dataset,
    cutoff: int,
    *,
    max_values: int = 256,
    affinity_attributes: int = 5,
    options: FeatureOptions | None = None,
) -> RankingFeatures:
    """The ranking features as of `cutoff` (µs): the feature groups computed on `tables` (the
    dataset's, see OfflineTables.from_dataset), laid out for `transform`.

    `user_category` is computed for the attributes the ranker reads only (its most specific
    eligible ones and the item_group role), not every eligible one: most of its cost."""
    options = options or FeatureOptions()
    eligible = eligible_attributes(tables, options)
    features = RankingFeatures(max_values=max_values, affinity_attributes=affinity_attributes)
    read = features.affinity_columns(dataset, eligible)
    narrow = replace(options, category_attributes=tuple(read))
    groups = compute_groups(tables, from_us(cutoff), RANKING_GROUPS, narrow)
    return features.from_groups(groups, cutoff, dataset, eligible)


def ranker_category_attributes(
    tables: OfflineTables,
    dataset: Dataset,
    *,
    max_values: int = 256,
    affinity_attributes: int = 5,
    options: FeatureOptions | None = None,
) -> list[str]:
    """The item attributes whose user x value counts (`user_category` rows) the ranker reads,
    as `group_features` chooses them for these tables: what `shortlist features` computes by
    default (every eligible attribute at full H&M scale needs more than 8 GB)."""
    eligible = eligible_attributes(tables, options or FeatureOptions())
    features = RankingFeatures(max_values=max_values, affinity_attributes=affinity_attributes)
    return features.affinity_columns(dataset, eligible)


def _item_group_attribute(dataset: Dataset) -> str | None:
    """The item_group role's attribute, when the dataset has the role (from its manifest)."""
    if dataset.item_group is None or dataset.manifest is None:
        return None
    return dataset.manifest.roles.item_group
