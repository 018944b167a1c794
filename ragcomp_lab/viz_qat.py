"""Figure builders for the PTQ-versus-QAT experiment (re-exported by `rl.viz`): pure, they return a Figure.

They take the rows of `experiments_quant.ptq_vs_qat` (or of results/ptq_vs_qat.json) and draw only
what the rows hold.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

ARMS = {"PTQ": "#de2d26", "QAT": "#3182bd", "PTQ of float + steps": "#fd8d3c"}  # method -> colour
FLOATS = {"float": "#636363", "float + steps": "#31a354"}
PANELS = {"answer_perplexity": "answer perplexity (log)", "top1": "top-1 agreement with the float student",
          "token_kl": "KL to the float student (nats/token, log)"}


def _check_rows(rows) -> list[dict]:
    rows = list(rows)
    missing = [m for m in ("float", "PTQ", "QAT") if not any(r.get("method") == m for r in rows)]
    if missing:
        raise ValueError(f"the rows have no {missing} method: pass the rows of experiments_quant.ptq_vs_qat")
    return rows


def ptq_vs_qat(rows, metrics=("answer_perplexity", "top1")) -> go.Figure:
    """One panel per metric over the bit-widths (8 -> 2): a line per quantized arm, a dashed level
    for the float student and for the float student trained as long as QAT."""
    rows = _check_rows(rows)
    unknown = [m for m in metrics if m not in PANELS]
    if unknown or not metrics:
        raise ValueError(f"metrics={list(metrics)!r}: choose from {', '.join(PANELS)}")
    bits = sorted({r["bits"] for r in rows if r.get("bits") is not None}, reverse=True)
    x = [f"{b}-bit" for b in bits]
    fig = make_subplots(1, len(metrics), subplot_titles=[PANELS[m] for m in metrics], horizontal_spacing=0.1)
    for col, metric in enumerate(metrics, start=1):
        for method, colour in ARMS.items():
            by = {r["bits"]: r[metric] for r in rows if r.get("method") == method}
            if by:
                fig.add_trace(go.Scatter(x=x, y=[by.get(b) for b in bits], name=method, legendgroup=method,
                                         mode="lines+markers", line=dict(color=colour), showlegend=col == 1), 1, col)
        for method, colour in FLOATS.items():
            level = next((r[metric] for r in rows if r.get("method") == method), None)
            if level is not None:
                fig.add_trace(go.Scatter(x=x, y=[level] * len(x), name=method, legendgroup=method, mode="lines",
                                         line=dict(color=colour, dash="dash"), showlegend=col == 1), 1, col)
        if metric != "top1":
            fig.update_yaxes(type="log", row=1, col=col)
        else:
            fig.update_yaxes(range=[0, 1.05], row=1, col=col)
        fig.update_xaxes(title_text="weight bits", row=1, col=col)
    fig.update_layout(title="PTQ against QAT on the distilled student, by weight bit-width", height=430,
                      margin=dict(t=80, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def recovered_share(recovered: dict, reported: tuple[float, float] | None = (0.68, 0.96)) -> go.Figure:
    """Bars per bit-width: the share of PTQ's loss QAT recovers (experiments_quant.recovered), against
    the float student and against the float student trained as long; `reported` shades the range
    torchao published for Llama3-8B (int4 grouped weights, int8 activations), for scale only. A missing share (PTQ lost nothing)
    is left out, and shares are clipped to [-1, 1.2] for drawing with the value written on the bar."""
    if not recovered:
        raise ValueError("no shares to draw: pass experiments_quant.recovered(rows)")
    widths = sorted(recovered, key=int, reverse=True)
    fig = go.Figure()
    for name, colour in (("vs float", "#3182bd"), ("vs float + steps", "#31a354")):
        values = [recovered[b].get(name) for b in widths]
        fig.add_trace(go.Bar(x=[f"{b}-bit" for b in widths], name=name, marker_color=colour,
                             y=[None if v is None else 100 * min(max(v, -1.0), 1.2) for v in values],
                             text=["n/a" if v is None else f"{100 * v:.0f}%" for v in values], textposition="outside"))
    if reported:
        lo, hi = reported
        fig.add_hrect(y0=100 * lo, y1=100 * hi, fillcolor="#bdbdbd", opacity=0.25, line_width=0,
                      annotation_text=f"torchao, Llama3-8B at 4 bits: {100 * lo:.0f}% (wikitext perplexity) to "
                                      f"{100 * hi:.0f}% (hellaswag accuracy)",
                      annotation_position="top left")
    fig.update_layout(title="Share of the PTQ loss that QAT recovers", barmode="group", height=400,
                      yaxis=dict(title="% recovered", range=[-100, 130]), margin=dict(t=60, b=40))
    return fig
