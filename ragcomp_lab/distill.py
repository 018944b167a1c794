"""Distillation runs: a student learns from a teacher on query + retrieved context -> answer.

    history = rl.distill(teacher, student, data["train"], rl.DistillConfig(T=2.0, alpha=0.5, steps=200))

Per step, on the answer tokens only:
    L_total = alpha * L_student + (1 - alpha) * L_KD          (response-based)
            + feature_weight * L_feature + relation_weight * L_relation
L_student is the cross-entropy against cfg.target ("answer": gold; "teacher_answer": the teacher's
own answer, i.e. sequence-level KD); L_KD the KL at temperature T against the teacher's
next-token distribution, scaled by T^2: live, or from a top-k cache (`soft_targets`, made by
rl.data.soft_targets) with the tail merged into one "rest" bucket (losses.topk_kd_kl). The LM
head runs only at the answer positions: on a 49,152-token vocabulary it is most of a small
student's compute.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checkpoint
from .config import DistillConfig
from .data.encode import IGNORE, collate, encode_pair
from .losses import distillation_loss, feature_loss, feature_projection, relation_loss


@dataclass
class History:
    # one dict per step: step, total, hard, soft (+ feature, relation), lr, and the step's wall seconds
    # (kept in every checkpoint, so their sum is a resumed run's training time over all its sittings)
    losses: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0  # wall time of this process's steps (a resumed run counts its own)
    stopped_at: int | None = None  # the step a callback stopped the run at (early stopping), else None

    def curve(self, name: str) -> list[float]:
        return [r[name] for r in self.losses]


class Callback:
    """Hooks into a run; override what you need. A callback that sets `stop = True` ends the run
    after the current step (checkpointed there), or before the first step of a resumed one."""

    stop = False

    def on_step(self, record: dict, history: History) -> None: ...

    def on_end(self, history: History) -> None: ...


def _check(teacher, student, data, cfg, tok, soft_targets):
    if not isinstance(cfg, DistillConfig):
        raise ValueError(f"cfg must be a DistillConfig, got {type(cfg).__name__}")
    if teacher is None:
        used = [f"{k}={getattr(cfg, k)}" for k in ("feature_weight", "relation_weight") if getattr(cfg, k)]
        if cfg.alpha != 1.0 or used or soft_targets is not None:
            raise ValueError(f"teacher=None trains on the hard labels alone, which needs cfg.alpha=1.0, no soft_targets "
                             f"and no feature or relation loss; got alpha={cfg.alpha}"
                             + (f", {', '.join(used)}" if used else "")
                             + (", soft_targets" if soft_targets is not None else ""))
        if tok is None:
            raise ValueError("teacher=None needs tok=, the tokenizer of the student")
    vt, vs = (teacher or student).config.vocab_size, student.config.vocab_size
    if vt != vs:
        raise ValueError(f"teacher and student vocabularies differ (teacher {vt} tokens, student {vs}): "
                         f"distillation compares their next-token distributions token by token, so they need "
                         f"the same tokenizer; build the student with rl.models.make_student(teacher, ...)")
    if len(data) == 0:
        raise ValueError("the dataset is empty: there is nothing to distill on")
    for column in ("prompt", cfg.target):
        if column not in data.column_names:
            raise ValueError(f"the dataset has no {column!r} column (it has {data.column_names}); "
                             f"cfg.target={cfg.target!r} names the column of the hard labels")
    if soft_targets is not None:
        if len(soft_targets) != len(data):
            raise ValueError(f"soft_targets has {len(soft_targets)} rows for a dataset of {len(data)}: give one "
                             f"top-k row per example, in the dataset's order")
        if cfg.feature_weight or cfg.relation_weight:
            raise ValueError("feature- and relation-based distillation read the teacher's hidden states: they need "
                             "the live teacher, so pass soft_targets=None (or feature_weight=relation_weight=0)")
    if tok.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: set tok.pad_token before distilling")


def _encode(data, cfg, tok, limit: int):
    pairs = []
    for i, (prompt, target) in enumerate(zip(data["prompt"], data[cfg.target])):
        pair = encode_pair(tok, prompt, target)
        if len(pair[0]) > limit:
            raise ValueError(f"row {i} is {len(pair[0])} tokens long, beyond the models' context of {limit} tokens")
        pairs.append(pair)
    return pairs


def layer_map(teacher, student, cfg: DistillConfig) -> list[int]:
    """The teacher layer each student layer is matched to by feature and relation losses:
    cfg.layer_map, else the layers a layer-dropped student kept, else spread evenly."""
    n_t, n_s = teacher.config.num_hidden_layers, student.config.num_hidden_layers
    m = cfg.layer_map or getattr(student.config, "ragcomp_keep_layers", None)
    if m is None:  # spread evenly, the last student layer on the last teacher layer
        m = [round((i + 1) * n_t / n_s) - 1 for i in range(n_s)]
    if len(m) != n_s or max(m) >= n_t:
        raise ValueError(f"layer_map={list(m)} must give one teacher layer (0..{n_t - 1}) for each of the "
                         f"student's {n_s} layers")
    return list(m)


def _stream(n: int, cfg: DistillConfig, micro_batch: int) -> list[int]:
    """Row indices of micro-batch `micro_batch`: reshuffled every epoch, from the seed alone, so a
    resumed run sees exactly the batches an uninterrupted one would."""
    start = micro_batch * cfg.batch_size
    out = []
    while len(out) < cfg.batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = list(range(n))
        random.Random(cfg.seed * 100_003 + epoch).shuffle(perm)
        out += perm[offset:offset + cfg.batch_size - len(out)]
    return out


def _lr(cfg: DistillConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 0 over cfg.steps."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))


def answer_logits(model, batch, hidden_states: bool = False):
    """(logits at the answer positions (n, V), the decoder's output): the LM head runs only where a
    label is, since over every prompt position it is most of a small model's compute."""
    keep = batch["labels"][:, 1:] != IGNORE  # (B, L-1): position t predicts token t + 1
    out = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              output_hidden_states=hidden_states)
    head, hidden = model.get_output_embeddings(), out.last_hidden_state[:, :-1][keep]
    if hasattr(head, "set_prompt"):  # a per-prompt head: the prompt's tokens only, as in generation
        prompt = batch["attention_mask"].bool() & (batch["labels"] == IGNORE)
        head.set_prompt(model.get_input_embeddings(), batch["input_ids"], prompt)
        rows = torch.arange(len(keep))[:, None].expand_as(keep)[keep]
        return head(hidden, rows=rows), out
    return head(hidden), out


