import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import ragcomp_lab as rl
from ragcomp_lab import data, models
from ragcomp_lab.data.encode import collate, encode_pair
from ragcomp_lab.distill import Callback, History, distill, step_losses
from ragcomp_lab.teacher_adapter import answer_loss

TINY = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=32)


@pytest.fixture(scope="module")
def setup(teacher_and_tok):
    """A tiny teacher and student sharing the real tokenizer (fast, and the code path is the real one)."""
    big, tok = teacher_and_tok
    teacher = models.make_student(big, num_hidden_layers=2, hidden_size=64, intermediate_size=128, seed=1, **TINY)
    rows = data.rag_splits(seed=0)["train"].select(range(12))
    return teacher, tok, rows


def _student(setup, **kw):
    teacher, _, _ = setup
    return models.make_student(teacher, num_hidden_layers=1, hidden_size=kw.pop("hidden_size", 64),
                               intermediate_size=128, seed=2, **TINY)


def _cfg(**kw):
    return rl.DistillConfig(**({"T": 2.0, "alpha": 0.5, "steps": 6, "batch_size": 2, "lr": 3e-3, "seed": 0} | kw))


def test_a_run_lowers_the_loss_and_logs_the_parts(setup):
    teacher, tok, rows = setup
    student = _student(setup)
    hist = distill(teacher, student, rows, _cfg(steps=24), tok=tok, progress=False)
    assert isinstance(hist, History) and len(hist.losses) == 24
    assert {"total", "hard", "soft", "step", "lr"} <= set(hist.losses[0])
    assert all(isinstance(r["total"], float) for r in hist.losses)
    first, last = sum(hist.curve("total")[:4]) / 4, sum(hist.curve("total")[-4:]) / 4
    assert last < first * 0.8
    r = hist.losses[5]
    assert r["total"] == pytest.approx(0.5 * r["hard"] + 0.5 * r["soft"], rel=1e-5)
    assert not student.training


def test_same_config_same_losses(setup):
    teacher, tok, rows = setup
    a = distill(teacher, _student(setup), rows, _cfg(), tok=tok, progress=False)
    b = distill(teacher, _student(setup), rows, _cfg(), tok=tok, progress=False)
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in h.losses] for h in (a, b)]
    assert timeless[0] == timeless[1] and all(r["seconds"] > 0 for r in a.losses)  # each step's wall time


class _Interrupt(Callback):
    def on_step(self, record, history):
        if record["step"] == 4:
            raise KeyboardInterrupt


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(setup, tmp_path):
    teacher, tok, rows = setup
    cfg = _cfg(steps=6, checkpoint_every=3, grad_accum=2, warmup_steps=2)
    whole = _student(setup)
    distill(teacher, whole, rows, cfg, tok=tok, progress=False)
    broken = _student(setup)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, broken, rows, cfg, callbacks=[_Interrupt()], checkpoint_dir=tmp_path, tok=tok, progress=False)
    resumed = _student(setup)  # a fresh process would start from scratch weights too
    hist = distill(teacher, resumed, rows, cfg, checkpoint_dir=tmp_path, resume=True, tok=tok, progress=False)
    assert [r["step"] for r in hist.losses] == [1, 2, 3, 4, 5, 6]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]  # no temporary folder left behind


class _StopAt(Callback):
    def __init__(self, at):
        self.at = at

    def on_step(self, record, history):
        self.stop = record["step"] >= self.at


