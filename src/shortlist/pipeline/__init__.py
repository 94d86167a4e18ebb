"""The composable funnel: retrieve -> filter -> rank -> diversify -> take."""

from shortlist.pipeline.core import Pipeline, Recommendation, RecommendedItem
from shortlist.pipeline.steps import (
    AgeAllowed,
    AvailableInRegion,
    CoPurchase,
    InStock,
    NotBoughtBefore,
    Ranker,
    Repurchase,
    SameGroup,
    Trending,
    TwoTower,
)

__all__ = [
    "AgeAllowed",
    "AvailableInRegion",
    "CoPurchase",
    "InStock",
    "NotBoughtBefore",
    "Pipeline",
    "Ranker",
    "Recommendation",
    "RecommendedItem",
    "Repurchase",
    "SameGroup",
    "Trending",
    "TwoTower",
]
