import json

from ragcomp_lab import cli


def test_check_jsonl_counts_rows_and_names_a_bad_line(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"query": "Where is X?", "contexts": ["X is in Y."], "answer": "Y"}) + "\n"
                    + json.dumps({"query": "When?", "contexts": ["Nothing."]}) + "\n")
    assert cli.main(["check-jsonl", str(good)]) == 0
    assert "2 rows (1 with an answer, 1 without an answer)" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "Q", "contexts": ["c"]}) + "\n{not json\n")
    assert cli.main(["check-jsonl", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_missing_file_is_a_message_not_a_traceback(tmp_path, capsys):
    assert cli.main(["check-jsonl", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


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
