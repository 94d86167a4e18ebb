"""`shortlist evaluate --search`: how well search finds what it should, with judgments built
from the data (there are no query logs).

1. **Relevance from the attributes.** Queries made of attribute values, as a shopper types
   them: a colour and a product type ("Black Trousers": every item with both values is
   relevant), and a phrase of an item's description (four consecutive words: every item whose
   description holds the phrase is relevant). Each is searched by the lexical side alone, the
   semantic side alone and both fused (no user, no filter): NDCG@24 (binary relevance) and
   recall@100, the share of the first min(relevant, 100) relevant items found in the first 100
   (capped: "Black Trousers" has more relevant items than fit in 100). The attributes are the
   text index's first two refinement attributes (product type, then what tells most beyond
   it: the colour, on H&M data). Fused with a random buyer's personal order too, to see what
   personalization costs in relevance.
2. **Personalization from purchases.** For the purchases of the protocol's target windows
   (eval/protocol.py), the pipeline fitted before each window's cutoff (as `evaluate --methods
   pipeline` fits it), the buyer searches the purchased item's product type (the first
   refinement attribute's value, e.g. "Trousers"): the purchased item's rank with and without
   personalization (the same filters), as MRR (the reciprocal of the rank, 0 beyond 100) and
   hits in the first 24, with their standard errors over purchases and a paired bootstrap
   interval of the ratio (eval/uncertainty.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from shortlist import resources
from shortlist.config import AttributeKind, Settings
from shortlist.data.arrays import Dataset, from_us
from shortlist.errors import ConfigError, WorkspaceError
from shortlist.eval.protocol import windows
from shortlist.eval.uncertainty import compare, standard_error, window_mean
from shortlist.pipeline.core import Pipeline
from shortlist.pipeline.search import run_search
from shortlist.progress import scope, track
from shortlist.ranking.metrics import ndcg
from shortlist.retrieval.text import TextIndex, fold, items_digest, load_text_index
from shortlist.workspace import Workspace

K = 24  # results a search page shows: NDCG@24, hits@24
DEEP = 100  # recall@100; a purchased item beyond it scores 0 in MRR
MODES = ("lexical", "semantic", "fused")
PHRASE_WORDS = 4


@dataclass(frozen=True)
class Judged:
    """A generated query and the items relevant to it (idx)."""

    query: str
    kind: str  # "attributes" or "phrase"
    relevant: np.ndarray


def attribute_queries(
    items: pd.DataFrame, attributes: Sequence[str], n: int, rng: np.random.Generator
) -> list[Judged]:
    """Up to n distinct queries "<second value> <first value>" ("Black Trousers") from random
    items' values of the first two `attributes`; relevant: the items with both values."""
    if len(attributes) < 2 or not len(items):
        return []
    first, second = items[attributes[0]], items[attributes[1]]
    have = np.flatnonzero((first.notna() & second.notna()).to_numpy())
    out: dict[str, Judged] = {}
    for row in rng.permutation(have)[: n * 4].tolist():
        a, b = first.iloc[row], second.iloc[row]
        query = f"{b} {a}"
        if query in out:
            continue
        relevant = np.flatnonzero(((first == a) & (second == b)).to_numpy())
        out[query] = Judged(query, "attributes", relevant)
        if len(out) >= n:
            break
    return list(out.values())


def phrase_queries(
    items: pd.DataFrame, field: str | None, n: int, rng: np.random.Generator
) -> list[Judged]:
    """Up to n distinct phrases of PHRASE_WORDS consecutive words from random items' `field`
    (the longest text attribute: descriptions); relevant: the items whose text holds it."""
    if field is None or not len(items):
        return []
    texts = items[field].astype("string").fillna("")
    folded = pd.Series([" " + " ".join(re.findall(r"\w+", fold(t))) + " " for t in texts])
    out: dict[str, Judged] = {}
    for row in rng.permutation(len(items))[: n * 4].tolist():
        words = re.findall(r"\w+", str(texts.iloc[row]))
        if len(words) < PHRASE_WORDS + 2:
            continue
        start = int(rng.integers(0, len(words) - PHRASE_WORDS + 1))
        phrase = " ".join(words[start : start + PHRASE_WORDS])
        key = " " + " ".join(re.findall(r"\w+", fold(phrase))) + " "
        if phrase in out:
            continue
        relevant = np.flatnonzero(folded.str.contains(key, regex=False).to_numpy())
        out[phrase] = Judged(phrase, "phrase", relevant)
        if len(out) >= n:
            break
    return list(out.values())


def capped_recall(ranked: Sequence[int], relevant: np.ndarray, k: int = DEEP) -> float:
    """Relevant items in the first k over min(relevant, k)."""
    if not len(relevant):
        return 0.0
    return len(set(ranked[:k]) & set(relevant.tolist())) / min(len(relevant), k)