def test_a_callback_stops_the_run_early_and_a_resume_goes_on_from_there(setup, tmp_path):
    teacher, tok, rows = setup
    cfg = _cfg(steps=6, checkpoint_every=4, warmup_steps=2)
    whole = _student(setup)
    distill(teacher, whole, rows, cfg, tok=tok, progress=False)
    stopped = _student(setup)
    hist = distill(teacher, stopped, rows, cfg, callbacks=[_StopAt(3)], checkpoint_dir=tmp_path, tok=tok, progress=False)
    assert hist.stopped_at == 3 and [r["step"] for r in hist.losses] == [1, 2, 3]
    already = _StopAt(3)
    already.stop = True  # a callback that is still stopped: the resumed run takes no step
    again = distill(teacher, _student(setup), rows, cfg, callbacks=[already], checkpoint_dir=tmp_path, resume=True,
                    tok=tok, progress=False)
    assert again.stopped_at == 3 and len(again.losses) == 3
    resumed = _student(setup)
    hist = distill(teacher, resumed, rows, cfg, checkpoint_dir=tmp_path, resume=True, tok=tok, progress=False)
    assert [r["step"] for r in hist.losses] == [1, 2, 3, 4, 5, 6] and hist.stopped_at is None
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_refuses_another_config_or_no_checkpoint(setup, tmp_path):
    teacher, tok, rows = setup
    distill(teacher, _student(setup), rows, _cfg(steps=2), checkpoint_dir=tmp_path, tok=tok, progress=False)
    with pytest.raises(ValueError, match="another config"):
        distill(teacher, _student(setup), rows, _cfg(steps=4), checkpoint_dir=tmp_path, resume=True, tok=tok,
                progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        distill(teacher, _student(setup), rows, _cfg(), checkpoint_dir=tmp_path / "none", resume=True, tok=tok,
                progress=False)


def test_hard_part_is_the_students_answer_cross_entropy(setup):
    teacher, tok, rows = setup
    student = _student(setup)
    batch = collate([encode_pair(tok, p, a) for p, a in zip(rows["prompt"][:3], rows["answer"][:3])], tok.pad_token_id)
    with torch.no_grad():
        parts = step_losses(teacher, student, batch, _cfg(alpha=1.0))
        torch.testing.assert_close(parts["hard"], answer_loss(student, batch))
        torch.testing.assert_close(parts["total"], parts["hard"])


def test_feature_and_relation_losses_with_a_narrower_student(setup):
    teacher, tok, rows = setup
    student = _student(setup, hidden_size=32)
    hist = distill(teacher, student, rows, _cfg(steps=2, feature_weight=1.0, relation_weight=0.5), tok=tok,
                   progress=False)
    r = hist.losses[-1]
    assert r["feature"] > 0 and r["relation"] > 0
    assert r["total"] == pytest.approx(0.5 * r["hard"] + 0.5 * r["soft"] + r["feature"] + 0.5 * r["relation"], rel=1e-5)


def test_sequence_level_targets_are_the_teachers_answers(setup):
    teacher, tok, rows = setup
    _, shipped = data.read_answers()
    with_teacher = rows.add_column("teacher_answer", [shipped[i] for i in rows["id"]])
    hist = distill(teacher, _student(setup), with_teacher, _cfg(steps=1, target="teacher_answer"), tok=tok,
                   progress=False)
    assert len(hist.losses) == 1
    with pytest.raises(ValueError, match="no 'teacher_answer' column"):
        distill(teacher, _student(setup), rows, _cfg(steps=1, target="teacher_answer"), tok=tok, progress=False)


def test_bad_input_is_named(setup):
    teacher, tok, rows = setup
    other = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=1, **TINY))
    with pytest.raises(ValueError, match=r"vocabularies differ \(teacher 49152 tokens, student 1000\)"):
        distill(teacher, other, rows, _cfg(), tok=tok, progress=False)
    with pytest.raises(ValueError, match="the dataset is empty"):
        distill(teacher, _student(setup), rows.select([]), _cfg(), tok=tok, progress=False)
    short = _student(setup)
    short.config.max_position_embeddings = 32
    with pytest.raises(ValueError, match="row 0 is .* tokens long, beyond the models' context of 32 tokens"):
        distill(teacher, short, rows, _cfg(), tok=tok, progress=False)
    with pytest.raises(ValueError, match=r"layer_map=\[5\] must give one teacher layer \(0..1\)"):
        distill(teacher, _student(setup), rows, _cfg(feature_weight=1.0, layer_map=[5]), tok=tok, progress=False)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint_dir"):
        distill(teacher, _student(setup), rows, _cfg(), resume=True, tok=tok, progress=False)
    for bad, message in [(dict(alpha=2.0), "alpha=2.0"), (dict(T=0), "T=0"), (dict(target="gold"), "target='gold'"),
                         (dict(feature_weight=-1), "feature_weight=-1"), (dict(layer_map=[]), "layer_map=")]:
        with pytest.raises(ValueError, match=message):
            _cfg(**bad)


