"""SmoothQuant-style smoothing of the MLP down-projections (Xiao et al., 2023), before INT8.

The input of a Llama-style MLP's down_proj is silu(gate_proj(h)) * up_proj(h): a few of its
channels carry values hundreds of times the typical one, so a per-call INT8 activation range is
too coarse for the rest (quant/api.py, DEFAULT_SKIP). Dividing channel j of that input by s_j and
multiplying column j of down_proj's weight by s_j leaves the layer's output unchanged, and the
division folds into row j of up_proj, so nothing is added at run time. With

    s_j = max|x_j| ** alpha / max|W_:,j| ** (1 - alpha)

(max|x_j| observed on calibration batches) the activation outliers move into the weights, which
per-channel INT8 weights absorb far more easily. alpha = 0.5 is the paper's default; 1 moves all of
the difficulty into the weights, values near 0 move almost none.
"""
from __future__ import annotations

import torch
from torch import nn

MIN_SCALE = 1e-5  # keeps s_j > 0 for a channel that was never active in the calibration batches


def mlp_pairs(model: nn.Module) -> list[tuple[str, nn.Linear, nn.Linear]]:
    """(name, up_proj, down_proj) of every Llama-style MLP (gate_proj / up_proj / down_proj)."""
    pairs = [(name, m.up_proj, m.down_proj) for name, m in model.named_modules()
             if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("gate_proj", "up_proj", "down_proj"))]
    if not pairs:
        raise ValueError("smooth needs Llama-style MLPs (gate_proj, up_proj and down_proj Linear layers); this model "
                         "has none")
    return pairs


@torch.no_grad()
def input_absmax(model: nn.Module, batches: list[dict], modules: list[nn.Module]) -> list[torch.Tensor]:
    """Per-channel max |x| of the input each of `modules` receives while `model` reads `batches`."""
    seen = [None] * len(modules)

    def hook(i):
        def record(_, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
            seen[i] = x if seen[i] is None else torch.maximum(seen[i], x)
        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        for batch in batches:
            model(**batch)
    finally:
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
def smooth_mlps(model: nn.Module, batches: list[dict], alpha: float) -> dict[str, torch.Tensor]:
    """Smooth every MLP of `model` in place; returns {mlp name: the scales s}. The float model
    computes the same function before and after (up to rounding)."""
    pairs = mlp_pairs(model)
    maxima = input_absmax(model, batches, [down for _, _, down in pairs])
    scales = {}
    for (name, up, down), x_max in zip(pairs, maxima):
        w_max = down.weight.abs().amax(dim=0).float()
        s = (x_max.clamp(min=MIN_SCALE).pow(alpha) / w_max.clamp(min=MIN_SCALE).pow(1 - alpha)).clamp(min=MIN_SCALE)
        down.weight.mul_(s.to(down.weight.dtype))
        up.weight.div_(s.to(up.weight.dtype)[:, None])
        if up.bias is not None:
            up.bias.div_(s.to(up.bias.dtype))
        scales[name] = s
    return scales
