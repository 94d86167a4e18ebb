"""Personalized search on built workspaces (real BM25, all-MiniLM-L6-v2, two-tower, LightGBM):
`build` indexes the items, `Pipeline.search` matches, filters, personalizes and refines, the
command line answers, a missing or stale index refuses search alone, and the generic layout
works with whatever text and categorical columns its items have."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from shortlist.data.generator import generate
from shortlist.data.offline import OfflineStore
from shortlist.errors import FilterError, RequestError, WorkspaceError
from shortlist.pipeline import Pipeline
from shortlist.pipeline.cold_start import anonymous_chain, anonymous_context, request_segment
from shortlist.retrieval.text import build_text_index, describe_text_index
from shortlist.workspace import open_workspace
from tests.conftest import write
from tests.test_cli import shortlist

# tests/pipeline/test_pipeline.py's FAST settings, the ranker trained with one objective
FAST = """
[retrieval]
epochs = 2
max_epochs = 2
min_steps = 0
batch_size = 512
dim = 32
hidden = 64

[ranking]
weeks = 3
max_weeks = 3
objective = "binary"
max_rounds = 100
"""
SHAPE = {
    "query", "user_id", "items", "facets", "total", "suggestion", "personalized", "cold_start",
    "degraded", "trace",
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    generate(root / "src", scale="tiny", seed=4)
    write(root / "ws", "shortlist.toml", FAST)
    result = shortlist("--workspace", str(root / "ws"), "build", "--source", str(root / "src"),
                       "--format", "hm")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return open_workspace(root / "ws"), " ".join(result.stdout.split())


@pytest.fixture(scope="module")
def ws(built):
    return built[0]


@pytest.fixture(scope="module")
def pipeline(ws) -> Pipeline:
    return Pipeline.from_config(ws).load()


@pytest.fixture(scope="module")
def buyers(ws) -> list[str]:
    """Users with the most purchases, most first."""
    rows = (
        OfflineStore(ws)
        .sql(
            "SELECT u.user_id FROM interactions i JOIN users u USING (user_idx) "
            "GROUP BY u.user_id ORDER BY count(*) DESC, u.user_id LIMIT 10"
        )
        .fetchall()
    )
    return [r[0] for r in rows]


def attribute(pipeline, ids, name) -> list:
    items = pipeline.funnel_.catalog.data.items
    return items[name].iloc[pipeline.funnel_.catalog.item_idx(ids)].tolist()


# -- the index ------------------------------------------------------------------------------------


def test_build_indexes_the_items_for_search(built, pipeline):
    ws, said = built
    assert "search index built" in said and "BM25 over" in said
    meta = json.loads((ws.root / "index" / "text" / "text.json").read_text())
    assert {"prod_name", "detail_desc", "product_type_name", "colour_group_name"} <= set(
        meta["fields"]
    )
    assert not {"product_code", "product_type_no", "colour_group_code"} & set(meta["fields"])
    assert meta["facets"][:2] == ["product_type_name", "colour_group_name"]
    assert pipeline.text_ is not None and pipeline.text_error_ is None
    # built again from the same items (a new build with new purchases): kept, not re-embedded
    again = build_text_index(ws)
    assert again.kept and "the index in place kept" in describe_text_index(again)
    assert json.loads((ws.root / "index" / "text" / "text.json").read_text()) == meta


def test_build_indexes_alongside_the_training_where_the_machine_allows(built, tmp_path):
    """On small data and more than one core, `build` indexes the items in a second process
    while the pipeline trains and waits for it before saving the pipeline; a training that
    fails ends that process instead of waiting for it."""
    import multiprocessing

    from shortlist import resources
    from shortlist.pipeline.build import _SearchIndexing

    ws, said = built
    if resources.side_by_side(10**6):
        assert "indexing the items for search in a second process" in said
    shutil.copytree(ws.root, tmp_path / "ws")
    copy = open_workspace(tmp_path / "ws")
    shutil.rmtree(copy.root / "index" / "text")
    lines: list[str] = []
    stopped = _SearchIndexing(copy, copy.settings().search, True, lines.append)
    assert multiprocessing.active_children()  # the second process runs
    stopped.stop()
    assert not multiprocessing.active_children()
    assert not (copy.root / "index" / "text").exists()
    waited = _SearchIndexing(copy, copy.settings().search, True, lines.append)
    waited()  # what train_pipeline calls before saving
    assert (copy.root / "index" / "text" / "text.json").exists()
    assert "second process" in lines[0] and lines[-1].startswith("    search index built")
    assert waited.seconds > 0 and not multiprocessing.active_children()
    waited.stop()  # once done: nothing left to end


# -- personal, and not ----------------------------------------------------------------------------


def test_two_users_typing_the_same_query_see_different_orders(pipeline, buyers):
    a = pipeline.search("trousers", buyers[0])
    b = pipeline.search("trousers", buyers[1])
    assert a.personalized and b.personalized
    assert not a.cold_start and not a.degraded
    assert a.item_ids != b.item_ids
    assert pipeline.search("trousers", buyers[0]).item_ids == a.item_ids  # deterministic
    body = a.to_dict()
    assert set(body) == SHAPE and body["user_id"] == buyers[0]
    assert len(body["items"]) == 24 == len(set(a.item_ids))
    for item in body["items"]:
        assert set(item["sources"]) <= {"lexical", "semantic", "personal"} and item["sources"]
        assert {"item_id", "score", "price", "product_type_name"} <= set(item)
    assert any("personal" in i["sources"] for i in body["items"])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    (personal,) = [s for s in a.trace if s["stage"] == "personal"]
    funnel = pipeline.funnel_
    expected = funnel.order.name if funnel.order is not None else "ranker"
    assert personal["scorer"].startswith(expected)  # the pipeline's own ranking


def test_without_a_known_user_the_order_is_the_same_for_everyone(pipeline, buyers):
    anonymous = pipeline.search("black trousers")
    unknown = pipeline.search("black trousers", "nobody-at-all")
    assert anonymous.item_ids == unknown.item_ids
    assert not anonymous.personalized and not anonymous.cold_start and anonymous.user_id is None
    assert not unknown.personalized and unknown.cold_start and unknown.user_id == "nobody-at-all"
    plain = pipeline.search("black trousers", buyers[0], personalize=False)
    assert not plain.personalized
    assert all("personal" not in i.sources for i in plain.items)
    assert not any(s["stage"] == "personal" for s in plain.trace)


def test_results_match_the_query(pipeline):
    result = pipeline.search("black trousers", k=10)
    types = attribute(pipeline, result.item_ids[:5], "product_type_name")
    colours = attribute(pipeline, result.item_ids[:5], "colour_group_name")
    assert types == ["Trousers"] * 5 and colours == ["Black"] * 5
    assert result.items[0].sources.get("lexical") and result.items[0].sources.get("semantic")


# -- filters, as in recommendations ---------------------------------------------------------------


def test_business_and_request_filters_apply(pipeline, buyers):
    funnel = pipeline.funnel_
    catalog = funnel.catalog
    rules = catalog.rules
    assert rules is not None and rules.units is not None
    user = buyers[0]
    result = pipeline.search("trousers", user, k=100)
    items = catalog.item_idx(result.item_ids)
    assert not np.any(rules.units[items] <= 0)  # out of stock never shown
    users = np.array([catalog.user_idx(user)])
    ctx = funnel.context(users, {})
    assert funnel.chain.apply(ctx, items[None, :]).keep.all()
    assert result.total >= len(items)
    # an anonymous shopper in a region, of an age
    assert rules.region_names
    context = {"age": 16, "region": rules.region_names[0]}
    anonymous = pipeline.search("trousers", context=context, k=100)
    seg = anonymous_context(funnel, request_segment(funnel, context))
    got = catalog.item_idx(anonymous.item_ids)
    assert anonymous_chain(funnel).apply(seg, got[None, :]).keep.all()
    # the request's own filters and exclusions
    cheap = pipeline.search("trousers", user, {"filters": {"price": {"lte": 0.03}}}, k=50)
    assert cheap.items and all(i.attributes["price"] <= 0.03 for i in cheap.items)
    black = pipeline.search("dress", user, {"filters": {"colour_group_name": "Black"}}, k=50)
    assert set(attribute(pipeline, black.item_ids, "colour_group_name")) == {"Black"}
    first = result.item_ids[0]
    assert first not in pipeline.search("trousers", user, {"exclude": [first]}).item_ids


def test_facets_count_the_matches_and_refine_them(pipeline):
    result = pipeline.search("trousers")
    text = pipeline.text_
    assert result.facets and len(result.facets) <= text.settings.max_facets
    assert list(result.facets) == [f for f in text.facets if f in result.facets]
    for values in result.facets.values():
        counts = [v["count"] for v in values]
        assert len(values) >= 2 and counts == sorted(counts, reverse=True)
        assert sum(counts) <= result.total
    name, values = next(iter(result.facets.items()))
    value, count = values[0]["value"], values[0]["count"]
    refined = pipeline.search("trousers", context={"filters": {name: {"in": [value]}}})
    assert refined.total == count
    assert set(attribute(pipeline, refined.item_ids, name)) == {value}


# -- no result, errors ----------------------------------------------------------------------------


def test_a_query_without_result_says_so_and_suggests_the_closest(pipeline):
    nothing = pipeline.search("qzxv plorkt")
    assert nothing.items == [] and nothing.total == 0 and nothing.suggestion is None
    assert nothing.facets == {}
    assert pipeline.search("blak trousrs").suggestion == "black trousers"
    assert pipeline.search("black trousers unicornz").suggestion == "black trousers"
    assert pipeline.search("black trousers").suggestion is None


@pytest.mark.parametrize(
    ("query", "kw", "error", "message"),
    [
        ("", {}, RequestError, "query: the query is empty"),
        ("   ", {}, RequestError, "query: the query is empty"),
        ("x" * 201, {}, RequestError, "query: at most 200 characters, got 201"),
        ("dress", {"k": 0}, RequestError, "k: must be a whole number from 1 to 1000, got 0"),
        ("dress", {"context": {"region": "atlantis"}}, RequestError, "region: unknown region"),
        ("dress", {"context": {"age": 200}}, RequestError, "age: must be from 0 to 150"),
        ("dress", {"context": {"cart": ["x"]}}, RequestError, "context: unknown context key"),
        ("dress", {"context": {"filters": {"nope": 1}}}, FilterError, "unknown attribute"),
    ],
)
def test_bad_requests_name_the_field(pipeline, query, kw, error, message):
    with pytest.raises(error, match=message):
        pipeline.search(query, **kw)


def test_a_missing_or_stale_index_refuses_search_alone(ws, buyers, monkeypatch):
    folder = ws.root / "index" / "text"
    moved = folder.with_name("text.moved")
    folder.rename(moved)
    try:
        bare = Pipeline.from_config(ws).load()
        assert len(bare.recommend(buyers[0]).item_ids) == 12  # recommendations serve on
        with pytest.raises(WorkspaceError, match="no search index .*shortlist search --build"):
            bare.search("dress")
    finally:
        moved.rename(folder)
    monkeypatch.setenv("SHORTLIST_SEARCH_MAX_SEQ_LENGTH", "64")
    stale = Pipeline.from_config(ws).load()
    with pytest.raises(WorkspaceError, match=r"\[search\] max_seq_length changed .*--build-index"):
        stale.search("dress")


# -- the command line -----------------------------------------------------------------------------


def test_the_command_line_searches(ws, buyers):
    result = shortlist("-q", "--workspace", str(ws.root), "search", "--query", "blak trousrs",
                       "--user", buyers[0], "--k", "5", "--trace")  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert f"'blak trousrs' for {buyers[0]}" in said
    assert "Did you mean 'black trousers'?" in said
    assert "Trace" in said and "lexical" in said and "semantic" in said and "{" not in said


# -- the generic layout ---------------------------------------------------------------------------


def test_the_generic_layout_searches_whatever_columns_items_have(tmp_path):
    """Items with their own column names (no H&M name anywhere), a two-tower-only pipeline."""
    generate(tmp_path / "hm", scale="tiny", seed=5)
    src = tmp_path / "src"
    src.mkdir()
    with open(tmp_path / "hm" / "articles.csv") as f, open(src / "items.csv", "w") as g:
        out = csv.writer(g)
        out.writerow(["item_id", "title", "kind", "shade", "notes"])
        for row in csv.DictReader(f):
            out.writerow([row["article_id"], row["prod_name"], row["product_type_name"],
                          row["colour_group_name"], row["detail_desc"]])  # fmt: skip
    with (
        open(tmp_path / "hm" / "transactions_train.csv") as f,
        open(src / "interactions.csv", "w") as g,
    ):
        out = csv.writer(g)
        out.writerow(["user_id", "item_id", "timestamp"])
        for row in csv.DictReader(f):
            out.writerow([row["customer_id"], row["article_id"], row["t_dat"]])
    write(tmp_path / "ws", "shortlist.toml", """
        [retrieval]
        epochs = 2
        max_epochs = 2
        min_steps = 0
        dim = 16
        hidden = 32
        [search]
        semantic = false
        [pipeline]
        ranker = "none"
        sources = [{ name = "two_tower", k = 50 }, { name = "trending", k = 50 }]
        filters = []
    """)  # fmt: skip
    result = shortlist("-q", "--workspace", str(tmp_path / "ws"), "build", "--source", str(src))
    assert result.returncode == 0, result.stderr
    ws = open_workspace(tmp_path / "ws")
    shutil.rmtree(tmp_path / "hm")
    pipeline = Pipeline.from_config(ws).load()
    text = pipeline.text_
    assert text is not None and set(text.fields) == {"title", "kind", "shade", "notes"}
    assert text.facets[:2] == ["kind", "shade"]
    user = str(pipeline.funnel_.catalog.user_ids[0])
    found = pipeline.search("black trousers", user)
    assert found.personalized and found.items
    assert next(s for s in found.trace if s["stage"] == "personal")["scorer"] == (
        "two-tower similarity"
    )
    assert all(set(i.sources) == {"lexical", "personal"} for i in found.items)  # BM25 alone
    assert "Trousers" in attribute(pipeline, found.item_ids, "kind")
    assert set(found.facets) <= {"kind", "shade"} and found.facets
