"""The two towers: a user (query) encoder and an item encoder mapping into one embedding space.

Retrieval scores a user against every item by inner product of unit vectors, so the towers
never see each other at serving time: items are encoded once into the ANN index, users per
request. Both towers combine an id embedding with attribute embeddings; the id part is dropped
at random during training so that attributes alone give a usable vector (cold start).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TowerConfig:
    """Sizes of both towers; saved as JSON beside the weights."""

    n_users: int
    n_items: int
    item_cat_width: int
    item_text_width: int
    item_numeric: int
    user_cat_width: int
    user_numeric: int
    dim: int = 64
    hidden: int = 128
    cat_buckets: int = 1 << 16
    text_buckets: int = 1 << 17
    history: int = 20
    history_half_life_days: float = 60.0
    id_dropout: float = 0.2
    # The user vector also leans towards the item tower's own vectors of the user's history
    # (tied input/output item embeddings): see UserTower.
    tied_history: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _mlp(width_in: int, hidden: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.ReLU(), nn.Linear(hidden, dim))


def _drop_ids(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole id vectors with probability p, so the other inputs learn to stand alone."""
    if not training or p <= 0:
        return x
    keep = (torch.rand(x.shape[0], 1, device=x.device) >= p).to(x.dtype)
    return x * keep


def _table(cls: type, rows: int, dim: int, init: bool, **kwargs: object) -> nn.Module:
    """A sparse embedding table; its weights left uninitialized when `init` is False (weights
    about to be loaded: initializing 1.37 M users' rows costs a second)."""
    weight = None if init else torch.empty(rows, dim)
    return cls(rows, dim, _weight=weight, sparse=True, **kwargs)


