"""Checkpoints of a training run: the student's weights and the optimizer's state as safetensors,
the step and the history as JSON, all written to a temporary folder renamed into place, so an
interrupted write never leaves a half checkpoint behind."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            key = f"{idx}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(directory, model, optimizer, step: int, info: dict) -> Path:
    """Write `directory/latest`: model.safetensors, optimizer.safetensors and state.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=directory))
    try:
        save_file({k: v.detach().contiguous() for k, v in unique_tensors(model.state_dict()).items()}, tmp / "model.safetensors")
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **info}))
        final = directory / LATEST
        old = directory / ".latest-old"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory / LATEST


def load(directory, model, optimizer) -> dict:
    """Restore model and optimizer from `directory/latest`; return state.json (step, history ...)."""
    path = Path(directory) / LATEST
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"no checkpoint to resume from in {directory} (expected {path}/state.json)")
    info = json.loads((path / "state.json").read_text())
    weights = load_file(path / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {k for k in missing if k not in unique_tensors(model.state_dict())}
    if unexpected or set(missing) - tied:
        raise ValueError(f"the checkpoint in {path} does not fit this model: missing {sorted(set(missing) - tied)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    optimizer.load_state_dict(_unflatten_optimizer(load_file(path / "optimizer.safetensors"), info.pop("optimizer")))
    return info


def unique_tensors(state: dict) -> dict[str, torch.Tensor]:
    """A state dict with tied tensors kept once (safetensors refuses shared storage)."""
    seen, out = set(), {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key not in seen:
            seen.add(key)
            out[k] = v
    return out
