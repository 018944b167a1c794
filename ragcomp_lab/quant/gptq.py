"""GPTQ (Frantar et al. 2022): weight-only PTQ that rounds one input column at a time and spreads its
rounding error over the columns not yet rounded, weighted by the inputs' H = 2 X^T X, so that the
output error ||X W^T - X W_q^T||^2 (not ||W - W_q||^2) is what gets small.

Stored exactly as round-to-nearest `weight_only` (QuantLinear: packed codes, float16 scales, same
bits and group size): save / load and sizes are shared, only the codes differ. As the reference
(IST-DASLab/gptq): upper Cholesky factor of H^-1, lazy updates in blocks of `block` columns, dead
inputs (H_jj = 0) get H_jj = 1 and weight 0, dampening damp * mean(diag H). Choices:
- per_group scales come from the current, error-updated weights when a group starts (the
  reference's static_groups=False; here read from the block being updated, so they see every
  earlier update). With `act_order` groups are static (from the original weights), so a group is
  still `group_size` consecutive inputs and no permutation index is stored. Every scale is rounded
  up to its storage dtype (`linear._store_scale`) before a code uses it.
- sequential: each decoder layer is calibrated on the outputs of the quantized layers before it;
  inside it, q/k/v, then o, gate/up, down, each on inputs through the groups already quantized
  (the reference's "true sequential"). Only tokens with attention_mask 1 enter H.
- the LM head goes last, on the quantized model's final-norm outputs; a tied embedding then reads
  its codes (QuantEmbedding), as in `weight_only`. Layer 0 was calibrated on the float embedding.
"""
from __future__ import annotations


import torch
from torch import nn

from .. import _validate
from . import packing, primitives
from .linear import QuantEmbedding, QuantLinear, _scale_dtype, _store_scale
from .primitives import int_range, qparams
from .targets import calibration_batches, linear_targets, set_module, tied_embeddings

# the order inside a Llama-family decoder layer; a target matching no stage is quantized last
STAGES = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
          ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


def _check(weight, H, bits, granularity, group_size, damp, block) -> None:
    _validate.tensor("weight", weight, 2)
    n = weight.shape[-1]
    if weight.dim() != 2 or not isinstance(H, torch.Tensor) or tuple(H.shape) != (n, n):
        got = tuple(H.shape) if isinstance(H, torch.Tensor) else type(H).__name__
        raise ValueError(f"H must be a ({n}, {n}) tensor and weight 2-D (out, in): got H {got}, weight "
                         f"{tuple(weight.shape)}")
    int_range(bits, True)
    primitives._check(weight, granularity, group_size, 0)  # names a group_size that does not divide
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 <= damp < float("inf"):
        raise ValueError(f"damp={damp!r} is not allowed: use a number >= 0 (0.01 is the usual value)")
    _validate.positive_int("block", block)


