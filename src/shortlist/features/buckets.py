"""Bucket edges shared by feature pipelines and baselines, so both segment users the same way."""

from __future__ import annotations

import numpy as np

# Age buckets: [lower, upper) in years; bucket i covers AGE_EDGES[i] <= age < AGE_EDGES[i + 1].
# Bucket -1 means unknown age. Edges follow the H&M age distribution's modes (teens, 20s, 50s).
AGE_EDGES: tuple[float, ...] = (0, 20, 25, 30, 40, 50, 60, 200)


def age_bucket(age: np.ndarray) -> np.ndarray:
    """Bucket index per age (float array, NaN for unknown) -> int8, -1 for unknown/out of range."""
    age = np.asarray(age, dtype=np.float64)
    out = np.searchsorted(np.asarray(AGE_EDGES), age, side="right").astype(np.int8) - 1
    out[np.isnan(age) | (age < AGE_EDGES[0]) | (age >= AGE_EDGES[-1])] = -1
    return out
