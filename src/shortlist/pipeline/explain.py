"""Why an item was recommended, in words a merchandiser can read.

Two parts: which sources proposed the item (and at what rank), and the ranker's largest
feature contributions for it (LightGBM's pred_contrib: each feature's additive share of the
score), each turned into a phrase from the feature's name and value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shortlist.data.memo import per_table

TOP_CONTRIBUTIONS = 3

SOURCE_WORDS = {
    "repurchase": "they bought it before",
    "same_group": "another variant of a product they bought",
    "copurchase": "often bought together with their recent purchases",
    "two_tower": "close to their taste (two-tower model)",
    "trending": "a best seller this week",
}


def _source_phrase(name: str, rank: int) -> str:
    base = name.split("_")[0] if name.startswith("trending") else name
    words = SOURCE_WORDS.get(base, name)
    if name.startswith("trending_"):
        words = f"a best seller this week among customers of the same {name[9:]}"
    return f"{words} (#{rank} from {name})"


def feature_phrase(name: str, value: float, decoded: str | None = None) -> str:
    """A readable statement of one feature's value (`decoded`: a categorical code's value)."""
    if np.isnan(value):
        return f"{name.replace('_', ' ')} unknown"
    if decoded is not None:
        owner = "its" if name.startswith("item_") else "the customer's"
        return f"{owner} {name.split('_', 1)[1]} is {decoded}"
    v = float(value)
    fixed = {
        "ui_units": f"they bought it {v:g} time(s) before",
        "ui_days_since_last": f"they last bought it {v:.0f} days ago",
        "ui_decayed": f"recent purchases of it (weight {v:.2f})",
        "item_units_7d": f"{v:g} sold in the last week",
        "item_units_28d": f"{v:g} sold in the last 4 weeks",
        "item_units_all": f"{v:g} sold in all",
        "item_trend": f"sales trend x{v:.2f} (last week vs the month)",
        "item_days_since_first": f"on sale for {v:.0f} days",
        "item_days_since_last": f"last sold {v:.0f} days ago",
        "item_buyers": f"{v:g} different buyers",
        "item_repeat_share": f"{v:.0%} of its buyers bought it again",
        "item_price": f"price {v:.4g}",
        "user_price": f"their usual price {v:.4g}",
        "price_ratio": f"priced at {v:.2f}x what they usually pay",
        "age_gap": f"its typical buyer is {abs(v):.0f} years {'younger' if v > 0 else 'older'}",
        "two_tower_similarity": f"taste similarity {v:.2f}",
        "n_sources": f"proposed by {v:g} source(s)",
        "user_purchases_all": f"they bought {v:g} items in all",
        "user_purchases_28d": f"they bought {v:g} items in the last 4 weeks",
        "user_purchases_7d": f"they bought {v:g} items in the last week",
        "user_days_since_last": f"their last purchase was {v:.0f} days ago",
        "user_age": f"customer age {v:.0f}",
        "item_buyer_age": f"typical buyer age {v:.0f}",
        "day_of_year": "the time of year",
        "segment_age_lift": f"bought {v:.2f}x as much by customers of their age",
        "segment_region_lift": f"bought {v:.2f}x as much in their region",
        "segment_share": f"{v:.2%} of what customers like them buy",
    }
    if name in fixed:
        return fixed[name]
    if name.startswith("share_"):
        return f"{v:.0%} of their purchases share its {name[6:]}"
    if name.startswith("recent_"):
        return f"{v:g} recent purchases share its {name[7:]}"
    if name.endswith("_rank"):
        return f"rank {v:g} in {name[:-5]}"
    if name.endswith("_score"):
        return f"{name[:-6]} score {v:.3g}"
    if name.startswith("item_"):
        return f"its {name[5:]}"
    if name.startswith("user_"):
        return f"the customer's {name[5:]}"
    return f"{name} = {v:.3g}"


def explain_row(funnel: Any, sources: dict[str, int], x: np.ndarray | None) -> list[str]:
    """Phrases for one recommended item: sources first, then the top contributions."""
    out = [_source_phrase(n, r) for n, r in sorted(sources.items(), key=lambda p: p[1])]
    if not sources:
        out.append("added to fill the list (popular, and passes every filter)")
    ranker = funnel.ranker
    if ranker is None or x is None:
        return out
    cold = funnel.new_customers
    if (
        cold is not None
        and cold.applies(ranker.names_)
        and cold.new_rows(ranker.names_, x[None])[0]
    ):
        value = x[ranker.names_.index(cold.by)]
        out.append(f"ordered for a customer who never bought: {feature_phrase(cold.by, value)}")
        return out
    contrib = ranker.contributions(x[None, :])[0, :-1]
    for j in np.argsort(-np.abs(contrib))[:TOP_CONTRIBUTIONS]:
        name = ranker.names_[j]
        direction = "raises" if contrib[j] > 0 else "lowers"
        phrase = feature_phrase(name, x[j], _decode(funnel, name, x[j]))
        out.append(f"{direction} the score by {abs(contrib[j]):.2f}: {phrase}")
    return out


def _decode(funnel: Any, name: str, code: float) -> str | None:
    """The attribute value behind a categorical feature's code (the ranking features code a
    column's sorted distinct values 0, 1, ...), or None for other features."""
    if name not in funnel.features.categorical_ or np.isnan(code):
        return None
    side, attribute = name.split("_", 1)
    data = funnel.catalog.data
    table = data.items if side == "item" else data.users
    if table is None or attribute not in table.columns:
        return None
    # once per table and attribute: a request explains a dozen items, each several features
    values = per_table(
        table, ("sorted_values", attribute), lambda: pd.factorize(table[attribute], sort=True)[1]
    )
    return str(values[int(code)]) if 0 <= int(code) < len(values) else None