class ItemTower(nn.Module):
    """item id + `attr=value` tokens + text tokens + numeric attributes -> unit vector.

    init=False: the embedding tables are left uninitialized, for weights loaded next."""

    def __init__(self, cfg: TowerConfig, init: bool = True):
        super().__init__()
        self.cfg = cfg
        self.ids = _table(nn.Embedding, cfg.n_items, cfg.dim, init)
        self.cats = _table(
            nn.EmbeddingBag, cfg.cat_buckets, cfg.dim, init, mode="mean", padding_idx=0
        )
        self.text = _table(
            nn.EmbeddingBag, cfg.text_buckets, cfg.dim, init, mode="mean", padding_idx=0
        )
        self.mlp = _mlp(3 * cfg.dim + cfg.item_numeric, cfg.hidden, cfg.dim)
        if init:
            for table in (self.ids, self.cats, self.text):
                nn.init.normal_(table.weight, std=0.05)

    def forward(
        self, items: torch.Tensor, cats: torch.Tensor, text: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        # items (b,), cats (b, wc), text (b, wt), numeric (b, n) -> (b, dim)
        attributes = self.cats(cats)
        parts = [
            _drop_ids(self.ids(items), self.cfg.id_dropout, self.training),
            attributes,
            self.text(text) if text.shape[1] else torch.zeros_like(attributes),
            numeric,
        ]
        return nn.functional.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


class UserTower(nn.Module):
    """user id + attributes + recency-weighted recent purchases + season -> unit vector.

    The history part pools the user's last purchases at request time, so a purchase made a
    minute ago moves the user's vector without retraining. With `tied_history`, the output is
    also pulled towards the recency-weighted mean of the history items' *output* vectors (the
    item tower's, so the same space the user is scored in), by a learnt weight: items like
    those the user bought score high from the first epoch, which small data cannot otherwise
    teach the separate history embeddings.
    """

    def __init__(self, cfg: TowerConfig, init: bool = True):
        super().__init__()
        self.cfg = cfg
        self.ids = _table(nn.Embedding, cfg.n_users, cfg.dim, init)
        self.cats = _table(
            nn.EmbeddingBag, cfg.cat_buckets, cfg.dim, init, mode="mean", padding_idx=0
        )
        # item ids shifted by one: 0 pads short histories
        self.history = _table(
            nn.EmbeddingBag, cfg.n_items + 1, cfg.dim, init, mode="sum", padding_idx=0
        )
        self.mlp = _mlp(3 * cfg.dim + cfg.user_numeric + 2, cfg.hidden, cfg.dim)
        if cfg.tied_history:
            self.mix = nn.Parameter(torch.ones(1))
        if init:
            for table in (self.ids, self.cats, self.history):
                nn.init.normal_(table.weight, std=0.05)

    def forward(
        self,
        users: torch.Tensor,
        cats: torch.Tensor,
        numeric: torch.Tensor,
        history: torch.Tensor,
        history_weight: torch.Tensor,
        season: torch.Tensor,
        history_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # users (b,), cats (b, wc), numeric (b, n), history and weights (b, h), season (b, 2);
        # history_vectors (b, dim): the weighted mean of the history's item vectors (tied only)
        pooled = self.history(history, per_sample_weights=history_weight)
        parts = [
            _drop_ids(self.ids(users), self.cfg.id_dropout, self.training),
            self.cats(cats),
            numeric,
            pooled,
            season,
        ]
        out = nn.functional.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)
        if self.cfg.tied_history:
            assert history_vectors is not None, "a tied user tower needs the history's vectors"
            out = nn.functional.normalize(out + self.mix * history_vectors, dim=1)
        return out


def _bag(table: np.ndarray, idx: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """nn.EmbeddingBag with padding_idx=0 in numpy: the weighted sum of the rows `idx` (b, w)
    names, or without `weights` their mean; index 0 counts for nothing (all-padding: zeros)."""
    real = (idx != 0).astype(np.float32)
    if weights is not None:
        return np.einsum("bw,bwd->bd", weights * real, table[idx])
    total = np.einsum("bw,bwd->bd", real, table[idx])
    count = real.sum(axis=1, keepdims=True)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def _normalize(x: np.ndarray) -> np.ndarray:
    """nn.functional.normalize(x, dim=1): rows of unit length (norms below 1e-12 as 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class UserTowerInference:
    """`UserTower.forward` in numpy, without autograd or id dropout: how users are encoded
    once trained (every request's user, evaluation's and validation's users). One request
    encodes one user in a few dozen small operations; torch's dispatch costs several
    microseconds per operation, and more with the caches cold after the rest of a request
    (measured at full scale: 0.7 ms of a request's p50 less with numpy).

    Reads the tower's parameters in place (numpy views of the tensors, no copy): optimizer
    steps and `load_state_dict` (which copies into them) show at once; build a new one for
    tensors replaced (`load_state_dict(assign=True)`, a new tower). A test holds its outputs
    equal to the module's to float precision."""

    def __init__(self, tower: UserTower):
        self.cfg = tower.cfg
        self.params = {k: v.detach().numpy() for k, v in tower.named_parameters()}
        self.layers: list[tuple[np.ndarray, np.ndarray] | None] = []  # None: ReLU
        for layer in tower.mlp:
            if isinstance(layer, nn.Linear):
                self.layers.append((layer.weight.detach().numpy().T, layer.bias.detach().numpy()))
            elif isinstance(layer, nn.ReLU):
                self.layers.append(None)
            else:
                raise TypeError(f"no numpy form for {type(layer).__name__} in the user tower")

    def __call__(
        self,
        users: np.ndarray,
        cats: np.ndarray,
        numeric: np.ndarray,
        history: np.ndarray,
        history_weight: np.ndarray,
        season: np.ndarray,
        history_vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """The arguments and result of `UserTower.forward`, as numpy arrays (float32)."""
        w = self.params
        x = np.concatenate(
            [
                w["ids.weight"][users],
                _bag(w["cats.weight"], cats),
                numeric,
                _bag(w["history.weight"], history, history_weight),
                season,
            ],
            axis=1,
            dtype=np.float32,
        )
        for layer in self.layers:
            x = np.maximum(x, 0) if layer is None else x @ layer[0] + layer[1]
        out = _normalize(x)
        if self.cfg.tied_history:
            assert history_vectors is not None, "a tied user tower needs the history's vectors"
            out = _normalize(out + w["mix"] * history_vectors)
        return out.astype(np.float32, copy=False)