def judge(text: TextIndex, queries: list[Judged]) -> dict[str, dict[str, list[float]]]:
    """Per query kind and mode, the per-query NDCG@24 and recall@100 lists."""
    out: dict[str, dict[str, list[float]]] = {}
    vectors = _embed(text, [q.query for q in queries])
    with track("Searching the judged queries", total=len(queries)) as advance:
        for q in queries:
            for mode in MODES:
                if mode != "lexical" and text.semantic_ is None:
                    continue
                ranked = text.search(q.query, DEEP, mode=mode, vector=vectors.get(q.query))
                row = ranked.items.tolist()
                for key in (q.kind, "all"):
                    got = out.setdefault(f"{key}/{mode}", {"ndcg": [], "recall": []})
                    got["ndcg"].append(ndcg(row, q.relevant.tolist(), K))
                    got["recall"].append(capped_recall(row, q.relevant))
            advance()
    return out


def _embed(text: TextIndex, queries: Sequence[str]) -> dict[str, np.ndarray]:
    """Each distinct query's vector, computed as a served query's is, {} without a semantic
    side."""
    if text.encoder is None:
        return {}
    return {q: text.encoder.query(q) for q in dict.fromkeys(queries)}


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()) if len(a) else 0.0, "se": standard_error([a])}


def evaluate_search(
    workspace: Workspace,
    *,
    source: str | None = None,
    format: str | None = None,
    n_windows: int = 1,
    holdout_days: int = 7,
    queries: int = 200,
    purchases: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The report of `shortlist evaluate --search` (see the module): `queries` judged queries
    of each kind, at most `purchases` purchases per window for the personalization.

    The workspace's text index serves when it was built from the offline store now in the
    workspace with the current [search] settings; otherwise one is built in memory.
    """
    from shortlist.data.arrays import load_dataset
    from shortlist.data.ingest import ingest, is_current
    from shortlist.data.offline import OfflineStore

    settings = workspace.settings()
    resources.configure(settings)
    if source is not None and not is_current(workspace, source, format):
        ingest(workspace, source, format=format)
    data = load_dataset(OfflineStore(workspace))
    started = time.perf_counter()
    items = data.items if data.items is not None else pd.DataFrame(index=range(data.n_items))
    try:
        text = load_text_index(workspace, settings.search, items=items_digest(items))
        built = "the workspace's"
    except WorkspaceError:
        with scope("search index (in memory)"):
            text = TextIndex.build(items, data.item_kinds, settings.search, data=data.fingerprint)
        built = "built in memory"
    index_seconds = time.perf_counter() - started
    report = search_report(
        data,
        text,
        settings,
        n_windows=n_windows,
        holdout_days=holdout_days,
        queries=queries,
        purchases=purchases,
        seed=seed,
    )
    report["index"]["source"] = built
    report["index"]["seconds"] = round(index_seconds, 3)
    return report


def search_report(
    data: Dataset,
    text: TextIndex,
    settings: Settings,
    *,
    n_windows: int = 1,
    holdout_days: int = 7,
    queries: int = 200,
    purchases: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """`evaluate_search` on loaded data and a text index."""
    if n_windows < 1 or holdout_days < 1 or queries < 0 or purchases < 1:
        raise ConfigError("windows, holdout days and purchases must be at least 1")
    rng = np.random.default_rng(seed)
    items = data.items if data.items is not None else pd.DataFrame(index=range(data.n_items))
    texts = [f for f in text.fields if data.item_kinds.get(f) == AttributeKind.TEXT]
    longest = (
        max(texts, key=lambda f: items[f].astype("string").str.len().mean()) if texts else None
    )
    judged = attribute_queries(items, text.facets, queries, rng)
    judged += phrase_queries(items, longest, queries, rng)
    relevance = judge(text, judged)
    report: dict[str, Any] = {
        "dataset": {
            "users": data.n_users,
            "items": data.n_items,
            "interactions": len(data.interactions),
        },
        "index": {
            "fields": text.fields,
            "facets": text.facets,
            "semantic": text.meta.get("semantic_index"),
            "settings": {
                k: getattr(text.settings, k)
                for k in (
                    "min_match",
                    "lexical_k",
                    "semantic_k",
                    "semantic_min_score",
                    "rrf_k",
                    "personal_k",
                    "personal_weight",
                )
            },  # fmt: skip
        },
        "relevance": {
            "queries": {
                "attributes": sum(q.kind == "attributes" for q in judged),
                "phrase": sum(q.kind == "phrase" for q in judged),
            },
            "attributes": text.facets[:2],
            "phrase_field": longest,
            "k": K,
            "deep": DEEP,
            "results": {
                key: {
                    f"ndcg@{K}": _summary(v["ndcg"]),
                    f"recall@{DEEP}": _summary(v["recall"]),
                }
                for key, v in relevance.items()
            },
        },
    }
    if text.facets:
        report["personalization"] = personalization(
            data, text, settings, judged, n_windows, holdout_days, purchases, rng
        )
    return report


def personalization(
    data: Dataset,
    text: TextIndex,
    settings: Settings,
    judged: list[Judged],
    n_windows: int,
    holdout_days: int,
    purchases: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The purchased item's rank for its buyer searching its product type, with and without
    personalization, per window (see the module); and, in the last window, the relevance of
    the attribute queries searched by a random buyer."""
    attribute = text.facets[0]
    values = data.items[attribute] if data.items is not None else None
    assert values is not None
    inter = data.interactions
    wins = windows(int(inter.time[-1]), holdout_days, n_windows)
    if wins[0].cutoff <= int(inter.time[0]):
        raise ConfigError(
            f"{n_windows} window(s) of {holdout_days} days leave no history before the first "
            f"cutoff {from_us(wins[0].cutoff):%Y-%m-%d}; use fewer windows or shorter ones",
            key="windows",
        )
    past = replace(data, rules=data.rules.as_of_past()) if data.rules is not None else data
    rr: dict[str, list[np.ndarray]] = {"non_personal": [], "personalized": []}
    hits: dict[str, list[np.ndarray]] = {"non_personal": [], "personalized": []}
    per_window = []
    personal_relevance: dict[str, dict[str, list[float]]] = {}
    vectors = _embed(text, [str(v) for v in pd.unique(values.dropna())])
    with track("Searching the purchases' product types", total=len(wins)) as advance:
        for i, win in enumerate(wins, 1):
            with scope(f"window {i}/{len(wins)} (cutoff {from_us(win.cutoff):%Y-%m-%d})"):
                started = time.perf_counter()
                pipeline = Pipeline(settings=settings.pipeline).fit(past, win.cutoff, settings)
                funnel = pipeline.funnel_
                assert funnel is not None
                fit_seconds = time.perf_counter() - started
                window = inter.between(win.cutoff, win.end)
                pairs = np.unique(np.stack([window.user, window.item]).astype(np.int64), axis=1)
                pairs = pairs[:, values.notna().to_numpy()[pairs[1]]]
                if pairs.shape[1] > purchases:
                    pairs = pairs[:, np.sort(rng.choice(pairs.shape[1], purchases, replace=False))]
                got = {m: np.zeros(pairs.shape[1]) for m in rr}
                top = {m: np.zeros(pairs.shape[1]) for m in rr}
                started = time.perf_counter()
                for j, (user, item) in enumerate(pairs.T.tolist()):
                    query = str(values.iloc[item])
                    target = str(funnel.catalog.item_ids[item])
                    for mode in rr:
                        result = run_search(
                            funnel, text, query, user, {}, k=DEEP,
                            personalize=mode == "personalized", vector=vectors.get(query),
                        )  # fmt: skip
                        ids = result.item_ids
                        if target in ids:
                            rank = ids.index(target) + 1
                            got[mode][j] = 1.0 / rank
                            top[mode][j] = float(rank <= K)
                search_seconds = time.perf_counter() - started
                for mode in rr:
                    rr[mode].append(got[mode])
                    hits[mode].append(top[mode])
                per_window.append(
                    {
                        "cutoff": from_us(win.cutoff).isoformat(),
                        "purchases": int(pairs.shape[1]),
                        **{f"mrr_{m}": float(got[m].mean()) if len(got[m]) else 0.0 for m in rr},
                        "fit_seconds": round(fit_seconds, 1),
                        "search_ms": round(1000 * search_seconds / max(2 * pairs.shape[1], 1), 2),
                    }
                )
                if i == len(wins):
                    personal_relevance = _personal_relevance(
                        funnel, text, judged, np.unique(window.user), rng
                    )
            advance()
    out: dict[str, Any] = {
        "query_attribute": attribute,
        "windows": n_windows,
        "holdout_days": holdout_days,
        "purchases": int(sum(len(x) for x in rr["personalized"])),
        "deep": DEEP,
        "k": K,
    }
    for mode in rr:
        out[mode] = {
            "mrr": window_mean(rr[mode]),
            "mrr_se": standard_error(rr[mode]),
            f"hit@{K}": window_mean(hits[mode]),
            f"hit@{K}_se": standard_error(hits[mode]),
        }
    out["compared"] = compare("personalized", rr["personalized"], "non_personal",
                              rr["non_personal"]).to_dict()  # fmt: skip
    diff = np.concatenate([p - n for p, n in zip(rr["personalized"], rr["non_personal"],
                                                 strict=True)])  # fmt: skip
    out["difference"] = {"mrr": float(diff.mean()) if len(diff) else 0.0,
                         "mrr_se": standard_error([diff]) if len(diff) else 0.0}  # fmt: skip
    out["per_window"] = per_window
    out["relevance_with_a_user"] = {
        mode: {f"ndcg@{K}": _summary(v["ndcg"]), f"recall@{DEEP}": _summary(v["recall"])}
        for mode, v in personal_relevance.items()
    }
    return out


def _personal_relevance(
    funnel: Any, text: TextIndex, judged: list[Judged], buyers: np.ndarray, rng: np.random.Generator
) -> dict[str, dict[str, list[float]]]:
    """The attribute queries, each searched by a random buyer of the window, with and without
    personalization (the same buyer's filters both ways)."""
    out: dict[str, dict[str, list[float]]] = {
        mode: {"ndcg": [], "recall": []} for mode in ("non_personal", "personalized")
    }
    attributes = [q for q in judged if q.kind == "attributes"]
    if not len(buyers) or not attributes:
        return out
    vectors = _embed(text, [q.query for q in attributes])
    index = pd.Index(funnel.catalog.item_ids)
    for q in attributes:
        user = int(rng.choice(buyers))
        for mode, got in out.items():
            result = run_search(
                funnel, text, q.query, user, {}, k=DEEP,
                personalize=mode == "personalized", vector=vectors.get(q.query),
            )  # fmt: skip
            row = index.get_indexer(result.item_ids).tolist()
            got["ndcg"].append(ndcg(row, q.relevant.tolist(), K))
            got["recall"].append(capped_recall(row, q.relevant))
    return out


# -- on the terminal ---------------------------------------------------------------------------


def search_tables(report: dict[str, Any]) -> list[Any]:
    """The report of `evaluate --search` as rich tables: relevance by query kind and side,
    then personalization."""
    from rich.table import Table

    rel = report["relevance"]
    k, deep = rel["k"], rel["deep"]
    q = rel["queries"]
    table = Table(
        title=f"Search relevance: {q['attributes']} attribute queries "
        f"({' + '.join(rel['attributes'][::-1]) or 'none'}), {q['phrase']} phrases of "
        f"{rel['phrase_field'] or 'no text'}",
        title_justify="left",
    )
    for col in ("queries", "side", f"NDCG@{k} ± se", f"recall@{deep} ± se"):
        table.add_column(col, justify="left" if col in ("queries", "side") else "right")
    kinds = {"attributes": 0, "phrase": 1, "all": 2}
    order = sorted(rel["results"], key=lambda key: kinds.get(key.split("/")[0], 3))
    for key in order:
        m = rel["results"][key]
        kind, mode = key.split("/")
        n, r = m[f"ndcg@{k}"], m[f"recall@{deep}"]
        table.add_row(
            kind, mode, f"{n['mean']:.4f} ± {n['se']:.4f}", f"{r['mean']:.4f} ± {r['se']:.4f}"
        )
    tables: list[Any] = [table]
    p = report.get("personalization")
    if p:
        c = p["compared"]
        lo, hi = c["ci95"]
        per = Table(
            title=f"Personalization: {p['purchases']:,} purchases of {p['windows']} window(s), "
            f"each searched by its buyer as its {p['query_attribute']}",
            title_justify="left",
        )
        for col in ("order", "MRR ± se", f"hit@{p['k']} ± se", "vs non-personal [95% CI] wins"):
            per.add_column(col, justify="left" if col == "order" else "right")
        for mode in ("non_personal", "personalized"):
            m = p[mode]
            vs = (
                f"{c['ratio']:.2f}x [{lo:.2f}-{hi:.2f}] {c['windows_won']}/{c['windows']}"
                if mode == "personalized" and c["ratio"] is not None
                else ""
            )
            hit, hit_se = m[f"hit@{p['k']}"], m[f"hit@{p['k']}_se"]
            per.add_row(
                mode.replace("_", "-"),
                f"{m['mrr']:.4f} ± {m['mrr_se']:.4f}",
                f"{hit:.4f} ± {hit_se:.4f}",
                vs,
            )
        tables.append(per)
        with_user = p.get("relevance_with_a_user") or {}
        if with_user:
            cost = Table(
                title="The attribute queries searched by a random buyer of the last window",
                title_justify="left",
            )
            for col in ("order", f"NDCG@{k} ± se", f"recall@{deep} ± se"):
                cost.add_column(col, justify="left" if col == "order" else "right")
            for mode, m in with_user.items():
                n, r = m[f"ndcg@{k}"], m[f"recall@{deep}"]
                cost.add_row(
                    mode.replace("_", "-"),
                    f"{n['mean']:.4f} ± {n['se']:.4f}",
                    f"{r['mean']:.4f} ± {r['se']:.4f}",
                )
            tables.append(cost)
    return tables
