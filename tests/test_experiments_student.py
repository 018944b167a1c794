"""The shipped student's recipe on the stand-in teacher: layers chosen by removal cost, the embedding
frozen, early stopping with the best student kept, a PromptHead to answer, and a resumed run that
trains nothing again."""
import pytest
import torch
from safetensors.torch import load_file

import ragcomp_lab as rl
from ragcomp_lab import experiments_student as es
from ragcomp_lab import heads
from ragcomp_lab.config import DistillConfig


@pytest.fixture(scope="module")
def run(make_bed, tmp_path_factory):
    bed = make_bed(8, 3, runs_dir=tmp_path_factory.mktemp("runs"))
    probe_rows = rl.data.rag_splits(seed=0)["validation"].select(range(2))
    recipe = {**es.RECIPE, "n_layers": 1, "probe_every": 2, "patience": 1, "autocast": None,
              "config": DistillConfig(T=2.0, alpha=0.5, steps=6, batch_size=2, lr=1e-3, checkpoint_every=2)}
    first, info = es.train(bed, recipe, pool=bed.train, probe_rows=probe_rows)
    mp = pytest.MonkeyPatch()
    seen = {}

    def resumed_only(*args, **kw):
        seen["resume"] = kw["resume"]
        return original(*args, **kw)
    original = es.distill
    mp.setattr(es, "distill", resumed_only)
    try:
        again, again_info = es.train(bed, recipe, pool=bed.train, probe_rows=probe_rows)
    finally:
        mp.undo()
    return bed, first, info, again, again_info, seen


def test_the_layers_are_the_ones_whose_removal_costs_most(run):
    bed, _, info, *_ = run
    costs = info["removal_cost"]
    assert len(costs) == bed.teacher.config.num_hidden_layers == 2
    assert info["layers"] == [max(range(2), key=costs.__getitem__)]


def test_the_best_student_answers_through_a_prompt_head(run):
    bed, student, info, *_ = run
    assert isinstance(student.get_output_embeddings(), heads.PromptHead)
    assert student.config.num_hidden_layers == 1
    # the embedding was frozen: it is still the teacher's
    assert torch.equal(student.get_input_embeddings().weight, bed.teacher.get_input_embeddings().weight)
    # a 1-layer stand-in never answers right: the first probe stays the best, the second stops the run
    assert [p["step"] for p in info["curve"]] == [2, 4] and info["best"]["step"] == 2 and info["stopped_at"] == 4
    answers = rl.data.teacher_answers(student, bed.tok, bed.test, progress=False)
    assert len(answers) == 3


def test_a_second_call_resumes_and_trains_nothing(run):
    _, first, info, again, again_info, seen = run
    assert seen["resume"] is True
    assert again_info["curve"] == info["curve"] and again_info["stopped_at"] == 4
    assert again_info["train_seconds_this_sitting"] < 1
    # the time over every sitting survives the resume: the first sitting's steps and probes
    assert again_info["train_seconds"] == info["train_seconds"] > 0
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


class _StopAt:
    """Ends a run after `step` steps: an interruption the checkpoint resumes from."""

    def __init__(self, step):
        self.step, self.stop = step, False

    def on_step(self, record, history):
        self.stop = record["step"] >= self.step

    def on_end(self, history):
        pass


def test_a_bf16_run_trains_the_weights_the_optimizer_moves(make_bed, tmp_path, monkeypatch):
    """A whole run inside one autocast context: each step must compute with the current weights, not
    with casts cached at the first step, so an interrupted and resumed run repeats the uninterrupted
    one's losses (with autocast's weight cache on, the first run keeps training the step-0 weights)."""
    from ragcomp_lab import models
    from ragcomp_lab.distill import distill

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")  # BF16 on any CPU
    bed = make_bed(6, 1)
    cfg = DistillConfig(T=2.0, alpha=0.5, steps=6, batch_size=2, lr=1e-2, checkpoint_every=100, seed=0)

    def run(callbacks=(), resume=False, folder=None):
        student = models.make_student(bed.teacher, keep_layers=[0])
        with es.autocast("bfloat16"):
            assert torch.is_autocast_enabled("cpu")
            history = distill(bed.teacher, student, bed.train, cfg, callbacks, checkpoint_dir=folder,
                              resume=resume, tok=bed.tok, progress=False)
        return [round(r["total"], 6) for r in history.losses]

    whole = run()
    first = run([_StopAt(3)], folder=tmp_path)
    resumed = run(resume=True, folder=tmp_path)
    assert len(first) == 3 and resumed[:3] == first
    assert resumed == whole
    assert whole[-1] < whole[0]  # lr 1e-2 on six rows: the loss falls


