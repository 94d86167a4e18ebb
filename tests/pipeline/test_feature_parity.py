"""One definition per feature: the rows the ranker trains on equal the rows computed from the
feature store materialized at the same cutoff, and a changed definition moves both.

The training side is the ranking set's latest period as `build_ranking_set` makes it (from the
dataset in memory, every candidate kept by the guard's validation requests); the served side
is `shortlist.features.materialize` run on the workspace's files at that period's cutoff, read
back from the offline feature store and laid out by the same `RankingFeatures.from_groups`.
"""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.config import Settings
from shortlist.data.arrays import US_PER_DAY, from_us, load_dataset
from shortlist.data.generator import generate
from shortlist.data.ingest import ingest
from shortlist.data.offline import OfflineStore
from shortlist.features import groups as G
from shortlist.features.affinity import eligible_attributes
from shortlist.features.base import FeatureOptions
from shortlist.features.engine import connect, load_tables
from shortlist.features.materialize import materialize
from shortlist.features.online.base import open_online_store
from shortlist.features.online.materialize import materialize_online
from shortlist.features.store import FeatureStore
from shortlist.pipeline.guard import ValidationRequests
from shortlist.pipeline.training import Plan, build_ranking_set, ranking_features
from shortlist.ranking.features import RANKING_GROUPS, RankingFeatures
from shortlist.ranking.online import USER_GROUPS, OnlineUsers
from shortlist.retrieval.sources import CoPurchaseSource, RepurchaseSource, TrendingSource
from shortlist.retrieval.stage import Retrieval
from shortlist.workspace import open_workspace

WEEK = 7 * US_PER_DAY


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    generate(root / "src", scale="tiny", seed=4)
    ws = open_workspace(root / "ws")
    ingest(ws, root / "src", format="hm")
    return ws


