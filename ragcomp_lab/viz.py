"""Pure figure builders: each returns a plotly Figure and never shows it.

The `*_slider` builders are the static twins of the live widgets: a Plotly slider over
precomputed values, so the built book stays interactive without a kernel.
"""
from __future__ import annotations

import math
import statistics

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .losses import distillation_loss, kd_kl
from .softmax import entropy, softmax_t


def _shown(logits, labels, top):
    """Indices and labels of the bars: every class, or the `top` largest logits (T keeps the order)."""
    idx = list(range(len(logits))) if top is None else logits.topk(min(top, len(logits))).indices.tolist()
    names = list(labels) if labels is not None else [str(i) for i in range(len(logits))]
    return idx, [names[i] for i in idx]


def _t_title(logits, T):
    h = entropy(softmax_t(logits, T)).item()
    return f"softmax(z / T) at T = {T:g}: entropy {h:.3f} nats (max {math.log(len(logits)):.3f})"


def temperature_bars(logits: torch.Tensor, T: float, labels=None, top: int | None = None) -> go.Figure:
    """softmax(z/T) over all the classes of one logit vector, drawn for every class or for the
    `top` most likely ones (a vocabulary has 49,152 tokens; the softmax still runs over all)."""
    idx, x = _shown(logits, labels, top)
    fig = go.Figure(go.Bar(x=x, y=softmax_t(logits, T)[idx].tolist(), marker_color="#3182bd"))
    fig.update_layout(title=_t_title(logits, T), yaxis=dict(title="probability", range=[0, 1]),
                      xaxis=dict(title="class" if top is None else f"the {len(idx)} most likely tokens",
                                 type="category"), height=380, margin=dict(t=60, b=40))
    return fig


def temperature_slider(logits: torch.Tensor, Ts, labels=None, top: int | None = None) -> go.Figure:
    """temperature_bars with a Plotly slider over the temperatures Ts (works on a static page)."""
    Ts = [float(T) for T in Ts]
    idx, _ = _shown(logits, labels, top)
    fig = temperature_bars(logits, Ts[0], labels, top)
    steps = [dict(method="update", label=f"{T:g}",
                  args=[{"y": [softmax_t(logits, T)[idx].tolist()]}, {"title.text": _t_title(logits, T)}]) for T in Ts]
    fig.update_layout(sliders=[dict(steps=steps, currentvalue=dict(prefix="T = "), pad=dict(t=40))], height=460)
    return fig


