"""The teacher's own answers and soft targets on the RAG test bed: the distillation data.

Answers are generated greedily (deterministic) in batches with left padding. Soft targets are
kept as the top-k log-probabilities per answer token: the full distribution over SmolLM2's
49,152 tokens is 196,608 bytes per token in FP32; top-32 ids and log-probs take 192.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .encode import IGNORE, collate, encode_pair

SHIPPED = Path(__file__).with_name("teacher_answers.jsonl")
SHIPPED_TOPK = Path(__file__).with_name("teacher_top32.safetensors")  # the train split's gold answers, top-32
MAX_NEW_TOKENS = 32


def _rows(dataset, column: str):
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: there is nothing to generate")
    if column not in dataset.column_names:
        raise ValueError(f"the dataset has no {column!r} column (it has {dataset.column_names})")
    return dataset[column]


def teacher_answers(teacher, tok, dataset, batch_size: int = 8, max_new_tokens: int = MAX_NEW_TOKENS,
                    progress: bool = True) -> list[str]:
    """Greedy answers to each row's `prompt`, cut at the first line break, stripped."""
    prompts = _rows(dataset, "prompt")
    side = tok.padding_side
    tok.padding_side = "left"  # generation continues from the right end of every row
    answers = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="teacher answers", disable=not progress,
                          unit="batch"):
            batch = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = teacher.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                       pad_token_id=tok.pad_token_id, stop_strings=["\n"], tokenizer=tok)
            texts = tok.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
            answers += [t.split("\n")[0].strip() for t in texts]
    finally:
        tok.padding_side = side
    return answers


