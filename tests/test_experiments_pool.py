import pytest
import torch

import ragcomp_lab as rl
from ragcomp_lab import experiments, experiments_pool
from ragcomp_lab.config import DistillConfig


@pytest.fixture(scope="module")
def run(make_bed, tmp_path_factory):
    """pool_run on the stand-in teacher: 8 pool rows, 3 probe rows, 4 steps probed every 2."""
    bed = make_bed(8, 3, runs_dir=tmp_path_factory.mktemp("runs"))
    probe_rows = rl.data.rag_splits(seed=0)["validation"].select(range(3))
    mp = pytest.MonkeyPatch()
    mp.setattr(experiments, "LAYERS", {1: [1]})
    mp.setattr(experiments, "STUDENT", 1)
    mp.setattr(experiments_pool, "PROBE_EVERY", 2)
    cfg = DistillConfig(T=1.0, alpha=1.0, steps=4, batch_size=2, lr=1e-3)
    keep = tmp_path_factory.mktemp("kept") / "student"
    try:
        first = experiments_pool.pool_run(bed, cfg, pool=bed.train, probe_rows=probe_rows, keep=keep)
        mp.setattr(experiments_pool, "distill", _resume_only(experiments_pool.distill))
        again = experiments_pool.pool_run(bed, cfg, pool=bed.train, probe_rows=probe_rows, keep=keep)
    finally:
        mp.undo()
    return bed, first, again, keep


def _resume_only(distill):
    def run(*args, **kw):
        assert kw["resume"], "a finished run was not resumed from its checkpoint"
        return distill(*args, **kw)
    return run


def test_rows_hold_quality_size_speed_and_the_floor_ratios(run):
    bed, (rows, info), _, _ = run
    teacher, student = rows
    assert teacher["model"] == "teacher" and student["n_layers"] == 1 and len(student["answers"]) == 3
    for k in ("f1", "rouge_l", "faithfulness", "decode_ms_per_token", "non_embedding_params"):
        assert k in student
    assert student["non_embedding_reduction"] == pytest.approx(
        teacher["non_embedding_params"] / student["non_embedding_params"])
    assert student["decode_speedup"] == pytest.approx(
        student["teacher_decode_ms_per_token"] / student["decode_ms_per_token"])
    assert student["decode_speedup_bound"] > 1 and teacher["decode_threads"] >= 1
    assert info["pool_rows"] == 8 and info["config"]["steps"] == 4 and info["student_layers"] == [1]
    assert all(r["soft"] != r["soft"] for r in info["losses"])  # no teacher ran: NaN soft loss


def test_the_validation_curve_is_probed_and_kept_across_a_resume(run):
    _, (_, info), (_, again), _ = run
    assert [p["step"] for p in info["curve"]] == [2, 4]
    assert all(0.0 <= p["f1"] <= 1.0 for p in info["curve"])
    assert again["curve"] == info["curve"]  # resumed at its last step: nothing retrained, nothing re-probed


def test_the_kept_student_is_the_trained_one(run):
    bed, (rows, _), _, keep = run
    student = rl.load(keep)
    answers = rl.data.teacher_answers(student, bed.tok, bed.test, batch_size=16, progress=False)
    assert answers == rows[1]["answers"]


def test_the_experiment_is_registered_for_the_cli():
    assert "pool_kd" in experiments.EXPERIMENTS
    assert "pool_run" in experiments.EXPERIMENTS
    cfg = experiments_pool.CONFIG
    assert (cfg.alpha, cfg.steps) == (1.0, experiments_pool.POOL_STEPS)