def digit_image(pixels: torch.Tensor, title: str = "") -> go.Figure:
    """One 8x8 digit (64 values in [0, 1]) as a greyscale image."""
    fig = go.Figure(go.Heatmap(z=pixels.reshape(8, 8).flip(0).tolist(), colorscale="Greys", showscale=False))
    fig.update_layout(title=title, width=320, height=360, margin=dict(t=70, b=10, l=10, r=10),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig


def entropy_curve(logits: torch.Tensor, Ts) -> go.Figure:
    """Entropy of softmax(z/T) against T, rising from that of the argmax to log V."""
    Ts = [float(T) for T in Ts]
    h = [entropy(softmax_t(logits, T)).item() for T in Ts]
    fig = go.Figure(go.Scatter(x=Ts, y=h, mode="lines+markers", name="entropy"))
    fig.add_hline(y=math.log(len(logits)), line_dash="dot", annotation_text="log V (uniform)")
    fig.update_layout(title="Entropy rises with the temperature", xaxis=dict(title="T", type="log"),
                      yaxis_title="entropy (nats)", height=360, margin=dict(t=60, b=40))
    return fig


def _loss_terms(student, teacher, label, T, alpha):
    """Loss parts and the gradient of each part on the student's logits (one example)."""
    z = student.detach().clone().requires_grad_(True)
    parts = distillation_loss(z[None], teacher[None], torch.tensor([label]), T, alpha)
    grads = [torch.autograd.grad(p, z, retain_graph=True)[0].tolist() for p in parts]
    return parts, dict(zip(("total", "hard", "soft"), grads))


def loss_panel(student, teacher, label: int, T: float, alpha: float, labels=None) -> go.Figure:
    """Left: the loss parts against alpha at this T. Right: each part's gradient on the student's logits."""
    fig = make_subplots(1, 2, subplot_titles=("loss parts against alpha", "gradient on the student's logits"))
    for name, trace in _loss_traces(student, teacher, label, T, alpha, labels):
        fig.add_trace(trace, row=1, col=1 if name.startswith("line") else 2)
    fig.update_xaxes(title_text="alpha", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_layout(title=_loss_title(student, teacher, label, T, alpha), barmode="group", height=420,
                      margin=dict(t=80, b=40))
    return fig


def _loss_title(student, teacher, label, T, alpha):
    parts, _ = _loss_terms(student, teacher, label, T, alpha)
    return (f"T = {T:g}, alpha = {alpha:g}: total {parts.total.item():.3f} = {alpha:g} x hard "
            f"{parts.hard.item():.3f} + {1 - alpha:g} x soft {parts.soft.item():.3f}")


def _loss_traces(student, teacher, label, T, alpha, labels):
    alphas = [i / 20 for i in range(21)]
    parts, grads = _loss_terms(student, teacher, label, T, alpha)
    hard, soft = parts.hard.item(), parts.soft.item()
    x = _shown(student, labels, None)[1]
    yield "line_hard", go.Scatter(x=alphas, y=[hard] * 21, name="hard (CE, T=1)", line_color="#e6550d")
    yield "line_soft", go.Scatter(x=alphas, y=[soft] * 21, name="soft (KL x T²)", line_color="#3182bd")
    yield "line_total", go.Scatter(x=alphas, y=[a * hard + (1 - a) * soft for a in alphas], name="total",
                                   line=dict(color="black", width=3))
    yield "bar_hard", go.Bar(x=x, y=[alpha * g for g in grads["hard"]], name="alpha x ∂hard", marker_color="#e6550d")
    yield "bar_soft", go.Bar(x=x, y=[(1 - alpha) * g for g in grads["soft"]], name="(1-alpha) x ∂soft",
                             marker_color="#3182bd")
    yield "bar_total", go.Bar(x=x, y=grads["total"], name="∂total", marker_color="black")


def loss_slider(student, teacher, label: int, Ts, alpha: float = 0.5, labels=None) -> go.Figure:
    """loss_panel with a Plotly slider over T (alpha fixed; the left panel already spans every alpha)."""
    Ts = [float(T) for T in Ts]
    fig = loss_panel(student, teacher, label, Ts[0], alpha, labels)
    steps = []
    for T in Ts:
        ys = [tr.y for _, tr in _loss_traces(student, teacher, label, T, alpha, labels)]
        steps.append(dict(method="update", label=f"{T:g}",
                          args=[{"y": ys}, {"title.text": _loss_title(student, teacher, label, T, alpha)}]))
    fig.update_layout(sliders=[dict(steps=steps, currentvalue=dict(prefix="T = "), pad=dict(t=50))], height=520)
    return fig


def t_squared_gradients(student, teacher, Ts) -> go.Figure:
    """Norm of the soft loss's gradient on the student's logits, with and without the T² factor."""
    Ts = [float(T) for T in Ts]
    scaled, unscaled = [], []
    for T in Ts:
        z = student.detach().clone().requires_grad_(True)
        g = torch.autograd.grad(kd_kl(z, teacher, T), z)[0].norm().item()
        scaled.append(g)
        unscaled.append(g / T**2)
    fig = go.Figure([go.Scatter(x=Ts, y=scaled, name="KL x T² (what the code uses)", mode="lines+markers"),
                     go.Scatter(x=Ts, y=unscaled, name="KL alone", mode="lines+markers")])
    fig.update_layout(title="Why the soft loss is scaled by T²: gradient size against T",
                      xaxis=dict(title="T", type="log"), yaxis=dict(title="‖∂L/∂z_s‖", type="log"),
                      height=380, margin=dict(t=60, b=40))
    return fig


def accuracy_bars(results: dict) -> go.Figure:
    """results: name -> list of accuracies (one per seed); bars show the mean, whiskers min..max."""
    names = list(results)
    means = [sum(v) / len(v) for v in results.values()]
    fig = go.Figure(go.Bar(x=names, y=[100 * m for m in means], text=[f"{100 * m:.1f}%" for m in means],
                           error_y=dict(type="data", symmetric=False,
                                        array=[100 * (max(v) - m) for v, m in zip(results.values(), means)],
                                        arrayminus=[100 * (m - min(v)) for v, m in zip(results.values(), means)])))
    fig.update_layout(title="Test accuracy (mean over seeds, whiskers min..max)", yaxis=dict(title="%", range=[0, 100]),
                      height=380, margin=dict(t=60, b=40))
    return fig


def sweep_heatmap(table: list[dict], value: str = "accuracy", percent: bool = True, reverse: bool = False) -> go.Figure:
    """table rows {T, alpha, value}: a heatmap of value over the T x alpha grid (in % when
    `percent`; `reverse` when lower is better, e.g. a perplexity)."""
    Ts = sorted({r["T"] for r in table})
    alphas = sorted({r["alpha"] for r in table})
    cell = {(r["T"], r["alpha"]): r[value] for r in table}
    z = [[(100 if percent else 1) * cell[(T, a)] for T in Ts] for a in alphas]
    unit = " (%)" if percent else ""
    fig = go.Figure(go.Heatmap(x=[f"{T:g}" for T in Ts], y=[f"{a:g}" for a in alphas], z=z, colorscale="Viridis",
                               text=[[f"{v:.1f}" for v in row] for row in z], texttemplate="%{text}",
                               colorbar=dict(title=unit.strip(" ()") or value)))
    if reverse:
        fig.update_traces(reversescale=True)
    fig.update_layout(title=f"Student test {value}{unit} over T and alpha", xaxis_title="T",
                      yaxis_title="alpha (weight of the hard loss)", height=400, margin=dict(t=60, b=40))
    return fig


def recall_curves(recalls: dict) -> go.Figure:
    """recalls: retriever name -> {k: recall@k}; one line per retriever."""
    fig = go.Figure([go.Scatter(x=list(r), y=[100 * v for v in r.values()], name=name, mode="lines+markers")
                     for name, r in recalls.items()])
    fig.update_layout(title="Retrieval recall@k (all support documents in the top k)", xaxis_title="k",
                      yaxis=dict(title="recall (%)", range=[0, 105]), height=380, margin=dict(t=60, b=40))
    return fig


def quality_bars(table: dict, metrics=None, title: str = "Answer quality on the validation split (%)") -> go.Figure:
    """table: model name -> {metric: value in [0, 1]}; grouped bars, one group per metric."""
    metrics = list(metrics or next(iter(table.values())))
    fig = go.Figure([go.Bar(name=name, x=metrics, y=[100 * row.get(m, float("nan")) for m in metrics],
                            text=[f"{100 * row.get(m, float('nan')):.0f}" for m in metrics]) for name, row in table.items()])
    fig.update_layout(barmode="group", title=title, yaxis=dict(range=[0, 105]),
                      height=400, margin=dict(t=60, b=40))
    return fig


def topk_coverage(ks, coverage, bytes_per_token) -> go.Figure:
    """Share of the teacher's probability mass inside its top k, and the bytes a cache stores per token."""
    fig = make_subplots(1, 2, subplot_titles=("probability mass in the top k", "bytes per answer token"))
    fig.add_trace(go.Scatter(x=list(ks), y=[100 * c for c in coverage], mode="lines+markers", name="mass in top k"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=list(bytes_per_token), y=list(bytes_per_token.values()), name="bytes / token"), row=1, col=2)
    fig.update_xaxes(title_text="k", type="log", row=1, col=1)
    fig.update_yaxes(title_text="%", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title="Caching the teacher's soft targets as top-k log-probabilities", showlegend=False,
                      height=400, margin=dict(t=80, b=40))
    return fig


def loss_curves(history, parts=("total", "hard", "soft", "feature", "relation")) -> go.Figure:
    """The loss parts of a distill() History, step by step (the static twin of LiveLossCurve)."""
    steps = history.curve("step")
    fig = go.Figure([go.Scatter(x=steps, y=history.curve(p), name=p, mode="lines")
                     for p in parts if history.losses and p in history.losses[0]])
    fig.update_layout(title="Distillation loss per step", xaxis_title="step", yaxis=dict(title="loss", type="log"),
                      height=360, margin=dict(t=60, b=40))
    return fig


def f1_curve(points: list[dict], reference: float | None = None, reference_name: str = "teacher") -> go.Figure:
    """Answer F1 against training steps (points: {"step", "f1", "f1_single_fact", "f1_two_hop"}), with
    the reference's F1 as a dashed line."""
    fig = go.Figure()
    for key, name in (("f1", "all answerable"), ("f1_single_fact", "single fact"), ("f1_two_hop", "two hop")):
        fig.add_trace(go.Scatter(x=[p["step"] for p in points], y=[p.get(key) for p in points], name=name,
                                 mode="lines+markers", line=dict(width=3 if key == "f1" else 1.5)))
    return _f1_axes(fig, reference, reference_name, "Answer F1 while training")


def f1_curves(runs: dict[str, list[dict]], reference: float | None = None, reference_name: str = "teacher",
              key: str = "f1") -> go.Figure:
    """One run per line: `key` (F1 on all answerable questions by default) against training steps,
    for runs that share their probe questions (runs: name -> points as in f1_curve)."""
    fig = go.Figure()
    for name, points in runs.items():
        fig.add_trace(go.Scatter(x=[p["step"] for p in points], y=[p.get(key) for p in points], name=name,
                                 mode="lines+markers"))
    return _f1_axes(fig, reference, reference_name, "Answer F1 on the probe questions while training")


def _f1_axes(fig: go.Figure, reference, reference_name: str, title: str) -> go.Figure:
    """The F1-against-steps frame of f1_curve and f1_curves, with the reference as a dashed line."""
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dash", annotation_text=f"{reference_name} {reference:.3f}")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="F1", yaxis_range=[0, 1.05], height=380)
    return fig


def seed_bars(groups: dict, reference: dict | None = None, reference_name: str = "teacher") -> go.Figure:
    """groups: name -> {metric: [one value in [0, 1] per seed]}; grouped bars of the mean with
    whiskers of one standard deviation, and the reference model's value as a dashed marker."""
    metrics = list(next(iter(groups.values())))
    fig = go.Figure()
    for name, row in groups.items():
        kept = {m: [v for v in row[m] if v is not None] for m in metrics}  # None: the metric did not apply
        means = [statistics.mean(kept[m]) if kept[m] else math.nan for m in metrics]
        sds = [statistics.stdev(kept[m]) if len(kept[m]) > 1 else 0.0 for m in metrics]
        fig.add_bar(name=name, x=metrics, y=[100 * m for m in means], error_y=dict(type="data", array=[100 * s for s in sds]),
                    text=[f"{100 * m:.1f}" for m in means], textposition="inside")
    if reference:
        fig.add_scatter(x=metrics, y=[100 * reference[m] if reference[m] is not None else math.nan for m in metrics],
                        name=reference_name, mode="markers",
                        marker=dict(symbol="line-ew", size=40, line=dict(width=3, color="black")))
    n = len(next(iter(next(iter(groups.values())).values())))
    fig.update_layout(barmode="group", title=f"Test answers (%): mean of {n} seeds, whiskers ± 1 standard deviation",
                      yaxis=dict(range=[0, 105], title="%"), height=420, margin=dict(t=60, b=40))
    return fig


def size_tradeoff(rows: list[dict]) -> go.Figure:
    """Student rows with n_layers, decode_speedup, f1_retained, rouge_l_retained and
    non_embedding_params: quality kept against decoding speed-up, marker area ~ parameters."""
    fig = go.Figure()
    for metric, symbol in (("f1_retained", "circle"), ("rouge_l_retained", "diamond")):
        fig.add_scatter(x=[r["decode_speedup"] for r in rows], y=[100 * r[metric] for r in rows], name=metric,
                        mode="markers+text", text=[f"{r['n_layers']} layers" for r in rows], textposition="top center",
                        marker=dict(symbol=symbol, size=[8 + r["non_embedding_params"] / 1.5e6 for r in rows]))
    fig.update_layout(title="Students: share of the teacher's quality kept vs decoding speed-up",
                      xaxis_title="decoding speed-up over the teacher (x)", yaxis=dict(title="% of the teacher", range=[0, 110]),
                      height=420, margin=dict(t=60, b=40))
    return fig


def similarity_maps(maps: dict, labels=None) -> go.Figure:
    """maps: name -> (L, L) token-to-token cosine similarity; side-by-side heatmaps on one colour scale."""
    fig = make_subplots(1, len(maps), subplot_titles=list(maps), horizontal_spacing=0.08)
    for col, m in enumerate(maps.values(), start=1):
        m = torch.as_tensor(m).float()
        ticks = list(labels) if labels is not None else list(range(len(m)))
        fig.add_trace(go.Heatmap(z=m.tolist(), x=ticks, y=ticks, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                                 showscale=col == len(maps), colorbar=dict(title="cos")), row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(title="Token-to-token similarity: what relation-based distillation matches", height=460,
                      margin=dict(t=80, b=40))
    return fig


def layer_losses(table: dict) -> go.Figure:
    """table: loss name -> {student layer label: value}; one line per loss over the mapped layers."""
    fig = go.Figure([go.Scatter(x=list(v), y=list(v.values()), name=name, mode="lines+markers")
                     for name, v in table.items()])
    fig.update_layout(title="Feature and relation losses per mapped layer (fresh student)", xaxis_title="student layer <- teacher layer",
                      yaxis=dict(title="loss", type="log"), height=380, margin=dict(t=60, b=40))
    return fig


from .viz_eval import faithfulness_bars, latency_growth, pareto, size_latency  # noqa: E402,F401  (rl.viz.*)
from .viz_quant import *  # noqa: E402,F401,F403  (its __all__: rl.viz.scheme_errors, rl.viz.layer_quant_slider, ...)
from .viz_qat import ptq_vs_qat, recovered_share  # noqa: E402,F401  (rl.viz.*)
