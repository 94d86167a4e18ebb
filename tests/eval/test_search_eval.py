"""`shortlist evaluate --search`: judged queries made from the attributes, their metrics, and
the personalization measured on a window's purchases (tiny generated data, a fast two-tower
pipeline, the real text index built in memory)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shortlist.data.generator import generate
from shortlist.eval.search import (
    Judged,
    attribute_queries,
    capped_recall,
    phrase_queries,
)
from tests.conftest import write
from tests.test_cli import shortlist

FAST = """
[retrieval]
epochs = 2
max_epochs = 2
min_steps = 0
batch_size = 512
dim = 16
hidden = 32

[pipeline]
ranker = "none"
sources = [{ name = "two_tower", k = 100 }, { name = "trending", k = 50 }]
"""


def test_attribute_queries_judge_every_item_with_both_values():
    items = pd.DataFrame(
        {
            "kind": ["Trousers", "Trousers", "Dress", "Dress", None],
            "shade": ["Black", "Blue", "Black", "Black", "Black"],
        }
    )
    queries = attribute_queries(items, ["kind", "shade"], 10, np.random.default_rng(0))
    by_query = {q.query: q.relevant.tolist() for q in queries}
    assert by_query == {"Black Trousers": [0], "Blue Trousers": [1], "Black Dress": [2, 3]}
    assert attribute_queries(items, ["kind"], 10, np.random.default_rng(0)) == []


def test_phrase_queries_judge_every_item_holding_the_phrase():
    items = pd.DataFrame(
        {
            "notes": [
                "Slim trousers in stretch cotton twill with a zip fly.",
                "Wide trousers in stretch cotton twill, pleated.",
                "Short dress.",
            ]
        }
    )
    queries = phrase_queries(items, "notes", 5, np.random.default_rng(1))
    assert queries and all(len(q.query.split()) == 4 for q in queries)
    for q in queries:
        holding = [i for i, t in enumerate(items["notes"]) if q.query.lower() in t.lower()]
        assert q.relevant.tolist() == holding and q.kind == "phrase"


def test_recall_is_capped_at_the_depth():
    relevant = np.arange(300)
    assert capped_recall(list(range(100)), relevant) == 1.0  # 100 of min(300, 100)
    assert capped_recall([5, 1000], np.array([5, 6])) == 0.5
    assert capped_recall([1], np.zeros(0, np.int64)) == 0.0
    assert Judged("q", "phrase", relevant).relevant is relevant


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("search_eval")
    generate(root / "src", scale="tiny", seed=4)
    write(root / "ws", "shortlist.toml", FAST)
    result = shortlist("-q", "--workspace", str(root / "ws"), "evaluate", "--search",
                       "--source", str(root / "src"), "--format", "hm", "--queries", "20",
                       "--purchases", "100", "--json", str(root / "report.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "Search relevance" in said and "Personalization" in said and "MRR" in said
    return json.loads((root / "report.json").read_text())


def test_relevance_per_query_kind_and_side(report):
    index = report["index"]
    assert index["source"] == "built in memory"  # no build ran: the workspace has none
    assert index["facets"][:2] == ["product_type_name", "colour_group_name"]
    rel = report["relevance"]
    assert rel["queries"] == {"attributes": 20, "phrase": 20}
    assert rel["phrase_field"] == "detail_desc"
    assert set(rel["results"]) == {
        f"{kind}/{mode}"
        for kind in ("attributes", "phrase", "all")
        for mode in ("lexical", "semantic", "fused")
    }
    for figures in rel["results"].values():
        for metric in ("ndcg@24", "recall@100"):
            assert 0 <= figures[metric]["mean"] <= 1 and figures[metric]["se"] >= 0
    # the words of attribute values and phrases are in the items' texts: BM25 finds them
    assert rel["results"]["attributes/lexical"]["recall@100"]["mean"] > 0.9
    assert rel["results"]["phrase/lexical"]["ndcg@24"]["mean"] > 0.5


def test_personalization_on_the_windows_purchases(report):
    p = report["personalization"]
    assert p["query_attribute"] == "product_type_name"
    assert 0 < p["purchases"] <= 100 and p["windows"] == 1
    for mode in ("non_personal", "personalized"):
        assert 0 <= p[mode]["mrr"] <= 1 and p[mode]["mrr_se"] > 0
        assert 0 <= p[mode]["hit@24"] <= 1
    compared = p["compared"]
    assert compared["reference"] == "non_personal" and compared["users"] == p["purchases"]
    low, high = compared["ci95"]
    assert low <= compared["ratio"] <= high
    assert p["difference"]["mrr"] == pytest.approx(
        p["personalized"]["mrr"] - p["non_personal"]["mrr"]
    )
    assert set(p["relevance_with_a_user"]) == {"non_personal", "personalized"}
    (window,) = p["per_window"]
    assert window["purchases"] == p["purchases"] and window["fit_seconds"] > 0
