"""Bit-width panels (re-exported by `rl.widgets`) and the measurements behind them.

- `layer_input` captures what a layer of the model reads on a real prompt (a forward pre-hook).
- `layer_quant_panel`: bits, granularity, group size and symmetric over one layer's weights
  (histogram under the grid) and its output error on those inputs; its static twin is
  `viz.layer_quant_slider`.
- `bits_effect` quantizes a whole model (weight-only round-to-nearest, `rl.quantize`) and measures
  its greedy answer to one question and its answer perplexity; `teacher_bits_panel` is a button
  over it, next to the unquantized model.
"""
from __future__ import annotations

import html
import time

import ipywidgets as W
import plotly.graph_objects as go
import torch

from . import _validate, viz_quant
from .checkpoint import unique_tensors
from .config import QuantConfig
from .widgets import Panel

__all__ = ["layer_input", "weight_bytes", "bits_effect", "effect_html", "layer_quant_panel", "teacher_bits_panel"]

GROUP_SIZES = (32, 64, 128)
COLUMNS = ("prompt", "answer", "kind", "query")


def layer_input(model: torch.nn.Module, tok, layer: str, prompt: str) -> torch.Tensor:
    """(tokens, in_features): the input of the module named `layer` (e.g. "model.layers.9.mlp.down_proj")
    while the model reads `prompt`."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt={prompt!r} is not allowed: give the non-empty text the model reads")
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        raise ValueError(f"layer={layer!r} is not a module of this model; Linear layers are named like "
                         f"{names[0]!r} or {names[-1]!r}") from None
    seen = []
    hook = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.inference_mode():
            model(**tok(prompt, return_tensors="pt", add_special_tokens=False))
    finally:
        hook.remove()
    return seen[0].reshape(-1, seen[0].shape[-1]).float().clone()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers in memory, a shared (tied) tensor once: not
    bench.size_bytes, which serializes and counts the file's headers too."""
    tensors = dict(model.named_parameters()) | {f"buffer {n}": b for n, b in model.named_buffers()}
    return sum(t.numel() * t.element_size() for t in unique_tensors(tensors).values())


def _check_rows(rows, question) -> None:
    _validate.rag_rows("rows", rows, COLUMNS, "give at least one test question")
    if isinstance(question, bool) or not isinstance(question, int) or not 0 <= question < len(rows):
        raise ValueError(f"question={question!r} is not allowed: use a row index from 0 to {len(rows) - 1}")


def bits_effect(model, tok, rows, bits: int | None, granularity: str = "per_group", group_size: int | None = 64,
                symmetric: bool = True, question: int = 0, max_new_tokens: int = 32) -> dict:
    """Quantize `model` to `bits` (weight-only RTN; None: the model as it is) and measure it: its
    greedy answer to rows[question], its answer perplexity on `rows` (answerable ones), the bytes
    of its weights in memory and the seconds quantizing took."""
    from .data.teacher import teacher_answers  # local: evaluation pulls in the metric libraries
    from .evaluation import answer_perplexity
    from .quant.api import quantize

    _check_rows(rows, question)
    _validate.positive_int("max_new_tokens", max_new_tokens)
    start = time.perf_counter()
    if bits is None:
        q, label = model, "unquantized"
    else:
        cfg = QuantConfig(bits=bits, mode="weight_only", symmetric=symmetric, granularity=granularity,
                          group_size=group_size if granularity == "per_group" else None)
        q = quantize(model, cfg)
        label = f"INT{bits} {'g' + str(group_size) if granularity == 'per_group' else granularity}"
        label += "" if symmetric else " affine"
    seconds = time.perf_counter() - start
    row = rows[question]
    answer = teacher_answers(q, tok, rows.select([question]), max_new_tokens=max_new_tokens, progress=False)[0]
    return {"model": label, "bits": bits, "question": row["query"], "gold": row["answer"], "answer": answer,
            "answer_perplexity": answer_perplexity(q, tok, rows), "weight_mb": weight_bytes(q) / 1e6,
            "quantize_seconds": seconds}


# ---- panels ------------------------------------------------------------------------------------

