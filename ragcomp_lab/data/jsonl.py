"""A user's own RAG set, read from JSON Lines into the test bed's columns.

Each non-blank line of the UTF-8 file is one JSON object:

    {"query": "...", "contexts": ["passage", ...], "answer": "..."}     passages given as they are
    {"query": "...", "documents": ["doc", ...], "answer": "..."}        the top 3 retrieved by BM25

- "query": a non-empty string.
- exactly one of "contexts" and "documents": a non-empty list of non-empty strings.
- "answer" (optional): a string, "" when absent.
- "kind" (optional): one of "single_fact", "two_hop", "unanswerable" (the test bed's KINDS);
  "user" when absent. `rl.evaluate` scores by kind, not by the answer's text: an "unanswerable"
  row is right when the model refuses, and every other kind ("user" included) is scored as
  answerable, by F1 and EM against "answer".
- "id" (optional): a non-empty string, or an integer (kept as its decimal string); "line-N"
  (N the line number, counting blank lines) when absent. Ids are unique in the file, generated
  ones included.

An unanswerable row's gold answer is the refusal the prompt asks for (`REFUSAL`, "The context
does not say."): when such a row has no answer or "", its answer is set to REFUSAL; a non-empty
answer is kept as given. Other fields are ignored.

A bad line (invalid JSON or UTF-8, a missing or mistyped field, an unknown kind, a repeated id)
stops the load with a ValueError naming the file, the line number and the field or value;
a missing file is a FileNotFoundError naming the path. Nothing is returned half-loaded.
"""
from __future__ import annotations

import json
from pathlib import Path

from .prompt import REFUSAL, build_prompt
from .questions import KINDS
from .retrieval import BM25Retriever

K_DOCUMENTS = 3  # passages retrieved from a line's "documents"
NO_KIND = "user"  # the kind of a line that names none


def _strings(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(s, str) and s.strip() for s in value)


def _kind(where: str, obj: dict) -> str:
    kind = obj.get("kind", NO_KIND)
    if "kind" in obj and not (isinstance(kind, str) and kind in KINDS):
        raise ValueError(f"{where}: field 'kind' must be one of {', '.join(KINDS)} (or absent for "
                         f"'{NO_KIND}'), got {kind!r}")
    return kind


def _id(where: str, obj: dict, number: int) -> str:
    if "id" not in obj:
        return f"line-{number}"
    value = obj["id"]
    if isinstance(value, int) and not isinstance(value, bool):  # bool is an int subclass, not an id
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"{where}: field 'id' must be a non-empty string or an integer, got {value!r}")


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
    kind = _kind(where, obj)
    if kind == "unanswerable" and not answer:
        answer = REFUSAL  # the gold of an unanswerable question, as in the test bed
    return {"id": _id(where, obj, number), "given_id": "id" in obj, "query": query, field: obj[field],
            "answer": answer, "kind": kind}


def _generated(item: dict) -> str:
    return "" if item["given_id"] else " (generated: the line has no 'id')"


def _check_unique_ids(path: Path, items: list[tuple[int, dict]]) -> None:
    seen: dict[str, tuple[int, dict]] = {}
    for number, item in items:
        first, earlier = seen.setdefault(item["id"], (number, item))
        if first != number:  # a generated "line-N" can collide with a given id too: say which is which
            raise ValueError(f"{path}: line {number}: id {item['id']!r}{_generated(item)} is already the id "
                             f"of line {first}{_generated(earlier)}")


def _lines(path: Path):
    """(line number, text) of each line, decoded one by one so that bad UTF-8 is named by line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as err:  # a folder, no permission: still a message, not a traceback
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: line {number}: not valid UTF-8 (byte {line[err.start]:#04x} at "
                             f"column {err.start + 1})") from None


def _row(item: dict) -> dict:
    if "contexts" in item:
        passages = item["contexts"]
        ids = [str(i) for i in range(len(passages))]
    else:
        docs = item["documents"]
        ids = BM25Retriever(docs).search(item["query"], K_DOCUMENTS)  # ids are the documents' indices
        passages = [docs[int(i)] for i in ids]
    return {"id": item["id"], "query": item["query"], "passages": passages, "passage_ids": ids,
            "prompt": build_prompt(item["query"], passages), "answer": item["answer"], "kind": item["kind"]}


def load_jsonl(path):
    """Read a user's RAG set (the schema is in this module's docstring): a `datasets.Dataset` with
    id, query, passages, passage_ids (indices into the line's contexts or documents), prompt,
    answer and kind ("single_fact", "two_hop", "unanswerable", or "user" when the line names none)."""
    from datasets import Dataset, Features, List, Value

    path = Path(path)
    items = [(number, _parse(path, number, line)) for number, line in _lines(path) if line.strip()]
    if not items:
        raise ValueError(f"{path}: no rows: the file holds no JSON line")
    _check_unique_ids(path, items)
    text, texts = Value("string"), List(Value("string"))
    features = Features({"id": text, "query": text, "passages": texts, "passage_ids": texts,
                         "prompt": text, "answer": text, "kind": text})
    return Dataset.from_list([_row(item) for _, item in items], features=features)
