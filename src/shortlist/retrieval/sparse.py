"""Sparse row arithmetic in plain numpy, for the request path.

A request is a batch of one user: scipy's sparse products cost tens of microseconds per call in
object construction and checks, a dozen calls per source. These helpers work on a CSR matrix's
arrays directly, as (row, column, value) entries grouped by row, and pick the top k per row with
one sort, so the same code serves one user in microseconds and a batch of thousands.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

Entries = tuple[np.ndarray, np.ndarray, np.ndarray]  # row (int64), column (int64), value
#: rows from which scipy's product wins: its per-call overhead is amortised and it sums with a
#: dense accumulator per row where the numpy path sorts every product entry
SCIPY_ROWS = 32


def gather_rows(m: sp.csr_matrix, rows: np.ndarray) -> Entries:
    """The stored entries of `rows` of m, as (position in `rows`, column, value)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = m.indptr[rows].astype(np.int64)
    lengths = m.indptr[rows + 1].astype(np.int64) - starts
    total = int(lengths.sum())
    if total == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, m.dtype)
    # entry j of row i sits at starts[i] + j: a run of consecutive positions per row
    offsets = np.cumsum(lengths) - lengths
    at = np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, lengths)
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    return owner, m.indices[at].astype(np.int64), m.data[at]


def sum_duplicates(row: np.ndarray, col: np.ndarray, value: np.ndarray) -> Entries:
    """One entry per (row, column), values summed; sorted by row, then column."""
    if len(row) == 0:
        return row, col, value
    key = (row << 32) | col
    unique, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=value, minlength=len(unique))
    return unique >> 32, unique & 0xFFFFFFFF, summed


def drop_entries(entries: Entries, banned: Entries) -> Entries:
    """`entries` without the (row, column) pairs present in `banned` (values ignored)."""
    row, col, value = entries
    if len(row) == 0 or len(banned[0]) == 0:
        return entries
    keep = ~np.isin((row << 32) | col, (banned[0] << 32) | banned[1])
    return row[keep], col[keep], value[keep]


def row_products(
    a: sp.csr_matrix, b: sp.csr_matrix, rows: np.ndarray, exclude: sp.csr_matrix | None = None
) -> Entries:
    """The entries of (a[rows] @ b), without the (row, column) pairs stored in exclude[rows];
    grouped by row with ascending columns, as `top_k_entries` wants. a, b, exclude: sorted CSR
    matrices with positive values (so no product sums to zero)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < SCIPY_ROWS:
        owner, middle, weight = gather_rows(a, rows)
        of, col, value = gather_rows(b, middle)
        entries = sum_duplicates(owner[of], col, weight[of] * value)
        return entries if exclude is None else drop_entries(entries, gather_rows(exclude, rows))
    product = (a[rows] @ b).tocsr()
    if exclude is not None:
        product = (product - product.multiply(exclude[rows] > 0)).tocsr()
        product.eliminate_zeros()
    product.sort_indices()
    return gather_rows(product, np.arange(len(rows)))


def descending_key(values: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the values' descending order (NaN last)."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    # IEEE floats order like sign-magnitude integers: flip negatives, set the sign bit of
    # positives, and the result orders like the values; inverting it orders them descending.
    ascending = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
    key = ~ascending
    return np.where(np.isnan(values), np.uint32(0xFFFFFFFF), key)


def rank_in_row(row: np.ndarray, value: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts entries by row, then value descending (ties keep their order), and
    each sorted entry's 0-based rank within its row."""
    key = (row.astype(np.uint64) << np.uint64(32)) | descending_key(value).astype(np.uint64)
    order = np.argsort(key, kind="stable")
    sorted_row = row[order]
    return order, np.arange(len(order)) - np.searchsorted(sorted_row, np.arange(n_rows))[sorted_row]


def top_k_entries(entries: Entries, n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k highest values and their columns (ties by column), -1/NaN padded.

    Entries must be grouped by row with ascending columns inside a row (what `gather_rows`
    of a sorted CSR matrix and `sum_duplicates` give): one stable sort by (row, value) keeps it.
    """
    row, col, value = entries
    items = np.full((n_rows, k), -1, np.int32)
    scores = np.full((n_rows, k), np.nan, np.float32)
    if len(row) == 0 or k == 0:
        return items, scores
    order, rank = rank_in_row(row, value, n_rows)
    keep = rank < k
    at = order[keep]
    items[row[at], rank[keep]] = col[at]
    scores[row[at], rank[keep]] = value[at]
    return items, scores


def truncate_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """m with only the k largest entries of each row (ties by column) kept."""
    m = m.tocsr()
    m.sort_indices()
    row, col, value = gather_rows(m, np.arange(m.shape[0]))
    order, rank = rank_in_row(row, value, m.shape[0])
    keep = np.sort(order[rank < k])  # back to (row, column) order
    out = sp.csr_matrix((value[keep], (row[keep], col[keep])), shape=m.shape)
    out.sort_indices()
    return out


def top_k_products(
    a: sp.csr_matrix, b: sp.csr_matrix, rows: np.ndarray, k: int, exclude: sp.csr_matrix | None,
    batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per row of a[rows] @ b (pairs stored in exclude[rows] left out), the k best columns and
    values; `batch` rows at a time bound the temporary entries."""
    rows = np.asarray(rows, dtype=np.int64)
    items = np.full((len(rows), k), -1, np.int32)
    scores = np.full((len(rows), k), np.nan, np.float32)
    for lo in range(0, len(rows), batch):
        part = rows[lo : lo + batch]
        entries = row_products(a, b, part, exclude)
        items[lo : lo + batch], scores[lo : lo + batch] = top_k_entries(entries, len(part), k)
    return items, scores


def csr_state(m: sp.csr_matrix | None) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays (what a saved pipeline writes); {} for None."""
    if m is None:
        return {}
    return {
        "data": m.data,
        "indices": m.indices,
        "indptr": m.indptr,
        "shape": np.asarray(m.shape, np.int64),
    }


def csr_restore(arrays: dict[str, np.ndarray]) -> sp.csr_matrix | None:
    """The matrix `csr_state` wrote, over the given arrays (memory-mapped ones stay mapped:
    nothing is copied or re-sorted; the saved matrix had its indices sorted)."""
    if not arrays:
        return None
    m = sp.csr_matrix(
        (arrays["data"], arrays["indices"], arrays["indptr"]),
        shape=tuple(int(s) for s in arrays["shape"]),
        copy=False,
    )
    m.has_sorted_indices = True
    return m