def test_soft_targets_from_a_full_topk_cache_give_the_live_teachers_losses(setup):
    teacher, tok, rows = setup
    V = teacher.config.vocab_size
    cache = data.soft_targets(teacher, tok, rows, column="answer", k=V)  # every token: no tail at all
    live = distill(teacher, _student(setup), rows, _cfg(), tok=tok, progress=False)
    cached = distill(teacher, _student(setup), rows, _cfg(), tok=tok, progress=False, soft_targets=cache)
    for a, b in zip(live.losses, cached.losses):
        assert a["hard"] == pytest.approx(b["hard"], rel=1e-4) and a["soft"] == pytest.approx(b["soft"], rel=1e-4)


def test_a_topk_cache_is_saved_reused_and_checked_against_the_batch(setup, tmp_path):
    teacher, tok, rows = setup
    path = tmp_path / "top8.safetensors"
    cache = data.soft_targets(teacher, tok, rows, column="answer", k=8, path=path)
    again = data.soft_targets(None, tok, rows, column="answer", k=8, path=path)  # read back: no teacher needed
    assert all(torch.equal(a["logprobs"], b["logprobs"]) for a, b in zip(cache, again))
    hist = distill(teacher, _student(setup), rows, _cfg(steps=2), tok=tok, progress=False, soft_targets=cache)
    assert len(hist.losses) == 2 and hist.losses[0]["soft"] > 0
    with pytest.raises(ValueError, match="not 12 of top-4"):
        data.soft_targets(None, tok, rows, column="answer", k=4, path=path)
    with pytest.raises(ValueError, match="other answer tokens"):
        distill(teacher, _student(setup), rows, _cfg(steps=1), tok=tok, progress=False, soft_targets=cache[::-1])
    with pytest.raises(ValueError, match="5 rows for a dataset of 12"):
        distill(teacher, _student(setup), rows, _cfg(steps=1), tok=tok, progress=False, soft_targets=cache[:5])
    with pytest.raises(ValueError, match="need the live teacher"):
        distill(teacher, _student(setup), rows, _cfg(steps=1, feature_weight=1.0), tok=tok, progress=False,
                soft_targets=cache)


def test_with_teacher_answers_adds_the_shipped_answers(setup):
    _, _, rows = setup
    out = data.with_teacher_answers(rows)
    _, shipped = data.read_answers()
    assert out["teacher_answer"] == [shipped[i] for i in rows["id"]]


def test_no_teacher_trains_on_hard_labels_alone_like_alpha_one(setup):
    """teacher=None is the alpha = 1 run without the teacher's forward pass: the same hard losses."""
    teacher, tok, rows = setup
    with_teacher = distill(teacher, _student(setup), rows, _cfg(alpha=1.0, T=1.0), tok=tok, progress=False)
    alone = distill(None, _student(setup), rows, _cfg(alpha=1.0, T=1.0), tok=tok, progress=False)
    assert alone.curve("hard") == pytest.approx(with_teacher.curve("hard"), rel=1e-5)
    assert alone.curve("total") == alone.curve("hard")
    assert all(r["soft"] != r["soft"] for r in alone.losses)  # NaN: there is no teacher to compare with


@pytest.mark.parametrize("kw,message", [
    (dict(alpha=0.5), "alpha=0.5"),
    (dict(alpha=1.0, relation_weight=1.0), "relation_weight=1.0"),
])
def test_no_teacher_refuses_what_needs_a_teacher(setup, kw, message):
    _, tok, rows = setup
    with pytest.raises(ValueError, match=f"teacher=None .*{message}"):
        distill(None, _student(setup), rows, _cfg(**kw), tok=tok, progress=False)
    with pytest.raises(ValueError, match="teacher=None needs tok="):
        distill(None, _student(setup), rows, _cfg(alpha=1.0), progress=False)
