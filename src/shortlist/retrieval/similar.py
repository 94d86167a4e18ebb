"""Item-to-item search over the workspace's vector index, with attribute filters.

Loaded once (index memory-mapped, attributes as numpy columns), then each query is an index
search: what `shortlist similar` and, later, the service's similar-items endpoint call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shortlist import columns as C
from shortlist.config import AttributeKind
from shortlist.data.filters import ItemAttributes
from shortlist.data.offline import OfflineStore
from shortlist.errors import NotFoundError, WorkspaceError
from shortlist.retrieval.build import index_folder, item_vectors, model_fingerprint
from shortlist.retrieval.index import load_index
from shortlist.workspace import Workspace

LAST_PRICE = "price"  # filterable: the price the item last sold at (when interactions have prices)


@dataclass(frozen=True)
class Match:
    item_id: str
    score: float


class ItemSearch:
    """Nearest items by two-tower embedding, among those passing an optional filter."""

    def __init__(self, workspace: Workspace):
        store = OfflineStore(workspace)
        kinds = store.manifest.items.attributes
        keep = [name for name, kind in kinds.items() if kind != AttributeKind.TEXT]
        items = store.sql(
            f"SELECT {C.ITEM_IDX}, CAST({C.ITEM_ID} AS VARCHAR) AS {C.ITEM_ID}"
            + "".join(f', "{name}"' for name in keep)
            + f" FROM items ORDER BY {C.ITEM_IDX}"
        ).df()
        if LAST_PRICE not in items.columns:
            items = items.merge(_last_prices(store), on=C.ITEM_IDX, how="left")
        folder = index_folder(workspace)
        if not folder.exists():
            raise WorkspaceError(
                f"no item index in {folder}: run `shortlist build --source DIR` "
                "(or `shortlist index` after `shortlist train retrieval`)"
            )
        self.index = load_index(folder, model=model_fingerprint(workspace))
        self.vectors = item_vectors(workspace)
        self.item_ids = items[C.ITEM_ID].to_numpy()
        self._idx = pd.Index(self.item_ids)
        self.attributes = ItemAttributes.from_table(
            items.drop(columns=[C.ITEM_ID]), id_column=C.ITEM_IDX
        )

    def item_idx(self, item_id: str) -> int:
        """Raises: NotFoundError for an id the catalogue does not hold."""
        pos = self._idx.get_indexer([str(item_id)])[0]
        if pos < 0:
            raise NotFoundError(f"unknown item '{item_id}'")
        return int(pos)

    def similar(
        self, item_id: str, k: int = 10, filters: Mapping[str, Any] | None = None
    ) -> list[Match]:
        """The `k` items closest to `item_id` (itself excluded) that pass `filters`.

        Raises:
            NotFoundError: unknown item. FilterError: a malformed filter (names the field).
        """
        idx = self.item_idx(item_id)
        allowed = self.attributes.mask(filters) if filters else None
        scores, ids = self.index.search(self.vectors[idx : idx + 1], k + 1, allowed=allowed)
        out = [
            Match(str(self.item_ids[i]), float(s))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0 and i != idx
        ]
        return out[:k]


def _last_prices(store: OfflineStore) -> pd.DataFrame:
    """The price each item last sold at; empty when interactions carry no price."""
    names = [r[0] for r in store.sql("DESCRIBE interactions").fetchall()]
    if C.PRICE not in names:
        return pd.DataFrame({C.ITEM_IDX: pd.Series([], dtype="int64")})
    return store.sql(
        f"SELECT {C.ITEM_IDX}, arg_max({C.PRICE}, {C.TIMESTAMP}) AS {LAST_PRICE} "
        f"FROM interactions WHERE {C.PRICE} IS NOT NULL GROUP BY {C.ITEM_IDX}"
    ).df()