def test_pool_kd_distills_from_the_pools_top_k_cache_and_keeps_its_own_student(make_bed, tmp_path, monkeypatch):
    bed = make_bed(6, 2, runs_dir=tmp_path / "runs")
    monkeypatch.setattr(experiments, "LAYERS", {1: [1]})
    monkeypatch.setattr(experiments, "STUDENT", 1)
    calls, distill = [], experiments_pool.distill

    def spy(teacher, student, data, cfg, *args, **kw):
        calls.append((teacher is bed.teacher, kw.get("soft_targets")))
        return distill(teacher, student, data, cfg, *args, **kw)
    monkeypatch.setattr(experiments_pool, "distill", spy)
    cfg = DistillConfig(T=2.0, alpha=0.5, steps=2, batch_size=2, lr=1e-3)
    keep = tmp_path / "kd"
    rows, info = experiments_pool.pool_kd(bed, cfg, pool=bed.train, probe_rows=bed.test, keep=keep)
    (used_teacher, soft), = calls
    assert used_teacher and len(soft) == len(bed.train) and soft[0]["ids"].shape[-1] == experiments.TOPK
    assert rows[1]["model"] == "6 layers, train pool, distilled" and info["config"]["alpha"] == 0.5
    assert (keep / "quant.json").is_file()
    cached, = (tmp_path / "runs").glob(f"pool-*-answer-top{experiments.TOPK}.safetensors")  # the teacher's own folder
    assert len(experiments_pool.pool_soft_targets(bed, bed.train)) == len(bed.train)  # read back, not rebuilt
    assert experiments_pool.KD_CONFIG.steps == experiments_pool.CONFIG.steps  # the same budget as pool_run
    kd, base = experiments_pool.KD_CONFIG, experiments.BASE
    assert (kd.T, kd.alpha) == (base.T, base.alpha)
    assert experiments_pool.student_dir("pool-kd") != experiments_pool.student_dir()


def test_pool_kd_refuses_hard_labels_alone(make_bed):
    with pytest.raises(ValueError, match="alpha=1.0 trains on hard labels alone"):
        experiments_pool.pool_kd(make_bed(2, 1), DistillConfig(T=1.0, alpha=1.0, steps=1, batch_size=1))


def test_pool_seeds_runs_each_arm_per_seed_writes_as_it_goes_and_keeps_finished_runs(make_bed, tmp_path,
                                                                                     monkeypatch):
    bed = make_bed(6, 2, runs_dir=tmp_path / "runs")
    monkeypatch.setattr(experiments, "LAYERS", {1: [1]})
    monkeypatch.setattr(experiments, "STUDENT", 1)
    monkeypatch.setattr(experiments_pool, "student_dir", lambda name="pool": tmp_path / "kept" / name)
    hard = DistillConfig(T=1.0, alpha=1.0, steps=2, batch_size=2, lr=1e-3)
    arms = {"no teacher": hard, "distilled": DistillConfig(T=2.0, alpha=0.5, steps=2, batch_size=2, lr=1e-3)}
    out = tmp_path / "results"
    # seed 0 without a teacher is already in pool_run's file, as `ragcomp-lab experiments pool_run` writes it
    experiments.write("pool_run", *experiments_pool.pool_run(bed, hard, bed.train, bed.test, tmp_path / "s0"), out)
    trained, pool_run = [], experiments_pool.pool_run

    def spy(bed_, cfg, *args, **kw):
        if len(trained) == 2:
            raise KeyboardInterrupt  # the sitting ends during the third new run
        trained.append((cfg.seed, cfg.alpha))
        return pool_run(bed_, cfg, *args, **kw)
    monkeypatch.setattr(experiments_pool, "pool_run", spy)
    run = lambda: experiments_pool.pool_seeds(bed, (0, 1), arms, bed.train, bed.test, out)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        run()
    assert trained == [(0, 0.5), (1, 1.0)]  # seed 0's no-teacher run came from pool_run.json
    written = experiments.read("pool_seeds", out)
    assert [(r["seed"], r["arm"]) for r in written["rows"][1:]] == [(0, "no teacher"), (0, "distilled"),
                                                                     (1, "no teacher")]
    trained.clear()
    rows, info = run()  # the next sitting trains only the run that was missing
    assert trained == [(1, 0.5)]
    assert [(r["seed"], r["arm"]) for r in rows[1:]] == [(0, "no teacher"), (0, "distilled"), (1, "no teacher"),
                                                          (1, "distilled")]
    assert rows[0]["model"] == "teacher" and info["seeds"] == [0, 1] and info["pool_rows"] == len(bed.train)
    assert info["training_minutes"] == round(sum(r["train_seconds"] for r in rows[1:]) / 60, 1)
    assert all(r["config"] == arms[r["arm"]].to_dict() | {"seed": r["seed"]} for r in rows[1:])
    assert all(len(r["answers"]) == len(bed.test) and r["curve"] and r["machine"] for r in rows[1:])
    assert experiments.read("pool_seeds", out)["rows"] == rows
    trained.clear()
    run()
    assert trained == []  # everything measured: nothing retrained
    with open(out / "pool_seeds.csv") as f:
        header = f.readline()
    assert "f1" in header and "curve" not in header and "config" not in header and "answers" not in header


