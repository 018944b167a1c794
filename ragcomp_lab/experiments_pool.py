"""The floor attempt on fresh entities: `ragcomp-lab experiments pool_run`.

The students of the other experiments see the 600 seed-0 train questions for several epochs and
learn those answers by heart: at 300 steps they answer the format right and the facts wrong (F1
6.6%). Here the same 6-layer student trains on `rl.data.train_pool()`, the train split plus the
test beds of four other seeds (3,956 questions about other invented entities, none of the
held-out ones): an answer can only be right if it is read out of the passages.

It trains on the hard labels alone (`distill(None, ...)`: the gold answers, which the teacher
gives on 99.6% of test questions), so a step costs the student's forward and backward only; a run
of POOL_STEPS steps is about an hour on 2 cores. Every PROBE_EVERY steps the student answers
PROBE_ROWS answerable questions of the validation split (never the test split), which gives the
learning curve. The run checkpoints every 50 steps under the bed's runs_dir and resumes there
after an interruption, the curve included. The student is kept under
~/.cache/ragcomp-lab/students/pool; the test split scores it once, at the end.

`ragcomp-lab experiments pool_kd` is the distilled twin: the same student, data, steps and
schedule, with BASE's T and alpha against the teacher's top-k cache of the pool. Together the two
are the KD-versus-no-teacher comparison on fresh entities.

`ragcomp-lab experiments pool_seeds` repeats both over POOL_SEEDS for the spread: about an hour per
run, so it writes results/pool_seeds.json after each run and, started again, keeps the runs a
file already holds with the same config (seed 0's from pool_run's and pool_kd's files): the
series can be spread over several sittings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import torch

from . import experiments as ex
from . import models
from .distill import Callback, distill
from .evaluation import answer_perplexity

POOL_STEPS = 1500
PROBE_EVERY = 250
PROBE_ROWS = 48
PPL_GAIN = 0.01  # a probe whose answer perplexity falls by more than 1% is progress
CONFIG = dataclasses.replace(ex.BASE, alpha=1.0, T=1.0, steps=POOL_STEPS, warmup_steps=20)
# pool_kd: the same student, steps and schedule, distilled (BASE's T and alpha) from the teacher's
# top-k cache of the pool, built once (teacher forward passes on 3,956 prompts, about 40 min on 2 cores)
KD_CONFIG = dataclasses.replace(CONFIG, alpha=ex.BASE.alpha, T=ex.BASE.T)
POOL_SEEDS = (0, 1, 2)
ARMS = {"no teacher": CONFIG, "distilled": KD_CONFIG}  # pool_seeds' arms: pool_run's and pool_kd's configs


def student_dir(name: str = "pool") -> Path:
    """Where the experiment keeps its student (FP32, rl.save format): pool_run's by default,
    "pool-kd" for pool_kd's."""
    return models.cache_dir() / "students" / name


SHIPPED_RUNS = Path(__file__).parent / "data" / "runs"  # caches that ship, in folders named as the runs_dir


def _pool_digest(pool) -> str:
    """A short digest of the pool's question ids: names its top-k cache file."""
    return hashlib.sha1(json.dumps(sorted(pool["id"])).encode()).hexdigest()[:16]


def pool_soft_targets(bed: ex.Bed, pool):
    """The teacher's top-k cache over the pool's gold answers, kept in the bed's runs_dir (which is
    the teacher's own: Bed.default); a bed without one computes it in memory. The shipped teacher's
    cache of the default pool ships in SHIPPED_RUNS (about 40 minutes of its forward passes on 2 cores)."""
    from .data import soft_targets

    path = None
    if bed.runs_dir is not None:
        name = f"pool-{_pool_digest(pool)}-answer-top{ex.TOPK}.safetensors"
        shipped = SHIPPED_RUNS / Path(bed.runs_dir).name / name  # the folder's name holds the teacher's digest
        path = shipped if shipped.is_file() else Path(bed.runs_dir) / name
    return soft_targets(bed.teacher, bed.tok, pool, column="answer", k=ex.TOPK, path=path)


