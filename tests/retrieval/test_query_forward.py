"""The lean forward pass of one search query (retrieval/query_forward.py) against the
sentence-transformers model it reproduces: the bundled all-MiniLM-L6-v2, read offline."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.retrieval import text as text_module
from shortlist.retrieval.query_forward import BertQueryForward
from shortlist.retrieval.text import SentenceEncoder, model_folder

TEXTS = [
    "red",
    "black trousers",
    "soft cotton jersey top with a round neck and short sleeves",
    "Crème brûlée café: ÉTÉ 2020!",
    " ".join(["long description of a dress in airy chiffon"] * 60),  # cut at max_seq_length
]


@pytest.fixture(scope="module")
def float32_model():
    encoder = SentenceEncoder(model_folder(), "float32")
    model = encoder.query_model
    return model, getattr(model, "preprocess", None) or model.tokenize


def library_vector(model, prepare, text: str) -> np.ndarray:
    import torch

    with torch.inference_mode():
        v = model.forward(prepare([text]))["sentence_embedding"].float().numpy()[0]
    return v / np.linalg.norm(v)


def test_the_lean_forward_equals_the_library_forward_in_float32(float32_model):
    model, prepare = float32_model
    forward = BertQueryForward.of(model, prepare)
    assert forward is not None  # the bundled model is a BertModel with mean pooling
    for text in TEXTS:
        ids = prepare([text])["input_ids"][0]
        got = forward(ids)
        assert got.shape == (1, 384) and got.dtype == np.float32
        np.testing.assert_allclose(got[0], library_vector(model, prepare, text), atol=2e-6)
    assert len(prepare([TEXTS[-1]])["input_ids"][0]) == model.max_seq_length


def test_a_model_it_does_not_reproduce_keeps_the_library_forward(float32_model):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling

    model, prepare = float32_model
    cls_pooled = SentenceTransformer(
        modules=[model[0], Pooling(384, pooling_mode="cls"), Normalize()], device="cpu"
    )
    assert BertQueryForward.of(cls_pooled, prepare) is None


def test_queries_use_it_and_the_library_forward_when_it_is_refused(monkeypatch):
    encoder = SentenceEncoder(model_folder(), "auto")
    fast = np.vstack([encoder.query(t) for t in TEXTS])
    key = f"{encoder.folder}#{encoder.query_dtype}"
    assert isinstance(text_module._forwards[key], BertQueryForward)
    monkeypatch.setitem(text_module._forwards, key, None)  # as for a model it does not reproduce
    library = np.vstack([encoder.query(t) for t in TEXTS])
    assert not np.array_equal(fast, library)
    assert np.all(np.sum(fast * library, axis=1) > 0.9999)
