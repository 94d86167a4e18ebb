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
    rank; candidates none of them proposed follow in the union's order."""

    chain: tuple[str, ...]

    @property
    def name(self) -> str:
        return "source order: " + (" > ".join(self.chain) + " > " if self.chain else "") + "union"

    def scores(self, cs: CandidateSet) -> np.ndarray:
        """(n, m) scores, higher first; -inf at padding. Tiers: the chain's sources in turn,
        each by its rank; then the rest by position in the row."""
        n, m = cs.items.shape
        width = m + 1
        key = np.broadcast_to(np.arange(m, dtype=np.float64), (n, m)) + len(self.chain) * width
        for tier, source in reversed(list(enumerate(self.chain))):
            ranks = cs.ranks.get(source)
            if ranks is None:
                continue
            proposed = ranks > 0
            key = np.where(proposed, tier * width + ranks.astype(np.float64), key)
        return np.where(cs.items >= 0, -key, -np.inf)

    def to_dict(self) -> dict[str, object]:
        return {"chain": list(self.chain)}


def source_orders(sources: Sequence[str]) -> list[SourceOrder]:
    """The orderings the guard tries: the union's order; each source first; each ordered pair
    of sources first (e.g. repurchase, then trending)."""
    names = list(dict.fromkeys(sources))
    orders = [SourceOrder(())]
    orders += [SourceOrder((s,)) for s in names]
    orders += [SourceOrder(pair) for pair in permutations(names, 2)]
    return orders
