"""The two-tower model on a tiny generated set: shapes, learning, round trip, cold start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shortlist.config import AttributeKind, RetrievalSettings
from shortlist.data.arrays import US_PER_DAY, Interactions, load_dataset
from shortlist.data.generator import generate
from shortlist.data.ingest import ingest
from shortlist.data.offline import OfflineStore
from shortlist.retrieval.history import HistoryIndex, season
from shortlist.retrieval.two_tower import TwoTowerModel, _top_k

FAST = RetrievalSettings(epochs=3, batch_size=512, patience=3, dim=32, hidden=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tt")
    generate(root / "src", scale="tiny", seed=3)
    from shortlist.workspace import open_workspace

    ws = open_workspace(root / "ws")
    ingest(ws, root / "src", format="hm")
    data = load_dataset(OfflineStore(ws))
    cutoff = (int(data.interactions.time[-1]) // US_PER_DAY + 1) * US_PER_DAY
    return data, cutoff


@pytest.fixture(scope="module")
def trained(tiny):
    data, cutoff = tiny
    return TwoTowerModel(FAST).fit(
        data.items, data.item_kinds, data.users, data.user_kinds, data.interactions, cutoff
    )


def test_shapes_and_unit_vectors(tiny, trained):
    data, cutoff = tiny
    assert trained.item_vectors_.shape == (data.n_items, 32)
    assert np.allclose(np.linalg.norm(trained.item_vectors_, axis=1), 1, atol=1e-5)
    users = np.arange(10)
    vecs = trained.encode_users(
        users, np.full(10, cutoff // US_PER_DAY), HistoryIndex(data.interactions)
    )
    assert vecs.shape == (10, 32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_training_improves_validation_recall_over_an_untrained_model(tiny, trained):
    data, cutoff = tiny
    untrained = TwoTowerModel(FAST.model_copy(update={"epochs": 1, "lr": 1e-9})).fit(
        data.items, data.item_kinds, data.users, data.user_kinds, data.interactions, cutoff
    )
    best = max(e["val_recall@100"] for e in trained.history_)
    assert best > untrained.history_[0]["val_recall@100"] + 0.05


def test_save_load_round_trip(tiny, trained, tmp_path):
    data, cutoff = tiny
    trained.save(tmp_path / "m")
    loaded = TwoTowerModel.load(tmp_path / "m", data.items, data.users)
    assert np.array_equal(loaded.item_vectors_, trained.item_vectors_)
    assert np.allclose(loaded.encode_items(), trained.item_vectors_, atol=1e-6)
    hist = HistoryIndex(data.interactions)
    users, days = np.arange(50), np.full(50, cutoff // US_PER_DAY)
    assert np.allclose(
        loaded.encode_users(users, days, hist), trained.encode_users(users, days, hist), atol=1e-6
    )


def test_loading_never_unpickles(tmp_path, tiny, trained):
    data, _ = tiny
    trained.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == [
        "config.json",
        "item_tower.safetensors",
        "item_vectors.npy",
        "query_sample.npy",
        "user_tower.safetensors",
    ]
    # .npy saved without pickles: loading with allow_pickle=False must work
    np.load(tmp_path / "m" / "item_vectors.npy", allow_pickle=False)
    np.load(tmp_path / "m" / "query_sample.npy", allow_pickle=False)


def test_a_fresh_purchase_moves_the_user_vector(tiny, trained):
    data, cutoff = tiny
    day = cutoff // US_PER_DAY
    user = int(data.interactions.user[-1])
    before = trained.encode_users(
        np.array([user]), np.array([day]), HistoryIndex(data.interactions)
    )
    bought = int(np.argmax(trained.item_vectors_ @ -before[0]))  # an item far from the user
    from shortlist.data.arrays import Interactions

    inter = data.interactions
    more = Interactions(
        np.append(inter.user, user).astype(np.int32),
        np.append(inter.item, bought).astype(np.int32),
        np.append(inter.time, (day - 1) * US_PER_DAY),
        np.append(inter.quantity, 1).astype(np.int32),
    )
    after = trained.encode_users(np.array([user]), np.array([day]), HistoryIndex(more))
    # The purchase is read at request time: the vector moves without retraining. Its direction
    # is not guaranteed (history embeddings are not tied to the item tower's vectors: after
    # the generator's business rules changed the tiny data, it moved away from the item).
    assert float(np.linalg.norm(after[0] - before[0])) > 1e-3
    untouched = trained.encode_users(np.array([user]), np.array([day]), HistoryIndex(inter))
    np.testing.assert_allclose(untouched, before)


def test_cold_item_is_retrieved_through_its_attributes(tiny, trained):
    """A new item copying an existing item's attributes lands near items like it."""
    data, _ = tiny
    items = data.items.copy()
    group = next(c for c, k in data.item_kinds.items() if k == AttributeKind.CATEGORICAL)
    source = int(np.argmax(np.bincount(data.interactions.item)))  # a well-known item
    cold = pd.concat([items, items.iloc[[source]]], ignore_index=True)
    users = data.users
    model = TwoTowerModel.__new__(TwoTowerModel)
    model.__dict__.update(trained.__dict__)
    model.config_ = type(trained.config_)(**{**trained.config_.to_dict(), "n_items": len(cold)})
    model._encode(cold, data.item_kinds, users, data.user_kinds)
    # the new row has no id embedding of its own: use the attribute path only (id zeroed)
    import torch

    with torch.no_grad():
        t = model.item_inputs_
        tower = trained.item_tower_
        tower.eval()
        parts = [
            torch.zeros(1, trained.config_.dim),
            tower.cats(torch.from_numpy(t.categorical[-1:])),
            tower.text(torch.from_numpy(t.text[-1:])),
            torch.from_numpy(t.numeric[-1:]),
        ]
        vec = torch.nn.functional.normalize(tower.mlp(torch.cat(parts, dim=1)), dim=1).numpy()
    top = _top_k(vec, trained.item_vectors_, 20)[0]
    same = (items[group].iloc[top] == items[group].iloc[source]).mean()
    base = (items[group] == items[group].iloc[source]).mean()
    assert same > 2 * base


