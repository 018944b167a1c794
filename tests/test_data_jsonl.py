"""A user's own RAG set from JSON Lines: the happy path, and every malformed line named by number."""
import json
import re

import pytest

import ragcomp_lab.data as data

GOOD = [
    {"query": "Who founded Veltrona Labs?", "contexts": ["The founder of Veltrona Labs is Ilsa Quorne."],
     "answer": "Ilsa Quorne"},
    {"query": "Where is Darnmoor?", "documents": [
        "Keswold is a town.", "Darnmoor is in the region of Tessaly.", "The Quillex Pro is red.",
        "Ilsa Quorne was born in Darnmoor.", "Veltrona Labs makes kettles."]},
]


def _write(tmp_path, lines, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n", encoding="utf-8")
    return path


def test_contexts_are_kept_and_documents_are_retrieved_with_bm25(tmp_path):
    rows = data.load_jsonl(_write(tmp_path, [GOOD[0], "", "   ", GOOD[1]]))  # blank lines are skipped
    assert len(rows) == 2
    assert {"id", "query", "passages", "passage_ids", "prompt", "answer", "kind"} <= set(rows.column_names)
    first, second = rows[0], rows[1]
    assert first["passages"] == GOOD[0]["contexts"] and first["answer"] == "Ilsa Quorne"
    assert first["prompt"] == data.build_prompt(first["query"], first["passages"])
    assert second["answer"] == "" and rows["kind"] == ["user", "user"]
    assert len(second["passages"]) == 3 and second["passages"][0] == "Darnmoor is in the region of Tessaly."
    assert second["passages"] == [GOOD[1]["documents"][int(i)] for i in second["passage_ids"]]
    assert rows["id"] == ["line-1", "line-4"]


def test_fewer_documents_than_k_are_all_passed(tmp_path):
    rows = data.load_jsonl(_write(tmp_path, [{"query": "q?", "documents": ["only one"]}]))
    assert rows[0]["passages"] == ["only one"]


BAD = [
    ('{"query": "q?", "contexts": ["x"]', "not valid JSON"),
    ('["query", "contexts"]', "must be a JSON object"),
    ({"contexts": ["x"]}, "field 'query'"),
    ({"query": "  ", "contexts": ["x"]}, "field 'query'"),
    ({"query": 7, "contexts": ["x"]}, "field 'query'"),
    ({"query": "q?"}, "'contexts' and 'documents', found neither"),
    ({"query": "q?", "contexts": ["x"], "documents": ["y"]}, "found contexts and documents"),
    ({"query": "q?", "contexts": []}, "field 'contexts'"),
    ({"query": "q?", "contexts": "x"}, "field 'contexts'"),
    ({"query": "q?", "contexts": ["x", 3]}, "field 'contexts'"),
    ({"query": "q?", "documents": []}, "field 'documents'"),
    ({"query": "q?", "documents": [""]}, "field 'documents'"),
    ({"query": "q?", "contexts": ["x"], "answer": 42}, "field 'answer'"),
]


@pytest.mark.parametrize("line, message", BAD)
def test_a_malformed_line_is_named_with_file_line_number_and_field(tmp_path, line, message):
    path = _write(tmp_path, [GOOD[0], "", GOOD[1], line, GOOD[0]])  # the bad line is line 4
    with pytest.raises(ValueError, match=re.escape(f"{path}: line 4: ")) as err:
        data.load_jsonl(path)
    assert message in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_a_file_without_rows_is_refused(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="no rows"):
        data.load_jsonl(path)
