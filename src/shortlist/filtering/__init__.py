"""Filtering: business rules that remove candidates between retrieval and ranking.

Every filter maps a `FilterContext` and an (n, k) candidate matrix (-1 padding) to a keep-mask;
a `FilterChain` applies several in order and records what each removed.
"""

from shortlist.filtering.age import AgeAllowed
from shortlist.filtering.attributes import AttributeFilter
from shortlist.filtering.base import CandidateFilter, FilterContext
from shortlist.filtering.bloom import BloomFilter, bloom_size
from shortlist.filtering.chain import FilterChain, Filtered, FilterStep, compact
from shortlist.filtering.pairs import PairSet
from shortlist.filtering.purchases import NotBoughtBefore, PurchaseHistory
from shortlist.filtering.region import AvailableInRegion
from shortlist.filtering.stock import InStock, Inventory

__all__ = [
    "AgeAllowed",
    "AttributeFilter",
    "AvailableInRegion",
    "BloomFilter",
    "CandidateFilter",
    "FilterChain",
    "FilterContext",
    "FilterStep",
    "Filtered",
    "InStock",
    "Inventory",
    "NotBoughtBefore",
    "PairSet",
    "PurchaseHistory",
    "bloom_size",
    "compact",
]
