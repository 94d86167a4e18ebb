"""Vector indexes over item embeddings (inner product): exact and HNSW, with attribute filters."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import faiss
import numpy as np

from shortlist.errors import WorkspaceError
from shortlist.workspace import file_digest

INDEX_FILE, META_FILE, IDS_FILE = "index.faiss", "index.json", "ids.npy"
FORMAT_VERSION = 1
TUNE_TARGET = 0.97  # recall@k that `tune` aims for (the bar is 0.95)
EF_LADDER = (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
DEFAULT_EXACT_BELOW = 20_000  # items; below this brute force is about as fast as HNSW (docs)
# From this many queries at once, the allowed vectors are gathered once and scored with BLAS;
# fewer are scored in place (no copy) one query at a time.
BLAS_QUERIES = 20


class _FaissIndex:
    """Shared by both indexes: item ids around FAISS's positions 0..n-1, allowed-set handling,
    exact search over a subset, and persistence (FAISS's own file + JSON + ids.npy)."""

    kind: ClassVar[str]
    is_exact: ClassVar[bool]

    index_: Any = None  # faiss.Index
    ids_: np.ndarray  # (n,) int64 item id of each position
    mmapped_: bool = False
    model_: str | None = None  # fingerprint of the model the vectors came from (when saved)
    fingerprint_: str | None = None  # of the saved index file

    # -- building ---------------------------------------------------------------------------
    def _new_index(self, dim: int) -> Any:
        raise NotImplementedError

    def _flat(self) -> Any:
        """The faiss.IndexFlat holding the raw vectors (the index itself, or HNSW's storage)."""
        raise NotImplementedError

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> Self:
        """Index `vectors` (n, d) float32 under item `ids` (n,) distinct ints."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"expected (n, d) vectors for {len(ids)} ids, got {vectors.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item ids must be distinct")
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            # FAISS would take them and, for HNSW, spend a very long time on a useless graph
            raise WorkspaceError(
                f"{int(bad.sum()):,} of {len(vectors):,} item vectors hold NaN or inf (item id "
                f"{int(ids[bad][0])} first): the model that made them did not train; retrain it"
            )
        self.index_ = self._new_index(vectors.shape[1])
        if len(vectors):
            self.index_.add(vectors)
        self._set_ids(ids)
        self.mmapped_ = False
        return self

    def _set_ids(self, ids: np.ndarray) -> None:
        self.ids_ = ids
        # the usual case: ids are 0..n-1, so an item-id mask is already a position mask
        self._identity = bool(np.array_equal(ids, np.arange(len(ids))))
        self._order: np.ndarray | None = None  # argsort of ids, built on first id lookup

    @property
    def dim(self) -> int:
        return int(self.index_.d)

    def __len__(self) -> int:
        return int(self.index_.ntotal)

    # -- searching --------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: scores (q, k) float32 and item ids (q, k) int64, best first,
        padded with -inf / -1 when fewer than k items are indexed or allowed."""
        if self.index_ is None:
            raise RuntimeError("build or load the index first")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape (q, {self.dim}), got {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        n = len(self)
        mask = None if allowed is None else self._position_mask(allowed)  # (n,) bool
        count = n if mask is None else int(np.count_nonzero(mask))
        if count == 0:
            scores, pos = _empty(len(queries), k)
        elif count == n:
            scores, pos = self._search_all(queries, k)
        elif count <= k or self._subset_is_cheaper(count, k):
            scores, pos = self._exact_subset(queries, k, np.flatnonzero(mask))
        else:
            assert mask is not None
            scores, pos = self._search_filtered(queries, k, mask, count)
        return self._to_ids(scores, pos)

    def _subset_is_cheaper(self, count: int, k: int) -> bool:
        """Whether scoring the `count` allowed vectors beats the filtered search proper."""
        raise NotImplementedError

    def _search_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index_.search(queries, k)

    def _search_filtered(
        self, queries: np.ndarray, k: int, mask: np.ndarray, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Broad filters: exact, scanning every vector and skipping those not allowed."""
        bits = np.packbits(mask, bitorder="little")  # FAISS's bitmap layout; kept alive here
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)))
        return self._flat().search(queries, k, params=params)

    def _exact_subset(
        self, queries: np.ndarray, k: int, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among `positions` (m,) only: cost ~ m, whatever the catalogue size."""
        q, m, kk = len(queries), len(positions), min(k, len(positions))
        flat = self._flat()
        if q >= BLAS_QUERIES:
            # one gather of (m, d), amortized over the batch, then a BLAS matrix product
            vectors = faiss.rev_swig_ptr(flat.get_xb(), len(self) * self.dim)
            subset = vectors.reshape(len(self), self.dim)[positions]
            scores, local = faiss.knn(queries, subset, kk, metric=faiss.METRIC_INNER_PRODUCT)
            found = np.where(local >= 0, positions[np.maximum(local, 0)], -1)
        else:
            # scored in place through the id list: no copy of the vectors
            positions = np.ascontiguousarray(positions, dtype=np.int64)
            scores = np.empty((q, kk), np.float32)
            found = np.empty((q, kk), np.int64)
            faiss.knn_inner_products_by_idx(
                faiss.swig_ptr(queries), flat.get_xb(), faiss.swig_ptr(positions),
                self.dim, q, len(self), m, kk,
                faiss.swig_ptr(scores), faiss.swig_ptr(found), 0,  # 0: one subset for all
            )  # fmt: skip
        if kk < k:
            pad_scores, pad_pos = _empty(q, k - kk)
            scores, found = np.hstack([scores, pad_scores]), np.hstack([found, pad_pos])
        return scores, found

    def _position_mask(self, allowed: np.ndarray) -> np.ndarray:
        """(n,) bool over positions from a bool mask over item ids or an array of item ids.

        Ids outside the mask, or not in the index, are simply not allowed.
        """
        allowed = np.asarray(allowed)
        n = len(self)
        if allowed.dtype == bool:
            if allowed.ndim != 1:
                raise ValueError(f"an allowed mask is 1-d over item ids, got {allowed.shape}")
            if self._identity and len(allowed) == n:
                return allowed
            inside = self.ids_ < len(allowed)
            mask = np.zeros(n, bool)
            mask[inside] = allowed[self.ids_[inside]]
            return mask
        if not np.issubdtype(allowed.dtype, np.integer):
            raise ValueError(f"allowed must be a bool mask or item ids, got {allowed.dtype}")
        wanted = allowed.ravel().astype(np.int64)
        mask = np.zeros(n, bool)
        if self._identity:
            mask[wanted[(wanted >= 0) & (wanted < n)]] = True
            return mask
        if self._order is None:
            self._order = np.argsort(self.ids_, kind="stable")
        sorted_ids = self.ids_[self._order]
        at = np.minimum(np.searchsorted(sorted_ids, wanted), max(n - 1, 0))
        hit = sorted_ids[at] == wanted if n else np.zeros(len(wanted), bool)
        mask[self._order[at[hit]]] = True
        return mask

    def _to_ids(self, scores: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        missing = pos < 0
        ids = np.where(missing, -1, self.ids_[np.where(missing, 0, pos)]) if len(self) else pos
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    # -- persistence ------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, folder: Path, *, model: str | None = None) -> None:
        """FAISS's own index file, the item ids (.npy, omitted when 0..n-1) and a JSON of the
        parameters. Files are replaced atomically, so a reader holding an mmap stays valid.

        `model` is the fingerprint of the model whose vectors these are: `load_index` checks it,
        so an index left behind by a retrained model is refused rather than searched.
        """
        if self.index_ is None:
            raise RuntimeError("build the index before saving it")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{INDEX_FILE}.tmp"
        faiss.write_index(self.index_, str(tmp))
        os.replace(tmp, folder / INDEX_FILE)
        if not self._identity:
            with open(folder / f"{IDS_FILE}.tmp", "wb") as f:
                np.save(f, self.ids_, allow_pickle=False)
            os.replace(folder / f"{IDS_FILE}.tmp", folder / IDS_FILE)
        else:
            (folder / IDS_FILE).unlink(missing_ok=True)  # a stale one from an earlier save
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self),
            "ids": "range" if self._identity else IDS_FILE,
            "params": self.params(),
            "model": model,
            "fingerprint": file_digest(folder / INDEX_FILE),
        }
        self.model_, self.fingerprint_ = model, meta["fingerprint"]
        (folder / f"{META_FILE}.tmp").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(folder / f"{META_FILE}.tmp", folder / META_FILE)

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = True) -> Self:
        """A saved index. With `mmap`, it stays in the file, mapped read-only and shared between
        processes (FAISS's IO_FLAG_MMAP_IFC: the vectors, and with FAISS 1.15 HNSW's graph).

        Raises:
            WorkspaceError: no index of this kind in `folder`.
        """
        meta = _read_meta(Path(folder))
        if meta["kind"] != cls.kind:
            raise WorkspaceError(f"{folder} holds a {meta['kind']} index, not {cls.kind}")
        try:
            obj = cls(**meta["params"])
        except TypeError as e:  # saved by a version with other settings
            raise WorkspaceError(f"the index in {folder} does not load ({e}): rebuild it") from e
        path = str(Path(folder) / INDEX_FILE)
        flag = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if mmap else 0
        try:
            obj.index_ = faiss.read_index(path, flag)
        except RuntimeError:
            if not flag:
                raise
            flag, obj.index_ = 0, faiss.read_index(path)  # this FAISS cannot map it: read it
        obj.mmapped_ = bool(flag)
        if meta["ids"] == "range":
            ids = np.arange(meta["count"], dtype=np.int64)
        else:  # 8 bytes an item: read, not mapped
            ids = np.load(Path(folder) / IDS_FILE, allow_pickle=False)
        obj._set_ids(ids)
        obj.model_, obj.fingerprint_ = meta.get("model"), meta.get("fingerprint")
        return obj


class ExactIndex(_FaissIndex):
    """Brute force (faiss.IndexFlatIP): the oracle for the others, and the index for small
    catalogues, where a scan costs about what a graph walk does."""

    kind = "exact"
    is_exact = True

    def __init__(self, subset_share: float = 0.3):
        # Below this share, the allowed vectors are scored through their ids; above, all are
        # scanned, skipping the others (a branch per vector, which costs more when many pass).
        self.subset_share = subset_share

    def _subset_is_cheaper(self, count: int, k: int) -> bool:
        return count < self.subset_share * len(self)

    def _new_index(self, dim: int) -> Any:
        return faiss.IndexFlatIP(dim)

    def _flat(self) -> Any:
        return self.index_

    def params(self) -> dict[str, Any]:
        return {"subset_share": self.subset_share}


class HNSWIndex(_FaissIndex):
    """Approximate search on an HNSW graph (faiss.IndexHNSWFlat, inner product).

    Filters: the allowed subset is searched exactly when scoring its vectors costs less than
    the graph walk the filter needs (a walk at efSearch e costs about `walk_cost` * e vector
    scores; the walk needed grows as the share allowed shrinks): at 105k items, k=100, below
    about 37% allowed. Broader filters walk the graph: 'overfetch' takes the unfiltered top
    margin * k / share and keeps the allowed ones; 'selector' lets only allowed items into the
    results (efSearch ef_scale * k / share). A query left with fewer results than it should
    have is retried at twice the effort while that is cheaper than exact search, then exactly.
    """

    kind = "hnsw"
    is_exact = False
    tuned_: dict[str, float] | None = None  # what `tune` chose, when it ran

    def __init__(
        self,
        M: int = 32,  # noqa: N803 (the name every HNSW paper and FAISS use)
        ef_construction: int = 128,
        ef_search: int = 128,
        broad: Literal["overfetch", "selector"] = "overfetch",
        overfetch_margin: float = 1.5,
        ef_scale: float = 1.6,
        walk_cost: float = 100.0,
        max_ef: int = 4096,
    ):
        self.M, self.ef_construction, self.ef_search = M, ef_construction, ef_search
        self.broad, self.overfetch_margin, self.ef_scale = broad, overfetch_margin, ef_scale
        self.walk_cost, self.max_ef = walk_cost, max_ef

    def _new_index(self, dim: int) -> Any:
        index = faiss.IndexHNSWFlat(dim, self.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _flat(self) -> Any:
        return faiss.downcast_index(self.index_.storage)

    def params(self) -> dict[str, Any]:
        keys = ("M", "ef_construction", "ef_search", "broad", "overfetch_margin", "ef_scale")
        return {key: getattr(self, key) for key in (*keys, "walk_cost", "max_ef")}

    def tune(
        self,
        queries: np.ndarray,
        k: int = 100,
        target: float = TUNE_TARGET,
        ladder: tuple[int, ...] = EF_LADDER,
    ) -> dict[str, float]:
        """Set ef_search to the smallest value on `ladder` whose recall@k against exact search
        reaches `target` on `queries` (real user vectors: two-tower queries sit away from the
        items they retrieve, where a graph built on items needs a wider walk).

        Returns {"ef_search", "recall"} as chosen (the ladder's top when none reaches target).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        truth = self._exact_subset(queries, k, np.arange(len(self)))[1]
        recall = 0.0
        for ef in ladder:
            found = self._walk(queries, k, ef)[1]
            recall = float(
                np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth, strict=True)])
            )
            self.ef_search = ef
            if recall >= target:
                break
        return {"ef_search": self.ef_search, "recall": recall}

    def _effort(self, k: int, share: float) -> int:
        """efSearch of the first filtered walk (for 'overfetch' also the number fetched)."""
        scale = self.overfetch_margin if self.broad == "overfetch" else self.ef_scale
        return max(self.ef_search, k, math.ceil(scale * k / share))

    def _subset_is_cheaper(self, count: int, k: int) -> bool:
        return count <= self.walk_cost * self._effort(k, count / len(self))

    def _walk(self, queries: np.ndarray, k: int, ef: int, sel: Any = None) -> tuple[Any, Any]:
        params = faiss.SearchParametersHNSW(efSearch=max(ef, k))
        if sel is not None:
            params.sel = sel
        return self.index_.search(queries, k, params=params)

    def _search_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._walk(queries, k, self.ef_search)

    def _search_filtered(
        self, queries: np.ndarray, k: int, mask: np.ndarray, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n, want = len(self), min(k, count)
        scores, pos = _empty(len(queries), k)
        todo = np.arange(len(queries))  # rows still short of `want` results
        bits = np.packbits(mask, bitorder="little")  # kept alive while FAISS reads it
        sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # size in bytes
        effort = min(self._effort(k, count / n), n)
        while True:
            if self.broad == "selector":
                s, p = self._walk(queries[todo], k, effort, sel)  # (t, k)
            else:
                s, p = self._overfetch(queries[todo], k, effort, mask)
            scores[todo], pos[todo] = s, p
            todo = todo[(p >= 0).sum(axis=1) < want]
            effort *= 2
            if not len(todo) or effort > self.max_ef or self.walk_cost * effort >= count:
                break
        if len(todo):  # the graph did not reach enough allowed items: exact for these rows
            scores[todo], pos[todo] = self._exact_subset(queries[todo], k, np.flatnonzero(mask))
        return scores, pos

    def _overfetch(
        self, queries: np.ndarray, k: int, fetch: int, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered top-`fetch`, then the first k allowed of each row, order kept."""
        s, p = self._walk(queries, fetch, fetch)  # (t, fetch)
        keep = (p >= 0) & mask[np.maximum(p, 0)]
        first = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # allowed first, in rank order
        s, p = np.take_along_axis(s, first, 1), np.take_along_axis(p, first, 1)
        ok = np.take_along_axis(keep, first, 1)
        return np.where(ok, s, -np.inf), np.where(ok, p, -1)


def _empty(q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((q, k), -np.inf, np.float32), np.full((q, k), -1, np.int64)


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.is_file() or not (folder / INDEX_FILE).is_file():
        raise WorkspaceError(
            f"no item index in {folder}: run `shortlist build --source DIR` (or `shortlist "
            "index` after `shortlist train retrieval`)"
        )
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise WorkspaceError(f"the index in {folder} has format {meta.get('format_version')}")
    return meta


INDEX_KINDS: dict[str, type[ExactIndex] | type[HNSWIndex]] = {
    "exact": ExactIndex,
    "hnsw": HNSWIndex,
}


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    exact_below: int = DEFAULT_EXACT_BELOW,
    **hnsw_params: Any,
) -> ExactIndex | HNSWIndex:
    """Exact for catalogues of at most `exact_below` items, HNSW (with `hnsw_params`) above."""
    if len(vectors) <= exact_below:
        return ExactIndex().build(vectors, ids)
    return HNSWIndex(**hnsw_params).build(vectors, ids)


def index_vectors(
    vectors: np.ndarray, queries: np.ndarray | None = None, *, exact_below: int | None = None
) -> ExactIndex | HNSWIndex:
    """The index over a model's item vectors (ids 0..n-1): exact for small catalogues, else
    HNSW with its search effort tuned on `queries` (recent users' vectors), when given."""
    index = build_index(
        vectors,
        np.arange(len(vectors), dtype=np.int64),
        exact_below=DEFAULT_EXACT_BELOW if exact_below is None else exact_below,
    )
    if isinstance(index, HNSWIndex) and queries is not None and len(queries):
        index.tuned_ = index.tune(queries, k=min(100, len(vectors)))
    return index


def load_index(
    folder: Path, *, model: str | None = None, mmap: bool = True
) -> ExactIndex | HNSWIndex:
    """Whichever index was saved in `folder`.

    Raises:
        WorkspaceError: no index there, or (when `model` is given) one built from the vectors
        of another model than the one with that fingerprint.
    """
    meta = _read_meta(Path(folder))
    kind = meta["kind"]
    if kind not in INDEX_KINDS:
        raise WorkspaceError(f"unknown index kind '{kind}' in {folder}")
    if model is not None and meta.get("model") != model:
        raise WorkspaceError(
            f"the index in {folder} was built from another model's item vectors than the "
            f"two-tower now in the workspace (retrained since?): run `shortlist index`"
        )
    return INDEX_KINDS[kind].load(Path(folder), mmap=mmap)
