"""Filtering: business rules that remove candidates between retrieval and ranking.

Every filter maps a `FilterContext` and an (n, k) candidate matrix (-1 padding) to a keep-mask;
a `FilterChain` applies several in order and records what each removed.
"""

from shortlist.filtering.age import AgeAllowedFilter
from shortlist.filtering.attributes import AttributeFilter
from shortlist.filtering.base import CandidateFilter, FilterContext
from shortlist.filtering.bloom import BloomFilter, bloom_size
from shortlist.filtering.chain import FilterChain, Filtered, FilterStep, compact
from shortlist.filtering.pairs import PairSet
from shortlist.filtering.purchases import NotBoughtBeforeFilter, PurchaseHistory
from shortlist.filtering.region import AvailableInRegionFilter
from shortlist.filtering.stock import InStockFilter, Inventory

__all__ = [
    "AgeAllowedFilter",
    "AttributeFilter",
    "AvailableInRegionFilter",
    "BloomFilter",
    "CandidateFilter",
    "FilterChain",
    "FilterContext",
    "FilterStep",
    "Filtered",
    "InStockFilter",
    "Inventory",
    "NotBoughtBeforeFilter",
    "PairSet",
    "PurchaseHistory",
    "bloom_size",
    "compact",
]
