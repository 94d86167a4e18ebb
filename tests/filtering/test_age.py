"""AgeAllowedFilter: minimum ages against the user's age, and the policy for unknown ages."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.errors import ConfigError, FilterError
from shortlist.filtering import AgeAllowedFilter, FilterContext

# item 0 unrestricted, 1 from 18, 2 from 21, 3 from 16; 4 beyond the array: unrestricted
MIN_AGE = [np.nan, 18, 21, 16]
ITEMS = np.array([[0, 1, 2, 3, 4, -1]] * 4, np.int32)
AGES = [17, 18, np.nan, 30]  # a minor, exactly 18, unknown, an adult


def test_keeps_items_the_user_is_old_enough_for():
    keep = AgeAllowedFilter(MIN_AGE).keep(FilterContext([0, 1, 2, 3], age=AGES), ITEMS)
    assert keep.tolist() == [
        [True, False, False, True, True, False],
        [True, True, False, True, True, False],
        [True, False, False, False, True, False],  # unknown age: unrestricted items only
        [True, True, True, True, True, False],
    ]


def test_unknown_age_allowed_when_configured():
    f = AgeAllowedFilter(MIN_AGE, unknown_age_allowed=True)
    keep = f.keep(FilterContext([0, 1, 2, 3], age=AGES), ITEMS)
    assert keep[2].tolist() == [True] * 5 + [False]
    assert keep[0].tolist() == [True, False, False, True, True, False]  # minors still filtered
    no_ages = f.keep(FilterContext([0, 1, 2, 3]), ITEMS)
    assert no_ages[:, :5].all()


def test_no_ages_in_context_means_unknown():
    keep = AgeAllowedFilter(MIN_AGE).keep(FilterContext([5]), ITEMS[:1])
    assert keep.tolist() == [[True, False, False, False, True, False]]


def test_bad_configuration_and_requests():
    with pytest.raises(ConfigError):
        AgeAllowedFilter([-1.0])
    with pytest.raises(ConfigError):
        AgeAllowedFilter(np.zeros((2, 2)))
    with pytest.raises(FilterError):
        AgeAllowedFilter(MIN_AGE).keep(FilterContext([0], age=-3), ITEMS[:1])
    with pytest.raises(FilterError):
        FilterContext([0, 1], age=[20, 30, 40])
