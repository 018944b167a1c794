"""Which of the teacher's decoder layers a layer-dropped student keeps, chosen by a measurement.

Two measures of how much a layer matters, both on real prompts and the teacher's own answers:

- `removal_cost`: the rise of the answer tokens' cross-entropy when that one layer is skipped
  (the rest of the model as it is): what the answers lose without it.
- `block_influence` (ShortGPT, Men et al. 2024): 1 - cos(hidden state in, hidden state out) of
  each layer, averaged over the answer positions: a layer that barely turns the residual stream
  does little. One forward pass for all layers, so much cheaper, but blind to what the change is for.

`keep_most_important(scores, n)` keeps the n highest-scoring layers; `evenly_spaced(n_layers, n)`
and `ends(n_layers, n)` are the choices they are compared with.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate
from .data.encode import IGNORE, collate, encode_pair


def _batches(tok, rows, column: str, batch_size: int):
    pairs = [encode_pair(tok, p, a) for p, a in zip(rows["prompt"], rows[column])]
    if not pairs:
        raise ValueError("no rows: a layer's importance needs at least one (prompt, answer) pair")
    for start in range(0, len(pairs), batch_size):
        yield collate(pairs[start:start + batch_size], tok.pad_token_id)


@contextlib.contextmanager
def skipping(model, layer: int):
    """The model with decoder layer `layer` left out (the residual stream passes it by)."""
    decoder = model.get_decoder()
    layers = decoder.layers
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer={layer} is not allowed: the model has layers 0..{len(layers) - 1}")
    decoder.layers = nn.ModuleList([m for i, m in enumerate(layers) if i != layer])
    try:
        yield model
    finally:
        decoder.layers = layers


def _answer_ce(model, batches) -> float:
    total, count = 0.0, 0
    for batch in batches:
        labels = batch["labels"][:, 1:]
        with torch.inference_mode():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        keep = labels != IGNORE
        total += F.cross_entropy(logits[:, :-1][keep].float(), labels[keep], reduction="sum").item()
        count += int(keep.sum())
    return total / count


def removal_cost(model, tok, rows, column: str = "teacher_answer", batch_size: int = 8) -> list[float]:
    """Per decoder layer: the answer tokens' mean cross-entropy (nats) with that layer skipped,
    minus the full model's. `rows` need "prompt" and `column` (the answers to score)."""
    _validate.positive_int("batch_size", batch_size)
    batches = list(_batches(tok, rows, column, batch_size))
    base = _answer_ce(model, batches)
    costs = []
    for i in range(len(model.get_decoder().layers)):
        with skipping(model, i):
            costs.append(_answer_ce(model, batches) - base)
    return costs


def block_influence(model, tok, rows, column: str = "teacher_answer", batch_size: int = 8) -> list[float]:
    """Per decoder layer: 1 - mean cosine similarity of its input and output hidden states at the
    positions that predict an answer token."""
    _validate.positive_int("batch_size", batch_size)
    layers = model.get_decoder().layers
    sums, count = torch.zeros(len(layers), dtype=torch.float64), 0
    for batch in _batches(tok, rows, column, batch_size):
        keep = batch["labels"][:, 1:] != IGNORE

        def hook(module, args, output, i):
            out = output[0] if isinstance(output, tuple) else output
            a, b = args[0][:, :-1][keep].float(), out[:, :-1][keep].float()
            sums[i] += (1 - F.cosine_similarity(a, b, dim=-1)).sum().double()

        handles = [m.register_forward_hook(lambda m, a, o, i=i: hook(m, a, o, i)) for i, m in enumerate(layers)]
        try:
            with torch.inference_mode():
                model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        finally:
            for h in handles:
                h.remove()
        count += int(keep.sum())
    return (sums / count).tolist()


def keep_most_important(scores, n: int) -> list[int]:
    """The n layers with the highest scores, in order (a NaN score counts as the highest: an
    unmeasured layer is kept)."""
    _validate.positive_int("n", n)
    if n > len(scores):
        raise ValueError(f"n={n} is more than the {len(scores)} layers scored")
    order = sorted(range(len(scores)), key=lambda i: float("inf") if scores[i] != scores[i] else scores[i],
                   reverse=True)
    return sorted(order[:n])


def evenly_spaced(n_layers: int, n: int) -> list[int]:
    """n layers spread over 0..n_layers-1, the first and the last included."""
    _validate.positive_int("n", n)
    if n > n_layers:
        raise ValueError(f"n={n} is more than the model's {n_layers} layers")
    if n == 1:
        return [n_layers - 1]
    return sorted({round(i * (n_layers - 1) / (n - 1)) for i in range(n)})


def ends(n_layers: int, n: int) -> list[int]:
    """The first n // 2 and the last n - n // 2 layers (the lab's first students)."""
    _validate.positive_int("n", n)
    if n > n_layers:
        raise ValueError(f"n={n} is more than the model's {n_layers} layers")
    return list(range(n // 2)) + list(range(n_layers - (n - n // 2), n_layers))