class ValidationProbe(Callback):
    """Answer F1 of the student on `rows` every `every` steps, appended to a JSON file (so a resumed
    run keeps the points it already measured).

    Each point also has the answer perplexity on the same rows ("answer_ppl"): F1 is all or nothing
    per answer and can stay flat for thousands of steps while the student is still learning, which
    the perplexity shows. A probe is progress when it raises the best F1 or lowers the best answer
    perplexity by more than PPL_GAIN (relative); points written before answer_ppl was recorded count
    by F1 alone. With `patience`, the run stops once that many probes in a row brought no progress
    (early stopping); with `best_dir`, the student is saved there (rl.save) at each new best point
    (highest F1, then lowest perplexity), so the run's best student survives the steps after it."""

    def __init__(self, student, tok, rows, every: int, path: Path | None, patience: int | None = None,
                 best_dir: Path | None = None):
        self.student, self.tok, self.rows, self.every, self.path = student, tok, rows, every, path
        self.patience, self.best_dir = patience, best_dir
        self.points = json.loads(path.read_text()) if path is not None and path.is_file() else []
        self.stop = self._stale() >= patience if patience else False

    def best(self) -> dict | None:
        """The probe point with the highest F1, then the lowest answer perplexity (the earliest among
        equals), or None before the first."""
        return max(self.points, key=lambda p: (p["f1"], -(p.get("answer_ppl") or math.inf), -p["step"])) \
            if self.points else None

    def _stale(self) -> int:
        """Probes since the last one that was progress (see the class docstring)."""
        last, f1, ppl = 0, -math.inf, math.inf
        for i, p in enumerate(self.points):
            gained = p["f1"] > f1 or (p.get("answer_ppl") or math.inf) < ppl * (1 - PPL_GAIN)
            last = i if gained else last
            f1, ppl = max(f1, p["f1"]), min(ppl, (p.get("answer_ppl") or math.inf))
        return len(self.points) - 1 - last if self.points else 0

    def on_step(self, record, history):
        if record["step"] % self.every and record["step"] != history.config["steps"]:
            return
        from .data import teacher_answers

        began = time.perf_counter()
        with torch.autocast("cpu", enabled=False):  # in FP32, as the student will answer, inside an autocast run
            answers = teacher_answers(self.student, self.tok, self.rows, batch_size=16, progress=False)
            ppl = answer_perplexity(self.student, self.tok, self.rows) \
                if any(k != "unanswerable" for k in self.rows["kind"]) else None
        self.student.train()  # teacher_answers leaves the model in eval mode; training goes on
        m = ex.answer_metrics(answers, self.rows)
        self.points.append({"step": record["step"], "hard": record["hard"], "f1": m["f1"],
                            "answer_ppl": None if ppl is None else round(ppl, 4),
                            "f1_single_fact": m["f1_single_fact"], "f1_two_hop": m["f1_two_hop"],
                            "seconds": round(time.perf_counter() - began, 2)})
        if self.best_dir is not None and self.best()["step"] == record["step"]:
            from .quant.serialize import save

            save(self.student, self.best_dir)  # atomic: an interrupted save leaves the previous best
        if self.path is not None:
            ex._write_atomic(self.path, json.dumps(self.points))
        if self.patience:
            self.stop = self._stale() >= self.patience


def trained_student(bed: ex.Bed, cfg=CONFIG, pool=None, probe_rows=None):
    """(student, history, probe, pool): the 6-layer student trained `cfg` on the pool, probed on
    `probe_rows`. With a runs_dir the run checkpoints there and resumes, so a finished run only
    loads its last checkpoint (history.seconds then counts this call's steps: none)."""
    from .data import rag_splits, train_pool

    pool = train_pool() if pool is None else pool
    if probe_rows is None:
        val = rag_splits(seed=0)["validation"]
        probe_rows = val.select([i for i, k in enumerate(val["kind"]) if k != "unanswerable"][:PROBE_ROWS])
    layers = ex.LAYERS[ex.STUDENT]
    key = json.dumps([layers, cfg.to_dict(), sorted(pool["id"])])
    run_dir = Path(bed.runs_dir) / f"pool-{hashlib.sha1(key.encode()).hexdigest()[:16]}" if bed.runs_dir else None
    student = models.make_student(bed.teacher, keep_layers=layers)
    probe = ValidationProbe(student, bed.tok, probe_rows, min(PROBE_EVERY, cfg.steps),
                            run_dir / "curve.json" if run_dir else None)
    resume = run_dir is not None and (run_dir / "latest").is_dir()
    # distillation: the teacher's soft targets from the pool's top-k cache; hard labels alone: no teacher at all
    teacher, soft = (bed.teacher, pool_soft_targets(bed, pool)) if cfg.alpha < 1 else (None, None)
    history = distill(teacher, student, pool, cfg, [probe], checkpoint_dir=run_dir, resume=resume,
                      tok=bed.tok, soft_targets=soft)
    return student, history, probe, pool


