"""Turning item and user attributes into the two-tower model's inputs: hashed token bags, numbers.

Categorical values become `attribute=value` tokens and text becomes word and character-trigram
tokens; both are hashed (crc32, stable across runs and machines) into fixed-size tables, so an
item never seen in training, or a value never seen before, still gets an embedding.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shortlist.config import AttributeKind
from shortlist.data.memo import per_table

PAD = 0  # token id 0 is padding; hashed tokens land in 1..buckets-1
_WORD = re.compile(r"[a-z0-9]+")


def _hash(tokens: list[str], buckets: int) -> np.ndarray:
    return np.fromiter(
        (1 + zlib.crc32(t.encode()) % (buckets - 1) for t in tokens), np.int64, len(tokens)
    )


def text_tokens(text: str, max_words: int = 48) -> list[str]:
    """Words and character trigrams of words (so 'tee' matches 't-shirt' partly)."""
    words = _WORD.findall(text.lower())[:max_words]
    grams = [f"#{w[i : i + 3]}" for w in words if len(w) > 3 for i in range(len(w) - 2)]
    return words + grams


def _pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(rows), width), PAD, np.int64)
    for i, r in enumerate(rows):
        out[i, : min(width, len(r))] = r[:width]
    return out


def token_matrix(token_lists: list[list[str]], buckets: int, width: int) -> np.ndarray:
    """(n, width) hashed token ids, PAD-filled. Hashes each distinct token once."""
    distinct = sorted({t for toks in token_lists for t in toks})
    ids = dict(zip(distinct, _hash(distinct, buckets).tolist(), strict=True))
    return _pad(
        [np.fromiter((ids[t] for t in toks), np.int64, len(toks)) for toks in token_lists], width
    )


@dataclass(frozen=True)
class NumericStats:
    """Mean and std per numeric column, learned on training data, saved with the model."""

    names: list[str]
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, frame: pd.DataFrame, names: list[str]) -> NumericStats:
        values = frame[names].to_numpy(np.float64) if names else np.zeros((len(frame), 0))
        mean = np.nan_to_num(np.nanmean(values, axis=0)) if len(values) else np.zeros(len(names))
        std = np.nan_to_num(np.nanstd(values, axis=0)) if len(values) else np.ones(len(names))
        return cls(names, mean.tolist(), np.where(std > 0, std, 1.0).tolist())

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, 2 * columns): standardized value (0 when missing) and a missing flag."""
        if not self.names:
            return np.zeros((len(frame), 0), np.float32)
        values = frame[self.names].to_numpy(np.float64)
        missing = np.isnan(values)
        z = np.where(missing, 0.0, (values - np.array(self.mean)) / np.array(self.std))
        return np.hstack([np.clip(z, -5, 5), missing]).astype(np.float32)


@dataclass(frozen=True)
class EncodedTable:
    """Model inputs for every row of an item or user table (row i is idx i)."""

    categorical: np.ndarray  # (n, width) hashed `attr=value` tokens
    text: np.ndarray  # (n, width) hashed word/trigram tokens; (n, 0) without text attributes
    numeric: np.ndarray  # (n, 2 * numeric columns) float32


def encode_table(
    frame: pd.DataFrame,
    kinds: dict[str, AttributeKind],
    stats: NumericStats,
    *,
    cat_buckets: int,
    text_buckets: int,
    text_width: int = 64,
) -> EncodedTable:
    """Encode the attribute columns of `frame` (sorted by idx) as the towers expect (once per
    table object and arguments: each training of an evaluation encodes the same tables)."""
    numeric = (tuple(stats.names), tuple(stats.mean), tuple(stats.std))
    key = ("encode_table", tuple(kinds.items()), numeric, cat_buckets, text_buckets, text_width)
    return per_table(
        frame,
        key,
        lambda: _encode_table(frame, kinds, stats, cat_buckets, text_buckets, text_width),
    )


def _encode_table(
    frame: pd.DataFrame,
    kinds: dict[str, AttributeKind],
    stats: NumericStats,
    cat_buckets: int,
    text_buckets: int,
    text_width: int,
) -> EncodedTable:
    cats = [c for c, k in kinds.items() if k == AttributeKind.CATEGORICAL]
    texts = [c for c, k in kinds.items() if k == AttributeKind.TEXT]
    # One column of `attr=value` token ids per attribute (PAD where missing; the bags skip
    # PAD), each distinct value hashed once: vectorized, since user tables have millions of rows.
    categorical = np.full((len(frame), max(1, len(cats))), PAD, np.int64)
    for j, c in enumerate(cats):
        codes, values = pd.factorize(frame[c], use_na_sentinel=True)
        hashed = _hash([f"{c}={v}" for v in values.tolist()], cat_buckets)
        categorical[:, j] = np.where(codes >= 0, hashed[np.maximum(codes, 0)], PAD)
    if texts:
        joined = frame[texts[0]].fillna("").astype(str)
        for c in texts[1:]:
            joined = joined + " " + frame[c].fillna("").astype(str)
        # Variants of one product share their texts: tokenize each distinct text once.
        codes, distinct = pd.factorize(joined)
        per_text = token_matrix(
            [text_tokens(t) for t in distinct.tolist()], text_buckets, text_width
        )
        text = per_text[codes] if len(codes) else np.zeros((0, text_width), np.int64)
    else:
        text = np.zeros((len(frame), 0), np.int64)
    return EncodedTable(categorical, text, stats.transform(frame))