def _topk_batch(rows: list[dict], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached (ids, logprobs) of a batch's answer tokens, checked against the batch's labels."""
    cached = torch.cat([r["targets"] for r in rows]).to(targets.dtype)
    if not torch.equal(cached, targets):
        raise ValueError("the soft targets were computed for other answer tokens than the batch's labels: build "
                         "them from the same rows and the same target column as cfg.target")
    return torch.cat([r["ids"] for r in rows]), torch.cat([r["logprobs"] for r in rows])


def step_losses(teacher, student, batch, cfg: DistillConfig, mapping=None, projections=None, topk=None) -> dict:
    """The loss parts of one micro-batch (tensors; `total` carries the gradient). With `topk`
    (the batch's rows of a top-k cache) the teacher does not run."""
    hidden = cfg.feature_weight > 0 or cfg.relation_weight > 0
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    if teacher is None:  # hard labels alone: no teacher to compare with, so no soft loss (NaN in the log)
        hard = F.cross_entropy(answer_logits(student, batch)[0].float(), labels[keep])
        return {"total": hard, "hard": hard, "soft": torch.tensor(float("nan"))}
    if topk is None:
        with torch.no_grad():
            t_logits, t_out = answer_logits(teacher, batch, hidden)
    s_logits, s_out = answer_logits(student, batch, hidden)
    if topk is None:
        parts = distillation_loss(s_logits.float(), t_logits.float(), labels[keep], cfg.T, cfg.alpha)
    else:
        parts = distillation_loss(s_logits.float(), None, labels[keep], cfg.T, cfg.alpha,
                                  teacher_topk=_topk_batch(topk, labels[keep]))
    out = parts._asdict()
    mask = batch["attention_mask"].bool()
    if cfg.feature_weight > 0:
        out["feature"] = sum(feature_loss(s_out.hidden_states[i + 1], t_out.hidden_states[j + 1],
                                          proj=projections[i] if projections is not None else None,
                                          kind=cfg.feature_kind, mask=mask)
                             for i, j in enumerate(mapping)) / len(mapping)
        out["total"] = out["total"] + cfg.feature_weight * out["feature"]
    if cfg.relation_weight > 0:
        out["relation"] = sum(relation_loss(s_out.hidden_states[i + 1], t_out.hidden_states[j + 1], mask)
                              for i, j in enumerate(mapping)) / len(mapping)
        out["total"] = out["total"] + cfg.relation_weight * out["relation"]
    return out


def distill(teacher, student, data, cfg: DistillConfig, callbacks=(), checkpoint_dir=None, resume: bool = False,
            *, tok=None, progress: bool = True, soft_targets=None) -> History:
    """Train `student` in place against `teacher` on `data` (rows with "prompt" and cfg.target).
    `teacher=None` (with cfg.alpha=1 and `tok`) trains on the hard labels alone, the no-teacher
    baseline, without paying for a teacher's forward pass; its log has soft=NaN.

    With `checkpoint_dir`, the student, the optimizer and the history are saved every
    cfg.checkpoint_every steps (and at the end); `resume=True` continues from the last one and
    ends with the same weights as an uninterrupted run. `tok` defaults to the teacher's tokenizer.
    `soft_targets` (one top-k row per example, from rl.data.soft_targets) replaces the live
    teacher's forward pass, most of a step's cost; the teacher then only vouches for the vocabulary.
    """
    if tok is None and teacher is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(teacher.name_or_path, local_files_only=True)
    _check(teacher, student, data, cfg, tok, soft_targets)
    limit = min(m.config.max_position_embeddings for m in (teacher, student) if m is not None)
    pairs = _encode(data, cfg, tok, limit)
    mapping = layer_map(teacher, student, cfg) if cfg.feature_weight or cfg.relation_weight else None
    torch.manual_seed(cfg.seed)
    d_s, d_t = student.config.hidden_size, (teacher or student).config.hidden_size
    projections = torch.nn.ModuleList([feature_projection(d_s, d_t) for _ in range(student.config.num_hidden_layers)]) \
        if cfg.feature_weight and d_s != d_t else None
    trainable = torch.nn.ModuleDict({"student": student} | ({"projections": projections} if projections else {}))
    opt = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    history, start = History(config=cfg.to_dict()), 0
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs the checkpoint_dir to resume from")
        info = checkpoint.load(checkpoint_dir, trainable, opt)
        if info["config"] != cfg.to_dict():
            raise ValueError(f"the checkpoint was made with another config: {info['config']} != {cfg.to_dict()}")
        start, history.losses = info["step"], info["losses"]
    if teacher is not None:
        teacher.eval()
    student.train()
    began = time.perf_counter()
    try:
        for step in tqdm(range(start, cfg.steps), desc="distill", disable=not progress, initial=start, total=cfg.steps):
            if any(getattr(cb, "stop", False) for cb in callbacks):  # a duck-typed callback has none
                history.stopped_at = step
                break
            t0 = time.perf_counter()
            lr = _lr(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            sums: dict[str, float] = {}
            for j in range(cfg.grad_accum):
                rows = _stream(len(pairs), cfg, step * cfg.grad_accum + j)
                parts = step_losses(teacher, student, collate([pairs[i] for i in rows], tok.pad_token_id), cfg,
                                    mapping, projections,
                                    None if soft_targets is None else [soft_targets[i] for i in rows])
                (parts["total"] / cfg.grad_accum).backward()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v.item() / cfg.grad_accum
            torch.nn.utils.clip_grad_norm_(trainable.parameters(), cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            record = {"step": step + 1, **sums, "lr": lr, "seconds": round(time.perf_counter() - t0, 4)}
            history.losses.append(record)
            due = (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps
            if checkpoint_dir is not None and due:
                checkpoint.save(checkpoint_dir, trainable, opt, step + 1,
                                {"config": cfg.to_dict(), "losses": history.losses})
            for cb in callbacks:
                cb.on_step(record, history)
            if any(getattr(cb, "stop", False) for cb in callbacks):  # a duck-typed callback has none
                if checkpoint_dir is not None and not due:  # resume from where it stopped
                    checkpoint.save(checkpoint_dir, trainable, opt, step + 1,
                                    {"config": cfg.to_dict(), "losses": history.losses})
                history.stopped_at = step + 1
                break
    finally:
        student.eval()
    history.seconds = time.perf_counter() - began
    for cb in callbacks:
        cb.on_end(history)
    return history
