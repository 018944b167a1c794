"""Quantization error of real weights, and the figures that draw it (re-exported by `rl.viz`).

The measurements (`sqnr_db`, `grid`, `scheme_errors`, `outlier_scan`) are plain tensor math on a
weight W (out_features, in_features) and, optionally, real inputs X (tokens, in_features) of its
layer: the output error is that of X W^T. The builders are pure: they return a plotly Figure.
`layer_quant_slider` is the static twin of `widgets.layer_quant_panel`.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from . import _validate
from .quant.primitives import fake_quant, int_range, qparams

__all__ = ["sqnr_db", "scheme_errors", "outlier_scan", "grid", "scheme_bars", "outlier_figure", "layer_quant",
           "layer_quant_slider"]

SCALE_BITS, ZERO_POINT_BITS = 16, 8  # QuantLinear stores float16 scales and uint8 zero-points
GRID, WIDEST, OUTPUT = "#e6550d", "#de2d26", "#3182bd"


def _weight(w, x=None) -> None:
    _validate.tensor("w", w, 2)
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-d weight (out_features, in_features), got shape {tuple(w.shape)}")
    if x is not None:
        _validate.tensor("x", x, 2)
        if x.dim() != 2 or x.shape[1] != w.shape[1]:
            raise ValueError(f"x must be (tokens, in_features={w.shape[1]}), the layer's inputs; got shape "
                             f"{tuple(x.shape)}")


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(sum x^2 / sum (x - x_hat)^2), in dB
    (+6 dB per extra bit on a uniform grid; inf when x_hat == x)."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    noise = (x.double() - x_hat.double()).pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(x.double().pow(2).sum().item() / noise)


def _label(granularity, group_size) -> str:
    return f"per_group {group_size}" if granularity == "per_group" else granularity


def scheme_errors(w: torch.Tensor, bits: int, x: torch.Tensor | None = None,
                  group_sizes=(128, 64, 32)) -> list[dict]:
    """One row per scheme (per_tensor, per_channel, per_group of each size; symmetric and affine):
    weight MSE and SQNR, the share of non-zero weights rounded to 0, the storage cost in bits per
    weight (codes + scales + zero-points) and, with inputs x, the SQNR of the output x W^T."""
    _weight(w, x)
    bad = [g for g in group_sizes if isinstance(g, bool) or not isinstance(g, int) or g <= 0 or w.shape[1] % g]
    if bad:
        raise ValueError(f"group_sizes has {bad}: each must be a positive divisor of in_features={w.shape[1]}")
    w = w.detach().float()
    y = None if x is None else x.float() @ w.T
    rows = []
    for granularity, g in [("per_tensor", None), ("per_channel", None)] + [("per_group", g) for g in group_sizes]:
        per_weight = {"per_tensor": 0.0, "per_channel": 1 / w.shape[1], "per_group": 1 / (g or 1)}[granularity]
        for symmetric in (True, False):
            wq = fake_quant(w, bits, symmetric, granularity, g)
            row = {"scheme": _label(granularity, g), "symmetric": symmetric, "bits": bits,
                   "weight_mse": (w - wq).pow(2).mean().item(), "weight_sqnr_db": sqnr_db(w, wq),
                   "zeroed": ((wq == 0) & (w != 0)).float().mean().item(),
                   "bits_per_weight": bits + per_weight * (SCALE_BITS + (0 if symmetric else ZERO_POINT_BITS))}
            if y is not None:
                row["output_sqnr_db"] = sqnr_db(y, x.float() @ wq.T)
            rows.append(row)
    return rows


def outlier_scan(model: torch.nn.Module, bits: int = 4, group_size: int = 64) -> list[dict]:
    """For every nn.Linear of `model` (a tied LM head once): max|w| / std(w), and the weight SQNR
    of symmetric per_tensor, per_channel and per_group quantization at `bits`."""
    _validate.bits(bits)
    _validate.positive_int("group_size", group_size)
    rows, seen = [], set()
    for name, m in model.named_modules():
        if type(m) is not torch.nn.Linear or id(m.weight) in seen or m.in_features % group_size:
            continue
        seen.add(id(m.weight))
        w = m.weight.detach().float()
        rows.append({"layer": name, "max_over_std": (w.abs().max() / w.std()).item(),
                     **{f"sqnr_{_label(gr, g)}": sqnr_db(w, fake_quant(w, bits, True, gr, g))
                        for gr, g in (("per_tensor", None), ("per_channel", None), ("per_group", group_size))}})
    if not rows:
        raise ValueError(f"model has no nn.Linear whose in_features group_size={group_size} divides")
    return rows


def scheme_bars(rows: list[dict], metric: str = "output_sqnr_db") -> go.Figure:
    """scheme_errors rows as bars of `metric` per scheme, symmetric next to affine."""
    if not rows or metric not in rows[0]:
        raise ValueError(f"metric={metric!r} is not in the rows; they hold {list(rows[0]) if rows else 'nothing'}")
    fig = go.Figure()
    for symmetric, colour in ((True, "#3182bd"), (False, "#9ecae1")):
        sel = [r for r in rows if r["symmetric"] == symmetric]
        fig.add_bar(x=[r["scheme"] for r in sel], y=[round(r[metric], 4) for r in sel], marker_color=colour,
                    name="symmetric (Z = 0)" if symmetric else "affine (Z shifts the grid)",
                    text=[f"{r[metric]:.1f}" for r in sel], textposition="outside")
    what = "layer output" if metric.startswith("output") else "weight"
    fig.update_layout(title=f"{rows[0]['bits']}-bit quantization of one layer: {what} SQNR (higher is better)",
                      barmode="group", yaxis_title="SQNR (dB)", height=400, margin=dict(t=60, b=40))
    return fig


def outlier_figure(rows: list[dict]) -> go.Figure:
    """outlier_scan rows: each layer's weight SQNR against its max|w| / std, one colour per granularity."""
    fig = go.Figure()
    for key, colour in zip([k for k in rows[0] if k.startswith("sqnr_")], ("#de2d26", "#3182bd", "#31a354")):
        fig.add_scatter(x=[round(r["max_over_std"], 4) for r in rows], y=[round(r[key], 4) for r in rows], mode="markers",
                        name=key.removeprefix("sqnr_"), text=[r["layer"] for r in rows],
                        marker=dict(color=colour, size=6))
    fig.update_layout(title="Every Linear layer of the teacher: an outlier costs per-tensor its precision",
                      xaxis=dict(title="max|w| / std(w) of the layer", type="log"), yaxis_title="weight SQNR (dB)",
                      height=420, margin=dict(t=60, b=40))
    return fig


