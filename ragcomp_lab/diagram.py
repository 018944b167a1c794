"""The knowledge-distillation diagram, drawn as a Plotly figure: it renders offline, needs no
Graphviz binary and scales with the page."""
from __future__ import annotations

import plotly.graph_objects as go

# name: (x0, y0, x1, y1, label, colour)
_BOXES = {
    "input": (-0.6, 2.3, 1.7, 3.7, "input x<br>(query + retrieved<br>context)", "#eeeeee"),
    "teacher": (2.3, 4.1, 4.1, 5.3, "<b>teacher</b><br>(frozen)", "#c6dbef"),
    "student": (2.3, 0.7, 4.1, 1.9, "<b>student</b><br>(trainable)", "#c7e9c0"),
    "p_t": (4.9, 4.1, 6.9, 5.3, "softmax(z<sub>t</sub> / T)<br>soft targets", "#c6dbef"),
    "p_s": (4.9, 2.4, 6.9, 3.5, "softmax(z<sub>s</sub> / T)<br>soft predictions", "#c7e9c0"),
    "p_s1": (4.9, 0.2, 6.9, 1.3, "softmax(z<sub>s</sub>)<br>(T = 1)", "#c7e9c0"),
    "labels": (4.7, -1.3, 7.1, -0.4, "hard labels y<br>(gold or teacher answer)", "#eeeeee"),
    "kd": (7.5, 3.1, 10.1, 4.5, "L<sub>KD</sub> = KL(p<sub>t</sub> ‖ p<sub>s</sub>) · T²", "#fdd0a2"),
    "hard": (7.5, -0.3, 10.1, 1.1, "L<sub>student</sub> = CE(y, p<sub>s</sub>)", "#fdd0a2"),
    "total": (10.7, 1.3, 13.4, 2.9, "<b>L<sub>total</sub></b> = α · L<sub>student</sub><br>+ (1 − α) · L<sub>KD</sub>",
              "#fc9272"),
}
# (from, to, label on the arrow)
_ARROWS = [
    ("input", "teacher", ""), ("input", "student", ""),
    ("teacher", "p_t", "z<sub>t</sub>"), ("student", "p_s", "z<sub>s</sub>"), ("student", "p_s1", "z<sub>s</sub>"),
    ("p_t", "kd", ""), ("p_s", "kd", ""), ("p_s1", "hard", ""), ("labels", "hard", ""),
    ("kd", "total", "1 − α"), ("hard", "total", "α"),
]


def _anchor(box, towards):
    """The point on the box edge facing `towards` (left/right edge, or top/bottom when stacked)."""
    x0, y0, x1, y1 = box[:4]
    tx0, ty0, tx1, ty1 = towards[:4]
    if tx0 >= x1:
        return x1, (y0 + y1) / 2
    if tx1 <= x0:
        return x0, (y0 + y1) / 2
    return (x0 + x1) / 2, (y1 if ty0 >= y1 else y0)


def kd_diagram() -> go.Figure:
    """Teacher and student, softmax at T, the soft and hard losses, their mix and the update."""
    fig = go.Figure()
    for x0, y0, x1, y1, label, colour in _BOXES.values():
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, fillcolor=colour,
                      line=dict(color="#444", width=1), layer="below")
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=label, showarrow=False, font=dict(size=11))
    for a, b, label in _ARROWS:
        (xa, ya), (xb, yb) = _anchor(_BOXES[a], _BOXES[b]), _anchor(_BOXES[b], _BOXES[a])
        fig.add_annotation(x=xb, y=yb, ax=xa, ay=ya, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#444")
        if label:
            fig.add_annotation(x=(xa + xb) / 2, y=(ya + yb) / 2, text=label, showarrow=False,
                               yshift=10, font=dict(size=12, color="#b30000"))
    # The gradient flows back into the student only: the teacher is never updated.
    path = "M 12.05 1.3 L 12.05 -2.0 L 3.2 -2.0 L 3.2 0.7"
    fig.add_shape(type="path", path=path, line=dict(color="#b30000", width=2, dash="dash"))
    fig.add_annotation(x=3.2, y=0.7, ax=3.2, ay=-2.0, xref="x", yref="y", axref="x", ayref="y", text="",
                       showarrow=True, arrowhead=2, arrowcolor="#b30000", arrowwidth=2)
    fig.add_annotation(x=7.5, y=-2.0, text="gradient update: ∂L<sub>total</sub>/∂θ<sub>student</sub>",
                       showarrow=False, yshift=-12, font=dict(color="#b30000", size=12))
    fig.update_xaxes(visible=False, range=[-0.8, 13.6])
    fig.update_yaxes(visible=False, range=[-2.6, 5.5], scaleanchor="x")
    fig.update_layout(title="Knowledge distillation: one training step", height=460,
                      margin=dict(l=10, r=10, t=50, b=10), plot_bgcolor="white", showlegend=False)
    return fig
