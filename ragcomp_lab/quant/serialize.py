"""save(model, path) / load(path): a quantized (or plain) Hugging Face causal LM as a folder of

    model.safetensors   every tensor as stored: packed codes, scales, zero-points, float weights
    quant.json          the HF config, the QuantConfig, and the quantized modules' constructor specs

No module is pickled (torch.save of a quantized module is a known trap, pytorch#61881): `load`
rebuilds the architecture from the config, puts empty quantized modules where `quant.json` says,
then copies the tensors in, so a reloaded model gives bit-identical outputs. Tied weights are
written once. Non-persistent buffers (rotary tables) are saved too: they depend on the dtype
history of the model, and identical outputs need identical tables.

`omit` leaves tensors out that another model already holds (a student's frozen embedding is the
teacher's): quant.json records each one's shape, dtype and SHA-256, and `load(path, fill=...)`
takes them back from that model, refusing any tensor that is not bit-identical.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._hf import quiet_loading
from .. import heads
from ..checkpoint import unique_tensors
from ..config import QuantConfig
from .dynamic import dynamic_from_state, dynamic_state, is_dynamic_linear
from .linear import QuantEmbedding, QuantLinear
from .static import StaticQuantLinear
from .targets import ATTR, set_module

WEIGHTS, META, FORMAT = "model.safetensors", "quant.json", 1


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The one dtype of the float parameters (quantized modules hold buffers, not parameters)."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) > 1:
        raise ValueError(f"the model mixes parameter dtypes {sorted(map(_dtype_name, dtypes))}: save supports one "
                         f"float dtype (plus quantized modules)")
    return dtypes.pop() if dtypes else torch.float32


def _describe(model: nn.Module) -> tuple[dict, dict[str, torch.Tensor], set[str]]:
    """(module specs, tensors of torch.ao layers, their prefixes) for every quantized module."""
    names = {id(m): n for n, m in model.named_modules()}
    specs, tensors, ao = {}, {}, set()
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            specs[name] = {"kind": "QuantLinear", **m.spec()}
        elif isinstance(m, QuantEmbedding):
            if id(m.head) not in names:
                raise ValueError(f"{name!r} reads a head that is not part of the model")
            specs[name] = {"kind": "QuantEmbedding", "head": names[id(m.head)], "padding_idx": m.padding_idx,
                           "dtype": _dtype_name(m.dtype)}
        elif isinstance(m, StaticQuantLinear):  # its state dict carries the INT8 codes and the fixed input grid
            specs[name] = {"kind": "StaticQuantLinear", **m.spec()}
        elif is_dynamic_linear(m):
            spec, t = dynamic_state(m)
            specs[name] = {"kind": "DynamicLinear", **spec}
            tensors.update({f"{name}.{k}": v.contiguous() for k, v in t.items()})
            ao.add(name)
    return specs, tensors, ao


def _under(key: str, prefixes) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _tensor_record(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "dtype": _dtype_name(t.dtype), "sha256": _digest(t)}


def save(model: nn.Module, path, omit=()) -> Path:
    """Write `model` to the folder `path` (replaced atomically if it holds an earlier save), without
    the tensors named in `omit` (load takes them back from `fill`)."""
    if not isinstance(model, nn.Module) or not hasattr(getattr(model, "config", None), "to_dict"):
        raise ValueError("save needs a Hugging Face model (an nn.Module with a .config), e.g. from rl.quantize")
    path = Path(path)
    if path.exists() and not (path / META).is_file():
        raise ValueError(f"{path} exists and is not a saved model (no {META}): refusing to replace it")
    specs, tensors, ao = _describe(model)
    state = {k: v for k, v in model.state_dict().items() if not _under(k, ao)}
    kept = unique_tensors(state)
    by_storage = {(v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)): k for k, v in kept.items()}
    tied = {k: by_storage[(v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))]
            for k, v in state.items() if k not in kept}
    persistent = set(model.state_dict())
    buffers = {k: v for k, v in model.named_buffers() if k not in persistent and not _under(k, ao)}
    tensors.update({k: v.detach().contiguous() for k, v in {**kept, **buffers}.items()})
    omit = [omit] if isinstance(omit, str) else list(omit)
    unknown = [k for k in omit if k not in tensors]
    if unknown:
        raise ValueError(f"omit={unknown[:3]} names no tensor that save writes; it writes e.g. {sorted(tensors)[:3]}")
    omitted = {k: _tensor_record(tensors.pop(k)) for k in omit}
    cfg = getattr(model, ATTR, None)
    # _name_or_path is the folder the model was loaded from on this machine: no use elsewhere
    hf_config = {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}
    meta = {"format": FORMAT, "hf_config": hf_config, "dtype": _dtype_name(_model_dtype(model)),
            "quant_config": cfg.to_dict() if cfg is not None else None, "modules": specs, "tied": tied,
            "buffers": sorted(buffers), "omitted": omitted}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    old = path.with_name(f".{path.name}-old-{os.getpid()}")
    try:
        save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _rebuild(model: nn.Module, specs: dict) -> None:
    """Put empty QuantLinear / QuantEmbedding modules where `specs` says (heads first: embeddings read them)."""
    for name, spec in sorted(specs.items(), key=lambda kv: kv[1]["kind"] == "QuantEmbedding"):
        kind, kw = spec["kind"], {k: v for k, v in spec.items() if k != "kind"}
        if kind == "QuantLinear":
            set_module(model, name, QuantLinear(**{**kw, "dtype": getattr(torch, kw["dtype"])}))
        elif kind == "QuantEmbedding":
            head = model.get_submodule(kw["head"])
            set_module(model, name, QuantEmbedding(head, kw["padding_idx"], getattr(torch, kw["dtype"])))
        elif kind == "StaticQuantLinear":
            set_module(model, name, StaticQuantLinear(**kw))
        elif kind != "DynamicLinear":
            raise ValueError(f"unknown module kind {kind!r} for {name!r} in {META}")


def _filled(meta: dict, fill, path: Path) -> dict[str, torch.Tensor]:
    """The omitted tensors, taken from `fill` (a model or a {name: tensor} dict) and checked bit for bit."""
    omitted = meta.get("omitted", {})
    if not omitted:
        return {}
    if fill is None:
        raise ValueError(f"{path} was saved without {sorted(omitted)[:3]}: pass fill= the model that holds them")
    source = fill.state_dict() if isinstance(fill, nn.Module) else dict(fill)
    out = {}
    for name, record in omitted.items():
        if name not in source:
            raise ValueError(f"fill has no tensor {name!r}, which {path} was saved without")
        t = source[name].detach()
        if _tensor_record(t) != record:
            raise ValueError(f"fill's {name!r} ({_dtype_name(t.dtype)} {tuple(t.shape)}) is not the tensor {path} was "
                             f"saved without ({record['dtype']} {tuple(record['shape'])}, sha256 "
                             f"{record['sha256'][:12]}...)")
        out[name] = t.clone()
    return out


def load(path, fill=None) -> nn.Module:
    """The model that `save` wrote to `path`, rebuilt offline, in eval mode; tensors it was saved
    without come from `fill` (a model or a {name: tensor} dict holding exactly those tensors)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"no saved model at {path}: expected {META} and {WEIGHTS}, as save() writes")
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path / META} has format {meta.get('format')!r}; this version reads format {FORMAT}")
    hf = dict(meta["hf_config"])
    with quiet_loading():
        config = AutoConfig.for_model(hf.pop("model_type"), **hf)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, meta["dtype"]))
    tensors = {**load_file(path / WEIGHTS), **_filled(meta, fill, path)}
    heads.rebuild_head(model)  # a trimmed head first: quantized modules may sit inside it
    _rebuild(model, meta["modules"])
    ao = [n for n, s in meta["modules"].items() if s["kind"] == "DynamicLinear"]
    ao_tensors = {k: tensors.pop(k) for k in [k for k in tensors if _under(k, ao)]}
    buffers = dict(model.named_buffers())
    if set(meta["buffers"]) - set(buffers):
        raise ValueError(f"{path} has buffers {sorted(set(meta['buffers']) - set(buffers))[:3]} that the model "
                         f"rebuilt from its config lacks")
    for name in meta["buffers"]:
        buffers[name].copy_(tensors.pop(name))
    expected = model.state_dict()
    for k, v in tensors.items():
        if k in expected and (expected[k].dtype, expected[k].shape) != (v.dtype, v.shape):
            raise ValueError(f"{k} in {path} is {v.dtype} {tuple(v.shape)}, the rebuilt model expects "
                             f"{expected[k].dtype} {tuple(expected[k].shape)}")
    # torch.ao layers go in after this load (their own loader wants keys we do not store)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not _under(k, ao)]
    state = model.state_dict()
    untied = [k for k in missing if k not in meta["tied"]
              or state[k].untyped_storage().data_ptr() != state[meta["tied"][k]].untyped_storage().data_ptr()]
    if unexpected or untied:
        raise ValueError(f"{path} does not fit the model rebuilt from its config: missing {untied[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    for name in ao:
        own = {k[len(name) + 1:]: v for k, v in ao_tensors.items() if _under(k, (name,))}
        set_module(model, name, dynamic_from_state(meta["modules"][name], own))
    if meta["quant_config"] is not None:
        setattr(model, ATTR, QuantConfig(**meta["quant_config"]))
    return model.eval()