@pytest.fixture(scope="module")
def tied(tiny):
    data, cutoff = tiny
    return TwoTowerModel(FAST.model_copy(update={"tied_history": True})).fit(
        data.items, data.item_kinds, data.users, data.user_kinds, data.interactions, cutoff
    )


@pytest.mark.parametrize("kind", ["plain", "tied"])
def test_numpy_encoding_equals_the_user_tower_module(tiny, trained, tied, kind):
    """`encode_users` runs the user tower in numpy (UserTowerInference); its vectors equal the
    torch module's in eval mode to float precision, users with and without history alike."""
    import torch

    data, cutoff = tiny
    model = trained if kind == "plain" else tied
    cfg, t = model.config_, model.user_inputs_
    hist = HistoryIndex(data.interactions)
    users = np.arange(data.n_users)
    days = np.full(len(users), cutoff // US_PER_DAY - 20)  # some users without history yet
    h_items, h_weights = hist.lookup(users, days, cfg.history, cfg.history_half_life_days)
    assert (h_items[:, 0] == 0).any() and (h_items[:, 0] > 0).any()
    pooled = None
    if cfg.tied_history:
        vecs = torch.cat([torch.zeros(1, cfg.dim), torch.from_numpy(model.item_vectors_)])
        pooled = (vecs[torch.from_numpy(h_items)] * torch.from_numpy(h_weights)[..., None]).sum(1)
    model.user_tower_.eval()
    with torch.no_grad():
        expected = model.user_tower_(
            torch.from_numpy(users),
            torch.from_numpy(t.categorical[users]),
            torch.from_numpy(t.numeric[users]),
            torch.from_numpy(h_items),
            torch.from_numpy(h_weights),
            torch.from_numpy(season(days)),
            pooled,
        ).numpy()
    got = model.encode_users(users, days, hist, batch=97)  # several batches
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_tied_history_pulls_the_user_towards_what_they_bought(tiny, tied, tmp_path):
    """With tied_history, the user vector leans on the history items' own (output) vectors:
    a purchase raises the user's similarity to that item, and a saved-then-loaded model
    encodes users the same (it reads the saved item vectors)."""
    data, cutoff = tiny
    assert tied.config_.tied_history and tied.user_tower_.mix.item() != 1.0  # it learnt
    hist = HistoryIndex(data.interactions)
    day = cutoff // US_PER_DAY
    users = np.unique(data.interactions.user)[:40]
    days = np.full(len(users), day)
    _, weights = hist.lookup(users, days, 1, 60.0)
    before = tied.encode_users(users, days, hist)
    # each user buys one more item, today: the next item id after their last one
    last = hist.item[hist.start_of(users, days) - 1]
    bought = (last + 1) % data.n_items
    more = Interactions(
        user=np.concatenate([data.interactions.user, users]),
        item=np.concatenate([data.interactions.item, bought.astype(data.interactions.item.dtype)]),
        time=np.concatenate(
            [data.interactions.time, np.full(len(users), (day - 1) * US_PER_DAY + 1)]
        ),
        quantity=np.concatenate([data.interactions.quantity, np.ones(len(users), np.int32)]),
        price=None,
    )
    after = tied.encode_users(users, days, HistoryIndex(more))
    v = tied.item_vectors_[bought]
    gain = np.einsum("nd,nd->n", after, v) - np.einsum("nd,nd->n", before, v)
    assert (weights.sum(axis=1) > 0).all() and np.median(gain) > 0
    tied.save(tmp_path / "m")
    loaded = TwoTowerModel.load(tmp_path / "m", data.items, data.users)
    assert loaded.config_.tied_history
    assert np.allclose(loaded.encode_users(users, days, hist), before, atol=1e-6)


def test_coalesced_rows_give_sparse_adam_the_same_steps():
    """The training loop hands SparseAdam gradients coalesced by `coalesce_rows` (faster than
    its own `coalesce()`): the parameters after several steps equal those of the stock path,
    and repeated rows (a popular item in many histories) are summed, not overwritten."""
    import torch

    from shortlist.retrieval.two_tower import coalesce_rows

    def run(fast: bool) -> torch.Tensor:
        torch.manual_seed(0)
        table = torch.nn.EmbeddingBag(500, 8, mode="sum", sparse=True, padding_idx=0)
        opt = torch.optim.SparseAdam(table.parameters(), lr=0.01)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            idx = (torch.rand(256, 20, generator=gen) ** 3 * 500).long()  # skewed: repeats
            weight = torch.rand(256, 20, generator=gen)
            opt.zero_grad()
            table(idx, per_sample_weights=weight).pow(2).sum().backward()
            grad = table.weight.grad
            if fast:
                assert not grad.is_coalesced() and grad._nnz() > len(grad._indices()[0].unique())
                table.weight.grad = coalesce_rows(grad)
                assert table.weight.grad.is_coalesced()
            opt.step()
        return table.weight.detach().clone()

    stock, fast = run(False), run(True)
    assert not torch.equal(stock, torch.nn.EmbeddingBag(500, 8).weight)  # it trained
    assert torch.allclose(stock, fast, atol=1e-6, rtol=1e-5)
    dense = torch.randn(3, 2)
    assert coalesce_rows(dense) is dense  # dense gradients pass through
