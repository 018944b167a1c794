import plotly.graph_objects as go
import pytest

from ragcomp_lab import viz
from ragcomp_lab.report import Report


def _r(name, f1, ms, mb, **kw):
    base = dict(name=name, f1=f1, em=f1, rouge={"rougeL": f1}, rouge_l=f1, bleu=10.0, perplexity=3.0,
                text_perplexity=20.0, faithfulness=0.9, faithfulness_embedding=0.7, unsupported=0.1,
                hallucination=0.2, false_refusal=0.0, agreement=None,
                size={"saved_bytes": mb * 1e6}, latency={"decode_ms_per_token": ms, "threads": 2}, table=None)
    return Report(**(base | kw))


REPORTS = [_r("teacher FP32", 0.99, 70, 538), _r("teacher INT8", 0.97, 40, 190), _r("student FP32", 0.6, 25, 200),
           _r("student INT4", 0.3, 80, 60)]


def test_size_latency_draws_measured_values_and_labels_a_slower_variant():
    fig = viz.size_latency(REPORTS)
    size, lat = fig.data
    assert list(size.y) == [538, 190, 200, 60] and list(lat.y) == [70, 40, 25, 80]
    assert lat.text[3].endswith("(slower)") and "slower" not in lat.text[1]


def test_pareto_marks_the_bar_and_the_front():
    fig = viz.pareto(REPORTS, "f1", bar=0.9)
    front = fig.data[0]
    assert list(front.x) == [25, 40, 70] and list(front.y) == [0.6, 0.97, 0.99]  # student INT4: slower and worse
    colors = {t.name: t.marker.color for t in fig.data[1:]}
    assert colors["teacher INT8"] == "#31a354" and colors["student FP32"] == "#de2d26"
    assert any("quality bar" in (a.text or "") for a in fig.layout.annotations)
    sizes = {t.name: t.marker.size for t in fig.data[1:]}
    assert sizes["teacher FP32"] > sizes["teacher INT8"] > sizes["student INT4"]


def test_faithfulness_bars_and_latency_growth():
    fig = viz.faithfulness_bars(REPORTS)
    assert isinstance(fig, go.Figure) and len(fig.data) == 4 and list(fig.data[3].y) == [0.2] * 4
    rows = [{"model": "teacher", "tokens": t, "ms": t / 10} for t in (256, 64)] + [{"model": "s", "tokens": 64, "ms": 1}]
    fig = viz.latency_growth(rows)
    assert list(fig.data[0].x) == [64, 256] and fig.data[1].name == "s"


def test_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        viz.size_latency([])
    with pytest.raises(ValueError, match="no latency rows"):
        viz.latency_growth([])
