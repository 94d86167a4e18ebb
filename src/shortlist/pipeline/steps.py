"""The pipeline's steps as declarations: what to run, before it is bound to a workspace's data.

Each step is the typed `[pipeline]` entry of shortlist.toml with its name fixed, so a pipeline
written in Python and one read from TOML are the same values and compare equal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shortlist.config import DiversifySettings, FilterSettings, SourceSettings

# -- candidate sources ------------------------------------------------------------------------


class TwoTower(SourceSettings):
    """Nearest items to the user's two-tower vector (the ANN index)."""

    name: Literal["two_tower"] = "two_tower"
    k: int = Field(100, ge=1, le=10000)


class Repurchase(SourceSettings):
    """The user's own purchases, recent and frequent first."""

    name: Literal["repurchase"] = "repurchase"


class SameGroup(SourceSettings):
    """Other variants of the products the user bought (the item_group role)."""

    name: Literal["same_group"] = "same_group"


class CoPurchase(SourceSettings):
    """Items bought in the same baskets as the user's recent purchases."""

    name: Literal["copurchase"] = "copurchase"
    k: int = Field(100, ge=1, le=10000)


class Trending(SourceSettings):
    """Best sellers of the last week, within the user's segment ("age", "region") if given."""

    name: Literal["trending"] = "trending"


# -- filters ----------------------------------------------------------------------------------


class InStock(FilterSettings):
    """Drop items with no units in stock (the inventory table)."""

    name: Literal["in_stock"] = "in_stock"


class AvailableInRegion(FilterSettings):
    """Drop items not sold in the user's region."""

    name: Literal["available_in_region"] = "available_in_region"


class AgeAllowed(FilterSettings):
    """Drop age-restricted items for users under the limit (or of unknown age)."""

    name: Literal["age_allowed"] = "age_allowed"


class NotBoughtBefore(FilterSettings):
    """Drop what the user bought before (exact set, or a Bloom filter with `bloom=True`)."""

    name: Literal["not_bought_before"] = "not_bought_before"


# -- ranking and diversity --------------------------------------------------------------------


class Ranker:
    """The LightGBM ranker trained by `shortlist train ranking` (or by `Pipeline.fit`)."""

    kind = "lightgbm"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ranker)

    def __hash__(self) -> int:
        return hash(self.kind)

    def __repr__(self) -> str:
        return "Ranker()"


def diversify_settings(
    by: str = "", method: str = "round_robin", limit: int = 2, lambda_: float = 0.7
) -> DiversifySettings:
    return DiversifySettings.model_validate(
        {"method": method, "by": by, "limit": limit, "lambda": lambda_}
    )
