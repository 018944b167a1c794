"""Figure builders for evaluation reports (re-exported by `rl.viz`): pure, they return a Figure.

Every builder takes `Report`s (or rows measured by the caller) and draws only what they hold.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PASS, FAIL = "#31a354", "#de2d26"


def _named(reports) -> list:
    reports = list(reports.values()) if isinstance(reports, dict) else list(reports)
    if not reports:
        raise ValueError("no reports to draw: pass at least one rl.evaluate Report")
    return reports


def size_latency(reports) -> go.Figure:
    """The grouped bars of size (saved MB) and per-token decoding latency (ms), one group per
    variant, measured on the real models. A variant slower than the first one is labelled so."""
    reports = _named(reports)
    names = [r.name for r in reports]
    size = [r.size["saved_bytes"] / 1e6 for r in reports]
    ms = [r.latency.get("decode_ms_per_token") for r in reports]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("saved size (MB)", "decoding (ms per token)"))
    fig.add_trace(go.Bar(x=names, y=size, text=[f"{s:.1f}" for s in size], marker_color="#3182bd",
                         name="size"), 1, 1)
    base = ms[0]
    labels = [None if m is None else f"{m:.1f}" + (" (slower)" if base and m > base else "") for m in ms]
    fig.add_trace(go.Bar(x=names, y=ms, text=labels, marker_color=[FAIL if base and m and m > base else "#756bb1"
                                                                    for m in ms], name="latency"), 1, 2)
    fig.update_layout(showlegend=False, height=400, margin=dict(t=60, b=40),
                      title=f"Size and latency by variant ({reports[0].latency.get('threads')} threads)")
    return fig


def pareto(reports, metric: str = "f1", bar: float | None = None) -> go.Figure:
    """Quality against decoding latency; marker area ~ saved size. The bar is a horizontal line;
    variants at or above it are green, the rest red; the Pareto front (no variant both faster
    and better) is joined by a line."""
    reports = _named(reports)
    pts = [(r.latency.get("decode_ms_per_token"), getattr(r, metric), r) for r in reports]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if not pts:
        raise ValueError(f"no report has both a decoding latency and {metric!r}")
    biggest = max(r.size["saved_bytes"] for _, _, r in pts)
    fig = go.Figure()
    front, best = [], -1.0
    for ms, q, r in sorted(pts, key=lambda p: (p[0], -p[1])):
        if q > best:
            front.append((ms, q))
            best = q
    fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="Pareto front",
                             line=dict(color="#999", dash="dot")))
    for ms, q, r in pts:
        ok = bar is None or q >= bar
        fig.add_trace(go.Scatter(
            x=[ms], y=[q], mode="markers+text", text=[r.name], textposition="top center", name=r.name,
            marker=dict(size=12 + 48 * (r.size["saved_bytes"] / biggest) ** 0.5, color=PASS if ok else FAIL,
                        opacity=0.7, line=dict(width=1, color="#333")),
            hovertemplate=f"{r.name}<br>{metric} %{{y:.3f}}<br>%{{x:.1f}} ms/token<br>"
                          f"{r.size['saved_bytes'] / 1e6:.1f} MB<extra></extra>"))
    if bar is not None:
        fig.add_hline(y=bar, line=dict(color=FAIL, dash="dash"), annotation_text=f"quality bar: {metric} = {bar:g}")
    fig.update_layout(title=f"{metric} against decoding latency (marker size: saved size)", showlegend=False,
                      xaxis_title="decoding (ms per token, lower is better)", yaxis_title=metric, height=460)
    return fig


def faithfulness_bars(reports) -> go.Figure:
    """Faithfulness (lexical and embedding support) and the two hallucination rates per variant."""
    reports = _named(reports)
    names = [r.name for r in reports]
    fig = go.Figure()
    for label, key, color in (("faithfulness (lexical)", "faithfulness", "#31a354"),
                              ("faithfulness (embedding)", "faithfulness_embedding", "#74c476"),
                              ("unsupported answers", "unsupported", "#fd8d3c"),
                              ("hallucination (unanswerable)", "hallucination", "#de2d26")):
        fig.add_trace(go.Bar(x=names, y=[getattr(r, key) for r in reports], name=label))
    fig.update_layout(barmode="group", title="Faithfulness to the retrieved context, and hallucination",
                      yaxis=dict(range=[0, 1], title="rate"), height=420)
    return fig


def latency_growth(rows: list[dict]) -> go.Figure:
    """Forward latency against sequence length, one line per model: rows of
    {"model", "tokens", "ms"} measured by the caller (e.g. `evaluation.forward_ms`)."""
    if not rows:
        raise ValueError("no latency rows to draw")
    fig = go.Figure()
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["tokens"])
        fig.add_trace(go.Scatter(x=[r["tokens"] for r in mine], y=[r["ms"] for r in mine], mode="lines+markers",
                                 name=model))
    fig.update_layout(title="Forward latency against sequence length", xaxis_title="tokens in the prompt",
                      yaxis_title="ms (median)", height=420)
    return fig