def test_pool_seeds_is_registered_to_write_as_it_goes():
    assert "pool_seeds" in experiments.EXPERIMENTS and "pool_seeds" in experiments.WRITES_AS_IT_GOES
    assert experiments_pool.POOL_SEEDS == (0, 1, 2)
    assert experiments_pool.ARMS == {"no teacher": experiments_pool.CONFIG, "distilled": experiments_pool.KD_CONFIG}


def test_pool_seeds_does_not_take_runs_of_another_pool(make_bed, tmp_path, monkeypatch):
    bed = make_bed(4, 2, runs_dir=tmp_path / "runs")
    monkeypatch.setattr(experiments, "LAYERS", {1: [1]})
    monkeypatch.setattr(experiments, "STUDENT", 1)
    monkeypatch.setattr(experiments_pool, "student_dir", lambda name="pool": tmp_path / "kept" / name)
    hard = DistillConfig(T=1.0, alpha=1.0, steps=1, batch_size=2, lr=1e-3)
    out = tmp_path / "results"
    experiments.write("pool_run", *experiments_pool.pool_run(bed, hard, bed.train, bed.test, tmp_path / "s0"), out)
    trained, pool_run = [], experiments_pool.pool_run

    def spy(bed_, cfg, *args, **kw):
        trained.append(cfg.seed)
        return pool_run(bed_, cfg, *args, **kw)
    monkeypatch.setattr(experiments_pool, "pool_run", spy)
    rows, _ = experiments_pool.pool_seeds(bed, (0,), {"no teacher": hard}, bed.train.select(range(2)), bed.test, out)
    assert trained == [0]  # pool_run.json holds a run on 4 questions; this pool has 2


def test_the_probe_stops_after_patience_probes_without_a_better_f1_and_keeps_the_best(make_bed, tmp_path):
    import json

    from ragcomp_lab import models
    from ragcomp_lab.distill import Callback, distill

    bed = make_bed(8, 3)
    rows = rl.data.rag_splits(seed=0)["validation"].select(range(2))
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps([{"step": 2, "f1": 0.5}, {"step": 4, "f1": 0.25}, {"step": 6, "f1": 0.5}]))
    probe = experiments_pool.ValidationProbe(None, bed.tok, rows, 2, curve, patience=2)
    assert probe.best()["step"] == 2 and probe.stop  # two probes since the best, the tie included
    assert not experiments_pool.ValidationProbe(None, bed.tok, rows, 2, curve, patience=3).stop

    student = models.make_student(bed.teacher, keep_layers=[1])
    probe = experiments_pool.ValidationProbe(student, bed.tok, rows, 1, tmp_path / "fresh.json", patience=1,
                                             best_dir=tmp_path / "best")
    states = {}

    class Keep(Callback):  # the student's weights after each step, to compare with what the probe saved
        def on_step(self, record, history):
            states[record["step"]] = {k: v.clone() for k, v in student.state_dict().items()}

    # lr 1: the second step throws the student off, its answer perplexity rises
    cfg = DistillConfig(T=1.0, alpha=1.0, steps=20, batch_size=2, lr=1.0)
    history = distill(None, student, bed.train, cfg, [probe, Keep()], tok=bed.tok, progress=False)
    assert probe.points[1]["answer_ppl"] > probe.points[0]["answer_ppl"]
    # a 1-layer stand-in never answers right: F1 stays 0, so the first probe stays the best and the second stops
    assert [p["step"] for p in probe.points] == [1, 2] and probe.best()["step"] == 1
    assert history.stopped_at == 2 and len(history.losses) == 2
    saved = rl.load(tmp_path / "best").state_dict()
    for k, v in states[1].items():  # the best student is the one of step 1, not the last one
        assert torch.equal(saved[k], v), k
    assert any(not torch.equal(states[2][k], v) for k, v in states[1].items())