def write_answers(path, ids, answers, meta: dict) -> Path:
    """JSONL: a first line of metadata (how it was made), then one {id, teacher_answer} per row."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for i, a in zip(ids, answers, strict=True):
            f.write(json.dumps({"id": i, "teacher_answer": a}) + "\n")
    os.replace(tmp, path)  # never a half-written file
    return path


def read_answers(path=SHIPPED) -> tuple[dict, dict[str, str]]:
    """(metadata, {row id: teacher answer}) from a file written by write_answers."""
    with open(path) as f:
        meta = json.loads(f.readline())["meta"]
        return meta, {r["id"]: r["teacher_answer"] for r in map(json.loads, f)}


def topk_logprobs(teacher, tok, prompts: list[str], answers: list[str], k: int = 32,
                  batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Per row, the teacher's top-k next-token log-probs at every answer position (T = 1):
    {"ids": (L, k) int32, "logprobs": (L, k) float32, "targets": (L,) the answer tokens}.
    The mass outside the top k, 1 - sum(exp(logprobs)), is the "rest" bucket of the top-k KL."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= teacher.config.vocab_size:
        raise ValueError(f"k={k!r} is not allowed: use an integer in 1..{teacher.config.vocab_size}")
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"need as many answers as prompts, and at least one: got {len(prompts)} and {len(answers)}")
    from ..distill import answer_logits  # the LM head only at the answer positions

    out = []
    for start in range(0, len(prompts), batch_size):
        pairs = [encode_pair(tok, p, a) for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size])]
        batch = collate(pairs, tok.pad_token_id)
        labels = batch["labels"][:, 1:]  # position t predicts token t + 1
        keep = labels != IGNORE
        with torch.inference_mode():
            top = torch.log_softmax(answer_logits(teacher, batch)[0].float(), -1).topk(k, dim=-1)  # (n, k)
        rows = keep.sum(1).tolist()  # answer tokens of each row, in order
        for ids, logprobs, targets in zip(top.indices.split(rows), top.values.split(rows), labels[keep].split(rows)):
            out.append({"ids": ids.to(torch.int32), "logprobs": logprobs, "targets": targets})
    return out


def save_topk(path, rows: list[dict[str, torch.Tensor]], meta: dict | None = None) -> Path:
    """Write topk_logprobs rows as one safetensors file (concatenated, with row offsets), atomically;
    `meta` (how it was made) goes into the file's header as JSON."""
    from safetensors.torch import save_file

    if not rows:
        raise ValueError("no rows to save")
    lengths = torch.tensor([len(r["targets"]) for r in rows])
    tensors = {name: torch.cat([r[name] for r in rows]).contiguous() for name in ("ids", "logprobs", "targets")}
    tensors["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, tmp, metadata=None if meta is None else {"meta": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def topk_meta(path=SHIPPED_TOPK) -> dict:
    """The `meta` that save_topk wrote into a cache's header ({} for none)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("meta", "{}"))


def load_topk(path) -> list[dict[str, torch.Tensor]]:
    """The rows written by save_topk."""
    from safetensors.torch import load_file

    t = load_file(path)
    o = t["offsets"].tolist()
    return [{name: t[name][a:b] for name in ("ids", "logprobs", "targets")} for a, b in zip(o, o[1:])]


def with_teacher_answers(split, path=SHIPPED):
    """`split` with a "teacher_answer" column from the shipped answers (or a file from write_answers)."""
    _, answers = read_answers(path)
    missing = [i for i in split["id"] if i not in answers]
    if missing:
        raise ValueError(f"{len(missing)} rows (first {missing[0]!r}) have no teacher answer in {path}")
    return split.add_column("teacher_answer", [answers[i] for i in split["id"]])


def soft_targets(teacher, tok, split, column: str = "teacher_answer", k: int = 32, path=None,
                 batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """The top-k cache for distill(..., soft_targets=...): one topk_logprobs row per example of
    `split`, on the answers in `column`. With `path`, read it from there if it exists, else
    compute it and save it there."""
    answers = _rows(split, column)
    if path is not None and Path(path).is_file():
        rows = load_topk(path)
        if len(rows) != len(split) or rows[0]["ids"].shape[-1] != k:
            raise ValueError(f"{path} holds {len(rows)} rows of top-{rows[0]['ids'].shape[-1]}, not {len(split)} of "
                             f"top-{k}: delete it to rebuild")
        return rows
    rows = topk_logprobs(teacher, tok, split["prompt"], answers, k=k, batch_size=batch_size)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_topk(path, rows)
    return rows


def regenerate_shipped(path=SHIPPED, topk_path=SHIPPED_TOPK, seed: int = 0, batch_size: int = 8,
                       progress: bool = True) -> tuple[Path, Path]:
    """Generate the default test bed's teacher answers (every split) and the top-32 cache of the
    train split's gold answers, and write the shipped files, each with how long it took."""
    import time

    from .. import models
    from .splits import TESTBED, rag_splits

    teacher, tok = models.load_teacher()
    splits = rag_splits(seed=seed)
    order = ["validation", "test", "test_new_wording", "test_new_domain", "train"]
    ids, answers = [], []
    began = time.perf_counter()
    for name in order:
        ids += splits[name]["id"]
        answers += teacher_answers(teacher, tok, splits[name], batch_size=batch_size, progress=progress)
    common = {"seed": seed, "testbed": TESTBED, "batch_size": batch_size,
              "teacher": "SmolLM2-135M-Instruct + ragcomp_lab/adapters/teacher-rag-lora (merged)",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "command": "make teacher-answers"}
    meta = {**common, "order": order, "max_new_tokens": MAX_NEW_TOKENS, "decoding": "greedy",
            "seconds": round(time.perf_counter() - began)}
    write_answers(path, ids, answers, meta)
    began = time.perf_counter()
    rows = topk_logprobs(teacher, tok, splits["train"]["prompt"], splits["train"]["answer"], k=32, batch_size=batch_size)
    save_topk(topk_path, rows, {**common, "split": "train", "column": "answer", "k": 32,
                                "seconds": round(time.perf_counter() - began)})
    return Path(path), Path(topk_path)


if __name__ == "__main__":
    print(regenerate_shipped())
