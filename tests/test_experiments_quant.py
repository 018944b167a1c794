import math

import pytest
import torch

from ragcomp_lab import experiments, experiments_pool, experiments_quant, models
from ragcomp_lab.evaluation import answer_perplexity
from ragcomp_lab.config import DistillConfig
from ragcomp_lab.quant.linear import QuantLinear
from ragcomp_lab.quant.qat import FakeQuantLinear


@pytest.fixture(scope="module")
def bed(make_bed, tmp_path_factory):
    """The 2-layer stand-in teacher on 12 train and 3 test rows, with a runs_dir: the real code path."""
    return make_bed(12, 3, runs_dir=tmp_path_factory.mktemp("runs"))


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(experiments, "LAYERS", {1: [1]})
    monkeypatch.setattr(experiments, "STUDENT", 1)
    monkeypatch.setattr(experiments, "BASE", DistillConfig(T=2.0, alpha=0.5, steps=2, batch_size=2, lr=1e-3))


def test_rows_cover_every_arm_and_width_with_the_measured_fields(bed, small, tmp_path):
    rows, info = experiments_quant.ptq_vs_qat(bed, bits=(8, 4), steps=2)
    assert [(r["method"], r["bits"]) for r in rows] == [
        ("float", None), ("float + steps", None), ("PTQ", 8), ("QAT", 8), ("PTQ of float + steps", 8),
        ("PTQ", 4), ("QAT", 4), ("PTQ of float + steps", 4)]
    for r in rows:
        assert len(r["answers"]) == 3 and 0 <= r["f1"] <= 1 and r["answer_perplexity"] >= 1
        assert 0 <= r["top1"] <= 1 and r["token_kl"] >= -1e-6 and r["saved_bytes"] > 0
    assert rows[0]["token_kl"] == pytest.approx(0, abs=1e-6) and rows[0]["top1"] == 1.0  # its own reference
    by = {(r["method"], r["bits"]): r for r in rows}
    assert by["PTQ", 4]["saved_bytes"] < by["PTQ", 8]["saved_bytes"] < by["float", None]["saved_bytes"]
    # QAT ends in the same packed format (quant.json differs by the mode's name)
    assert by["QAT", 4]["saved_bytes"] == pytest.approx(by["PTQ", 4]["saved_bytes"], abs=64)
    assert by["QAT", 4]["steps"] == by["float + steps", None]["steps"] == 4  # the control trains as long
    assert by["QAT", 4]["prepared_converted_max_gap"] < 1e-3
    assert by["PTQ", 4]["group_size"] == 64 and by["PTQ", 8]["granularity"] == "per_channel"
    assert set(info["recovered"]["answer_perplexity"]) == {"8", "4"}
    experiments.write("ptq_vs_qat", rows, info, tmp_path)  # every value is plain JSON
    assert experiments.read("ptq_vs_qat", tmp_path)["rows"] == rows


def test_a_second_run_resumes_from_the_runs_dir(bed, small, monkeypatch):
    first, _ = experiments_quant.ptq_vs_qat(bed, bits=(8, 4), steps=2)  # the first test's runs, if it ran
    monkeypatch.setattr(experiments_quant, "distill", lambda *a, **k: pytest.fail("retrained a finished run"))
    monkeypatch.setattr(experiments_quant, "score_row", lambda *a, **k: pytest.fail("rescored a finished run"))
    again, _ = experiments_quant.ptq_vs_qat(bed, bits=(8, 4), steps=2)
    assert again == first


def test_qat_converted_model_is_packed_and_computes_what_the_prepared_one_does(bed, small):
    student = models.make_student(bed.teacher, keep_layers=[1])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = experiments_quant.extra_config(experiments.BASE, steps=2)
    converted, prepared, history = experiments_quant.qat_distill(bed, student, 4, cfg, bed.train, bed.soft_targets)
    assert len(history.losses) == 2 and all(math.isfinite(r["total"]) for r in history.losses)
    assert any(isinstance(m, FakeQuantLinear) for m in prepared.modules())
    assert any(isinstance(m, QuantLinear) for m in converted.modules())
    assert not any(isinstance(m, FakeQuantLinear) for m in converted.modules())
    assert experiments_quant.max_logit_gap(prepared, converted, bed.tok, bed.test["prompt"][:2]) < 1e-3
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())  # the float student untouched