def test_a_carried_run_resumes_on_a_machine_without_its_checkpoints(make_bed, tmp_path, monkeypatch):
    monkeypatch.setattr(es, "SHIPPED_RUNS", tmp_path / "shipped")
    bed = make_bed(8, 3, runs_dir=tmp_path / "runs")
    probe_rows = rl.data.rag_splits(seed=0)["validation"].select(range(2))

    def recipe(steps):
        return {**es.RECIPE, "n_layers": 1, "probe_every": 2, "patience": None, "autocast": None,
                "config": DistillConfig(T=2.0, alpha=0.5, steps=steps, batch_size=2, lr=1e-3, checkpoint_every=2)}
    with pytest.raises(FileNotFoundError, match="no run of this recipe"):
        es.carry(bed, recipe(4), pool=bed.train, layers=[1])
    _, first = es.train(bed, recipe(4), pool=bed.train, probe_rows=probe_rows, layers=[1])
    shipped = es.carry(bed, recipe(4), pool=bed.train, layers=[1])
    assert shipped.parent == tmp_path / "shipped" / "runs" and (shipped / "weights.safetensors").is_file()
    # another machine: no runs folder; the same recipe, run for longer (a new key), is not this pack's
    other = make_bed(8, 3, runs_dir=tmp_path / "elsewhere" / "runs")
    student, unpacked = es.train(other, recipe(4), pool=bed.train, probe_rows=probe_rows, layers=[1])
    assert unpacked["train_seconds_this_sitting"] < 1  # nothing trained again: it resumed at step 4 of 4
    assert unpacked["carried_curve"] == first["curve"] and unpacked["curve"] == []
    assert unpacked["train_seconds"] == pytest.approx(first["train_seconds"], rel=0.01)
    assert [r["total"] for r in unpacked["losses"]] == pytest.approx([r["total"] for r in first["losses"]])
    (latest,) = (tmp_path / "runs").glob("student-*/latest/model.safetensors")
    trained = {k.removeprefix("student."): v for k, v in load_file(latest).items()}
    mine = student.state_dict()
    changed = [k for k in trained if "layers" in k and "weight" in k]
    assert changed and all(torch.allclose(mine[k], trained[k], rtol=1e-3, atol=1e-3) for k in changed)  # FP16 carry


def test_shipped_removal_costs_of_the_same_teacher_are_read_instead_of_measured(make_bed, tmp_path, monkeypatch):
    monkeypatch.setattr(es, "SHIPPED_RUNS", tmp_path / "shipped")
    bed = make_bed(8, 3, runs_dir=tmp_path / "teacher-abc")
    rows = rl.data.rag_splits(seed=0)["train"].select(range(es.IMPORTANCE_ROWS))
    config = {k: v for k, v in bed.teacher.config.to_dict().items() if k != "transformers_version"}
    name = f"removal-cost-{es._key({'prompt': list(rows['prompt']), 'answer': list(rows['answer'])}, config)}.json"
    (tmp_path / "shipped" / "teacher-abc").mkdir(parents=True)
    (tmp_path / "shipped" / "teacher-abc" / name).write_text("[0.5, 7.0]")
    monkeypatch.setattr(es.layer_choice, "removal_cost", lambda *a, **k: pytest.fail("measured again"))
    assert es.chosen_layers(bed, 1) == ([1], [0.5, 7.0])
    other = make_bed(8, 3, runs_dir=tmp_path / "teacher-xyz")  # another teacher's folder: nothing shipped for it
    monkeypatch.setattr(es.layer_choice, "removal_cost", lambda *a, **k: [3.0, 1.0])
    assert es.chosen_layers(other, 1) == ([0], [3.0, 1.0])
    assert (tmp_path / "teacher-xyz" / name).is_file()  # kept for the next call
    monkeypatch.setattr(bed.teacher.config, "transformers_version", "0.0.1")  # another release reads the same file
    assert es.chosen_layers(bed, 1) == ([1], [0.5, 7.0])


def test_the_student_card_scores_times_and_ships_the_student(make_bed, tmp_path):
    bed = make_bed(8, 3, runs_dir=tmp_path / "runs")
    full = rl.data.rag_splits(seed=0)
    splits = {s: full[s].select(range(4)) for s in es.SPLITS}
    recipe = {**es.RECIPE, "n_layers": 1, "probe_every": 2, "patience": None, "autocast": None,
              "config": DistillConfig(T=2.0, alpha=0.5, steps=2, batch_size=2, lr=1e-3, checkpoint_every=2)}
    rows, card = es.student_run(bed, recipe, pool=bed.train, probe_rows=splits["test"], folder=tmp_path / "shipped",
                                splits=splits)
    assert {(r["model"], r["split"]) for r in rows} == {(m, s) for m in ("teacher", "student", "student INT8",
                                                                         "no teacher") for s in es.SPLITS}
    teacher_test = next(r for r in rows if r["model"] == "teacher" and r["split"] == "test")
    assert teacher_test["answers"] == list(rl.data.with_teacher_answers(splits["test"])["teacher_answer"])
    assert card["layers"] == card["run"]["layers"] == card["no_teacher_run"]["layers"]
    assert card["no_teacher_run"]["config"]["alpha"] == 1.0 and card["run"]["config"]["alpha"] == 0.5
    for key in ("f1_retained", "f1_retained_int8"):  # the share of the teacher's F1 on the test split
        assert card[key] == card[f"{key}_by_split"]["test"]["share"] and 0 <= card[key] <= 1.5
    assert card["decode_speedup"] > 0 and card["decode_speedup_int8"] > 0 and card["decode_bound"] > 0
    assert card["train_cpu_hours"] > 0 and "general ids" in card["head_tokens"]
    assert set(card["distilled_vs_no_teacher"]) == set(es.SPLITS)
    student, _ = rl.models.load_student(teacher=(bed.teacher, bed.tok), folder=tmp_path / "shipped")
    assert isinstance(student.get_output_embeddings(), heads.PromptHead) and student.config.num_hidden_layers == 1
