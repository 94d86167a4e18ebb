"""How much a figure can be trusted: standard errors, and paired comparisons by bootstrap.

A window's MAP@12 is a mean over its buyers, most of whom score 0: on a few hundred buyers a
method's figure moves by a third from one week to the next. Every figure `evaluate` reports
therefore carries its standard error over users, its spread over windows, and, against a
reference method (the best baseline unless `--compare-to` names one), the ratio of the two
with a 95 % bootstrap interval over users and the number of windows won.

The comparison is paired: both methods are scored on the same users of the same windows, so
the bootstrap resamples users (within each window, as the protocol averages windows with
equal weight) and recomputes both figures on the same draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
DETECT = 0.20  # the relative difference a comparison should be able to tell apart
Z_ALPHA, Z_POWER = 1.959964, 0.841621  # two-sided 5 % test, 80 % power
DRAW_BUDGET = 20_000_000  # user draws held in memory at once by the bootstrap


def window_mean(values: Sequence[np.ndarray]) -> float:
    """The protocol's figure: each window's mean over its users, averaged over windows."""
    return float(np.mean([v.mean() if len(v) else 0.0 for v in values]))


def standard_error(values: Sequence[np.ndarray]) -> float:
    """Standard error over users of `window_mean` (windows independent, equally weighted)."""
    var = [v.var(ddof=1) / len(v) if len(v) > 1 else 0.0 for v in values]
    return float(np.sqrt(np.sum(var)) / len(values))


def window_spread(values: Sequence[np.ndarray]) -> float:
    """Standard deviation of the per-window figures (0 with one window)."""
    means = [v.mean() if len(v) else 0.0 for v in values]
    return float(np.std(means, ddof=1)) if len(means) > 1 else 0.0


@dataclass(frozen=True)
class Comparison:
    """`method` against `reference` on the same users: ratio of the window-averaged figures."""

    method: str
    reference: str
    ratio: float  # nan when the reference scores 0
    low: float  # 95 % bootstrap interval of the ratio
    high: float
    windows_won: int  # windows where the method scored strictly higher
    windows: int
    users: int  # scored users, summed over windows
    users_needed: int  # for a 20 % difference to be told apart (5 % test, 80 % power)

    def to_dict(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "ratio": _finite(self.ratio),
            "ci95": [_finite(self.low), _finite(self.high)],
            "windows_won": self.windows_won,
            "windows": self.windows,
            "users": self.users,
            "users_needed": self.users_needed,
            "enough_users": self.users >= self.users_needed,
        }


def compare(
    method: str,
    a: Sequence[np.ndarray],
    reference: str,
    b: Sequence[np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Paired comparison of per-user scores `a` (the method) and `b` (the reference), one
    array per window, the same users in the same order in both.

    The interval is the percentile interval of the ratio over `resamples` bootstrap draws of
    users within each window.
    """
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
        raise ValueError("a paired comparison needs the same users in every window")
    rng = np.random.default_rng(seed)
    num = np.zeros(resamples)
    den = np.zeros(resamples)
    for x, y in zip(a, b, strict=True):
        n = len(x)
        if n == 0:
            continue
        step = max(1, DRAW_BUDGET // n)
        for lo in range(0, resamples, step):
            hi = min(resamples, lo + step)
            idx = rng.integers(0, n, size=(hi - lo, n))
            num[lo:hi] += x[idx].mean(axis=1)
            den[lo:hi] += y[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num / den
    ratios = ratios[np.isfinite(ratios)]
    ma, mb = window_mean(a), window_mean(b)
    ratio = ma / mb if mb > 0 else float("nan")
    low, high = (
        (float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975)))
        if len(ratios)
        else (float("nan"), float("nan"))
    )
    won = sum(int(x.mean() > y.mean()) for x, y in zip(a, b, strict=True) if len(x))
    return Comparison(
        method,
        reference,
        ratio,
        low,
        high,
        won,
        len(a),
        int(sum(len(x) for x in a)),
        users_needed(a, b),
    )


def users_needed(a: Sequence[np.ndarray], b: Sequence[np.ndarray], detect: float = DETECT) -> int:
    """Scored users a paired comparison needs before a difference of `detect` (relative to the
    reference's figure) is significant at 5 % with 80 % power, from the spread of the
    per-user differences seen here: n = ((z_a + z_b) * sd(a - b) / (detect * mean(b)))^2."""
    d = np.concatenate([x - y for x, y in zip(a, b, strict=True)]) if a else np.zeros(0)
    ref = np.concatenate(list(b)).mean() if b and sum(len(y) for y in b) else 0.0
    if len(d) < 2 or ref <= 0:
        return 0
    sd = d.std(ddof=1)
    if sd == 0:
        return 0
    return int(np.ceil(((Z_ALPHA + Z_POWER) * sd / (detect * ref)) ** 2))


def _finite(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None
