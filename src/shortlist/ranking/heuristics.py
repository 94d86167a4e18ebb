"""Orderings of the candidates without a learnt model: the simple rankings a ranker must beat.

`SourceOrder(("repurchase", "trending"))` puts the items the repurchase source proposed first,
in its order, then those of the trending source, then every other candidate in the union's
order: "the customer's own purchases, most recent first, then what sells" is one of the
strongest baselines on fashion data, and the pipeline serves it instead of its ranker when
held-out data says the ranker does not beat it (see pipeline/guard.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import numpy as np

from shortlist.data.candidates import CandidateSet


@dataclass(frozen=True)
class SourceOrder:
    """Candidates by the first source of `chain` that proposed them, then by that source's
    rank; candidates none of them proposed follow in the union's order, or, with
    `then="ranker"`, in the ranker's (a blend: e.g. the customer's own purchases first, the
    ranker ordering everything else)."""

    chain: tuple[str, ...]
    then: str = "union"  # or "ranker"

    @property
    def name(self) -> str:
        head = " > ".join(self.chain) + " > " if self.chain else ""
        return ("source order: " if self.then == "union" else "blend: ") + head + self.then

    @property
    def needs_ranker(self) -> bool:
        return self.then == "ranker"

    def scores(self, cs: CandidateSet, ranked: np.ndarray | None = None) -> np.ndarray:
        """(n, m) scores, higher first; -inf at padding. Tiers: the chain's sources in turn,
        each by its rank; then the rest by position in the row, or by `ranked` (the ranker's
        (n, m) scores) when the order ends with the ranker."""
        n, m = cs.items.shape
        width = m + 1
        if self.needs_ranker:
            if ranked is None:
                raise ValueError(f"{self.name} needs the ranker's scores")
            position = np.empty((n, m), np.float64)
            order = np.argsort(-ranked, axis=1, kind="stable")
            np.put_along_axis(position, order, np.arange(m, dtype=np.float64)[None, :], axis=1)
        else:
            position = np.broadcast_to(np.arange(m, dtype=np.float64), (n, m))
        key = position + len(self.chain) * width
        for tier, source in reversed(list(enumerate(self.chain))):
            ranks = cs.ranks.get(source)
            if ranks is None:
                continue
            proposed = ranks > 0
            key = np.where(proposed, tier * width + ranks.astype(np.float64), key)
        return np.where(cs.items >= 0, -key, -np.inf)

    def to_dict(self) -> dict[str, object]:
        return {"chain": list(self.chain), "then": self.then}


def source_orders(sources: Sequence[str], ranker: bool = False) -> list[SourceOrder]:
    """The orderings the guard tries: the union's order; each source first; each ordered pair
    of sources first (e.g. repurchase, then trending). With `ranker`, also each source first
    with the ranker ordering the rest (blends)."""
    names = list(dict.fromkeys(sources))
    orders = [SourceOrder(())]
    orders += [SourceOrder((s,)) for s in names]
    orders += [SourceOrder(pair) for pair in permutations(names, 2)]
    if ranker:
        orders += [SourceOrder((s,), "ranker") for s in names]
    return orders
