"""The RAG test bed as `datasets` splits: each question with its top-k passages and its prompt."""
from __future__ import annotations

import functools

from .kb import check_seed, knowledge_base
from .prompt import build_prompt
from .questions import build_questions
from .retrieval import BM25Retriever, DenseRetriever

RETRIEVERS = {"bm25": BM25Retriever, "dense": DenseRetriever}
MAX_K = 20  # passages per question: a bound that keeps prompts short for a small CPU generator


@functools.lru_cache(maxsize=4)
def _retriever(seed: int, name: str):
    return RETRIEVERS[name](knowledge_base(seed))


def rag_splits(seed: int = 0, k: int = 3, retriever: str = "bm25"):
    """The test bed: a `datasets.DatasetDict` with "train" (600), "validation" (90) and "test" (150).

    Every row: id, query, passages (the texts of the top-k documents, retrieved from the whole
    knowledge base, best first), passage_ids, prompt (`build_prompt(query, passages)`), answer
    (gold), kind (single_fact | two_hop | unanswerable, about 50/25/25 in every split), entities
    and support_ids. The splits' entities are disjoint. Deterministic for a seed; built once per
    (seed, k, retriever) in a process, and the same object is returned after that.
    """
    check_seed(seed)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k={k!r} is not allowed: k (passages per question) must be an integer in 1..{MAX_K}")
    if not isinstance(retriever, str) or retriever not in RETRIEVERS:
        raise ValueError(f"retriever={retriever!r} is not supported: use one of {', '.join(RETRIEVERS)}")
    return _build(seed, k, retriever)


@functools.lru_cache(maxsize=8)
def _build(seed: int, k: int, retriever: str):
    from datasets import Dataset, DatasetDict, Features, List, Value

    text, texts = Value("string"), List(Value("string"))
    features = Features({"id": text, "query": text, "passages": texts, "passage_ids": texts, "prompt": text,
                         "answer": text, "kind": text, "entities": texts, "support_ids": texts})
    index = _retriever(seed, retriever)
    splits = {}
    for split, rows in build_questions(seed).items():
        top = index.search_many([r["query"] for r in rows], k)
        records = []
        for row, ids in zip(rows, top):
            passages = [index.texts[i] for i in ids]
            records.append({**row, "passages": passages, "passage_ids": ids,
                            "prompt": build_prompt(row["query"], passages)})
        splits[split] = Dataset.from_list([{c: r[c] for c in features} for r in records], features=features)
    return DatasetDict(splits)


def train_pool(seed: int = 0, extra_seeds=(1, 2, 3, 4), k: int = 3, retriever: str = "bm25"):
    """More training questions for a student: the train split of `seed` plus every split of the
    test beds built with `extra_seeds` (other invented entities, same templates), minus any row
    that names an entity of `seed`'s validation or test split, so held-out scores stay held out.

    Why: a student that sees the same 600 questions for several epochs learns their answers by
    heart instead of reading them from the passages; fresh entities make memorising useless."""
    from datasets import concatenate_datasets

    if isinstance(extra_seeds, (int, str)) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                      for s in extra_seeds):
        raise ValueError(f"extra_seeds={extra_seeds!r} is not allowed: give a list of integer seeds")
    if seed in extra_seeds:
        raise ValueError(f"extra_seeds={list(extra_seeds)!r} contains seed={seed}: its held-out splits would leak")
    base = rag_splits(seed, k, retriever)
    held = {e for split in ("validation", "test") for es in base[split]["entities"] for e in es}
    parts = [base["train"]] + [rag_splits(s, k, retriever)[split].map(lambda r, s=s: {"id": f"seed{s}-{r['id']}"})
                               for s in extra_seeds for split in ("train", "validation", "test")]  # ids stay unique
    pool = concatenate_datasets(parts)
    return pool.filter(lambda r: not held.intersection(r["entities"]))
