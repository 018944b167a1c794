import csv
import json
import math

import pytest

import ragcomp_lab as rl
from ragcomp_lab import bench_models, experiments, models
from ragcomp_lab.config import DistillConfig


@pytest.fixture(scope="module")
def bed(make_bed):
    """The 2-layer stand-in teacher on 12 train and 6 test rows: the real code path, in seconds."""
    return make_bed(12, 6)


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(experiments, "LAYERS", {1: [1], 2: [0, 1]})
    monkeypatch.setattr(experiments, "STUDENT", 1)
    monkeypatch.setattr(experiments, "SEEDS", (0, 1))
    monkeypatch.setattr(experiments, "BASE", DistillConfig(T=2.0, alpha=0.5, steps=2, batch_size=2, lr=1e-3))
    monkeypatch.setattr(experiments, "SWEEP_STEPS", 1)


def test_kd_vs_hard_trains_both_arms_on_every_seed_and_scores_the_teacher(bed, small, tmp_path):
    rows, info = experiments.kd_vs_hard(bed)
    assert [r["model"] for r in rows] == ["teacher", "no teacher", "distilled", "no teacher", "distilled"]
    assert [r.get("seed") for r in rows[1:]] == [0, 0, 1, 1]
    assert all(r["alpha"] == 1.0 for r in rows if r["model"] == "no teacher")
    assert all(len(r["answers"]) == 6 and 0 <= r["f1"] <= 1 for r in rows)
    assert rows[0]["answers"] == list(bed.test["teacher_answer"]) and info["seeds"] == [0, 1]
    experiments.write("kd_vs_hard", rows, info, tmp_path)  # every value is plain JSON
    assert experiments.read("kd_vs_hard", tmp_path)["rows"] == rows


def test_sweep_covers_the_grid_and_trains_the_teacherless_column_once(bed, small):
    rows, _ = experiments.sweep(bed)
    assert sorted((r["T"], r["alpha"]) for r in rows) == sorted(
        (T, a) for a in (0.0, 0.5, 1.0) for T in (1.0, 2.0, 4.0, 8.0))
    hard = [r for r in rows if r["alpha"] == 1.0]
    assert [r.get("shared_with_T") for r in hard] == [None, 1.0, 1.0, 1.0]
    assert len({r["train_seconds"] for r in hard}) == 1 and all(r["steps"] == 1 for r in rows)


def test_student_size_reports_parameters_latency_and_quality_retained(bed, small):
    rows, _ = experiments.student_size(bed)
    teacher, *students = rows
    assert [r["n_layers"] for r in students] == [1, 2]
    for r in students:
        assert r["non_embedding_reduction"] == pytest.approx(
            teacher["non_embedding_params"] / r["non_embedding_params"])
        # timed side by side with the teacher, and never past the bound the shapes set
        assert r["decode_speedup"] == pytest.approx(r["teacher_decode_ms_per_token"] / r["decode_ms_per_token"])
        assert r["decode_ms_per_token"] > 0 and r["decode_threads"] in bench_models.thread_counts()
        assert r["decode_speedup_bound"] == pytest.approx(
            models.weights_per_token(bed.teacher) / models.weights_per_token(
                models.make_student(bed.teacher, keep_layers=experiments.LAYERS[r["n_layers"]])))
    assert students[1]["decode_speedup_bound"] == pytest.approx(1.0)  # both of the stand-in teacher's layers
    assert students[0]["decode_speedup_bound"] > 1
    assert students[0]["non_embedding_params"] < students[1]["non_embedding_params"]


def test_write_and_read_keep_config_machine_and_rows(tmp_path, bed, small):
    rows = [{"model": "a", "f1": 0.5, "answers": ["x"]}, {"model": "b", "f1": 0.25, "seed": 3, "answers": ["y"]}]
    path = experiments.write("sweep", rows, {"steps": 1}, tmp_path, seconds=1.5)
    doc = experiments.read("sweep", tmp_path)
    assert doc["rows"] == rows and doc["steps"] == 1 and doc["base_config"]["steps"] == 2
    assert doc["command"] == "ragcomp-lab experiments sweep" and doc["machine"]["cores"] >= 1 and doc["date"]
    with open(tmp_path / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["a", "b"] and "answers" not in table[0] and table[1]["seed"] == "3"
    assert not list(tmp_path.glob("*.tmp")) and json.loads(path.read_text())["seconds"] == 1.5


def test_results_record_the_test_bed_and_older_ones_are_named_as_such(tmp_path):
    experiments.write("sweep", [{"model": "a"}], {}, tmp_path)
    doc = experiments.read("sweep", tmp_path)
    assert doc["testbed"] == rl.data.TESTBED and experiments.testbed_note(doc) is None
    old = {k: v for k, v in doc.items() if k != "testbed"}  # written before the version was recorded
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    doc = experiments.read("sweep", tmp_path)
    assert doc["testbed"] == 1
    note = experiments.testbed_note(doc)
    assert "test bed 1" in note and "rag_splits(testbed=1)" in note and "ragcomp-lab experiments sweep" in note
    for path in sorted(experiments.RESULTS.glob("*.json")):  # every committed file says which bed it measured
        assert json.loads(path.read_text()).get("testbed") in (1, 2), path.name


def test_unknown_or_missing_experiments_are_named(tmp_path):
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        experiments.run(["nope"], tmp_path)
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        experiments.read("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="ragcomp-lab experiments sweep"):
        experiments.read("sweep", tmp_path)


def test_spread_is_mean_and_sample_sd():
    assert experiments.spread([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert experiments.spread([0.5, None]) == (0.5, 0.0)  # None: the metric did not apply to that run
    assert all(math.isnan(v) for v in experiments.spread([None]))


def test_long_run_reports_the_floor_ratios(bed, small, monkeypatch):
    monkeypatch.setattr(experiments, "LONG_STEPS", 3)
    rows, info = experiments.long_run(bed)
    assert [r["model"] for r in rows] == ["teacher", "distilled", "no teacher"] and rows[1]["steps"] == rows[2]["steps"] == 3
    assert rows[2]["alpha"] == 1.0
    assert set(info["floors"]) <= set(rows[1]) and rows[0]["answer_perplexity"] > 1


def test_a_repeated_run_is_trained_once(bed, small):
    a = experiments.run_row(bed, 1, experiments.BASE, model="x")
    b = experiments.run_row(bed, 1, experiments.BASE, model="y")
    assert b["model"] == "y" and {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}


def test_finished_runs_are_kept_on_disk_and_an_interrupted_series_resumes(bed, small, tmp_path, monkeypatch):
    monkeypatch.setattr(bed, "runs", {})
    monkeypatch.setattr(bed, "runs_dir", tmp_path)
    a = experiments.run_row(bed, 1, experiments.BASE, model="x")
    assert len(list(tmp_path.glob("*.json"))) == 1
    monkeypatch.setattr(bed, "runs", {})  # a new process: only the disk remembers
    monkeypatch.setattr(experiments, "train_student", lambda *a, **k: pytest.fail("trained again"))
    assert experiments.run_row(bed, 1, experiments.BASE, model="x") == a
