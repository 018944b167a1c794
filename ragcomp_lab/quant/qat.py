"""Quantization-aware training of the weights: `prepare`, train as usual, then `convert`.

    prepared = qat.prepare(student, QuantConfig(mode="qat", bits=4, granularity="per_group", group_size=64))
    rl.distill(teacher, prepared, data["train"], cfg)          # any training loop: the weights stay float
    q4 = qat.convert(prepared)                                 # QuantLinear / QuantEmbedding, as weight_only

Each nn.Linear becomes a FakeQuantLinear: it keeps its float weight (trained by the optimiser)
and multiplies by W_fq = (clamp(round(W/S) + Z) - Z) * S, with (S, Z) recomputed from the current
weight at every call (min/max, as weight_only does) and S rounded up to its storage dtype
(float16 by default). Rounding has no useful gradient; the straight-through estimator passes
dL/dW_fq to W unchanged where the code was inside the integer range and 0 where it was clipped.
`convert` runs QuantLinear.from_weight on the trained weights: the same (S, Z), the same codes,
so the converted model computes what training saw (up to the order of float sums).

A tied LM head (SmolLM2) stays tied: the head and the input embedding (a FakeQuantEmbedding)
share one Parameter, and the embedding looks up rows of the fake-quantized table, which is
what the QuantEmbedding of the converted model reads from the head's codes.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QuantConfig
from .linear import QuantEmbedding, QuantLinear, _scale_dtype, _store_scale
from .primitives import fake_quant, qparams
from .targets import ATTR, DEFAULT_SKIP, check_skip, linear_targets, set_module, tied_embeddings


class _Scheme:
    """The weight quantization scheme shared by FakeQuantLinear and FakeQuantEmbedding."""

    def _set_scheme(self, bits: int, symmetric: bool, granularity: str, group_size: int | None, scale_dtype: str):
        self.bits, self.symmetric, self.granularity = bits, symmetric, granularity
        self.group_size, self.scale_dtype = group_size, scale_dtype
        _scale_dtype(scale_dtype)  # a clear error for an unknown name

    def scheme(self) -> dict:
        return dict(bits=self.bits, symmetric=self.symmetric, granularity=self.granularity,
                    group_size=self.group_size, scale_dtype=self.scale_dtype)

    def fake_quant_weight(self, w: torch.Tensor) -> torch.Tensor:
        """w (rows, in) on the grid QuantLinear.from_weight would store it on; STE gradient to w."""
        wf = w.float()
        scale, zero_point = qparams(wf, self.bits, self.symmetric, self.granularity, self.group_size)
        scale = _store_scale(scale, _scale_dtype(self.scale_dtype)).float()  # as stored, rounded up
        return fake_quant(wf, self.bits, self.symmetric, self.granularity, self.group_size,
                          scale=scale, zero_point=zero_point).to(w.dtype)

    def _scheme_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        return (f"bits={self.bits}, {'symmetric' if self.symmetric else 'affine'}, {self.granularity}{g}, "
                f"scale_dtype={self.scale_dtype}")


class FakeQuantLinear(nn.Linear, _Scheme):
    """An nn.Linear whose forward uses its weight fake-quantized: y = x W_fq^T + b."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 8,
                 symmetric: bool = True, granularity: str = "per_channel", group_size: int | None = None,
                 scale_dtype: str = "float16", device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._set_scheme(bits, symmetric, granularity, group_size, scale_dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **scheme) -> "FakeQuantLinear":
        """A FakeQuantLinear holding `linear`'s own Parameters (not copies: a tie stays a tie)."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta", **scheme)
        m.weight, m.bias = linear.weight, linear.bias
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fake_quant_weight(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._scheme_repr()}"


class FakeQuantEmbedding(nn.Embedding, _Scheme):
    """An embedding tied to a FakeQuantLinear head: looks up rows of the head's fake-quantized table."""

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, head: FakeQuantLinear) -> "FakeQuantEmbedding":
        if emb.weight is not head.weight:
            raise ValueError("a FakeQuantEmbedding shares its head's weight: the embedding is not tied to this head")
        m = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, emb.max_norm, emb.norm_type,
                emb.scale_grad_by_freq, emb.sparse, device="meta")
        m.weight = head.weight  # the same Parameter: one tensor, one gradient
        m._set_scheme(**head.scheme())
        return m

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.granularity == "per_tensor":  # one scale over the whole table
            return F.embedding(ids, self.fake_quant_weight(self.weight), self.padding_idx)
        rows = F.embedding(ids.reshape(-1), self.weight, self.padding_idx)  # (N, d): scales are per row
        return self.fake_quant_weight(rows).reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._scheme_repr()}, tied to a FakeQuantLinear head"


