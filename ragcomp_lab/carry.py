"""A training run carried across machines in the repository: `pack` keeps what a resume needs in a
few tens of MB (the trainable weights in FP16, the optimizer's second moments factored by rows and
columns as Adafactor keeps them), `unpack` writes a checkpoint that `distill(resume=True)` reads.
The first moments restart at zero: with the second moments kept, the first steps after a resume are
small (about a tenth of a full step) instead of the sign-sized steps of a fresh Adam."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import checkpoint


def _trainable_names(trainable) -> list[str]:
    return [n for n, p in trainable.named_parameters() if p.requires_grad]  # the optimizer's order


def pack(run_dir, dest, trainable) -> Path:
    """Write dest/{weights,moments}.safetensors and dest/state.json from run_dir/latest."""
    src, dest = Path(run_dir) / checkpoint.LATEST, Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    info = json.loads((src / "state.json").read_text())
    weights, moments = load_file(src / "model.safetensors"), load_file(src / "optimizer.safetensors")
    names = _trainable_names(trainable)
    save_file({n: weights[n].to(torch.float16).contiguous() for n in names}, dest / "weights.safetensors")
    factored = {}
    for i, n in enumerate(names):
        v = moments[f"{i}.exp_avg_sq"]
        if v.dim() == 2:
            factored[f"{n}.rows"], factored[f"{n}.cols"] = v.mean(1), v.mean(0)
        else:
            factored[f"{n}.full"] = v.float()
    save_file(factored, dest / "moments.safetensors")
    meta = info.pop("optimizer")
    (dest / "state.json").write_text(json.dumps({**info, "param_groups": meta["param_groups"], "names": names}))
    return dest


def unpack(dest, run_dir, trainable) -> Path:
    """Rebuild run_dir/latest from a pack, the frozen weights taken from `trainable` as it is."""
    dest, out = Path(dest), Path(run_dir)
    info = json.loads((dest / "state.json").read_text())
    if info["names"] != _trainable_names(trainable):
        raise ValueError(f"the pack in {dest} was made for other trainable weights than this model's")
    weights, factored = load_file(dest / "weights.safetensors"), load_file(dest / "moments.safetensors")
    state = dict(trainable.state_dict())
    for n in info["names"]:
        state[n] = weights[n].to(state[n].dtype)
    params = [p for p in trainable.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params)
    model_state = trainable.state_dict()
    trainable.load_state_dict(state)
    for i, (n, p) in enumerate(zip(info["names"], params)):
        if f"{n}.full" in factored:
            v = factored[f"{n}.full"]
        else:
            rows, cols = factored[f"{n}.rows"], factored[f"{n}.cols"]
            v = torch.outer(rows, cols) / rows.mean().clamp_min(1e-30)
        opt.state[p] = {"step": torch.tensor(float(info["step"])), "exp_avg": torch.zeros_like(p), "exp_avg_sq": v.to(p.dtype)}
    opt_state = opt.state_dict()
    opt_state["param_groups"] = info["param_groups"]  # the run's weight decay and betas, not AdamW's defaults
    opt.load_state_dict(opt_state)
    checkpoint.save(out, trainable, opt, info["step"], {"config": info["config"], "losses": info["losses"]})
    trainable.load_state_dict(model_state)  # the caller's model is left as it was; resume loads the checkpoint
    return out / checkpoint.LATEST
