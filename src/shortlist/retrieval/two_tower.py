"""Training and using the two-tower retrieval model (sklearn-style: fit, then encode).

Loss: in-batch sampled softmax. Each user in a batch must pick its own purchase among every
item in the batch; popular items appear in many batches as negatives, so each logit is
corrected by the item's log sampling probability (log-Q) to avoid punishing popularity itself.
Items that appear twice in a batch are not treated as negatives of each other.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from shortlist.config import AttributeKind, RetrievalSettings
from shortlist.data.arrays import US_PER_DAY, Interactions, State, from_us
from shortlist.errors import WorkspaceError
from shortlist.progress import track
from shortlist.retrieval.encoding import EncodedTable, NumericStats, encode_table
from shortlist.retrieval.history import HistoryIndex, season
from shortlist.retrieval.towers import ItemTower, TowerConfig, UserTower, UserTowerInference
from shortlist.workspace import file_digest

ITEM_TOWER_FILE, USER_TOWER_FILE = "item_tower.safetensors", "user_tower.safetensors"
ITEM_VECTORS_FILE, CONFIG_FILE = "item_vectors.npy", "config.json"
QUERY_SAMPLE_FILE = "query_sample.npy"  # recent users' vectors: what an index tunes search on


TwoTowerSettings = RetrievalSettings  # the [retrieval] section of shortlist.toml


def numeric_columns(kinds: dict[str, AttributeKind]) -> list[str]:
    return [c for c, k in kinds.items() if k == AttributeKind.NUMERIC]


def coalesce_rows(grad: torch.Tensor) -> torch.Tensor:
    """A sparse row gradient (an embedding table's: one row per lookup, repeated) with each
    row once, summed and flagged coalesced: the value `SparseAdam` would compute itself with
    `grad.coalesce()`, in less than half its time on CPU (a unique and an index_add_ instead
    of the sparse sort; a third of a small-data training step went there)."""
    if not grad.is_sparse or grad.is_coalesced():
        return grad
    rows, inverse = torch.unique(grad._indices()[0], return_inverse=True)
    values = grad._values()
    summed = torch.zeros((len(rows), *values.shape[1:]), dtype=values.dtype)
    summed.index_add_(0, inverse, values)
    return torch.sparse_coo_tensor(
        rows[None], summed, grad.shape, is_coalesced=True, check_invariants=False
    )


class TwoTowerModel:
    """User and item towers trained on purchases; see the module docstring for the loss."""

    def __init__(self, settings: TwoTowerSettings | None = None):
        self.settings = settings or TwoTowerSettings()

    # -- inputs -----------------------------------------------------------------------------
    def _encode(
        self,
        items: pd.DataFrame,
        item_kinds: dict[str, AttributeKind],
        users: pd.DataFrame,
        user_kinds: dict[str, AttributeKind],
    ) -> None:
        cfg = self.config_
        self.item_inputs_ = encode_table(
            items,
            item_kinds,
            self.item_stats_,
            cat_buckets=cfg.cat_buckets,
            text_buckets=cfg.text_buckets,
        )
        self.user_inputs_ = encode_table(
            users,
            user_kinds,
            self.user_stats_,
            cat_buckets=cfg.cat_buckets,
            text_buckets=cfg.text_buckets,
        )

    def inputs_state(self) -> State:
        """The encoded item and user inputs as named arrays (a saved pipeline keeps them with
        its state, so that a load maps them instead of encoding millions of rows again)."""
        out: State = {}
        for side, t in (("item", self.item_inputs_), ("user", self.user_inputs_)):
            out.update({f"{side}.{f.name}": getattr(t, f.name) for f in fields(EncodedTable)})
        return out

    def _restore_inputs(self, inputs: State) -> bool:
        """Take the encoded inputs from `inputs_state()`'s arrays when they are complete and
        of this model's sizes; False (nothing taken) otherwise."""
        sides = {}
        for side, n in (("item", self.config_.n_items), ("user", self.config_.n_users)):
            arrays = {f.name: inputs.get(f"{side}.{f.name}") for f in fields(EncodedTable)}
            if any(a is None or len(a) != n for a in arrays.values()):
                return False
            sides[side] = EncodedTable(**arrays)
        self.item_inputs_, self.user_inputs_ = sides["item"], sides["user"]
        return True

    def _item_batch(self, items: np.ndarray) -> torch.Tensor:
        t = self.item_inputs_
        return self.item_tower_(
            torch.from_numpy(items.astype(np.int64)),
            torch.from_numpy(t.categorical[items]),
            torch.from_numpy(t.text[items]),
            torch.from_numpy(t.numeric[items]),
        )

    def _user_batch(self, users: np.ndarray, days: np.ndarray, hist: HistoryIndex) -> torch.Tensor:
        t, cfg = self.user_inputs_, self.config_
        h_items, h_weights = hist.lookup(users, days, cfg.history, cfg.history_half_life_days)
        return self.user_tower_(
            torch.from_numpy(users.astype(np.int64)),
            torch.from_numpy(t.categorical[users]),
            torch.from_numpy(t.numeric[users]),
            torch.from_numpy(h_items),
            torch.from_numpy(h_weights),
            torch.from_numpy(season(days)),
            self._history_vectors(h_items, h_weights) if cfg.tied_history else None,
        )

    def _history_vectors(self, h_items: np.ndarray, h_weights: np.ndarray) -> torch.Tensor:
        """(b, dim) weighted mean of the history items' output vectors (tied towers), encoded
        by the item tower so that gradients reach it: for training batches (`encode_users`
        reads the encoded vectors instead)."""
        uniq, inverse = np.unique(h_items, return_inverse=True)  # 0 pads (item idx + 1)
        real = uniq > 0
        vecs = torch.zeros((len(uniq), self.config_.dim))
        if real.any():
            vecs[torch.from_numpy(real)] = self._item_batch(uniq[real] - 1)
        gathered = vecs[torch.from_numpy(inverse.reshape(h_items.shape))]  # (b, h, dim)
        return (gathered * torch.from_numpy(h_weights)[:, :, None]).sum(dim=1)

    def _serving_vectors(self) -> np.ndarray:
        """The item vectors users are scored against: the trained model's, or (while
        validating an epoch) those the validation just encoded."""
        vectors = getattr(self, "item_vectors_", None)
        if vectors is None:
            vectors = self._epoch_vectors_
        return vectors

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        items: pd.DataFrame,
        item_kinds: dict[str, AttributeKind],
        users: pd.DataFrame,
        user_kinds: dict[str, AttributeKind],
        inter: Interactions,
        cutoff: int,
    ) -> TwoTowerModel:
        """Train on purchases before `cutoff` (µs); the last `val_days` pick the best epoch.

        `items` and `users` are the offline store's tables sorted by idx; text attributes feed
        the item tower's text bag, categorical ones the token bags, numeric ones the MLPs.
        """
        s = self.settings
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        self.__dict__.pop("item_vectors_", None)  # a refit scores users against new vectors
        self.item_stats_ = NumericStats.fit(items, numeric_columns(item_kinds))
        self.user_stats_ = NumericStats.fit(users, numeric_columns(user_kinds))
        self.item_kinds_, self.user_kinds_ = dict(item_kinds), dict(user_kinds)
        probe = TowerConfig(len(users), len(items), 1, 0, 0, 1, 0)
        self.config_ = probe
        self._encode(items, item_kinds, users, user_kinds)
        self.config_ = TowerConfig(
            n_users=len(users),
            n_items=len(items),
            item_cat_width=self.item_inputs_.categorical.shape[1],
            item_text_width=self.item_inputs_.text.shape[1],
            item_numeric=self.item_inputs_.numeric.shape[1],
            user_cat_width=self.user_inputs_.categorical.shape[1],
            user_numeric=self.user_inputs_.numeric.shape[1],
            dim=s.dim,
            hidden=s.hidden,
            history=s.history,
            id_dropout=s.id_dropout,
            tied_history=s.tied_history,
        )
        self.item_tower_ = ItemTower(self.config_)
        self.user_tower_ = UserTower(self.config_)
        # views of the tower's parameters: the optimizer's in-place steps show at once
        self.user_inference_ = UserTowerInference(self.user_tower_)
        hist = HistoryIndex(inter)
        cutoff_day = cutoff // US_PER_DAY
        span = cutoff_day - int(hist.day.min()) if len(hist.day) else 0
        self.val_days_ = validation_days(s.val_days, span)
        val_day = cutoff_day - self.val_days_
        rows = self._training_rows(hist, val_day)
        if len(rows) == 0:
            raise WorkspaceError(
                f"no purchases before {_day(val_day)} to train the two-tower on "
                f"({len(inter):,} purchases in all, {span} day(s) of history)"
            )
        batch, epochs = self._schedule(len(rows))
        self.schedule_ = {
            "examples": len(rows),
            "batch_size": batch,
            "epochs": epochs,
            "validation_days": self.val_days_,
        }
        val = (hist.day >= val_day) & (hist.day < cutoff_day)
        counts = np.bincount(hist.item[rows], minlength=len(items)).astype(np.float64)
        log_q = torch.from_numpy(
            np.log((counts + 1) / (counts.sum() + len(items))).astype(np.float32)
        )
        sparse = [
            p
            for m in (self.item_tower_, self.user_tower_)
            for n, p in m.named_parameters()
            if n.split(".")[0] in ("ids", "cats", "text", "history")
        ]
        dense = [
            p
            for m in (self.item_tower_, self.user_tower_)
            for n, p in m.named_parameters()
            if n.split(".")[0] not in ("ids", "cats", "text", "history")
        ]
        optimizers = [torch.optim.SparseAdam(sparse, lr=s.lr), torch.optim.Adam(dense, lr=s.lr)]
        self.history_: list[dict[str, float]] = []
        best, best_recall, stale = None, -1.0, 0
        # Small data (many epochs) validates noisily: allow a quarter of the epochs to stall.
        patience = max(s.patience, epochs // 4)
        for epoch in range(epochs):
            started = time.perf_counter()
            loss = self._epoch(epoch, epochs, batch, rows, hist, log_q, optimizers, rng)
            if not np.isfinite(loss):
                raise WorkspaceError(
                    f"the two-tower's training loss is {loss} at epoch {epoch + 1} "
                    f"({len(rows):,} examples): lower [retrieval] lr (now {s.lr})"
                )
            seconds = time.perf_counter() - started
            recall = self._validate(hist, val, val_day)
            self.history_.append(
                {
                    "epoch": epoch + 1,
                    "loss": loss,
                    "val_recall@100": recall,
                    "seconds": seconds,
                    "examples_per_s": min(len(rows), max(1, len(rows) // batch) * batch) / seconds,
                }
            )
            if recall is None:  # no validation span (a few days of data): keep the last epoch
                continue
            if recall > best_recall:
                best_recall, stale = recall, 0
                best = (
                    copy.deepcopy(self.item_tower_.state_dict()),
                    copy.deepcopy(self.user_tower_.state_dict()),
                )
            else:
                stale += 1
                if stale > patience:
                    break
        if best is not None:
            self.item_tower_.load_state_dict(best[0])
            self.user_tower_.load_state_dict(best[1])
        self.item_vectors_ = self.encode_items()
        if not np.isfinite(self.item_vectors_).all():
            raise WorkspaceError("the two-tower produced item vectors holding NaN or inf")
        self.query_sample_ = self.query_sample(inter, cutoff, hist)
        return self

    def query_sample(
        self, inter: Interactions, cutoff: int, hist: HistoryIndex, size: int = 1000
    ) -> np.ndarray:
        """Vectors of up to `size` users who bought in the 28 days before the cutoff, as of the
        cutoff: the queries an index tunes its search effort on."""
        recent = np.unique(inter.user[(inter.time >= cutoff - 28 * US_PER_DAY)
                                      & (inter.time < cutoff)])  # fmt: skip
        users = np.random.default_rng(0).choice(recent, min(size, len(recent)), replace=False)
        day = cutoff // US_PER_DAY
        return self.encode_users(np.sort(users), np.full(len(users), day), hist)

    def _training_rows(self, hist: HistoryIndex, val_day: int) -> np.ndarray:
        """Purchases of the `train_days` before validation, reaching further back on small data
        until there are `min_examples` (or no more)."""
        s = self.settings
        before = hist.day < val_day
        rows = np.flatnonzero(before & (hist.day >= val_day - s.train_days))
        if len(rows) < s.min_examples:
            earlier = np.flatnonzero(before)
            if len(earlier) > len(rows):
                latest = np.argsort(-hist.day[earlier], kind="stable")[: s.min_examples]
                rows = np.sort(earlier[latest])
        return rows

    def _schedule(self, n: int) -> tuple[int, int]:
        """(batch size, epochs): at least `min_steps` updates, batches of at least 128."""
        s = self.settings
        batch = max(1, min(s.batch_size, max(128, n * s.epochs // max(1, s.min_steps))))
        steps_per_epoch = max(1, n // batch)
        epochs = max(s.epochs, -(-s.min_steps // steps_per_epoch))
        return batch, min(epochs, max(s.epochs, s.max_epochs))

    def _epoch(
        self,
        epoch: int,
        epochs: int,
        batch_size: int,
        rows: np.ndarray,
        hist: HistoryIndex,
        log_q: torch.Tensor,
        optimizers: list[torch.optim.Optimizer],
        rng: np.random.Generator,
    ) -> float:
        s = self.settings
        self.item_tower_.train()
        self.user_tower_.train()
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        order = rng.permutation(rows)
        n_batches = max(1, len(order) // batch_size)  # the ragged tail is dropped
        losses, started = [], time.perf_counter()
        with track(f"Training two-tower, epoch {epoch + 1}/{epochs}", total=n_batches) as adv:
            for b in range(n_batches):
                p = order[b * batch_size : (b + 1) * batch_size]
                items = hist.item[p]
                if s.random_negatives:
                    extra = rng.integers(0, self.config_.n_items, s.random_negatives)
                    cand = np.concatenate([items, extra])
                else:
                    cand = items
                u = self._user_batch(hist.user[p], hist.day[p], hist)  # (b, dim)
                v = self._item_batch(cand)  # (b + extra, dim)
                logits = u @ v.T / s.temperature - log_q[torch.from_numpy(cand.astype(np.int64))]
                cand_t = torch.from_numpy(cand.astype(np.int64))
                own = torch.from_numpy(items.astype(np.int64))
                same = own[:, None] == cand_t[None, :]  # (b, b + extra)
                same[torch.arange(len(p)), torch.arange(len(p))] = False
                logits = logits.masked_fill(same, float("-inf"))
                loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(p)))
                for opt in optimizers:
                    opt.zero_grad()
                loss.backward()
                for param in params:  # the embedding tables' sparse gradients
                    if param.grad is not None:
                        param.grad = coalesce_rows(param.grad)
                for opt in optimizers:
                    opt.step()
                losses.append(loss.item())
                rate = (b + 1) * len(p) / (time.perf_counter() - started)
                adv(1, f"loss {np.mean(losses[-50:]):.3f}, {rate:,.0f} ex/s")
        return float(np.mean(losses)) if losses else float("nan")

    def _validate(self, hist: HistoryIndex, val: np.ndarray, val_day: int) -> float | None:
        """Mean recall@100 of the held-out purchases, users encoded as of the split day; None
        without held-out purchases."""
        if not val.any():
            return None
        users, first = np.unique(hist.user[val], return_index=True)
        items = self._epoch_vectors_ = self.encode_items()
        user_vecs = self.encode_users(users, np.full(len(users), val_day), hist)
        top = _top_k(user_vecs, items, 100)
        bought: dict[int, set[int]] = {}
        for u, i in zip(hist.user[val].tolist(), hist.item[val].tolist(), strict=True):
            bought.setdefault(u, set()).add(i)
        recalls = [
            len(bought[u].intersection(row)) / len(bought[u])
            for u, row in zip(users.tolist(), top.tolist(), strict=True)
        ]
        return float(np.mean(recalls))

    # -- encoding ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode_items(self, batch: int = 8192) -> np.ndarray:
        """(n_items, dim) unit vectors for the whole catalogue."""
        self.item_tower_.eval()
        n = self.config_.n_items
        return np.vstack(
            [self._item_batch(np.arange(i, min(n, i + batch))).numpy() for i in range(0, n, batch)]
        )

    def encode_users(
        self, users: np.ndarray, days: np.ndarray, hist: HistoryIndex, batch: int = 1024
    ) -> np.ndarray:
        """(len(users), dim) unit vectors as of `days` (days since the epoch, history before),
        encoded in numpy (`user_inference_`: views of the tower's weights, no autograd). The
        history's rows are gathered into a (batch, history, dim) array: 1,024 users keep it in
        the caches (20,000 users took 0.05 s in batches of 512-2,048, 0.08 s of 8,192)."""
        tower, t, cfg = self.user_inference_, self.user_inputs_, self.config_
        vectors = self._serving_vectors() if cfg.tied_history else None
        out = []
        for i in range(0, len(users), batch):
            u, d = users[i : i + batch], days[i : i + batch]
            h_items, h_weights = hist.lookup(u, d, cfg.history, cfg.history_half_life_days)
            pooled = None
            if vectors is not None:  # the weighted mean of the history's item vectors
                real = h_items > 0  # item idx + 1; 0 pads
                pooled = np.einsum(
                    "bh,bhd->bd", h_weights * real, vectors[np.where(real, h_items - 1, 0)]
                )
            out.append(
                tower(u, t.categorical[u], t.numeric[u], h_items, h_weights, season(d), pooled)
            )
        return np.vstack(out) if out else np.zeros((0, cfg.dim), np.float32)

    # -- persistence ------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Two safetensors files (one per tower), a JSON config, and the item vectors (.npy).

        Nothing here is pickled: loading reads tensors and JSON only.
        """
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.item_tower_.state_dict(), str(folder / ITEM_TOWER_FILE))
        save_file(self.user_tower_.state_dict(), str(folder / USER_TOWER_FILE))
        np.save(folder / ITEM_VECTORS_FILE, self.item_vectors_, allow_pickle=False)
        np.save(folder / QUERY_SAMPLE_FILE, self.query_sample_, allow_pickle=False)
        config = {
            "format_version": 1,
            "tower": self.config_.to_dict(),
            "settings": self.settings.model_dump(),
            "item_stats": asdict(self.item_stats_),
            "user_stats": asdict(self.user_stats_),
            "item_kinds": {k: v.value for k, v in self.item_kinds_.items()},
            "user_kinds": {k: v.value for k, v in self.user_kinds_.items()},
            "training": self.history_,
            "schedule": getattr(self, "schedule_", None),
            # what an index, a ranker and a saved pipeline record, to refuse another model's
            "fingerprint": file_digest(
                folder / ITEM_TOWER_FILE, folder / USER_TOWER_FILE, folder / ITEM_VECTORS_FILE
            ),
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        self.fingerprint_ = config["fingerprint"]

    @classmethod
    def load(
        cls,
        folder: Path,
        items: pd.DataFrame,
        users: pd.DataFrame,
        inputs: State | None = None,
    ) -> TwoTowerModel:
        """A saved model, with its inputs re-encoded from the (same) item and user tables, or
        taken from `inputs` (`inputs_state()` of the model as saved with a pipeline, whose
        manifest ties them to these tables).

        Raises:
            WorkspaceError: no model in `folder`, or the tables no longer match its sizes.
        """
        path = folder / CONFIG_FILE
        if not path.is_file():
            raise WorkspaceError(
                f"no two-tower model in {folder}: run `shortlist train retrieval` first"
            )
        config = json.loads(path.read_text())
        if "fingerprint" not in config:
            raise WorkspaceError(
                f"the model in {folder} was saved by an older shortlist: retrain it "
                "(`shortlist build`, or `shortlist train retrieval`)"
            )
        model = cls(TwoTowerSettings.model_validate(config["settings"]))
        model.fingerprint_ = config["fingerprint"]
        model.config_ = TowerConfig(**config["tower"])
        if (model.config_.n_items, model.config_.n_users) != (len(items), len(users)):
            raise WorkspaceError(
                f"the model in {folder} was trained on {model.config_.n_items:,} items and "
                f"{model.config_.n_users:,} users, the workspace now has {len(items):,} and "
                f"{len(users):,}: retrain with `shortlist train retrieval`"
            )
        model.item_stats_ = NumericStats(**config["item_stats"])
        model.user_stats_ = NumericStats(**config["user_stats"])
        model.item_kinds_ = {k: AttributeKind(v) for k, v in config["item_kinds"].items()}
        model.user_kinds_ = {k: AttributeKind(v) for k, v in config["user_kinds"].items()}
        model.history_ = config["training"]
        if inputs is None or not model._restore_inputs(inputs):
            model._encode(items, model.item_kinds_, users, model.user_kinds_)
        # no random initialization of the tables the saved weights replace (strict: every
        # parameter is in the files)
        model.item_tower_ = ItemTower(model.config_, init=False)
        model.user_tower_ = UserTower(model.config_, init=False)
        model.item_tower_.load_state_dict(load_file(str(folder / ITEM_TOWER_FILE)), assign=True)
        model.user_tower_.load_state_dict(load_file(str(folder / USER_TOWER_FILE)), assign=True)
        model.user_inference_ = UserTowerInference(model.user_tower_)
        model.item_vectors_ = np.load(folder / ITEM_VECTORS_FILE, allow_pickle=False)
        sample = folder / QUERY_SAMPLE_FILE
        model.query_sample_ = (
            np.load(sample, allow_pickle=False)
            if sample.is_file()
            else np.zeros((0, model.config_.dim), np.float32)
        )
        return model


def _top_k(queries: np.ndarray, items: np.ndarray, k: int, batch: int = 4096) -> np.ndarray:
    """Exact top-k item ids by inner product, (q, k)."""
    k = min(k, len(items))
    out = []
    items_t = torch.from_numpy(items)
    for i in range(0, len(queries), batch):
        scores = torch.from_numpy(queries[i : i + batch]) @ items_t.T
        out.append(torch.topk(scores, k, dim=1).indices.numpy())
    return np.vstack(out) if out else np.zeros((0, k), np.int64)


def validation_days(wanted: int, span_days: int) -> int:
    """Days held out to choose the epoch: `wanted`, but at most a quarter of the history, so
    a shop with a few days of data still trains on most of them (0: too short to hold any
    out; the schedule's epochs are then trained and the last is kept)."""
    return int(min(wanted, span_days // 4))


def _day(day: int) -> str:
    return from_us(day * US_PER_DAY).date().isoformat()