def _check_cfg(cfg) -> None:
    if not isinstance(cfg, QuantConfig):
        raise ValueError(f"cfg must be a ragcomp_lab.QuantConfig, got {type(cfg).__name__}")
    if cfg.mode != "qat":
        raise ValueError(f"mode={cfg.mode!r} does not fit prepare/convert: use QuantConfig(mode='qat', ...)")
    if cfg.observer != "minmax":
        raise ValueError(f"observer={cfg.observer!r} is not supported by mode='qat': the weights' ranges come from "
                         f"their min/max at every step (observer='minmax')")


def prepare(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """A copy of `model` ready for quantization-aware training (the input is not modified).

    Every nn.Linear not in cfg.skip becomes a FakeQuantLinear (a tied embedding, a
    FakeQuantEmbedding on the same Parameter); train it with any loop, then `convert` it.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_cfg(cfg)
    if any(isinstance(m, (FakeQuantLinear, QuantLinear)) for m in model.modules()):
        raise ValueError("the model is already prepared or quantized: prepare a float model")
    if cfg.skip is None:
        cfg = dataclasses.replace(cfg, skip=DEFAULT_SKIP.get(cfg.mode, ()))
    else:
        check_skip(model, cfg.skip)
    targets = linear_targets(model, cfg.skip)
    for name, m in targets.items():  # check every layer before any work
        if cfg.granularity == "per_group" and m.in_features % cfg.group_size:
            raise ValueError(f"group_size={cfg.group_size} does not divide in_features={m.in_features} of layer "
                             f"{name!r}: use a divisor of {m.in_features}, or skip the layer")
    out = copy.deepcopy(model)  # deepcopy keeps ties: a shared Parameter is copied once
    scheme = dict(bits=cfg.bits, symmetric=cfg.symmetric, granularity=cfg.granularity,
                  group_size=cfg.group_size, scale_dtype=cfg.scale_dtype)
    tied = tied_embeddings(out)
    for name in targets:
        fq = FakeQuantLinear.from_linear(out.get_submodule(name), **scheme)
        set_module(out, name, fq)
        if name in tied:
            set_module(out, tied[name], FakeQuantEmbedding.from_embedding(out.get_submodule(tied[name]), fq))
    setattr(out, ATTR, copy.deepcopy(cfg))
    return out


def convert(prepared: nn.Module, cfg: QuantConfig | None = None) -> nn.Module:
    """A copy of a `prepare`d model with its trained weights quantized: QuantLinear for each
    FakeQuantLinear, QuantEmbedding for a tied embedding (the input is not modified).

    `cfg` defaults to the one `prepare` stored; a cfg with another scheme is refused, since the
    grid is the one the weights were trained on.
    """
    fakes = {n: m for n, m in prepared.named_modules() if isinstance(m, FakeQuantLinear)} \
        if isinstance(prepared, nn.Module) else {}
    stored = getattr(prepared, ATTR, None)
    if not fakes or not isinstance(stored, QuantConfig) or stored.mode != "qat":
        raise ValueError("convert needs a model made by prepare (qat.prepare, or rl.quantize(..., step='prepare')) "
                         "and then trained: this one has no fake-quantized layers")
    if cfg is not None:
        _check_cfg(cfg)
        keys = ("bits", "symmetric", "granularity", "group_size", "scale_dtype")
        diff = {k: (getattr(cfg, k), getattr(stored, k)) for k in keys if getattr(cfg, k) != getattr(stored, k)}
        if diff:
            raise ValueError(f"cfg differs from the scheme the model was prepared with ({{name: (given, prepared)}}: "
                             f"{diff}): convert with cfg=None to use the prepared one")
    out = copy.deepcopy(prepared)
    heads = {}
    for name, m in fakes.items():
        fq = out.get_submodule(name)
        q = QuantLinear.from_weight(fq.weight, fq.bias, **fq.scheme())
        heads[id(fq.weight)] = q
        set_module(out, name, q)
    for name, m in list(out.named_modules()):
        if isinstance(m, FakeQuantEmbedding):
            set_module(out, name, QuantEmbedding(heads[id(m.weight)], m.padding_idx, m.weight.dtype))
    setattr(out, ATTR, copy.deepcopy(stored))
    return out
