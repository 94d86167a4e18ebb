"""Standard errors, paired bootstrap intervals and the users a comparison needs, on cases whose
answer is known; and the deterministic split of users into disjoint parts."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.data.arrays import Dataset, Interactions, user_part
from shortlist.eval.uncertainty import compare, standard_error, users_needed, window_spread


def test_standard_error_and_spread_of_one_and_several_windows():
    a = np.array([0.0, 1.0, 0.0, 1.0])
    assert standard_error([a]) == pytest.approx(a.std(ddof=1) / 2)
    b = np.array([0.0, 0.0, 0.0, 1.0])
    # windows weigh the same: se of (mean_a + mean_b) / 2
    expected = np.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 4) / 2
    assert standard_error([a, b]) == pytest.approx(expected)
    assert window_spread([a, b]) == pytest.approx(np.std([0.5, 0.25], ddof=1))
    assert window_spread([a]) == 0.0


def test_bootstrap_interval_of_a_known_ratio():
    """Hit rates of 30 % against 20 % on 20,000 users, paired (every user b hits, a hits too):
    the ratio is 1.5, and by the delta method its standard error is
    sqrt((var a + R^2 var b - 2 R cov(a, b)) / n) / mean b, about 0.0137: 1.5 +- 0.027."""
    rng = np.random.default_rng(1)
    n = 20_000
    u = rng.random(n)
    a = (u < 0.30).astype(float)  # paired: users hit by b are hit by a too
    b = (u < 0.20).astype(float)
    c = compare("a", [a], "b", [b], resamples=1000)
    assert c.ratio == pytest.approx(a.mean() / b.mean())
    assert c.low < c.ratio < c.high
    r = c.ratio
    cov = np.cov(a, b)
    se = np.sqrt((cov[0, 0] + r**2 * cov[1, 1] - 2 * r * cov[0, 1]) / n) / b.mean()
    assert se == pytest.approx(0.0137, abs=0.001)
    assert c.low == pytest.approx(r - 1.96 * se, abs=0.006)
    assert c.high == pytest.approx(r + 1.96 * se, abs=0.006)
    assert c.windows_won == 1 and c.windows == 1 and c.users == n
    assert c.to_dict()["enough_users"] is True


def test_equal_methods_have_an_interval_around_one_and_need_no_users():
    rng = np.random.default_rng(2)
    a = (rng.random(500) < 0.1).astype(float)
    c = compare("a", [a, a], "b", [a, a], resamples=200)
    assert c.ratio == 1.0 and c.low == 1.0 and c.high == 1.0
    assert c.windows_won == 0  # a tie is not a win
    assert users_needed([a], [a]) == 0


def test_users_needed_follows_the_spread_of_the_differences():
    rng = np.random.default_rng(3)
    b = (rng.random(4000) < 0.1).astype(float)
    a = np.where(rng.random(4000) < 0.5, b, (rng.random(4000) < 0.1).astype(float))
    d = a - b
    expected = ((1.959964 + 0.841621) * d.std(ddof=1) / (0.2 * b.mean())) ** 2
    assert users_needed([a], [b]) == int(np.ceil(expected))
    c = compare("a", [a[:50]], "b", [b[:50]], resamples=100)
    assert c.users == 50 and not c.to_dict()["enough_users"]


def test_a_comparison_needs_the_same_users():
    with pytest.raises(ValueError, match="same users"):
        compare("a", [np.zeros(3)], "b", [np.zeros(4)])


def test_user_parts_are_disjoint_deterministic_and_about_even():
    ids = np.array([f"customer-{i}" for i in range(4000)])
    first, second = user_part(ids, 1, 2), user_part(ids, 2, 2)
    assert not (first & second).any() and (first | second).all()
    assert 0.45 < first.mean() < 0.55
    assert (user_part(ids, 1, 2) == first).all()  # the same on every call
    # a fixed hash (BLAKE2b of the id's text), not Python's salted hash(): fixed answers
    assert user_part(np.array(["a", "b", "c", "d"]), 1, 2).tolist() == [
        bool(int.from_bytes(__import__("hashlib").blake2b(x.encode(), digest_size=8).digest(),
                            "little") % 2 == 0)
        for x in "abcd"
    ]  # fmt: skip
    with pytest.raises(ValueError):
        user_part(ids, 3, 2)


def test_a_dataset_part_keeps_only_its_users_interactions():
    inter = Interactions(
        np.array([0, 1, 2, 3, 0], np.int32),
        np.array([0, 1, 2, 3, 4], np.int32),
        np.arange(5, dtype=np.int64),
        np.ones(5, np.int32),
    )
    ids = np.array(["u0", "u1", "u2", "u3"])
    data = Dataset(inter, 4, 5, user_ids=ids, fingerprint="abc")
    keep = user_part(ids, 1, 2)
    part = data.user_part(1, 2)
    assert set(part.interactions.user.tolist()) == set(np.flatnonzero(keep).tolist())
    assert (np.diff(part.interactions.time) >= 0).all()
    assert part.n_users == 4 and part.fingerprint == "abc:users1/2"
