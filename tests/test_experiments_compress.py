import pytest

import ragcomp_lab as rl
from ragcomp_lab import experiments, experiments_compress
from ragcomp_lab.compress import ship


@pytest.fixture(scope="module")
def run(make_bed, tmp_path_factory):
    """The experiment on the 2-layer stand-in teacher, 8 train and 6 test rows: the real code path."""
    bed = make_bed(8, 6)
    mp = pytest.MonkeyPatch()
    mp.setattr(experiments, "LAYERS", {1: [1]})
    mp.setattr(experiments, "STUDENT", 1)
    keep = tmp_path_factory.mktemp("kept") / "student"
    cfg = rl.DistillConfig(T=2.0, alpha=0.5, steps=2, batch_size=2, lr=1e-3)
    try:
        rows, info = experiments_compress.compress_run(bed, cfg, qat_steps=1, bar=rl.QualityBar(max_perplexity=1e12),
                                                       keep=keep)
    finally:
        mp.undo()
    return rows, info, keep, bed.teacher


def test_every_variant_has_a_row_a_report_and_a_verdict(run):
    rows, info, _, _ = run
    names = ["teacher FP32", "teacher INT8", "student FP32", "student INT8", "student INT4", "student INT4 QAT"]
    assert [r["variant"] for r in rows] == names
    assert list(info["reports"]) == names and list(info["verdicts"]) == names
    assert all(len(r["answers"]) == 6 and r["meets_bar"] for r in rows)
    assert info["distill_config"]["steps"] == 2 and info["qat_steps"] == 1 and info["student_layers"] == [1]


def test_reports_read_back_equal_what_was_measured(run, tmp_path):
    rows, info, _, _ = run
    path = experiments.write("compress", rows, info, out_dir=tmp_path)
    back = experiments_compress.reports(experiments.read("compress", out_dir=tmp_path))
    assert back["student INT4"].to_dict() == info["reports"]["student INT4"]
    assert back["student INT4"].meets(rl.QualityBar(max_perplexity=1e12))
    assert path.with_suffix(".csv").is_file()


def test_the_kept_student_is_the_distilled_one(run):
    import torch

    rows, _, keep, teacher = run
    student = rl.load(keep)
    assert student.config.num_hidden_layers == 1
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(student(ids).logits).all()


def _report(name, f1, ms, mb):
    return rl.Report(name=name, f1=f1, em=f1, rouge={}, rouge_l=f1, bleu=None, perplexity=1.0, text_perplexity=None,
                     faithfulness=1.0, faithfulness_embedding=None, unsupported=0.0, hallucination=0.0,
                     false_refusal=0.0, agreement=None, size={"saved_bytes": mb * 1e6}, latency={"decode_ms_per_token": ms},
                     table=None)


def test_ship_picks_the_smallest_variant_within_budget_that_meets_the_bar():
    reports = {"big": _report("big", 0.99, 80.0, 500), "int8": _report("int8", 0.95, 50.0, 130),
               "int4": _report("int4", 0.95, 90.0, 70), "broken": _report("broken", 0.1, 10.0, 40)}
    bar = rl.QualityBar(f1=0.9)
    assert ship(reports, bar) == "int4"  # no budget: smallest that passes
    assert ship(reports, bar, max_ms_per_token=85) == "int8"  # int4 decodes too slowly
    assert ship(reports, bar, max_ms_per_token=20) is None  # only the broken one is that fast
    with pytest.raises(ValueError, match="max_ms_per_token=0"):
        ship(reports, bar, max_ms_per_token=0)
    with pytest.raises(ValueError, match="bar must be"):
        ship(reports, 0.9)


def test_from_dict_names_what_is_missing():
    d = _report("x", 0.5, 1.0, 1).to_dict()
    assert rl.Report.from_dict(d) == _report("x", 0.5, 1.0, 1)
    del d["f1"]
    with pytest.raises(ValueError, match="lacks f1"):
        rl.Report.from_dict(d)
