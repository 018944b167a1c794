import plotly.graph_objects as go
import pytest

from ragcomp_lab import experiments_quant, viz


def _rows():
    rows = [{"method": "float", "bits": None, "answer_perplexity": 10.0, "top1": 1.0, "token_kl": 0.0},
            {"method": "float + steps", "bits": None, "answer_perplexity": 9.0, "top1": 0.9, "token_kl": 0.1}]
    for b, ptq, qat in ((8, 10.1, 9.5), (4, 14.0, 11.0), (2, 1e6, 80.0)):
        rows += [{"method": "PTQ", "bits": b, "answer_perplexity": ptq, "top1": 0.9, "token_kl": 0.2},
                 {"method": "QAT", "bits": b, "answer_perplexity": qat, "top1": 0.8, "token_kl": 0.3},
                 {"method": "PTQ of float + steps", "bits": b, "answer_perplexity": ptq * 0.9, "top1": 0.85,
                  "token_kl": 0.25}]
    return rows


def test_ptq_vs_qat_draws_each_arm_over_the_widths_and_the_float_levels():
    fig = viz.ptq_vs_qat(_rows())
    assert isinstance(fig, go.Figure)
    left = [t for t in fig.data if t.xaxis == "x"]
    assert sorted(t.name for t in left) == sorted(["PTQ", "QAT", "PTQ of float + steps", "float", "float + steps"])
    qat = next(t for t in left if t.name == "QAT")
    assert list(qat.x) == ["8-bit", "4-bit", "2-bit"] and list(qat.y) == [9.5, 11.0, 80.0]
    assert set(next(t for t in left if t.name == "float").y) == {10.0}
    assert fig.layout.yaxis.type == "log" and list(fig.layout.yaxis2.range) == [0, 1.05]  # perplexity, top-1
    assert sum(t.showlegend is not False for t in fig.data) == 5  # one legend entry per arm


def test_ptq_vs_qat_refuses_rows_without_the_arms_and_unknown_metrics():
    with pytest.raises(ValueError, match="QAT"):
        viz.ptq_vs_qat([r for r in _rows() if r["method"] != "QAT"])
    with pytest.raises(ValueError, match="metrics"):
        viz.ptq_vs_qat(_rows(), metrics=("bleu",))


def test_recovered_share_labels_each_width_with_its_measured_share():
    shares = experiments_quant.recovered(_rows())
    fig = viz.recovered_share(shares)
    vs_float = next(t for t in fig.data if t.name == "vs float")
    assert list(vs_float.x) == ["8-bit", "4-bit", "2-bit"]
    assert list(vs_float.text) == [f"{100 * shares[b]['vs float']:.0f}%" for b in ("8", "4", "2")]
    assert max(vs_float.y) <= 120  # a share above 1 (QAT beat the float student) is clipped for drawing
    assert len(fig.layout.shapes) == 1  # the published range, shaded
    assert len(viz.recovered_share(shares, reported=None).layout.shapes) == 0
    with pytest.raises(ValueError, match="no shares"):
        viz.recovered_share({})
