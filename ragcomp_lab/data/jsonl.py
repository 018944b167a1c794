"""A user's own RAG set, read from JSON Lines into the test bed's columns.

Each non-blank line is one JSON object:

    {"query": "...", "contexts": ["passage", ...], "answer": "..."}     passages given as they are
    {"query": "...", "documents": ["doc", ...], "answer": "..."}        the top 3 retrieved by BM25

"query" is a non-empty string; exactly one of "contexts" and "documents", a non-empty list of
strings; "answer" is optional (a string; "" when absent). Other fields are ignored. A bad line
stops the load with a ValueError naming the file, the line number and the field: nothing is
returned half-loaded.
"""
from __future__ import annotations

import json
from pathlib import Path

from .prompt import build_prompt
from .retrieval import BM25Retriever

K_DOCUMENTS = 3  # passages retrieved from a line's "documents"


def _strings(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(s, str) and s.strip() for s in value)


def _parse(path: Path, number: int, line: str) -> dict:
    where = f"{path}: line {number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: must be a JSON object with a 'query' field, got {type(obj).__name__}")
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: field 'query' must be a non-empty string, got {query!r}")
    has = [f for f in ("contexts", "documents") if f in obj]
    if len(has) != 1:
        raise ValueError(f"{where}: give exactly one of the fields 'contexts' and 'documents', "
                         f"found {' and '.join(has) if has else 'neither'}")
    field = has[0]
    if not _strings(obj[field]):
        raise ValueError(f"{where}: field '{field}' must be a non-empty list of non-empty strings, "
                         f"got {obj[field]!r}")
    answer = obj.get("answer", "")
    if not isinstance(answer, str):
        raise ValueError(f"{where}: field 'answer' must be a string, got {answer!r}")
    return {"query": query, field: obj[field], "answer": answer}


def _row(number: int, item: dict) -> dict:
    if "contexts" in item:
        passages = item["contexts"]
        ids = [str(i) for i in range(len(passages))]
    else:
        docs = item["documents"]
        ids = BM25Retriever(docs).search(item["query"], K_DOCUMENTS)  # ids are the documents' indices
        passages = [docs[int(i)] for i in ids]
    return {"id": f"line-{number}", "query": item["query"], "passages": passages, "passage_ids": ids,
            "prompt": build_prompt(item["query"], passages), "answer": item["answer"], "kind": "user"}


def load_jsonl(path):
    """Read a user's RAG set: a `datasets.Dataset` with id ("line-N"), query, passages, passage_ids
    (indices into the line's contexts or documents), prompt, answer and kind ("user")."""
    from datasets import Dataset, Features, List, Value

    path = Path(path)
    items = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                items.append((number, _parse(path, number, line)))
    if not items:
        raise ValueError(f"{path}: no rows: the file holds no JSON line")
    text, texts = Value("string"), List(Value("string"))
    features = Features({"id": text, "query": text, "passages": texts, "passage_ids": texts,
                         "prompt": text, "answer": text, "kind": text})
    return Dataset.from_list([_row(number, item) for number, item in items], features=features)
