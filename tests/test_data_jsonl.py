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


def test_kind_and_id_are_kept_and_default_to_user_and_the_line_number(tmp_path):
    lines = [GOOD[0] | {"kind": "single_fact", "id": "q-7"}, GOOD[1] | {"kind": "two_hop", "id": 42},
             GOOD[0] | {"kind": "unanswerable", "answer": "Nobody knows."}, GOOD[0]]
    rows = data.load_jsonl(_write(tmp_path, lines))
    assert rows["kind"] == ["single_fact", "two_hop", "unanswerable", "user"]
    assert rows["id"] == ["q-7", "42", "line-3", "line-4"]  # an integer id is kept as its decimal string
    assert rows["answer"][2] == "Nobody knows."  # a given answer is kept, even on an unanswerable row


def test_an_unanswerable_row_without_an_answer_gets_the_refusal(tmp_path):
    lines = [{"query": "q?", "contexts": ["x"], "kind": "unanswerable"},
             {"query": "q?", "contexts": ["x"], "kind": "unanswerable", "answer": ""},
             {"query": "q?", "contexts": ["x"], "kind": "two_hop"}]
    rows = data.load_jsonl(_write(tmp_path, lines))
    assert rows["answer"] == [data.REFUSAL, data.REFUSAL, ""]  # an answerable row's missing gold stays ""


BAD_VALUES = [
    ("kind", "opinion"), ("kind", "user"), ("kind", "Two_Hop"), ("kind", 3), ("kind", None), ("kind", ["two_hop"]),
    ("id", ""), ("id", "   "), ("id", True), ("id", 1.5), ("id", None), ("id", ["a"]),
]


@pytest.mark.parametrize("field, value", BAD_VALUES)
def test_a_bad_kind_or_id_is_named_with_line_value_and_what_is_allowed(tmp_path, field, value):
    path = _write(tmp_path, [GOOD[0], GOOD[1], GOOD[0] | {field: value}])
    with pytest.raises(ValueError, match=re.escape(f"{path}: line 3: field '{field}'")) as err:
        data.load_jsonl(path)
    assert repr(value) in str(err.value)
    allowed = "single_fact, two_hop, unanswerable" if field == "kind" else "a non-empty string or an integer"
    assert allowed in str(err.value)


@pytest.mark.parametrize("first, second, message", [
    ({"id": "a"}, {"id": "a"}, "line 3: id 'a' is already the id of line 1"),
    ({"id": 7}, {"id": "7"}, "line 3: id '7' is already the id of line 1"),  # 7 is kept as "7"
    ({"id": "line-3"}, {}, "line 3: id 'line-3' (generated: the line has no 'id') is already the id of line 1"),
    ({}, {"id": "line-1"}, "line 3: id 'line-1' is already the id of line 1 (generated: the line has no 'id')"),
])
def test_a_repeated_id_names_both_lines(tmp_path, first, second, message):
    path = _write(tmp_path, [GOOD[0] | first, GOOD[1], GOOD[0] | second])
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        data.load_jsonl(path)


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"\n".join([json.dumps(GOOD[0]).encode(), b"", '{"query": "Où?", "contexts": ["x"]}'.encode("latin-1")]))
    with pytest.raises(ValueError, match=re.escape(f"{path}: line 3: not valid UTF-8 (byte 0xf9 at column 13)")):
        data.load_jsonl(path)


def test_a_missing_file_or_a_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nope.jsonl'}: no such file")):
        data.load_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}: cannot be read")):
        data.load_jsonl(tmp_path)