@torch.no_grad()
def gptq_weight(weight: torch.Tensor, H: torch.Tensor, bits: int, symmetric: bool = True,
                granularity: str = "per_group", group_size: int | None = 64, damp: float = 0.01,
                block: int = 128, act_order: bool = False, scale_dtype: str = "float16"):
    """(codes, scale, zero_point) of `weight` (out, in) chosen by GPTQ for inputs whose H is `H` (in, in).

    Same conventions as `primitives.qparams` / `quantize`: codes int8 (symmetric) or uint8 (affine),
    scale float32 (holding values exact in `scale_dtype`), zero_point int32; shapes () per_tensor,
    (out,) per_channel, (out, in // group_size) per_group. `dequantize(codes, scale, zero_point, ...)`
    is the weight GPTQ chose. `group_size` is ignored unless per_group; `block` is rounded to a
    multiple of it.
    """
    if granularity != "per_group":
        group_size = None  # the default 64 belongs to per_group
    _check(weight, H, bits, granularity, group_size, damp, block)
    sdtype = _scale_dtype(scale_dtype)
    q_min, q_max = int_range(bits, symmetric)
    W = weight.detach().float().clone()  # (out, n)
    H = H.detach().float().clone()  # (n, n)
    out, n = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    dynamic = granularity == "per_group" and not act_order
    if dynamic:
        scale = W.new_zeros(out, n // group_size)
        zero_point = torch.zeros(out, n // group_size, dtype=torch.int32)
        block = max(1, block // group_size) * group_size  # a group never straddles two blocks
    else:  # static: from the (dead-zeroed) original weights
        scale, zero_point = qparams(W, bits, symmetric, granularity, group_size)
        scale = _store_scale(scale, sdtype).float()
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    order = perm.tolist()
    if act_order:
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n)
    L, info = torch.linalg.cholesky_ex(H)
    if info == 0:
        L, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
    if info != 0:
        raise ValueError(f"H + damp * mean(diag H) * I is not positive definite with damp={damp}: use a larger damp "
                         f"(or more calibration tokens)")
    Hinv = L  # upper Cholesky factor of H^-1: row i holds how column i's error spreads to columns > i
    Q = torch.zeros_like(W)  # codes as floats, permuted order
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            j = order[i1 + i]  # the original column
            if dynamic and j % group_size == 0:
                s, z = qparams(W1[:, i:i + group_size], bits, symmetric, "per_channel")
                scale[:, j // group_size], zero_point[:, j // group_size] = _store_scale(s, sdtype).float(), z
            s, z = ((scale[:, j // group_size], zero_point[:, j // group_size]) if granularity == "per_group"
                    else (scale, zero_point))
            w = W1[:, i]
            q = (torch.round(w * (1.0 / s)) + z).clamp(q_min, q_max)  # as primitives.quantize
            Q[:, i1 + i] = q
            err = (w - (q - z) * s) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # the lazy update of the columns after the block
    if act_order:
        Q = Q[:, torch.argsort(perm)]
    return Q.to(torch.int8 if symmetric else torch.uint8), scale, zero_point


def quant_linear_from_codes(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, bits: int,
                            symmetric: bool = True, granularity: str = "per_group", group_size: int | None = None,
                            bias: torch.Tensor | None = None, scale_dtype: str = "float16") -> QuantLinear:
    """A QuantLinear storing these codes and scales, packed as `QuantLinear.from_weight` packs them.

    `scale` must be exact in `scale_dtype` (as `gptq_weight` returns it): the codes were chosen
    with it, so rounding it again here would store a different weight.
    """
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.is_floating_point():
        raise ValueError("codes must be a 2-D integer tensor (out_features, in_features)")
    out_f, in_f = codes.shape
    m = QuantLinear(in_f, out_f, bits, symmetric, granularity, group_size, bias is not None, scale_dtype,
                    bias.dtype if bias is not None else torch.float32)
    q_min, q_max = int_range(bits, symmetric)
    if codes.numel() and (int(codes.min()) < q_min or int(codes.max()) > q_max):
        raise ValueError(f"codes span [{int(codes.min())}, {int(codes.max())}], outside [{q_min}, {q_max}] of "
                         f"{bits}-bit {'symmetric' if symmetric else 'affine'} codes")
    if tuple(scale.shape) != tuple(m.scale.shape):
        raise ValueError(f"scale has shape {tuple(scale.shape)}, {granularity} needs {tuple(m.scale.shape)}")
    stored = scale.to(m.scale.dtype)
    if not torch.equal(stored.float(), scale.float()):
        raise ValueError(f"scale is not exact in scale_dtype={scale_dtype!r}: compute the codes with the stored "
                         f"scale (linear._store_scale), as gptq_weight does")
    q = codes.to(torch.int8 if symmetric else torch.uint8)
    m.qweight.copy_(packing.pack(q.to(torch.int16) - int_range(bits, True)[0], bits) if symmetric and bits < 8
                    else packing.pack(q, bits) if bits < 8 else q)
    m.scale.copy_(stored)
    if not symmetric:
        m.zero_point.copy_(zero_point)
    if bias is not None:
        m.bias.copy_(bias.detach())
    return m


# ---- the model: sequential, layer by layer ------------------------------------------------

class _Stop(Exception):
    """Raised by a hook that has what it needs: the rest of the forward is not run."""


def _decoder(model: nn.Module):
    base = getattr(model, "model", None)
    layers, norm = getattr(base, "layers", None), getattr(base, "norm", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(norm, nn.Module):
        raise ValueError(f"gptq needs a Llama-family causal LM (model.model.layers, model.model.norm), got "
                         f"{type(model).__name__}")
    names = {id(m): n for n, m in model.named_modules()}
    return names[id(layers)], layers, norm


def _hessians(run, modules: dict[str, nn.Module], batches, valid) -> dict[str, torch.Tensor]:
    """H = 2/N sum_x x x^T over the N real tokens reaching each module while `run(b)` runs batch b."""
    H = {n: None for n in modules}
    count, seen, cur = dict.fromkeys(modules, 0), set(), [None]

    def hook(name):
        def f(mod, inp, out):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).float()  # (B*L, in)
            if cur[0] is not None:
                x = x[cur[0]]
            H[name] = x.T @ x if H[name] is None else H[name].add_(x.T @ x)
            count[name] += x.shape[0]
            seen.add(name)
            if len(seen) == len(modules):
                raise _Stop
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        for b, v in zip(batches, valid):
            cur[0] = v
            seen.clear()
            try:
                run(b)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    if any(c == 0 for c in count.values()):
        raise ValueError("no calibration token reached a layer: is every attention_mask all zeros?")
    return {n: 2 * H[n] / count[n] for n in modules}


def _replace(model, name, m, H, cfg, damp, block, act_order) -> QuantLinear:
    codes, scale, zp = gptq_weight(m.weight, H, cfg.bits, cfg.symmetric, cfg.granularity, cfg.group_size,
                                   damp, block, act_order, cfg.scale_dtype)
    q = quant_linear_from_codes(codes, scale, zp, cfg.bits, cfg.symmetric, cfg.granularity, cfg.group_size,
                                m.bias, cfg.scale_dtype)
    set_module(model, name, q)
    return q


@torch.no_grad()
def gptq_quantize(model: nn.Module, cfg, calib, damp: float = 0.01, block: int = 128, act_order: bool = False,
                  sequential: bool = True) -> None:
    """Replace the target Linears of `model` (linear_targets, cfg.skip) IN PLACE by GPTQ QuantLinears.

    `calib`: a non-empty list of dicts {"input_ids", "attention_mask"} or of input_ids tensors.
    `sequential=False` calibrates every Linear of a layer on the layer's inputs at once (faster).
    Targets outside the decoder layers other than the LM head are rounded to nearest.
    """
    batches = [(b["input_ids"], b.get("attention_mask")) for b in calibration_batches(calib, "gptq")]
    skip = () if cfg.skip is None else cfg.skip
    prefix, layers, norm = _decoder(model)
    targets = linear_targets(model, skip)
    for name, m in targets.items():  # check every layer before any work
        if cfg.granularity == "per_group" and m.in_features % cfg.group_size:
            raise ValueError(f"group_size={cfg.group_size} does not divide in_features={m.in_features} of layer "
                             f"{name!r}: use a divisor of {m.in_features}, or skip the layer")
    tied = tied_embeddings(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((n for n, m in targets.items() if m is head), None)
    training = model.training
    model.eval()
    valid = [None if mask is None else mask.reshape(-1).bool() for _, mask in batches]
    inps, kws = [], []

    def grab(mod, args, kwargs):  # layer 0's inputs: hidden states and whatever else the model passes
        kw = dict(kwargs)
        inps.append(args[0] if args else kw.pop("hidden_states"))
        kws.append((args[1:], kw))
        raise _Stop

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for ids, mask in batches:
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()

    def run_layer(layer):
        def run(k):
            o = layer(inps[k], *kws[k][0], **kws[k][1])
            return o[0] if isinstance(o, tuple) else o
        return run

    for i, layer in enumerate(layers):
        local = {n[len(f"{prefix}.{i}."):]: m for n, m in targets.items() if n.startswith(f"{prefix}.{i}.")}
        stages = [[s for s in st if s in local] for st in STAGES] if sequential else []
        rest = [s for s in local if not any(s in st for st in stages)]
        for stage in [s for s in stages + [rest] if s]:
            mods = {s: layer.get_submodule(s) for s in stage}
            Hs = _hessians(run_layer(layer), mods, range(len(batches)), valid)
            for s, m in mods.items():
                _replace(model, f"{prefix}.{i}.{s}", m, Hs.pop(s), cfg, damp, block, act_order)
        inps = [run_layer(layer)(k) for k in range(len(batches))]  # the next layer's inputs, through this one
    for name in [n for n in targets if n != head_name and not n.startswith(prefix + ".")]:
        set_module(model, name, QuantLinear.from_linear(targets[name], bits=cfg.bits, symmetric=cfg.symmetric,
                       granularity=cfg.granularity, group_size=cfg.group_size, scale_dtype=cfg.scale_dtype))
    if head_name is not None:
        tap = nn.Identity()  # sees the head's inputs; the head itself (49152 logits a token) need not run
        H = _hessians(lambda k: tap(norm(inps[k])), {head_name: tap}, range(len(batches)), valid)[head_name]
        q = _replace(model, head_name, head, H, cfg, damp, block, act_order)
        if head_name in tied:
            emb = model.get_submodule(tied[head_name])
            set_module(model, tied[head_name], QuantEmbedding(q, emb.padding_idx, emb.weight.dtype))
    model.train(training)
