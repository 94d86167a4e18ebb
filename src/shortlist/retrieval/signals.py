"""Purchase signals the candidate sources are built from (and the baselines reuse).

Each is a plain function of the interactions before a cutoff: best sellers, the users x items
matrix of recency-weighted purchases, and which items are bought in the same baskets.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shortlist.data.arrays import US_PER_DAY, Interactions


def top_items(inter: Interactions, n_items: int, k: int) -> np.ndarray:
    """The k items with the most units; ties by item id, so results are deterministic."""
    units = np.bincount(inter.item, weights=inter.quantity, minlength=n_items)
    order = np.lexsort((np.arange(n_items), -units))
    return order[: min(k, int((units > 0).sum()))].astype(np.int32)


def decayed_matrix(
    inter: Interactions, cutoff: int, n_users: int, n_items: int, half_life_days: float
) -> sp.csr_matrix:
    """users x items, each purchase weighted by quantity * 0.5 ** (age in days / half-life)."""
    age_days = (cutoff - inter.time) / US_PER_DAY
    weights = inter.quantity * np.power(0.5, age_days / half_life_days)
    return sp.csr_matrix((weights, (inter.user, inter.item)), shape=(n_users, n_items))


def basket_cooccurrence(inter: Interactions, n_items: int) -> sp.csr_matrix:
    """items x items: in how many baskets (one user's purchases of one day) both were bought.

    An item bought twice in a basket counts once; the diagonal is zero.
    """
    day = inter.time // US_PER_DAY
    _, basket = np.unique(np.stack([inter.user.astype(np.int64), day]), axis=1, return_inverse=True)
    baskets = sp.csr_matrix(
        (np.ones(len(inter), np.float32), (basket.ravel(), inter.item)),
        shape=(int(basket.max()) + 1 if len(inter) else 0, n_items),
    )
    baskets.data[:] = 1.0
    cooc = (baskets.T @ baskets).tocsr()
    cooc.setdiag(0)
    cooc.eliminate_zeros()
    return cooc