def pool_run(bed: ex.Bed, cfg=CONFIG, pool=None, probe_rows=None, keep=None) -> tuple[list[dict], dict]:
    """[teacher row, student row] with quality, parameters, decoding latency and the floor ratios,
    and the info: the config, the pool's size and the validation learning curve."""
    from .quant.serialize import save

    student, history, probe, pool = trained_student(bed, cfg, pool, probe_rows)
    layers = ex.LAYERS[ex.STUDENT]
    save(student, student_dir() if keep is None else keep)
    teacher = ex._teacher_size_row(bed)
    answers, metrics = ex.score(bed, student)
    name = f"6 layers, train pool, {'distilled' if cfg.alpha < 1 else 'no teacher'}"
    row = ex.size_ratios(bed, student, {"model": name, "n_layers": len(layers),
                                        "steps": cfg.steps, "train_seconds": round(history.seconds, 1),
                                        "final_hard": history.losses[-1]["hard"], **metrics, "answers": answers})
    return [teacher, row], {"student_layers": layers, "config": cfg.to_dict(), "pool_rows": len(pool),
                            "probe": f"F1 on {len(probe.rows)} answerable validation questions", "curve": probe.points,
                            "floors": ex.FLOORS, "losses": history.losses[:: max(1, len(history.losses) // 100)]}


def pool_kd(bed: ex.Bed, cfg=KD_CONFIG, pool=None, probe_rows=None, keep=None) -> tuple[list[dict], dict]:
    """pool_run's student, steps and data, distilled from the teacher (KD_CONFIG): with pool_run,
    the KD-versus-no-teacher comparison on fresh entities. The student is kept under students/pool-kd."""
    if cfg.alpha >= 1:
        raise ValueError(f"alpha={cfg.alpha} trains on hard labels alone: pool_kd distills, give alpha < 1 "
                         f"(pool_run is the alpha = 1 run)")
    return pool_run(bed, cfg, pool, probe_rows, student_dir("pool-kd") if keep is None else keep)


def _finished_runs(out_dir, pool_rows: int) -> tuple[dict | None, dict]:
    """(teacher row, {(seed, arm): row}) of the runs already written with this student and pool size:
    results/pool_seeds.json's, and seed 0 of pool_run's and pool_kd's files (their rows, with the
    config they ran), measured on today's test bed."""
    from .data.splits import TESTBED

    teacher, done = None, {}
    if out_dir is None:
        return teacher, done
    for name, arm in (("pool_run", "no teacher"), ("pool_kd", "distilled"), ("pool_seeds", None)):
        path = Path(out_dir) / f"{name}.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        if (doc.get("pool_rows") != pool_rows or doc.get("student_layers") != ex.LAYERS[ex.STUDENT]
                or doc.get("testbed", 1) != TESTBED):
            continue  # another pool, another student or another test bed: not the same runs
        teacher = doc["rows"][0]
        for r in doc["rows"][1:]:
            if arm is not None:  # a single-run file: its config is the document's
                r = {**r, "seed": doc["config"]["seed"], "arm": arm, "config": doc["config"], "curve": doc["curve"],
                     "machine": doc["machine"]["cpu"], "date": doc["date"]}
            done[(r["seed"], r["arm"])] = r
    return teacher, done


def pool_seeds(bed: ex.Bed, seeds=POOL_SEEDS, arms=None, pool=None, probe_rows=None,
               out_dir=None) -> tuple[list[dict], dict]:
    """[teacher row, one row per (seed, arm)]: pool_run and pool_kd over `seeds`. A run that a file
    under `out_dir` already holds with the same config is kept, not trained again; each new run is
    written to out_dir/pool_seeds.json as soon as it is scored."""
    from .data import train_pool

    arms = ARMS if arms is None else arms
    pool = train_pool() if pool is None else pool
    teacher, done = _finished_runs(out_dir, len(pool))
    rows = []

    def info():
        return {"seeds": list(seeds), "arms": {a: c.to_dict() for a, c in arms.items()},
                "student_layers": ex.LAYERS[ex.STUDENT],
                "pool_rows": len(pool), "floors": ex.FLOORS,
                "probe": f"F1 on the {PROBE_ROWS} first answerable validation questions",
                "training_minutes": round(sum(r["train_seconds"] for r in rows) / 60, 1)}
    for seed in seeds:
        for arm, base in arms.items():
            cfg = dataclasses.replace(base, seed=seed)
            kept = done.get((seed, arm))
            if kept is not None and kept["config"] == cfg.to_dict():
                rows.append(kept)
                continue
            slug = arm.replace(" ", "-")
            (teacher, row), run_info = pool_run(bed, cfg, pool, probe_rows, student_dir(f"pool-seeds/{slug}-{seed}"))
            rows.append({**row, "seed": seed, "arm": arm, "config": cfg.to_dict(), "curve": run_info["curve"],
                         "machine": ex.machine()["cpu"], "date": ex.utc_now()})
            if out_dir is not None:
                ex.write("pool_seeds", [teacher] + rows, info(), out_dir)
    return [teacher] + rows, info()