def grid(w: torch.Tensor, bits: int, symmetric: bool = True, granularity: str = "per_tensor",
         group_size: int | None = None, which: str = "median") -> torch.Tensor:
    """The 2^bits values, (q - Z) * S for every code q, that one slice of w can take: the slice
    (the tensor, a row or a group) with the median scale, or the `widest` one (the largest scale)."""
    if which not in ("median", "widest"):
        raise ValueError(f"which={which!r} is not supported: use 'median' or 'widest'")
    scale, zero_point = qparams(w, bits, symmetric, granularity, group_size)
    s, z = scale.flatten(), zero_point.flatten()
    i = s.argmax() if which == "widest" else s.argsort()[(len(s) - 1) // 2]
    q_min, q_max = int_range(bits, symmetric)
    return (torch.arange(q_min, q_max + 1, dtype=torch.float32) - z[i]) * s[i]


def _lines(values, top) -> tuple[list, list]:
    xs, ys = [], []
    for v in values.tolist():
        xs += [v, v, None]
        ys += [0.8, top, None]
    return xs, ys


def _layer_traces(w, x, bits, symmetric, granularity, group_size, points, top):
    """The changing parts of layer_quant: grid lines (median, widest slice), output scatter, title."""
    wq = fake_quant(w, bits, symmetric, granularity, group_size)
    pick = torch.randperm(x.shape[0] * w.shape[0], generator=torch.Generator().manual_seed(0))[:points]
    y, yq = (x @ w.T).flatten()[pick], (x @ wq.T).flatten()[pick]
    median = _lines(grid(w, bits, symmetric, granularity, group_size, "median"), top)
    widest = _lines(grid(w, bits, symmetric, granularity, group_size, "widest"), top)
    out = sqnr_db(x @ w.T, x @ wq.T)
    title = (f"{bits}-bit {'symmetric' if symmetric else 'affine'} {_label(granularity, group_size)}: "
             f"weight SQNR {sqnr_db(w, wq):.1f} dB, layer output SQNR {out:.1f} dB")
    return median, widest, ([round(v, 5) for v in y.tolist()], [round(v, 5) for v in yq.tolist()]), title


def layer_quant(w: torch.Tensor, x: torch.Tensor, bits: int, symmetric: bool = True,
                granularity: str = "per_channel", group_size: int | None = None, bins: int = 121,
                points: int = 1000) -> go.Figure:
    """Left: the histogram of all of w (log counts) under the quantization grid of its median
    slice and of its widest one (the same grid per_tensor). Right: the layer's output x W^T,
    FP32 against quantized weights, on `points` sampled outputs (on the diagonal: no error)."""
    _weight(w, x)
    w, x = w.detach().float(), x.detach().float()
    m = w.abs().max().item()
    counts = torch.histc(w, bins=bins, min=-m, max=m)
    centres = torch.linspace(-m, m, bins + 1)[:-1] + m / bins
    top = 1.5 * counts.max().item()
    median, widest, (y, yq), title = _layer_traces(w, x, bits, symmetric, granularity, group_size, points, top)
    fig = make_subplots(1, 2, subplot_titles=("weights and the grid they are rounded to",
                                              "layer output on real inputs: FP32 vs quantized"))
    fig.add_bar(x=[round(c, 6) for c in centres.tolist()], y=counts.tolist(), marker_color="#bdbdbd", name="weights",
                width=2 * m / bins, row=1, col=1)
    fig.add_scatter(x=median[0], y=median[1], mode="lines", line=dict(color=GRID, width=1), row=1, col=1,
                    name="grid (median slice)" if granularity != "per_tensor" else "grid")
    fig.add_scatter(x=widest[0], y=widest[1], mode="lines", line=dict(color=WIDEST, width=1, dash="dot"), row=1, col=1,
                    name="grid (widest slice)", visible=granularity != "per_tensor")
    fig.add_scatter(x=y, y=yq, mode="markers", marker=dict(color=OUTPUT, size=3), name="outputs", row=1, col=2)
    lo, hi = min(y), max(y)
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="black", dash="dash"), name="no error",
                    row=1, col=2)
    fig.update_yaxes(type="log", title_text="count", row=1, col=1)
    fig.update_xaxes(title_text="weight value", row=1, col=1)
    fig.update_xaxes(title_text="FP32 output", row=1, col=2)
    fig.update_yaxes(title_text="output with quantized weights", row=1, col=2)
    fig.update_layout(title=title, height=440, margin=dict(t=90, b=40), bargap=0)
    return fig


def layer_quant_slider(w: torch.Tensor, x: torch.Tensor, bits=range(2, 9), symmetric: bool = True,
                       granularity: str = "per_channel", group_size: int | None = None,
                       points: int = 1000) -> go.Figure:
    """layer_quant with a Plotly slider over `bits` (works on a static page, no kernel)."""
    bits = [_validate.bits(b) for b in bits]
    if not bits:
        raise ValueError("bits is empty: give at least one bit-width from 2 to 8")
    fig = layer_quant(w, x, bits[0], symmetric, granularity, group_size, points=points)
    w, x = w.detach().float(), x.detach().float()
    top = fig.data[1].y[1]
    steps = []
    for b in bits:
        median, widest, (y, yq), title = _layer_traces(w, x, b, symmetric, granularity, group_size, points, top)
        steps.append(dict(method="update", label=str(b),
                          args=[{"x": [median[0], widest[0], y], "y": [median[1], widest[1], yq]},
                                {"title.text": title}, [1, 2, 3]]))
    fig.update_layout(sliders=[dict(steps=steps, currentvalue=dict(prefix="bits = "), pad=dict(t=50))], height=540)
    return fig
