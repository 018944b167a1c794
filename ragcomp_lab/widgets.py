"""Live panels: ipywidgets sliders wired to the `viz` builders (they need a running kernel).

Each panel is a VBox whose `.figure` (a plotly FigureWidget) and sliders are attributes, so
a test or a learner can drive it from code: `panel.T.value = 4` redraws the figure.
"""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go

from . import _validate, viz
from .config import DistillConfig
from .digits import accuracy, train_student
from .distill import Callback


class Panel(W.VBox):
    """A VBox with a short repr (the default one prints the whole figure)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description})"


def _slider_T(value):
    return W.FloatLogSlider(value=value, base=10, min=-1, max=1.3, step=0.01, description="T",
                            continuous_update=True, readout_format=".2f")


def _slider_alpha(value):
    return W.FloatSlider(value=value, min=0, max=1, step=0.05, description="alpha", continuous_update=True)


def temperature_panel(logits, labels=None, T: float = 1.0, top: int | None = None) -> Panel:
    """A T slider over softmax(z/T)'s bars (all classes, or the `top` most likely), entropy in the title."""
    figure = go.FigureWidget(viz.temperature_bars(logits, T, labels, top))
    slider = _slider_T(T)

    def redraw(change=None):
        fresh = viz.temperature_bars(logits, slider.value, labels, top)
        with figure.batch_update():
            figure.data[0].y = fresh.data[0].y
            figure.layout.title.text = fresh.layout.title.text

    slider.observe(redraw, names="value")
    panel = Panel([slider, figure])
    panel.T, panel.figure, panel.description = slider, figure, "T slider over softmax(z/T)"
    return panel


def loss_panel(student, teacher, label: int, T: float = 2.0, alpha: float = 0.5, labels=None) -> Panel:
    """T and alpha sliders over the loss parts and their gradients on the student's logits."""
    figure = go.FigureWidget(viz.loss_panel(student, teacher, label, T, alpha, labels))
    s_T, s_alpha = _slider_T(T), _slider_alpha(alpha)

    def redraw(change=None):
        fresh = viz.loss_panel(student, teacher, label, s_T.value, s_alpha.value, labels)
        with figure.batch_update():
            for old, new in zip(figure.data, fresh.data):
                old.y = new.y
            figure.layout.title.text = fresh.layout.title.text

    for s in (s_T, s_alpha):
        s.observe(redraw, names="value")
    panel = Panel([W.HBox([s_T, s_alpha]), figure])
    panel.T, panel.alpha, panel.figure, panel.description = s_T, s_alpha, figure, "T and alpha over the loss"
    return panel


def digits_panel(task, teacher, cfg: DistillConfig | None = None) -> Panel:
    """Retrain the digits student at the chosen T and alpha (about a second), against alpha = 1."""
    cfg = cfg or DistillConfig(T=4.0, alpha=0.1, steps=300, lr=1e-2)
    s_T, s_alpha = _slider_T(cfg.T), _slider_alpha(cfg.alpha)
    button, out = W.Button(description="train the student", button_style="primary"), W.HTML()
    baseline = accuracy(train_student(task, teacher, DistillConfig(**{**cfg.to_dict(), "alpha": 1.0}))[0],
                        task.x_test, task.y_test)

    def run(_=None):
        c = DistillConfig(**{**cfg.to_dict(), "T": s_T.value, "alpha": s_alpha.value})
        acc = accuracy(train_student(task, teacher, c)[0], task.x_test, task.y_test)
        out.value = (f"T = {c.T:.2f}, alpha = {c.alpha:.2f}: test accuracy <b>{100 * acc:.1f}%</b> "
                     f"(hard labels only: {100 * baseline:.1f}%, change {100 * (acc - baseline):+.1f} points)")

    button.on_click(run)
    run()
    panel = Panel([W.HBox([s_T, s_alpha, button]), out])
    panel.T, panel.alpha, panel.button, panel.result, panel.description = s_T, s_alpha, button, out, "digits KD"
    return panel


class LiveLossCurve(Callback):
    """A distill() callback drawing total, hard and soft loss (and feature / relation when the run has
    them) in a FigureWidget while the run goes: display `.figure`, then pass the callback to distill."""

    PARTS = ("total", "hard", "soft", "feature", "relation")

    def __init__(self, every: int = 1):
        self.every = _validate.positive_int("every", every)  # redraw every n steps
        self.figure = go.FigureWidget(layout=dict(title="distillation loss, live", xaxis_title="step",
                                                  yaxis=dict(title="loss", type="log"), height=360))

    def on_step(self, record: dict, history) -> None:
        if record["step"] % self.every:
            return
        with self.figure.batch_update():
            for name in self.PARTS:
                if name not in record:
                    continue
                trace = next((t for t in self.figure.data if t.name == name), None)
                if trace is None:
                    self.figure.add_scatter(x=[], y=[], name=name, mode="lines")
                    trace = self.figure.data[-1]
                xs = [r["step"] for r in history.losses if name in r]
                trace.x, trace.y = xs, [r[name] for r in history.losses if name in r]


from .widgets_quant import *  # noqa: E402,F401,F403  (its __all__: rl.widgets.bits_effect, layer_quant_panel, ...)