def trained_rows(ws) -> tuple[int, ValidationRequests]:
    """The latest period's requests as the ranking set built them: (its cutoff, requests)."""
    data = load_dataset(OfflineStore(ws))
    cutoff = (int(data.interactions.time[-1]) // WEEK) * WEEK
    retrieval = Retrieval(
        [(RepurchaseSource(), 20), (CoPurchaseSource(), 30), (TrendingSource(), 30)]
    )
    validation = ValidationRequests(min_buyers=0)
    features_at = ranking_features(data, Settings())
    build_ranking_set(
        data, cutoff, retrieval, features_at, Plan(2, 7), negatives_per_user=10,
        validation=validation,
    )  # fmt: skip
    return cutoff - WEEK, validation


def served_features(ws, cutoff: int) -> RankingFeatures:
    """The ranking features read back from the feature store materialized at `cutoff`."""
    materialize(ws, cutoff=from_us(cutoff), groups=RANKING_GROUPS)
    store = FeatureStore(ws)
    groups = {name: store.read(name) for name in RANKING_GROUPS}
    assert all(store.get(n).cutoff == from_us(cutoff) for n in RANKING_GROUPS)
    data = load_dataset(OfflineStore(ws))
    tables = load_tables(ws, connect("duckdb"))
    s = Settings()
    return RankingFeatures(
        max_values=s.ranking.max_category_values,
        affinity_attributes=s.ranking.affinity_attributes,
    ).from_groups(groups, cutoff, data, eligible_attributes(tables, FeatureOptions()))


def served_online(ws, cutoff: int, url: str) -> RankingFeatures:
    """The ranking features as a loaded pipeline serves them: the item side from the feature
    store, the users' side read per request from the online store at `url`."""
    offline = served_features(ws, cutoff)
    store = FeatureStore(ws)
    versions = {n: store.get(n).version for n in RANKING_GROUPS}
    materialize_online(ws, url, groups=RANKING_GROUPS, versions=versions)
    groups = {n: store.read_empty(n) if n in USER_GROUPS else store.read(n) for n in RANKING_GROUPS}
    data = load_dataset(OfflineStore(ws))
    eligible = eligible_attributes(load_tables(ws, connect("duckdb")), FeatureOptions())
    served = RankingFeatures(
        max_values=offline.max_values, affinity_attributes=offline.affinity_attributes
    ).from_groups(groups, cutoff, data, eligible)
    served.online_ = OnlineUsers(served, open_online_store(url, ws), data, versions, eligible)
    return served


def assert_same_rows(ws, url: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every validation row equals the served row for the same (user, item, cutoff); with
    `url`, the users' values are read from that online store, as a request reads them."""
    cutoff, validation = trained_rows(ws)
    served = served_features(ws, cutoff) if url is None else served_online(ws, cutoff, url)
    assert validation.parts, "the latest period kept no request"
    trained_all, served_all = [], []
    for cs, X, rows, cols, _ in validation.parts:
        Xs, rows_s, cols_s = served.transform(cs)
        # the same pairs: every candidate of every kept request
        keep = np.isin(rows_s * cs.items.shape[1] + cols_s, rows * cs.items.shape[1] + cols)
        np.testing.assert_array_equal(rows_s[keep], rows)
        np.testing.assert_array_equal(cols_s[keep], cols)
        np.testing.assert_allclose(Xs[keep], X, rtol=1e-6, atol=0, equal_nan=True)
        trained_all.append(X)
        served_all.append(Xs[keep])
    names = served.feature_names(validation.parts[0][0].sources, [])
    return np.vstack(trained_all), np.vstack(served_all), names


def test_trained_rows_equal_rows_served_from_the_store_at_that_cutoff(workspace):
    trained, served, names = assert_same_rows(workspace)
    assert len(trained) > 100
    # the rows carry real values from every kind of group, not NaN everywhere
    for name in ("item_units_28d", "user_purchases_all", "ui_units", "item_trend", "price_ratio"):
        column = trained[:, names.index(name)]
        assert np.isfinite(column).any() and np.nanstd(column) > 0, name


@pytest.mark.parametrize("backend", ["lmdb", "redis"])
def test_rows_served_from_the_online_store_equal_the_trained_rows(workspace, backend, request):
    """A request reads its users' values from the online store (LMDB or Redis), one request
    batched read per candidate set: the vectors equal the trained ones to float precision."""
    url = "lmdb" if backend == "lmdb" else request.getfixturevalue("redis_server").url(3)
    trained, served, names = assert_same_rows(workspace, url)
    for name in ("user_purchases_all", "ui_units", "ui_decayed", "price_ratio"):
        assert np.isfinite(trained[:, names.index(name)]).any(), name
    assert any(n.startswith("share_") for n in names)


def test_a_changed_definition_moves_both_sides(workspace, monkeypatch):
    before, _, names = assert_same_rows(workspace)
    original = G.GROUPS["items"]

    def doubled_trend(src, cutoff, options):
        frame = original(src, cutoff, options)
        frame.table = frame.table.mutate(trend_28d=frame.table["trend_28d"] * 2 + 1)
        return frame

    monkeypatch.setitem(G.GROUPS, "items", doubled_trend)
    after, served_after, _ = assert_same_rows(workspace)  # still equal to each other
    j = names.index("item_trend")
    np.testing.assert_allclose(after[:, j], before[:, j] * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(served_after[:, j], after[:, j], rtol=1e-6)
    others = [i for i in range(len(names)) if i != j]
    np.testing.assert_array_equal(after[:, others], before[:, others])


def test_an_online_store_holding_other_versions_is_refused(workspace):
    from shortlist.errors import WorkspaceError

    cutoff, _ = trained_rows(workspace)
    served = served_online(workspace, cutoff, "lmdb")
    versions = {n: FeatureStore(workspace).get(n).version for n in RANKING_GROUPS}
    other = {**versions, "user_items": versions["user_items"] + 1}
    data = load_dataset(OfflineStore(workspace))
    refused = r"holds version \d+ of the 'user_items'.*`shortlist train pipeline`"
    with pytest.raises(WorkspaceError, match=refused):
        OnlineUsers(served, open_online_store("lmdb", workspace), data, other, [])
