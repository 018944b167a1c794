"""The student the lab ships: `ragcomp-lab experiments student`.

The recipe (RECIPE), each part measured against what it replaced:

1. **Which layers.** The `n_layers` teacher layers whose removal costs the answers most
   (`layer_choice.removal_cost` on IMPORTANCE_ROWS train rows), not the ends of the stack.
2. **The head.** Training keeps the teacher's tied head, frozen with the input embedding (the student
   shares the teacher's vocabulary rows, so only the layers and the final norm train); answering uses a
   `heads.PromptHead`: each prompt's own ids plus `heads.general_ids`, a few hundred rows of the head
   per token instead of 49,152.
3. **The data.** The train pool (`rl.data.train_pool()`: other seeds' entities, none held out), from
   the teacher's top-k cache of the pool; BF16 autocast where the CPU has AVX-512 (faster per step:
   `autocast` says why its weight cache is off).
4. **How long.** Up to `steps`, probed on validation every `probe_every` steps, stopped after
   `patience` probes without a better F1; the best probe's student is the one kept. A run
   checkpoints under the bed's runs_dir and resumes there, across sittings. A machine does not keep
   that folder from one sitting to the next, so `carry` packs the run into the repository
   (SHIPPED_RUNS) and `train` resumes from the pack where no checkpoint of the run is at hand.

The no-teacher twin (alpha = 1) trains with the same recipe, data and budget.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import torch

from . import carry as carrying
from . import experiments as ex
from . import heads, layer_choice, models
from .config import DistillConfig
from .distill import distill
from .experiments_pool import PROBE_ROWS, SHIPPED_RUNS, ValidationProbe, pool_soft_targets

IMPORTANCE_ROWS = 32
CONFIG = DistillConfig(T=2.0, alpha=0.5, steps=6000, batch_size=8, lr=1e-3, warmup_steps=100, checkpoint_every=100)
RECIPE = {"n_layers": 8, "config": CONFIG, "probe_every": 250, "patience": 4, "freeze_embedding": True,
          "autocast": "bfloat16"}
SPLITS = ("test", "test_new_wording", "test_new_domain")


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chosen_layers(bed: ex.Bed, n_layers: int, rows=None) -> tuple[list[int], list[float]]:
    """(the kept layers, every layer's removal cost), the costs kept under the bed's runs_dir; the
    shipped teacher's ship in SHIPPED_RUNS (about 15 minutes of forward passes on 2 cores)."""
    from .data import rag_splits

    rows = rag_splits(seed=0)["train"].select(range(IMPORTANCE_ROWS)) if rows is None else rows
    rows = {"prompt": list(rows["prompt"]), "answer": list(rows["answer"])}
    config = {k: v for k, v in bed.teacher.config.to_dict().items() if k != "transformers_version"}  # same weights
    name = f"removal-cost-{_key(rows, config)}.json"
    saved = Path(bed.runs_dir) / name if bed.runs_dir else None
    # a shipped file sits in a folder named as the runs_dir, which holds the teacher's digest
    found = [p for p in (SHIPPED_RUNS / saved.parent.name / name, saved) if p.is_file()] if saved else []
    if found:
        costs = json.loads(found[0].read_text())
    else:
        costs = layer_choice.removal_cost(bed.teacher, bed.tok, rows, column="answer")
        if saved is not None:
            ex._write_atomic(saved, json.dumps(costs))
    return layer_choice.keep_most_important(costs, n_layers), costs


def autocast(name: str | None):
    """Autocast to `name` (say "bfloat16") only where the CPU has AVX-512: without it BF16 is several
    times slower than FP32. Its weight cache is off: autocast keeps the cast of each weight until its
    context exits, and a whole run inside one context would compute every step with the first step's
    weights while the optimizer moves the real ones (the loss falls, the saved student is untrained)."""
    if name and torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return torch.autocast("cpu", dtype=getattr(torch, name), cache_enabled=False)
    return nullcontext()


def _run(bed: ex.Bed, recipe: dict, pool, layers):
    """(the run's folder under the bed's runs_dir or None, the folder its pack ships in or None)."""
    key = _key(layers, recipe["config"].to_dict(), {k: v for k, v in recipe.items() if k != "config"},
               sorted(pool["id"]))
    if not bed.runs_dir:
        return None, None
    return Path(bed.runs_dir) / f"student-{key}", SHIPPED_RUNS / Path(bed.runs_dir).name / f"student-{key}"


def _student(bed: ex.Bed, recipe: dict, layers):
    student = models.make_student(bed.teacher, keep_layers=layers)
    if recipe["freeze_embedding"]:
        student.get_input_embeddings().weight.requires_grad_(False)  # the tied head with it
    return student


def _trainable(student) -> torch.nn.Module:
    return torch.nn.ModuleDict({"student": student})  # what distill checkpoints (no feature projections here)


def carry(bed: ex.Bed, recipe: dict = RECIPE, pool=None, layers=None) -> Path:
    """Pack the run of this recipe (its latest checkpoint, and its validation curve so far as
    curve.json) into the folder it ships in, for a sitting on another machine to resume from."""
    from .data import train_pool

    pool = train_pool() if pool is None else pool
    layers = chosen_layers(bed, recipe["n_layers"])[0] if layers is None else layers
    run_dir, shipped = _run(bed, recipe, pool, layers)
    if run_dir is None or not (run_dir / "latest").is_dir():
        raise FileNotFoundError(f"no run of this recipe to carry: no checkpoint under {run_dir}")
    carrying.pack(run_dir, shipped, _trainable(_student(bed, recipe, layers)))
    curve = run_dir / "curve.json"
    ex._write_atomic(shipped / "curve.json", curve.read_text() if curve.is_file() else "[]")
    return shipped


def train(bed: ex.Bed, recipe: dict = RECIPE, pool=None, probe_rows=None, layers=None):
    """(the best student, with its PromptHead; its run's info): trained with `recipe` on the pool,
    resumed from the bed's runs_dir when a run with this recipe, pool and layers was started, else
    from its carried pack if one ships. After a pack the validation probe starts afresh (the pack
    holds no best student); the points measured before it are kept in info["carried_curve"]."""
    from .data import rag_splits, train_pool
    from .quant.serialize import load

    cfg: DistillConfig = recipe["config"]
    pool = train_pool() if pool is None else pool
    if probe_rows is None:
        val = rag_splits(seed=0)["validation"]
        probe_rows = val.select([i for i, k in enumerate(val["kind"]) if k != "unanswerable"][:PROBE_ROWS])
    costs = None
    if layers is None:
        layers, costs = chosen_layers(bed, recipe["n_layers"])
    run_dir, shipped = _run(bed, recipe, pool, layers)
    student = _student(bed, recipe, layers)
    carried_curve = []
    if shipped is not None and (shipped / "state.json").is_file():
        carried_curve = json.loads((shipped / "curve.json").read_text())
        if not (run_dir / "latest").is_dir():
            carrying.unpack(shipped, run_dir, _trainable(student))
    probe = ValidationProbe(student, bed.tok, probe_rows, min(recipe["probe_every"], cfg.steps),
                            run_dir / "curve.json" if run_dir else None, patience=recipe["patience"],
                            best_dir=run_dir / "best" if run_dir else None)
    resume = run_dir is not None and (run_dir / "latest").is_dir()
    mine = {p["step"] for p in probe.points}  # the machine that packed the run has its points in both
    carried_curve = [p for p in carried_curve if p["step"] not in mine]
    teacher, soft = (bed.teacher, pool_soft_targets(bed, pool)) if cfg.alpha < 1 else (None, None)
    with autocast(recipe["autocast"]):
        history = distill(teacher, student, pool, cfg, [probe], checkpoint_dir=run_dir, resume=resume,
                          tok=bed.tok, soft_targets=soft)
    best = load(run_dir / "best") if run_dir is not None and (run_dir / "best").is_dir() else student
    heads.use_prompt_head(best, heads.general_ids(bed.tok))
    info = {"layers": layers, "removal_cost": costs, "config": cfg.to_dict(), "carried_curve": carried_curve,
            "recipe": {k: v for k, v in recipe.items() if k != "config"}, "pool_rows": len(pool),
            "curve": probe.points, "best": probe.best(), "stopped_at": history.stopped_at,
            "train_seconds_this_sitting": round(history.seconds, 1),
            # over every sitting: each step's and each probe's wall time, kept in the checkpoints and the curve
            "train_seconds": round(sum(r.get("seconds", 0.0) for r in history.losses)
                                   + sum(p.get("seconds", 0.0) for p in carried_curve + probe.points), 1),
            "losses": history.losses[:: max(1, len(history.losses) // 200)]}
    return best, info


def scored(bed: ex.Bed, student, splits=None) -> dict:
    """split_metrics of the student's greedy answers on each of SPLITS."""
    from .data import rag_splits, teacher_answers
    from .experiments_teacher import split_metrics

    splits = rag_splits(seed=0) if splits is None else splits
    out = {}
    for name in SPLITS:
        answers = teacher_answers(student, bed.tok, splits[name], batch_size=16, progress=False)
        out[name] = {**split_metrics(answers, splits[name]), "answers": answers}
    return out
