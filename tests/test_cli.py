import json

import pytest

from ragcomp_lab import cli


def test_check_jsonl_counts_rows_by_kind_and_names_a_bad_line(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    lines = ([{"query": "Where is X?", "contexts": ["X is in Y."], "answer": "Y", "kind": "single_fact"}] * 3
             + [{"query": "Who?", "contexts": ["Z."], "answer": "Z", "kind": "two_hop"},
                {"query": "When?", "contexts": ["Nothing."], "kind": "unanswerable"},
                {"query": "Why?", "contexts": ["Nothing."]}, {"query": "How?", "contexts": ["Nothing."]}])
    good.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    assert cli.main(["check-jsonl", str(good)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{good}: 7 rows: 3 single_fact, 1 two_hop, 1 unanswerable, 2 user"
    assert out[1].startswith("2 rows have no answer")  # the unanswerable one has the refusal as gold
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "Q", "contexts": ["c"]}) + "\n{not json\n")
    assert cli.main(["check-jsonl", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_check_jsonl_of_one_row_without_kind(tmp_path, capsys):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"query": "Q?", "contexts": ["c"], "answer": "c"}) + "\n")
    assert cli.main(["check-jsonl", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: 1 row: 1 user\n"


@pytest.mark.parametrize("content, named", [
    (b'{"query": "Q?", "contexts": ["c"], "kind": "opinion"}\n', ["line 1", "'opinion'", "single_fact"]),
    (b'{"query": "Q?", "contexts": ["c"], "id": "a"}\n{"query": "R?", "contexts": ["c"], "id": "a"}\n',
     ["line 2", "'a'", "line 1"]),
    (b'{"query": "Q?", "contexts": ["c"]}\n{"query": "\xe9"}\n', ["line 2", "UTF-8"]),
])
def test_bad_input_is_one_line_naming_the_problem_and_exit_2(tmp_path, capsys, content, named):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert cli.main(["check-jsonl", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and "Traceback" not in captured.err
    assert all(n in captured.err for n in [str(path)] + named), captured.err


def test_missing_file_is_a_message_not_a_traceback(tmp_path, capsys):
    assert cli.main(["check-jsonl", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err == f"ragcomp-lab: {tmp_path / 'nope.jsonl'}: no such file\n"
    assert cli.main(["check-jsonl", str(tmp_path)]) == 2  # a folder
    assert capsys.readouterr().err.startswith(f"ragcomp-lab: {tmp_path}: cannot be read")


def test_experiments_runs_the_named_ones_and_names_an_unknown_one(tmp_path, capsys, monkeypatch):
    from ragcomp_lab import experiments

    calls = []
    monkeypatch.setattr(experiments, "run", lambda names, out: calls.append((names, out)))
    assert cli.main(["experiments", "sweep", "kd_vs_hard", "--out", str(tmp_path)]) == 0
    assert cli.main(["experiments"]) == 0
    assert calls == [(["sweep", "kd_vs_hard"], str(tmp_path)), (None, "results")]
    monkeypatch.undo()
    assert cli.main(["experiments", "nope", "--out", str(tmp_path)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
