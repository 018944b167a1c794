"""What every quantization mode shares: which Linears it replaces (`linear_targets`, `skipped`,
`check_skip`), how a module is swapped in (`set_module`), which head is tied to which embedding
(`tied_embeddings`), where a model keeps the config it was quantized with (ATTR), and the one
reading of calibration data (`calibration_batches`). api.py dispatches to the modes; the modes
(gptq, qat, static, dynamic, sensitivity, serialize) import from here, never from api."""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping

import torch
from torch import nn

ATTR = "ragcomp_quant_config"  # the QuantConfig a quantized copy was made with (skip resolved)
DEFAULT_SKIP = {"static": ("*.mlp.down_proj",)}  # skip=None: modules each mode keeps in float


def skipped(name: str, skip) -> bool:
    """Whether module `name` is kept in float by `skip` (exact names, prefixes or globs)."""
    return any(name == s or name.startswith(s + ".") or fnmatch.fnmatchcase(name, s) for s in skip)


def check_skip(model: nn.Module, skip) -> None:
    """A user's `skip` must name modules of this model: a typo would quantize what it meant to keep."""
    names = [n for n, _ in model.named_modules() if n]
    unknown = [s for s in skip if not any(skipped(n, (s,)) for n in names)]
    if unknown:
        raise ValueError(f"skip has {unknown}, matching no module of this model; names look like "
                         f"{names[:2] + names[-1:]}")


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted `name` of `model`."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def tied_embeddings(model: nn.Module) -> dict[str, str]:
    """{linear name: embedding name} for each nn.Linear whose weight IS an nn.Embedding's weight."""
    emb = {id(m.weight): n for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.Embedding)}
    return {n: emb[id(m.weight)] for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) in emb}


def linear_targets(model: nn.Module, skip) -> dict[str, nn.Linear]:
    """The nn.Linear layers to quantize: not skipped, and not tied to a skipped embedding."""
    tied = tied_embeddings(model)
    return {n: m for n, m in model.named_modules() if type(m) is nn.Linear
            and not skipped(n, skip) and not (n in tied and skipped(tied[n], skip))}


def calibration_batches(calib, mode: str) -> list[dict[str, torch.Tensor]]:
    """`calib` as model keyword arguments, each {"input_ids": (B, L)} with its "attention_mask" when
    given: a list of input_ids tensors ((B, L) or (L,)) or of tokenizer outputs. Anything else is
    refused with the batch it is and what `mode` accepts."""
    if calib is None:
        raise ValueError(f"calib=None: mode={mode!r} needs calibration data to fix the activation ranges: pass "
                         f"calib=, a non-empty list of input batches (e.g. a few hundred tokens of representative "
                         f"prompts)")
    if isinstance(calib, (torch.Tensor, Mapping, str)):
        shown = f"calib={calib!r}: " if isinstance(calib, str) and len(calib) < 40 else ""
        raise ValueError(f"{shown}calib must be a list of batches, got a single {type(calib).__name__}: wrap it in "
                         f"a list, e.g. calib=[tok(prompts, return_tensors='pt', padding=True)]")
    try:
        empty = len(calib) == 0
    except TypeError:
        raise ValueError(f"calib must be a list of input batches, got {type(calib).__name__}") from None
    if empty:
        raise ValueError(f"calib is empty: mode={mode!r} needs at least one calibration batch")
    out = []
    for i, b in enumerate(calib):
        if isinstance(b, Mapping) and "input_ids" in b:
            kw = {k: b[k] for k in ("input_ids", "attention_mask") if k in b and b[k] is not None}
        elif isinstance(b, torch.Tensor):
            kw = {"input_ids": b}
        else:
            got = f"a dict with keys {sorted(b)}" if isinstance(b, Mapping) else f"a {type(b).__name__}"
            raise ValueError(f"calib[{i}] is {got}: each calibration batch must be an input_ids tensor (B, L) or "
                             f"a dict with 'input_ids' (and 'attention_mask'), as a tokenizer returns")
        ids = kw["input_ids"]
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int) or ids.dim() not in (1, 2) \
                or ids.numel() == 0:
            raise ValueError(f"calib[{i}]: input_ids must be a non-empty integer tensor (B, L) or (L,), got "
                             f"{type(ids).__name__} {getattr(ids, 'dtype', '')} {tuple(getattr(ids, 'shape', ()))}")
        ids = ids.reshape(-1, ids.shape[-1])
        kw["input_ids"] = ids
        if "attention_mask" in kw:
            kw["attention_mask"] = torch.as_tensor(kw["attention_mask"]).reshape(ids.shape)
        out.append(kw)
    return out
