"""Business-rule files of the synthetic data: regional assortments, age limits, stock.

Restrictions are drawn per product (all colour variants share them), before the simulation,
which then never sells an article outside its regions or to a customer below its minimum age.
The inventory is drawn after it, from each article's recent sales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shortlist.data.generator.catalog import GeneratedCatalog
from shortlist.data.generator.customers import REGIONS, Customers

# Names of the hidden regions 0..REGIONS-1, as written to the region files
REGION_NAMES = ("nordics", "british_isles", "dach", "benelux", "france", "iberia", "italy",
                "central_europe")  # fmt: skip
P_REGIONAL = 0.10  # share of products sold in only 1-3 regions
ADULT_SHARE = 0.02  # share of articles with a minimum age
ADULT_AGE = 18
ADULT_GROUPS = (1, 2, 3)  # index groups for grown-ups: Ladieswear, Divided, Menswear
LINGERIE_SECTION = 61  # Womens Lingerie: restricted first, then underwear, then nightwear
P_REGION_UNLISTED = 0.01  # customers missing from user_regions.csv (region unknown)
P_OUT_OF_STOCK, P_OVERSOLD = 0.08, 0.005  # articles at 0 units, and below 0
RECENT_WEEKS = 4  # the stock of an article in sale covers a few weeks of these weeks' sales
EVERYWHERE = (1 << REGIONS) - 1

assert len(REGION_NAMES) == REGIONS


@dataclass
class Assortment:
    """Where each article is sold and to whom."""

    regions: np.ndarray  # uint16 per article: bit r set = sold in region r
    min_age: np.ndarray  # int16 per article, 0 = no limit

    def sold_to(self) -> np.ndarray:
        """uint16 per article: bit `market` set = customers of that market may buy it, where
        market = region for adults and region + REGIONS for minors (see `markets`)."""
        adult_only = self.min_age >= ADULT_AGE
        return self.regions | np.where(adult_only, 0, self.regions << REGIONS).astype(np.uint16)


def markets(cus: Customers) -> np.ndarray:
    """int16 per customer: their region, plus REGIONS for customers under ADULT_AGE."""
    return (cus.region + REGIONS * (cus.age < ADULT_AGE)).astype(np.int16)


def draw_assortment(rng: np.random.Generator, cat: GeneratedCatalog) -> Assortment:
    """About P_REGIONAL of products in 1-3 random regions; about ADULT_SHARE of articles,
    lingerie first, restricted to adults."""
    n_prod = len(cat.product_nvar)
    regional = np.flatnonzero(rng.random(n_prod) < P_REGIONAL)
    order = np.argsort(rng.random((len(regional), REGIONS)), axis=1)
    k = rng.integers(1, 4, len(regional))
    bits = np.where(np.arange(REGIONS)[None, :] < k[:, None], 1 << order, 0).sum(axis=1)
    prod_regions = np.full(n_prod, EVERYWHERE, np.uint16)
    prod_regions[regional] = bits
    first = cat.product_first
    section = cat.table["section_no"].to_numpy()[first]
    group = cat.table["product_group_name"].to_numpy()[first]
    grown_up = np.isin(cat.table["index_group_no"].to_numpy()[first], ADULT_GROUPS)
    score = np.select(
        [section == LINGERIE_SECTION, grown_up & (group == "Underwear"),
         grown_up & (group == "Nightwear")],
        [3, 2, 1], 0,
    )  # fmt: skip
    tie = rng.random(n_prod)
    ranked = np.lexsort((tie, -score))
    ranked = ranked[score[ranked] > 0]
    target = ADULT_SHARE * len(cat.product)
    taken = np.cumsum(cat.product_nvar[ranked]) - cat.product_nvar[ranked] < target
    prod_age = np.zeros(n_prod, np.int16)
    prod_age[ranked[taken]] = ADULT_AGE
    return Assortment(prod_regions[cat.product], prod_age[cat.product])


def rule_tables(
    rng: np.random.Generator, assort: Assortment, cat: GeneratedCatalog, cus: Customers
) -> dict[str, pl.DataFrame]:
    """item_regions, item_restrictions and user_regions, sorted by id (one region a row)."""
    article_id = cat.table["article_id"]
    sold = ((assort.regions[:, None] >> np.arange(REGIONS)) & 1).astype(bool)
    sold &= (assort.regions != EVERYWHERE)[:, None]  # articles sold everywhere are not listed
    items, codes = np.nonzero(sold)  # row by row: in article_id order
    names = pl.Series(REGION_NAMES)
    restricted = np.flatnonzero(assort.min_age > 0)
    listed = np.flatnonzero(rng.random(len(cus.region)) >= P_REGION_UNLISTED)
    return {
        "item_regions": pl.DataFrame(
            {"article_id": article_id.gather(items), "region": names.gather(codes)}
        ),
        "item_restrictions": pl.DataFrame(
            {"article_id": article_id.gather(restricted), "min_age": assort.min_age[restricted]}
        ),
        "user_regions": pl.DataFrame(
            {"customer_id": cus.ids.gather(listed), "region": names.gather(cus.region[listed])}
        ),
    }


def inventory(
    rng: np.random.Generator, cat: GeneratedCatalog, recent_units: np.ndarray
) -> pl.DataFrame:
    """Units in stock at the end of the data, for every article: P_OUT_OF_STOCK at 0, a few
    oversold (negative), the rest 1 + Poisson(2 + weekly sales x 2-8 weeks of cover)."""
    n = len(cat.product)
    weekly = recent_units / RECENT_WEEKS
    units = 1 + rng.poisson(2 + weekly * rng.uniform(2, 8, n))
    u = rng.random(n)
    units = np.where(u < P_OUT_OF_STOCK, 0, units)
    oversold = (u >= P_OUT_OF_STOCK) & (u < P_OUT_OF_STOCK + P_OVERSOLD)
    units = np.where(oversold, -rng.geometric(0.5, n), units)
    return pl.DataFrame({"article_id": cat.table["article_id"], "units": units.astype(np.int64)})
