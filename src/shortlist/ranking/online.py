"""The user side of the ranking features, read per request from the online store.

Training reads every value from the offline feature store, as of each ranking period's cutoff
(`RankingFeatures.from_groups`). A served pipeline reads the same groups' values for the users
of a request from the online store (`shortlist materialize`, run by `build` for the pipeline's
own versions): the `users` row, the `user_items` records and the `user_category` records, three
batched reads. They are laid out exactly as `from_groups` lays out the offline tables, and the
same `transform` combines them with the item side (kept in memory: it changes only with a new
materialization), so a served vector equals the trained one (tests/pipeline/
test_feature_parity.py). These per-user entries are what real-time events update.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from shortlist.data.arrays import Dataset
from shortlist.errors import WorkspaceError
from shortlist.features.online.base import OnlineStore
from shortlist.ranking.features import USER_COLUMNS, KeyTable, RankingFeatures

USER_GROUPS = ("users", "user_items", "user_category")  # what a request reads per user


def empty_like(tables: Mapping[str, pa.Table | pa.Schema]) -> dict[str, pa.Table]:
    """Zero-row tables with the given tables' (or schemas') columns."""
    return {
        name: (t if isinstance(t, pa.Schema) else t.schema).empty_table()
        for name, t in tables.items()
    }


class OnlineUsers:
    """Binds fitted ranking features (laid out from the groups with zero user rows: the item
    side and the users' static attributes only) to an online store holding the same versions
    of the user groups; `view(users)` then gives features for those users alone."""

    def __init__(
        self,
        features: RankingFeatures,
        store: OnlineStore,
        dataset: Dataset,
        versions: Mapping[str, int],
        eligible: Collection[str],
    ):
        current = store.current()
        materialized = (current.info.get("features", {}) if current is not None else {}) or {}
        # saving a pipeline writes its versions to the online store
        mend = "run `shortlist train pipeline` (or `shortlist build --source DIR`)"
        for group in USER_GROUPS:
            held = (materialized.get(group) or {}).get("feature_version")
            if held != versions.get(group):
                raise WorkspaceError(
                    f"the online store ({store.url}) holds version {held} of the '{group}' "
                    f"feature group, the pipeline was trained with version "
                    f"{versions.get(group)}: {mend}"
                )
        self.store, self.features = store, features
        users = store.layout("users")
        position = {c: j for j, c in enumerate(users.columns)}
        numeric = list(features.user_numeric_)
        # (block column, online row column, fill) for each dynamic user column
        wanted = {name: spec for name, spec in USER_COLUMNS.items()}
        if "user_price" in features.user_numeric_:
            wanted["user_price"] = ("price_mean", np.nan)
        self._columns = [
            (numeric.index(name), position[column], fill) for name, (column, fill) in wanted.items()
        ]
        self._value_codes = self._category_codes(dataset, eligible)

    def _category_codes(
        self, dataset: Dataset, eligible: Collection[str]
    ) -> dict[str, tuple[int, np.ndarray]]:
        """Per affinity attribute: its code in the online dictionary of attribute names, and
        the ranker's value code of each entry of the dictionary of values (-1: not an item
        value of that attribute), matched through the strings as `from_groups` does."""
        names = self.store.dictionary("user_category", "attribute")
        values = np.asarray(self.store.dictionary("user_category", "value"), dtype=object)
        out = {}
        for name, (codes, _, _) in self.features.affinity_.items():
            column = self.features.affinity_column(name, dataset)
            attribute = names.index(column) if column in names else -1
            known = codes >= 0
            item_values = dataset.items[column] if column is not None else pd.Series([], dtype=str)
            lookup = pd.Series(codes[known], index=item_values.astype(str).to_numpy()[known])
            lookup = lookup[~lookup.index.duplicated()]
            mapped = lookup.reindex(values.astype(str)).fillna(-1).to_numpy(np.int64)
            out[name] = (attribute, mapped)
        return out

    def view(self, users: np.ndarray) -> tuple[RankingFeatures, np.ndarray]:
        """Features whose user side holds `users` only (read now from the online store),
        and the users renumbered 0..n-1 for it."""
        users = np.asarray(users, np.int64)
        f = self.features
        local = np.arange(len(users), dtype=np.int64)
        row = self.store.get_rows("users", users)
        items = self.store.get_records("user_items", users)
        category = self.store.get_records("user_category", users)
        out = copy.copy(f)
        out.online_ = None
        item_block, user_block = f.blocks_
        block = user_block[users].copy()
        names = list(f.user_numeric_)
        numeric = {name: values[users] for name, values in f.user_numeric_.items()}
        for j, k, fill in self._columns:
            v = row.values[:, k]
            v = v if np.isnan(fill) else np.where(np.isnan(v), fill, v)
            block[:, j] = v
            numeric[names[j]] = v.astype(np.float32)
        out.user_numeric_ = numeric
        out.blocks_ = (item_block, block)
        out.n_users_ = len(users)
        out.segments_ = {k: (codes[users], lift) for k, (codes, lift) in f.segments_.items()}
        owner, recs = _flatten(items.records)
        out.pairs_ = KeyTable(
            owner * f.n_items_ + recs["item_idx"].astype(np.int64) if len(recs) else owner,
            {
                "ui_units": _field(recs, "purchases"),
                "ui_last": -_field(recs, "days_since_last"),
                "ui_decayed": _field(recs, "decayed_purchases"),
            },
        )
        owner, recs = _flatten(category.records)
        out.affinity_ = {}
        for name, (codes, n_values, _) in f.affinity_.items():
            attribute, mapped = self._value_codes[name]
            if len(recs):
                v = recs["value"].astype(np.int64)
                value = np.where(v >= 0, mapped[np.maximum(v, 0)], -1)
                keep = (recs["attribute"].astype(np.int64) == attribute) & (value >= 0)
            else:
                value = keep = np.zeros(0, np.int64)
            table = KeyTable(
                owner[keep] * n_values + value[keep] + 1,
                {
                    "all": _field(recs, "purchases")[keep],
                    "recent": _field(recs, "purchases_28d")[keep],
                },
            )
            out.affinity_[name] = (codes, n_values, table)
        return out, local


def _flatten(records: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(owner position, records) of a batch's records, concatenated."""
    sizes = [len(r) for r in records]
    owner = np.repeat(np.arange(len(records), dtype=np.int64), sizes)
    nonempty = [r for r in records if len(r)]
    flat = np.concatenate(nonempty) if nonempty else np.zeros(0, np.dtype([]))
    return owner, flat


def _field(records: np.ndarray, name: str) -> np.ndarray:
    if not len(records):
        return np.zeros(0, np.float32)
    return records[name].astype(np.float32)
