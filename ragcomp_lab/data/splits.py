"""The RAG test bed as `datasets` splits: each question with its top-k passages and its prompt.

Two versions: 1, the first test bed (one sentence per attribute, kb.py, questions.py), kept so
that results measured on it can still be read against their questions; and 2, the default (many
wordings, a held-out wording and a new domain, varied.py).
"""
from __future__ import annotations

import functools
import random

from . import kb, questions, varied
from .kb import check_seed
from .prompt import build_prompt
from .retrieval import BM25Retriever, DenseRetriever

TESTBED = 2  # the version of the test bed that rag_splits builds by default; results/ record theirs
VERSIONS = (1, 2)
RETRIEVERS = {"bm25": BM25Retriever, "dense": DenseRetriever}
MAX_K = 20  # passages per question: a bound that keeps prompts short for a small CPU generator
# version 2: what each split retrieves from; the held-out splits' own documents join the main corpus,
# so no training prompt ever holds a held-out wording, not even in a distractor passage
_CORPUS = {"test_new_wording": kb.NEW_WORDING_GROUPS, "test_new_domain": kb.NEW_DOMAIN_GROUPS}


def check_testbed(testbed) -> int:
    if isinstance(testbed, bool) or testbed not in VERSIONS:
        raise ValueError(f"testbed={testbed!r} is not allowed: use one of the versions {VERSIONS}")
    return testbed


def knowledge_base(seed: int = 0, testbed: int = TESTBED) -> list[dict]:
    """Every document of the test bed: {"id", "entity", "type", "text"}; a new list of new dicts.

    Version 2 holds 726 documents: 600 for the train, validation and test splits, 90 written only in
    held-out wordings, 36 about vehicles and museums."""
    check_seed(seed)
    return kb.knowledge_base(seed) if check_testbed(testbed) == 1 else varied.documents(seed)


def _group(doc_id: str) -> int:
    return int(doc_id.split("-")[1])


@functools.lru_cache(maxsize=8)
def _retriever(seed: int, name: str, testbed: int = 1, split: str = "train"):
    docs = knowledge_base(seed, testbed)
    extra = _CORPUS.get(split, ()) if testbed == 2 else ()
    return RETRIEVERS[name]([d for d in docs if _group(d["id"]) < kb.N_GROUPS or _group(d["id"]) in extra])


def _needed(row: dict, doc_of: dict) -> list[str]:
    """The documents a question's passages must hold in version 2: an answerable one's evidence
    (both documents of a two-hop chain, one that states a single fact), an unanswerable one's entity."""
    if row["kind"] == "unanswerable":
        return [doc_of[row["entities"][0]]]
    return list(row["support_ids"]) if row["kind"] == "two_hop" else list(row["support_ids"][:1])


def with_evidence(ids: list[str], needed: list[str]) -> list[str]:
    """`ids` (best first) with each needed document retrieval missed in place of the lowest-ranked
    passage that is not needed: the test bed measures the generator's reading, not the retriever."""
    ids = list(ids)
    if any(n in ids for n in needed) and len(needed) == 1:
        return ids
    for n in needed:
        if n not in ids:
            spare = [i for i, x in enumerate(ids) if x not in needed]
            if spare:
                ids[spare[-1]] = n
    return ids


def rag_splits(seed: int = 0, k: int = 3, retriever: str = "bm25", testbed: int = TESTBED):
    """The test bed: a `datasets.DatasetDict` with "train" (600), "validation" (90), "test" (150),
    "test_new_wording" (120) and "test_new_domain" (120).

    Every row: id, query, passages (the texts of the top-k retrieved documents), passage_ids,
    prompt (`build_prompt(query, passages)`), answer (gold), kind (single_fact | two_hop |
    unanswerable, about 50/25/25 in every split), entities and support_ids. The splits' entities are
    disjoint. The passages measure the generator, not the retriever: an answerable question's hold
    its evidence, an unanswerable one's hold the entity it asks about (where retrieval missed such a
    document, it takes the place of the lowest-ranked other one). test_new_wording states and asks
    everything in forms no other split uses;
    test_new_domain is about vehicles and museums, kinds and attributes no other split has. The top k
    come in a shuffled order (fixed per question), so the answer's passage is not always first.
    Deterministic for a seed; built once per (seed, k, retriever, testbed) in a process, and the
    same object is returned after that. `testbed=1` gives the first test bed (train, validation and
    test only; one wording; best passage first), on which older results were measured.
    """
    check_seed(seed)
    check_testbed(testbed)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k={k!r} is not allowed: k (passages per question) must be an integer in 1..{MAX_K}")
    if not isinstance(retriever, str) or retriever not in RETRIEVERS:
        raise ValueError(f"retriever={retriever!r} is not supported: use one of {', '.join(RETRIEVERS)}")
    return _build(seed, k, retriever, testbed)


@functools.lru_cache(maxsize=8)
def _build(seed: int, k: int, retriever: str, testbed: int):
    from datasets import Dataset, DatasetDict, Features, List, Value

    text, texts = Value("string"), List(Value("string"))
    features = Features({"id": text, "query": text, "passages": texts, "passage_ids": texts, "prompt": text,
                         "answer": text, "kind": text, "entities": texts, "support_ids": texts})
    built = questions.build_questions(seed) if testbed == 1 else varied.build_questions(seed)
    doc_of = {d["entity"]: d["id"] for d in knowledge_base(seed, testbed)}
    splits = {}
    for split, rows in built.items():
        index = _retriever(seed, retriever, testbed, split if split in _CORPUS else "train")
        top = index.search_many([r["query"] for r in rows], k)
        records = []
        for row, ids in zip(rows, top):
            if testbed == 2:
                ids = with_evidence(ids, _needed(row, doc_of))
                random.Random(f"{seed}-{row['id']}").shuffle(ids)
            passages = [index.texts[i] for i in ids]
            records.append({**row, "passages": passages, "passage_ids": ids,
                            "prompt": build_prompt(row["query"], passages)})
        splits[split] = Dataset.from_list([{c: r[c] for c in features} for r in records], features=features)
    return DatasetDict(splits)


def train_pool(seed: int = 0, extra_seeds=(1, 2, 3, 4), k: int = 3, retriever: str = "bm25", testbed: int = TESTBED):
    """More training questions for a student: the train split of `seed` plus every split of the
    test beds built with `extra_seeds` (other invented entities, the same training wordings; never
    their held-out splits), minus any row
    that names an entity of `seed`'s validation or test split, so held-out scores stay held out.

    Why: a student that sees the same 600 questions for several epochs learns their answers by
    heart instead of reading them from the passages; fresh entities make memorising useless."""
    from datasets import concatenate_datasets

    if isinstance(extra_seeds, (int, str)) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                      for s in extra_seeds):
        raise ValueError(f"extra_seeds={extra_seeds!r} is not allowed: give a list of integer seeds")
    if seed in extra_seeds:
        raise ValueError(f"extra_seeds={list(extra_seeds)!r} contains seed={seed}: its held-out splits would leak")
    base = rag_splits(seed, k, retriever, testbed)
    held = {e for split in base if split != "train" for es in base[split]["entities"] for e in es}
    parts = [base["train"]] + [rag_splits(s, k, retriever, testbed)[split].map(lambda r, s=s: {"id": f"seed{s}-{r['id']}"})
                               for s in extra_seeds for split in ("train", "validation", "test")]  # ids stay unique
    pool = concatenate_datasets(parts)
    return pool.filter(lambda r: not held.intersection(r["entities"]))
