"""Vector indexes: HNSW against the exact oracle, filtered search, persistence, the factory."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.errors import WorkspaceError
from shortlist.retrieval.index import (
    BLAS_QUERIES,
    ExactIndex,
    HNSWIndex,
    build_index,
    load_index,
)

N, D, K = 3000, 32, 50


def clustered(n: int, d: int, seed: int, clusters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) unit vectors from a Gaussian mixture, and each one's component."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    label = rng.integers(0, clusters, n)
    x = centres[label] + 0.7 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), label


@pytest.fixture(scope="module")
def data() -> dict:
    x, label = clustered(N + 40, D, seed=0)
    ids = 1000 + 7 * np.arange(N)  # not 0..n-1, so the id mapping is exercised
    return {"x": x[:N], "label": label[:N], "q": x[N:], "q_label": label[N:], "ids": ids}


@pytest.fixture(scope="module")
def hnsw(data) -> HNSWIndex:
    return HNSWIndex().build(data["x"], data["ids"])


@pytest.fixture(scope="module")
def exact(data) -> ExactIndex:
    return ExactIndex().build(data["x"], data["ids"])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def mask_of(data, keep: np.ndarray) -> np.ndarray:
    """A bool mask over item ids (as ItemAttributes gives) keeping positions `keep`."""
    mask = np.zeros(data["ids"].max() + 1, bool)
    mask[data["ids"][keep]] = True
    return mask


def oracle(data, keep: np.ndarray, queries: np.ndarray, k: int):
    """Exact search over an index of just the allowed vectors."""
    return ExactIndex().build(data["x"][keep], data["ids"][keep]).search(queries, k)


def assert_same(got, want, data, queries) -> None:
    """`got` is the exact answer `want` up to the order of tied items: the same scores rank by
    rank, each id scoring what its vector does, no id twice, the same padding."""
    (scores, ids), (want_scores, want_ids) = got, want
    assert np.array_equal(ids < 0, want_ids < 0)
    assert np.allclose(scores, want_scores, atol=1e-5)
    found = ids >= 0
    rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)[found]
    vectors = data["x"][np.searchsorted(data["ids"], ids[found])]  # data["ids"] is sorted
    assert np.allclose(scores[found], np.einsum("nd,nd->n", queries[rows], vectors), atol=1e-5)
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in ids)
    assert (ids == want_ids).mean() > 0.95  # ties are rare: this is not a vacuous check


def test_exact_index_is_brute_force(data, exact):
    full = data["q"] @ data["x"].T
    best = np.argsort(-full, axis=1)[:, :K]
    want = np.take_along_axis(full, best, 1), data["ids"][best]
    assert_same(exact.search(data["q"], K), want, data, data["q"])
    assert exact.is_exact and not HNSWIndex.is_exact


def test_hnsw_recall_against_exact(data, hnsw, exact):
    found = hnsw.search(data["q"], K)[1]
    assert recall(found, exact.search(data["q"], K)[1]) >= 0.95


@pytest.mark.parametrize("queries", [3, BLAS_QUERIES + 5], ids=["one-by-one", "batched"])
@pytest.mark.parametrize("share", [0.02, 0.15])
def test_selective_filters_equal_exact_search_over_the_subset(data, hnsw, exact, share, queries):
    keep = np.random.default_rng(1).random(N) < share
    q = data["q"][:queries]
    for index in (hnsw, exact):
        got = index.search(q, K, allowed=mask_of(data, keep))
        assert_same(got, oracle(data, keep, q, K), data, q)


@pytest.mark.parametrize("broad", ["selector", "overfetch"])
@pytest.mark.parametrize("correlated", [False, True], ids=["random", "correlated"])
def test_broad_filters_match_exact_search_at_the_recall_target(data, broad, correlated):
    # walk_cost 0: never the exact subset, which is cheaper at this size
    index = HNSWIndex(broad=broad, walk_cost=0).build(data["x"], data["ids"])
    rng = np.random.default_rng(2)
    keep = np.isin(data["label"], np.arange(12)) if correlated else rng.random(N) < 0.4
    q = data["q"]
    scores, ids = index.search(q, K, allowed=mask_of(data, keep))
    want_scores, want_ids = oracle(data, keep, q, K)
    assert recall(ids, want_ids) >= 0.95
    assert np.isin(ids, data["ids"][keep]).all()  # only allowed items, no padding
    assert all(len(set(row)) == K for row in ids.tolist())
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    # the exact index answers broad filters by a filtered scan: the oracle exactly
    full_scan = ExactIndex().build(data["x"], data["ids"])
    got = full_scan.search(q, K, allowed=mask_of(data, keep))
    assert_same(got, (want_scores, want_ids), data, q)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_fewer_allowed_than_k_gives_exactly_those_padded(data, hnsw, exact, kind):
    keep = np.flatnonzero(data["label"] == 3)[:20]
    q = data["q"][:6]
    index = hnsw if kind == "hnsw" else exact
    scores, ids = index.search(q, 30, allowed=mask_of(data, keep))
    assert_same((scores, ids), oracle(data, keep, q, 30), data, q)
    assert (ids[:, 20:] == -1).all() and np.isneginf(scores[:, 20:]).all()
    assert np.isin(ids[:, :20], data["ids"][keep]).all()


@pytest.mark.parametrize("broad", ["selector", "overfetch"])
def test_graph_walks_short_of_allowed_items_fall_back_to_exact(data, monkeypatch, broad):
    # the graph path forced (walk_cost 0) with the least effort and no retries
    least = {"ef_search": K, "ef_scale": 0, "overfetch_margin": 0, "max_ef": K}
    index = HNSWIndex(broad=broad, walk_cost=0, **least).build(data["x"], data["ids"])
    keep = np.flatnonzero(data["label"] == 3)[: K + 10]  # one component: most queries are far
    q = data["q"][data["q_label"] != 3]
    fallback_rows = []
    subset = index._exact_subset

    def spy(queries, k, positions):
        fallback_rows.append(len(queries))
        return subset(queries, k, positions)

    monkeypatch.setattr(index, "_exact_subset", spy)
    got = index.search(q, K, allowed=mask_of(data, keep))
    assert fallback_rows and fallback_rows[0] > 0
    assert_same(got, oracle(data, keep, q, K), data, q)


def test_allowed_as_item_ids_and_empty_filters(data, hnsw):
    q = data["q"][:4]
    keep = np.array([5, 17, 400, 2999])
    allowed = np.append(data["ids"][keep], [-3, 999, 10**9])  # unknown ids are ignored
    got = hnsw.search(q, 6, allowed=allowed)
    assert_same(got, oracle(data, keep, q, 6), data, q)
    assert (got[1][:, 4:] == -1).all()
    scores, ids = hnsw.search(q, 5, allowed=np.zeros(10, bool))
    assert (ids == -1).all() and np.isneginf(scores).all()
    # a mask keeping everything is the unfiltered search
    everything = np.ones(data["ids"].max() + 1, bool)
    assert np.array_equal(hnsw.search(q, K, allowed=everything)[1], hnsw.search(q, K)[1])


def test_more_than_indexed_is_padded(data):
    index = ExactIndex().build(data["x"][:5], np.arange(5))
    scores, ids = index.search(data["q"][:2], 8)
    assert sorted(ids[0, :5]) == [0, 1, 2, 3, 4] and (ids[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all() and np.isfinite(scores[:, :5]).all()


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_save_load_round_trip(data, tmp_path, kind, mmap):
    params = {"M": 16, "ef_search": 77, "broad": "selector"} if kind == "hnsw" else {}
    index = build_index(data["x"], data["ids"], exact_below=N if kind == "exact" else 0, **params)
    index.save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix", mmap=mmap)
    assert type(loaded) is type(index) and loaded.params() == index.params()
    assert loaded.mmapped_ == mmap and len(loaded) == N
    r = np.random.default_rng(3).random(N)
    for allowed in (None, mask_of(data, r < 0.5), mask_of(data, r < 0.03)):
        before, after = index.search(data["q"], K, allowed), loaded.search(data["q"], K, allowed)
        assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_save_skips_ids_when_they_are_positions(data, tmp_path):
    ExactIndex().build(data["x"][:10], np.arange(10)).save(tmp_path / "ix")
    assert not (tmp_path / "ix" / "ids.npy").exists()
    _, ids = load_index(tmp_path / "ix").search(data["x"][:2], 1)
    assert ids[:, 0].tolist() == [0, 1]


def test_loading_nothing_or_the_wrong_kind(data, tmp_path):
    with pytest.raises(WorkspaceError, match="no item index in .*: run `shortlist build"):
        load_index(tmp_path / "missing")
    ExactIndex().build(data["x"][:10], np.arange(10)).save(tmp_path / "ix")
    with pytest.raises(WorkspaceError, match="exact index, not hnsw"):
        HNSWIndex.load(tmp_path / "ix")


def test_factory_picks_exact_for_small_catalogues(data):
    small = build_index(data["x"][:100], np.arange(100), exact_below=100)
    big = build_index(data["x"][:101], np.arange(101), exact_below=100, ef_search=64)
    assert isinstance(small, ExactIndex) and small.is_exact
    assert isinstance(big, HNSWIndex) and not big.is_exact and big.ef_search == 64


def test_bad_inputs(data, exact):
    with pytest.raises(ValueError, match="distinct"):
        ExactIndex().build(data["x"][:3], [1, 1, 2])
    with pytest.raises(ValueError, match="ids"):
        ExactIndex().build(data["x"][:3], [1, 2])
    with pytest.raises(ValueError, match=r"\(q, 32\)"):
        exact.search(data["q"][:, :8], 5)
    with pytest.raises(ValueError, match="k must be"):
        exact.search(data["q"], 0)
    with pytest.raises(ValueError, match="bool mask or item ids"):
        exact.search(data["q"], 5, allowed=np.array([0.5]))


def test_tune_picks_the_smallest_ef_reaching_the_target_on_off_distribution_queries(data):
    # Two-tower queries sit away from the items (the "modality gap"): mimic it by pointing the
    # queries against the items' mean, where a small ef walks the graph poorly.
    rng = np.random.default_rng(7)
    vectors = data["x"]
    away = -vectors.mean(axis=0) + 0.5 * rng.standard_normal((200, vectors.shape[1]))
    queries = (away / np.linalg.norm(away, axis=1, keepdims=True)).astype(np.float32)
    index = HNSWIndex(M=8, ef_construction=32).build(vectors, data["ids"])
    ladder = (16, 32, 64, 128, 256, 512)
    chosen = index.tune(queries, k=50, target=0.95, ladder=ladder)
    truth = ExactIndex().build(vectors, data["ids"]).search(queries, 50)[1]
    assert index.ef_search == chosen["ef_search"]
    assert recall(index.search(queries, 50)[1], truth) == pytest.approx(chosen["recall"])
    assert chosen["recall"] >= 0.95
    step = ladder.index(index.ef_search)
    assert step > 0, "the queries should need more than the smallest effort"
    index.ef_search = ladder[step - 1]  # the step below falls short, else tuning stops there
    assert recall(index.search(queries, 50)[1], truth) < 0.95
