"""Synthetic customers: H&M-style ids and attributes plus the hidden tastes that drive purchases."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shortlist.data.generator.catalog import DIM

REGIONS = 8  # hidden regions; every postal code lies in one
AGE_BANDS = 16  # 5-year bands from 16; the last one is open-ended
MALE_SHARE = 0.12
MEGA_POSTAL_SHARE = 0.088  # H&M has one placeholder postal code shared by ~9% of customers


@dataclass
class Customers:
    """The customers.csv table (sorted by customer_id) and hidden per-customer parameters."""

    table: pl.DataFrame
    ids: pl.Series  # customer_id by customer index
    vec: np.ndarray  # (U, DIM) float32 latent style
    age: np.ndarray  # float64 true age in years (customers.csv leaves 1.2% of them empty)
    segment: np.ndarray  # int16: age band * 4 + male * 2 + has kids
    region: np.ndarray  # int16
    price_sens: np.ndarray  # float32, >= 0: how much pricier clusters are avoided
    rate: np.ndarray  # float64 relative basket rate (gamma: heavy-tailed, see activity_shape)
    p_online: np.ndarray  # float32 probability that a basket is bought online
    p_rep: np.ndarray  # float32 probability that a pick repeats a recent purchase
    basket_p: np.ndarray  # float32 geometric parameter of picks per basket
    first_week: np.ndarray  # int32 first active week
    last_week: np.ndarray  # int32 last active week
    forced_week: np.ndarray  # int32 week of a guaranteed basket (-1: none), so few never buy
    order_key: np.ndarray  # int64 order of customers within a day in the output


def hex_ids(rng: np.random.Generator, n: int, *, sort: bool) -> list[str]:
    """Random 64-character lowercase hex ids, like H&M's hashed ids."""
    raw = np.frombuffer(rng.bytes(32 * n), dtype="S32")
    if sort:  # hex preserves byte order, so sorting the bytes sorts the strings
        raw = np.sort(raw)
    text = raw.tobytes().hex()
    return [text[i : i + 64] for i in range(0, 64 * n, 64)]


def segment_profile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age (band middle), male flag and kids flag of every segment number."""
    seg = np.arange(AGE_BANDS * 4)
    return 18.0 + 5.0 * (seg // 4), (seg // 2) % 2, seg % 2


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bimodal like H&M: a young peak in the early twenties and a second around fifty."""
    young = rng.random(n) < 0.55
    age = np.where(young, rng.normal(23.5, 4.0, n), rng.normal(50.0, 9.5, n))
    age = np.where(age < 16, 16 + rng.exponential(3.0, n), age)
    return np.clip(np.round(age), 16, 99)


def _nullable(values: np.ndarray, missing: np.ndarray) -> pl.Series:
    """A string column with empty cells where `missing` (written as empty CSV fields)."""
    return pl.select(
        pl.when(pl.Series(missing)).then(None).otherwise(pl.Series(values))
    ).to_series()


def generate_customers(
    rng: np.random.Generator, users: int, weeks: int, activity_shape: float = 0.38
) -> Customers:
    """Customers with attributes, hidden region and taste, activity rate and active window."""
    ids = hex_ids(rng, users, sort=True)
    age = _ages(rng, users)
    age_missing = rng.random(users) < 0.012
    subscribed = rng.random(users) < 0.35
    active = subscribed & (rng.random(users) < 0.97)
    news = np.where(subscribed, np.where(rng.random(users) < 0.995, "Regularly", "Monthly"), "NONE")
    news_missing = rng.random(users) < 0.012
    club_p = np.array([0.927, 0.068, 0.0004, 0.0046])
    club = rng.choice(4, size=users, p=club_p / club_p.sum())
    club_names = np.array(["ACTIVE", "PRE-CREATE", "LEFT CLUB", ""])
    # Postal codes: one placeholder code, then heavy-tailed sizes; each code lies in one region.
    n_codes = max(2, round(0.38 * users))  # ~0.26 per customer get used, as in H&M
    code_w = rng.lognormal(0.0, 1.2, n_codes)
    code_w[0] = 0.0
    code_w *= (1 - MEGA_POSTAL_SHARE) / code_w.sum()
    code_w[0] = MEGA_POSTAL_SHARE
    code = np.minimum(np.searchsorted(np.cumsum(code_w), rng.random(users)), n_codes - 1)
    code_region = rng.choice(REGIONS, size=n_codes, p=rng.dirichlet(np.full(REGIONS, 3.0)))
    region = code_region[code].astype(np.int16)
    code_ids = hex_ids(rng, n_codes, sort=False)
    table = pl.DataFrame(
        {
            "customer_id": ids,
            "FN": _nullable(np.full(users, "1.0"), ~subscribed),
            "Active": _nullable(np.full(users, "1.0"), ~active),
            "club_member_status": _nullable(club_names[club], club == 3),
            "fashion_news_frequency": _nullable(news, news_missing),
            "age": _nullable(np.char.add(age.astype(int).astype(str), ".0"), age_missing),
            "postal_code": pl.Series(code_ids).gather(code),
        }
    )
    male = rng.random(users) < MALE_SHARE
    p_kids = np.where(
        (age >= 27) & (age <= 45), 0.5, np.where((age > 45) & (age <= 62), 0.25, 0.07)
    )
    kids = rng.random(users) < p_kids
    band = np.minimum((age - 16) // 5, AGE_BANDS - 1).astype(np.int16)
    # Channel: most customers shop almost only online or almost only in stores; regions lean.
    kind = rng.choice(3, size=users, p=[0.66, 0.11, 0.23])
    a = np.array([12.0, 1.0, 2.0])[kind]
    b = np.array([1.0, 8.0, 2.0])[kind]
    lean = rng.normal(0.0, 0.4, REGIONS)[region]
    base = np.clip(rng.beta(a, b), 1e-4, 1 - 1e-4)
    p_online = 1 / (1 + np.exp(-(np.log(base / (1 - base)) + lean)))
    first = np.where(rng.random(users) < 0.7, 0, rng.integers(0, weeks, users))
    last = np.where(rng.random(users) < 0.8, weeks - 1, first + rng.integers(0, weeks, users))
    last = np.minimum(last, weeks - 1)
    forced = first + np.floor(rng.random(users) * (last - first + 1)).astype(np.int64)
    forced[rng.random(users) < 0.007] = -1
    return Customers(
        table=table,
        ids=table["customer_id"],
        vec=rng.normal(0.0, 0.6, size=(users, DIM)).astype(np.float32),
        age=age,
        segment=(band * 4 + male * 2 + kids).astype(np.int16),
        region=region,
        price_sens=np.maximum(0.0, 1.0 - 0.02 * (age - 35) + rng.normal(0, 0.5, users)).astype(
            np.float32
        ),
        rate=rng.gamma(activity_shape, 1.0, users),
        p_online=p_online.astype(np.float32),
        p_rep=rng.beta(1.2, 32.0, users).astype(np.float32),
        basket_p=(1 / (1 + rng.lognormal(np.log(1.9), 0.6, users))).astype(np.float32),
        first_week=first.astype(np.int32),
        last_week=last.astype(np.int32),
        forced_week=forced.astype(np.int32),
        order_key=rng.permutation(users).astype(np.int64),
    )