def _controls(widths, bits: int, symmetric: bool, granularity: str, group_size: int | None):
    """bits, granularity, group size (those of GROUP_SIZES dividing every in_features in `widths`), symmetric."""
    sizes = [g for g in GROUP_SIZES if all(n % g == 0 for n in widths)]
    if not sizes:
        raise ValueError(f"none of the group sizes {GROUP_SIZES} divides in_features {sorted(widths)}")
    s_bits = W.IntSlider(value=_validate.bits(bits), min=2, max=8, description="bits", continuous_update=False)
    s_gran = W.Dropdown(options=list(_validate.GRANULARITIES), value=_validate.granularity(granularity),
                        description="granularity")
    s_group = W.Dropdown(options=sizes, value=group_size if group_size in sizes else sizes[-1],
                         description="group size", disabled=granularity != "per_group")
    s_sym = W.Checkbox(value=bool(symmetric), description="symmetric")
    return s_bits, s_gran, s_group, s_sym


def _scheme(s_bits, s_gran, s_group, s_sym) -> dict:
    per_group = s_gran.value == "per_group"
    return dict(bits=s_bits.value, symmetric=s_sym.value, granularity=s_gran.value,
                group_size=s_group.value if per_group else None)


def layer_quant_panel(w: torch.Tensor, x: torch.Tensor, bits: int = 4, symmetric: bool = True,
                      granularity: str = "per_channel", group_size: int | None = 64) -> Panel:
    """Bits, granularity, group size and symmetric over viz.layer_quant(w, x): the weights under
    their grid, and the layer's output error on its real inputs x."""
    controls = _controls({w.shape[-1]}, bits, symmetric, granularity, group_size)
    figure = go.FigureWidget(viz_quant.layer_quant(w, x, **_scheme(*controls)))

    def redraw(change=None):
        controls[2].disabled = controls[1].value != "per_group"
        fresh = viz_quant.layer_quant(w, x, **_scheme(*controls))
        with figure.batch_update():
            for old, new in zip(figure.data, fresh.data):
                old.x, old.y, old.visible, old.name = new.x, new.y, new.visible, new.name
            figure.layout.title.text = fresh.layout.title.text

    for c in controls:
        c.observe(redraw, names="value")
    panel = Panel([W.HBox(list(controls)), figure])
    panel.bits, panel.granularity, panel.group_size, panel.symmetric = controls
    panel.figure, panel.description = figure, f"bits over a {w.shape[0]} x {w.shape[1]} layer and its output"
    return panel


def _td(v) -> str:
    return f"<td>{html.escape(str(v))}</td>"


def effect_html(results: list[dict]) -> str:
    """bits_effect results as an HTML table (one row per model)."""
    head = "".join(f"<th>{h}</th>" for h in ("model", "answer", "answer perplexity", "weights (MB)"))
    body = "".join("<tr>" + _td(r["model"]) + _td(r["answer"]) + _td(f"{r['answer_perplexity']:.4g}")
                   + _td(f"{r['weight_mb']:.1f}") + "</tr>" for r in results)
    first = results[0]
    return (f"<p><b>Q:</b> {html.escape(first['question'])} <b>gold:</b> {html.escape(first['gold'])}</p>"
            f"<table>{head}{body}</table>")


def teacher_bits_panel(model, tok, rows, bits: int = 4, group_size: int = 64, symmetric: bool = True,
                       question: int = 0, max_new_tokens: int = 32) -> Panel:
    """Bits, granularity, group size, symmetric and a test question; the button quantizes the whole
    model (seconds) and shows its answer and answer perplexity on `rows` next to the unquantized model."""
    _check_rows(rows, question)
    widths = {m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear)}
    controls = _controls(widths, bits, symmetric, "per_group", group_size)
    pick = W.Dropdown(options=[(q[:60], i) for i, q in enumerate(rows["query"])], value=question,
                      description="question", layout=W.Layout(width="480px"))
    button, out = W.Button(description="quantize and answer", button_style="primary"), W.HTML()
    out.value = "<p>Press the button: quantizing the whole model takes a few seconds.</p>"
    cache: dict = {}
    controls[1].observe(lambda c: setattr(controls[2], "disabled", c["new"] != "per_group"), names="value")

    def run(_=None):
        if pick.value not in cache:
            cache[pick.value] = bits_effect(model, tok, rows, None, question=pick.value, max_new_tokens=max_new_tokens)
        result = bits_effect(model, tok, rows, question=pick.value, max_new_tokens=max_new_tokens,
                             **_scheme(*controls))
        out.value = (effect_html([cache[pick.value], result])
                     + f"<p>quantized in {result['quantize_seconds']:.1f} s</p>")

    button.on_click(run)
    panel = Panel([W.HBox(list(controls)), W.HBox([pick, button]), out])
    panel.bits, panel.granularity, panel.group_size, panel.symmetric = controls
    panel.question, panel.button, panel.result = pick, button, out
    panel.run, panel.description = run, "bits over the whole model's answers"
    return panel
