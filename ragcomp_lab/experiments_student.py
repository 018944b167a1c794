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


def _arms(bed: ex.Bed, student, twin, splits) -> tuple[dict, dict]:
    """({arm: {split: greedy answers}}, {arm: model}): the teacher's shipped answers, the student, its
    INT8 weight-only copy, and the no-teacher twin."""
    from .config import QuantConfig
    from .data import teacher_answers, with_teacher_answers
    from .quant.api import quantize

    models_ = {"student": student, "student INT8": quantize(student, QuantConfig(**models.STUDENT_INT8)),
               "no teacher": twin}
    arms = {"teacher": {s: list(with_teacher_answers(splits[s])["teacher_answer"]) for s in SPLITS}}
    for name, model in models_.items():
        arms[name] = {s: teacher_answers(model, bed.tok, splits[s], batch_size=16, progress=False) for s in SPLITS}
    return arms, models_


def student_run(bed: ex.Bed, recipe: dict = RECIPE, pool=None, probe_rows=None, layers=None, folder=None,
                splits=None) -> tuple[list[dict], dict]:
    """The shipped student and its card: the distilled student and its no-teacher twin trained with
    `recipe` (train, each resumable), scored on SPLITS with the teacher's shipped answers beside
    them; the student's and its INT8 copy's share of the teacher's F1 (paired.share); distilled
    against no teacher (paired.compare); decoding timed side by side with the teacher, each on its
    faster thread count; the student saved by models.save_student into `folder`. Rows: one per
    (arm, split); info: the card (results/student.json)."""
    from .bench_models import decode_costs, thread_counts
    from .data import rag_splits
    from .experiments_teacher import split_metrics
    from .paired import compare, share

    splits = rag_splits(seed=0) if splits is None else splits
    student, info = train(bed, recipe, pool, probe_rows, layers)
    no_teacher = {**recipe, "config": dataclasses.replace(recipe["config"], alpha=1.0)}
    twin, twin_info = train(bed, no_teacher, pool, probe_rows, info["layers"])
    arms, timed = _arms(bed, student, twin, splits)
    rows = [{"model": arm, "split": s, **split_metrics(answers[s], splits[s]), "answers": answers[s]}
            for arm, answers in arms.items() for s in SPLITS]
    kept = {s: share(arms["teacher"][s], arms["student"][s], splits[s]) for s in SPLITS}
    kept8 = {s: share(arms["teacher"][s], arms["student INT8"][s], splits[s]) for s in SPLITS}
    versus = {s: compare(arms["no teacher"][s], arms["student"][s], splits[s], metrics=("f1",))[0] for s in SPLITS}
    cost = decode_costs({"teacher": bed.teacher, **{k: timed[k] for k in ("student", "student INT8")}}, bed.tok,
                        splits["test"]["prompt"][0], threads=thread_counts())
    saved = models.save_student(student, models.STUDENT_DIR if folder is None else folder)
    head = student.get_output_embeddings()
    card = {"f1_retained": kept["test"]["share"], "f1_retained_int8": kept8["test"]["share"],
            "decode_speedup": cost["teacher"]["ms_per_token"] / cost["student"]["ms_per_token"],
            "decode_speedup_int8": cost["teacher"]["ms_per_token"] / cost["student INT8"]["ms_per_token"],
            "decode_bound": models.weights_per_token(bed.teacher) / models.weights_per_token(student),
            "layers": info["layers"], "head_tokens": f"each prompt's own ids + {len(head.general)} general ids",
            "train_cpu_hours": (info["train_seconds"] + twin_info["train_seconds"]) * ex.machine()["cores"] / 3600,
            "f1_retained_by_split": kept, "f1_retained_int8_by_split": kept8, "distilled_vs_no_teacher": versus,
            "hallucination": {arm: {r["split"]: r["hallucination"] for r in rows if r["model"] == arm} for arm in arms},
            "decode_costs": cost, "saved": str(saved),
            "saved_mb": sum(f.stat().st_size for f in Path(saved).iterdir()) / 1e6,
            "run": {k: v for k, v in info.items() if k != "losses"}, "no_teacher_run": {
                k: v for k, v in twin_info.items() if k != "losses"}}
    return rows, card