def test_extra_config_keeps_the_distillation_and_lowers_the_lr():
    base = experiments.BASE
    cfg = experiments_quant.extra_config(base, steps=30)
    assert (cfg.T, cfg.alpha, cfg.batch_size, cfg.seed) == (base.T, base.alpha, base.batch_size, base.seed)
    assert cfg.steps == 30 and cfg.lr < base.lr and 0 < cfg.warmup_steps < cfg.steps


def test_scheme_is_per_channel_at_8_bits_and_per_group_below():
    assert experiments_quant.scheme(8).granularity == "per_channel"
    assert (experiments_quant.scheme(3).granularity, experiments_quant.scheme(3).group_size) == ("per_group", 64)
    assert experiments_quant.scheme(2, mode="qat").mode == "qat"


@pytest.mark.parametrize("bits", [1, 9, 4.0, True, "4"])
def test_unsupported_bits_are_refused_by_name(bits):
    with pytest.raises(ValueError, match="bits="):
        experiments_quant.scheme(bits)


def test_the_pool_source_starts_from_the_pool_runs_student_and_distills_from_the_live_teacher(bed, small,
                                                                                                 monkeypatch):
    pool_cfg = DistillConfig(T=1.0, alpha=1.0, steps=2, batch_size=2, lr=1e-3)
    pool, probe = bed.train.select(range(8)), bed.test.select(range(2))
    trained, _, _, _ = experiments_pool.trained_student(bed, pool_cfg, pool, probe_rows=probe)
    calls, distill = [], experiments_quant.distill

    def spy(teacher, student, data, cfg, **kw):
        calls.append((len(data), kw["soft_targets"]))
        return distill(teacher, student, data, cfg, **kw)
    monkeypatch.setattr(experiments_quant, "distill", spy)
    rows, info = experiments_quant.ptq_vs_qat(bed, bits=(4,), steps=2, source="pool", pool=pool, pool_config=pool_cfg)
    assert info["source"] == "pool" and info["live_teacher"] and info["float_config"] == pool_cfg.to_dict()
    assert calls == [(8, None), (8, None)]  # the control's and QAT's extra steps, live, on the pool
    float_row = rows[0]
    assert float_row["train_seconds"] is None and float_row["steps"] == 2  # trained by pool_run, not here
    assert float_row["answer_perplexity"] == pytest.approx(answer_perplexity(trained, bed.tok, bed.test))
    assert [(r["method"], r["bits"]) for r in rows][2:] == [("PTQ", 4), ("QAT", 4), ("PTQ of float + steps", 4)]


def test_an_unknown_source_is_refused_by_name(bed, small):
    with pytest.raises(ValueError, match="source='hub'.*split, pool"):
        experiments_quant.ptq_vs_qat(bed, bits=(4,), source="hub")


def test_bad_widths_are_refused_before_any_training(bed, small):
    with pytest.raises(ValueError, match="bits=16"):
        experiments_quant.ptq_vs_qat(bed, bits=(4, 16))
    with pytest.raises(ValueError, match="empty"):
        experiments_quant.ptq_vs_qat(bed, bits=())


def _row(method, bits, ppl):
    return {"method": method, "bits": bits, "answer_perplexity": ppl}


def test_recovered_share_is_zero_for_no_gain_one_for_full_recovery_and_none_when_nothing_was_lost():
    rows = [_row("float", None, 10.0), _row("float + steps", None, 8.0),
            _row("PTQ", 4, 20.0), _row("QAT", 4, 15.0), _row("PTQ of float + steps", 4, 18.0),
            _row("PTQ", 8, 10.0), _row("QAT", 8, 10.0),
            _row("PTQ", 2, 50.0), _row("QAT", 2, 50.0)]
    share = experiments_quant.recovered(rows)
    assert share["4"] == {"vs float": pytest.approx(0.5), "vs float + steps": pytest.approx(0.3)}
    assert share["8"]["vs float"] is None and share["2"]["vs float"] == 0.0
    ce = experiments_quant.recovered(rows, "answer_cross_entropy")["4"]["vs float"]
    assert ce == pytest.approx((math.log(20) - math.log(15)) / (math.log(20) - math.log(10)))
    with pytest.raises(ValueError, match="float row"):
        experiments_quant.recovered(rows[2:])


def test_the_experiment_is_registered_for_the_cli():
    assert "ptq_vs_qat" in experiments.EXPERIMENTS and "ptq_vs_qat_pool" in experiments.EXPERIMENTS
