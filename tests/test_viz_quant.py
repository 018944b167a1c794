import math

import plotly.graph_objects as go
import pytest
import torch

import ragcomp_lab as rl
from ragcomp_lab import viz


def _w(seed=0, shape=(16, 128), outlier=None):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    if outlier is not None:
        w[3, 5] = outlier
    return w


def _x(seed=1, n=24, d=128):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_sqnr_is_infinite_without_error_and_gains_about_6_db_per_bit():
    w = _w()
    assert viz.sqnr_db(w, w) == math.inf
    s = [viz.sqnr_db(w, rl.quant.fake_quant(w, b, True, "per_channel")) for b in range(2, 9)]
    assert s == sorted(s)
    gains = [b - a for a, b in zip(s, s[1:])]
    assert all(4.5 < g < 7.5 for g in gains[2:])  # ~6.02 dB once the grid is fine enough


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_scheme_errors_match_fake_quant_and_finer_granularity_helps(bits):
    w, x = _w(outlier=1.5), _x()
    rows = viz.scheme_errors(w, bits, x, group_sizes=(64, 32))
    assert [r["scheme"] for r in rows[::2]] == ["per_tensor", "per_channel", "per_group 64", "per_group 32"]
    for r in rows:
        gran, _, g = r["scheme"].partition(" ")
        wq = rl.quant.fake_quant(w, bits, r["symmetric"], gran, int(g) if g else None)
        assert r["weight_mse"] == pytest.approx((w - wq).pow(2).mean().item())
        assert r["output_sqnr_db"] == pytest.approx(viz.sqnr_db(x @ w.T, x @ wq.T))
    sym = [r["weight_sqnr_db"] for r in rows if r["symmetric"]]
    assert sym == sorted(sym)  # tensor < channel < group 64 < group 32
    assert rows[0]["zeroed"] > rows[2]["zeroed"]  # the outlier's wide per-tensor grid rounds small weights to 0


def test_storage_cost_counts_scales_and_zero_points():
    rows = {(r["scheme"], r["symmetric"]): r["bits_per_weight"] for r in viz.scheme_errors(_w(), 4, group_sizes=(32,))}
    assert rows[("per_tensor", True)] == 4
    assert rows[("per_channel", True)] == 4 + 16 / 128
    assert rows[("per_group 32", True)] == 4 + 16 / 32
    assert rows[("per_group 32", False)] == 4 + 24 / 32


def test_an_outlier_hurts_per_tensor_more_than_per_group():
    clean, spiked = _w(), _w(outlier=2.0)
    def sqnr(w, gran, g=None):
        return viz.sqnr_db(w, rl.quant.fake_quant(w, 4, True, gran, g))
    assert sqnr(clean, "per_tensor") - sqnr(spiked, "per_tensor") > 10
    assert sqnr(clean, "per_group", 32) - sqnr(spiked, "per_group", 32) < 3


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("gran,g", [("per_tensor", None), ("per_channel", None), ("per_group", 32)])
def test_grid_points_are_the_dequantized_codes(symmetric, gran, g):
    w = _w(outlier=0.7)
    for which in ("median", "widest"):
        points = viz.grid(w, 3, symmetric, gran, g, which)
        assert len(points) == 8 and torch.all(points.diff() > 0)
    scale, zp = rl.quant.qparams(w, 3, symmetric, gran, g)
    widest = viz.grid(w, 3, symmetric, gran, g, "widest")
    assert torch.allclose(widest.diff(), scale.max().expand(7))
    # the slice holding the largest scale: each of its dequantized weights is a grid point
    wq = rl.quant.fake_quant(w, 3, symmetric, gran, g)
    i = scale.flatten().argmax().item()
    sl = {"per_tensor": wq.flatten(), "per_channel": wq[i], "per_group": wq.reshape(-1, 32)[i]}[gran]
    assert all(torch.isclose(widest, v).any() for v in sl)


def test_layer_quant_draws_the_grid_and_the_output_error():
    w, x = _w(outlier=1.0), _x()
    fig = viz.layer_quant(w, x, 4, granularity="per_channel", points=50)
    assert isinstance(fig, go.Figure)
    assert sum(fig.data[0].y) == w.numel()  # the histogram holds every weight
    grid_x = [v for v in fig.data[1].x if v is not None][::2]
    assert torch.allclose(torch.tensor(grid_x), viz.grid(w, 4, True, "per_channel"))
    assert fig.data[2].visible  # per_channel: the widest slice's grid differs from the median one
    assert len(fig.data[3].x) == 50 and "bits" not in fig.layout.title.text and "4-bit" in fig.layout.title.text
    assert viz.layer_quant(w, x, 4, granularity="per_tensor").data[2].visible is False


def test_layer_quant_slider_steps_hold_each_bit_width():
    w, x = _w(outlier=1.0), _x()
    fig = viz.layer_quant_slider(w, x, [2, 4, 8], granularity="per_group", group_size=32, points=40)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["2", "4", "8"]
    errors = []
    for step, b in zip(steps, (2, 4, 8)):
        grid_x = [v for v in step.args[0]["x"][0] if v is not None][::2]
        assert len(grid_x) == 2**b and list(step.args[2]) == [1, 2, 3]
        y, yq = torch.tensor(step.args[0]["x"][2]), torch.tensor(step.args[0]["y"][2])
        errors.append((y - yq).abs().mean().item())
        assert f"{b}-bit" in step.args[1]["title.text"]
    assert errors == sorted(errors, reverse=True)  # more bits, smaller output error


def test_scheme_bars_and_outlier_figure():
    rows = viz.scheme_errors(_w(outlier=1.0), 4, _x())
    fig = viz.scheme_bars(rows)
    assert list(fig.data[0].y) == pytest.approx([r["output_sqnr_db"] for r in rows if r["symmetric"]], abs=1e-4)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    scan = viz.outlier_scan(model, bits=4, group_size=32)
    assert [r["layer"] for r in scan] == ["0", "2"]
    assert len(viz.outlier_figure(scan).data) == 3


@pytest.mark.parametrize("call,message", [
    (lambda: viz.scheme_errors(_w(), 4, group_sizes=(48,)), "group_sizes has \\[48\\]"),
    (lambda: viz.scheme_errors(_w(), 9), "bits=9"),
    (lambda: viz.scheme_errors(_w()[0], 4), "at least 2 dimension"),
    (lambda: viz.scheme_errors(_w(), 4, _x(d=64)), "in_features=128"),
    (lambda: viz.grid(_w(), 4, which="max"), "which='max'"),
    (lambda: viz.layer_quant_slider(_w(), _x(), []), "bits is empty"),
    (lambda: viz.layer_quant_slider(_w(), _x(), [1, 4]), "bits=1"),
    (lambda: viz.scheme_bars(viz.scheme_errors(_w(), 4), "output_sqnr_db"), "metric='output_sqnr_db'"),
    (lambda: viz.sqnr_db(_w(), _w()[:3]), "same shape"),
    (lambda: viz.outlier_scan(torch.nn.Linear(10, 4), group_size=4), "group_size=4"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