def test_a_falling_answer_perplexity_is_progress_while_f1_stays_flat(make_bed, tmp_path):
    import json

    bed = make_bed(8, 3)
    rows = rl.data.rag_splits(seed=0)["validation"].select(range(2))
    curve = tmp_path / "curve.json"

    def probe(points, patience):
        curve.write_text(json.dumps(points))
        return experiments_pool.ValidationProbe(None, bed.tok, rows, 2, curve, patience=patience)

    flat = [{"step": 2 * i, "f1": 0.0, "answer_ppl": ppl} for i, ppl in enumerate([90.0, 60.0, 40.0, 39.9], 1)]
    p = probe(flat, patience=2)
    # 90 -> 60 -> 40 is progress at each probe; 40 -> 39.9 is 0.25%, under PPL_GAIN: one stale probe
    assert p._stale() == 1 and not p.stop and probe(flat, patience=1).stop
    assert p.best()["step"] == 8  # equal F1: the lowest perplexity is the best student
    # a higher F1 outranks a lower perplexity, and progress is measured against the best so far, not the last
    mixed = [{"step": 2, "f1": 0.5, "answer_ppl": 30.0}, {"step": 4, "f1": 0.25, "answer_ppl": 20.0},
             {"step": 6, "f1": 0.25, "answer_ppl": 25.0}, {"step": 8, "f1": 0.5, "answer_ppl": 19.9}]
    p = probe(mixed, patience=3)
    assert p.best()["step"] == 8 and p._stale() == 2 and not p.stop  # 19.9 is not 1% under 20
    # points from before answer_ppl was recorded count by F1 alone
    old = [{"step": 2, "f1": 0.1}, {"step": 4, "f1": 0.1, "answer_ppl": 50.0}, {"step": 6, "f1": 0.1, "answer_ppl": 45.0}]
    assert probe(old, patience=5)._stale() == 0


def test_pool_soft_targets_reads_the_shipped_cache_of_its_own_teacher(tmp_path, monkeypatch):
    """A cache in SHIPPED_RUNS/<runs_dir's name>/ is read instead of running the teacher (None here, so
    a rebuild would fail); another teacher's runs_dir finds none and would compute its own."""
    from types import SimpleNamespace

    from datasets import Dataset

    from ragcomp_lab.data.teacher import load_topk, save_topk

    pool = Dataset.from_dict({"id": ["a", "b"], "prompt": ["p", "q"], "answer": ["x", "y"]})
    rows = [{"ids": torch.arange(experiments.TOPK, dtype=torch.int32).repeat(n, 1),
             "logprobs": torch.full((n, experiments.TOPK), -3.0), "targets": torch.zeros(n, dtype=torch.int64)}
            for n in (1, 2)]
    name = f"pool-{experiments_pool._pool_digest(pool)}-answer-top{experiments.TOPK}.safetensors"
    monkeypatch.setattr(experiments_pool, "SHIPPED_RUNS", tmp_path / "shipped")
    (tmp_path / "shipped" / "teacher-abc").mkdir(parents=True)
    save_topk(tmp_path / "shipped" / "teacher-abc" / name, rows)
    bed = SimpleNamespace(runs_dir=tmp_path / "runs" / "teacher-abc", teacher=None, tok=None)
    got = experiments_pool.pool_soft_targets(bed, pool)
    assert [r["ids"].shape for r in got] == [r["ids"].shape for r in load_topk(tmp_path / "shipped" / "teacher-abc" / name)]
    assert not (tmp_path / "runs").exists()  # nothing was rebuilt beside it
    other = SimpleNamespace(runs_dir=tmp_path / "runs" / "teacher-other", teacher=None, tok=None)
    with pytest.raises(Exception):  # no shipped cache for this teacher: it would run the (missing) teacher
        experiments_pool.pool_soft_targets(other, pool)
