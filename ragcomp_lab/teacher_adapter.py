"""Adapt the teacher to the test bed's answer format with a small LoRA adapter, trained once.

SmolLM2-135M-Instruct reads the retrieved passages but answers in rambling sentences, loops on
"The answer is:", and never refuses (measured in the chapter "RAG distillation data"). One epoch
of LoRA on gold answers teaches it the format: a short answer taken from the context, or the
refusal. It trains on the test bed's many wordings (the train split, and rows of the train splits
of two other seeds' test beds, whose entities are other ones), never on the held-out wordings or the new
domain, so that those measure whether it learned to read rather than to match templates. The
adapter ships with the package (a few MB, FP16); the base weights never change. Rebuild it with:

    python -m ragcomp_lab.teacher_adapter        # about 30 minutes on 2 CPU cores

The first adapter, trained on the first test bed's one wording, ships beside it
(adapters/teacher-rag-lora-v1) so that the book can show what it does on wordings it never saw.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ADAPTER_DIR = Path(__file__).with_name("adapters") / "teacher-rag-lora"
FIRST_ADAPTER_DIR = ADAPTER_DIR.with_name("teacher-rag-lora-v1")  # trained on test bed 1 (one wording)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# extra_rows: rows of the train splits of the test beds of extra_seeds (other entities, the same wordings),
# a third of them unanswerable (a quarter in a split): the first adapter on this test bed answered most
# unanswerable questions with a distractor's value. autocast: BF16 matmuls, 1.5x faster per step on a
# CPU with AVX-512 BF16; on one without, BF16 is several times slower than FP32 (set it to None there).
RECIPE = dict(r=16, lora_alpha=32, epochs=1, batch_size=4, lr=1e-3, warmup_steps=10, seed=0, extra_seeds=[1, 2],
              extra_rows=900, extra_unanswerable=300, autocast="bfloat16")


def training_rows(recipe: dict = RECIPE):
    """The adapter's training rows: the train split of seed 0, then `extra_rows` of the extra seeds'
    train splits (`extra_unanswerable` of them unanswerable), none naming an entity of seed 0's
    held-out splits."""
    from datasets import concatenate_datasets

    from . import data

    held = {e for split in ("validation", "test", "test_new_wording", "test_new_domain")
            for es in data.rag_splits(seed=0)[split]["entities"] for e in es}
    extra = concatenate_datasets([data.rag_splits(seed=s)["train"] for s in recipe["extra_seeds"]])
    extra = extra.filter(lambda r: not held.intersection(r["entities"]))  # seed 0's held-out stay held out
    refusals = [i for i, k in enumerate(extra["kind"]) if k == "unanswerable"][:recipe["extra_unanswerable"]]
    answers = [i for i, k in enumerate(extra["kind"]) if k != "unanswerable"][:recipe["extra_rows"] - len(refusals)]
    return concatenate_datasets([data.rag_splits(seed=0)["train"], extra.select(sorted(refusals + answers))])


def answer_loss(model, batch) -> torch.Tensor:
    """Cross-entropy on the answer tokens only (the LM head runs only there)."""
    from .data.encode import IGNORE
    from .distill import answer_logits

    labels = batch["labels"][:, 1:]
    logits, _ = answer_logits(model, batch)  # (n_answer_tokens, V)
    return F.cross_entropy(logits.float(), labels[labels != IGNORE])


def train_adapter(out_dir: Path = ADAPTER_DIR, progress: bool = True, recipe: dict | None = None) -> dict:
    """Train the adapter with `recipe` (default RECIPE; another one for an attempt written elsewhere)
    and write it with its training.json into out_dir atomically."""
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    from . import models
    from .data.encode import collate, encode_pair
    from .data.splits import TESTBED

    r = RECIPE if recipe is None else {**RECIPE, **recipe}
    torch.manual_seed(r["seed"])
    teacher, tok = models.load_teacher(adapter=False)
    train = training_rows(r)
    model = get_peft_model(teacher, LoraConfig(r=r["r"], lora_alpha=r["lora_alpha"], target_modules=TARGETS,
                                               lora_dropout=0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=r["lr"], weight_decay=0.0)
    order = list(range(len(train))) * r["epochs"]
    random.Random(r["seed"]).shuffle(order)
    steps = math.ceil(len(order) / r["batch_size"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / r["warmup_steps"])
                                              * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    losses, start = [], time.time()
    for s in tqdm(range(steps), desc="teacher adapter", disable=not progress):
        rows = train.select(order[s * r["batch_size"]:(s + 1) * r["batch_size"]])
        batch = collate([encode_pair(tok, p, a) for p, a in zip(rows["prompt"], rows["answer"])], tok.pad_token_id)
        with torch.autocast("cpu", dtype=getattr(torch, r["autocast"] or "float32"), enabled=bool(r["autocast"])):
            loss = answer_loss(model, batch)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    meta = {"recipe": r, "targets": TARGETS, "steps": steps, "train_rows": len(train), "seconds": round(time.time() - start),
            "testbed": TESTBED, "losses": [round(x, 4) for x in losses], "torch": torch.__version__,
            "command": "python -m ragcomp_lab.teacher_adapter"}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out_dir.parent))
    try:
        model.half().save_pretrained(tmp)  # FP16 halves the shipped file; it is merged in FP32
        (tmp / "README.md").unlink(missing_ok=True)  # peft's blank model card
        (tmp / "training.json").write_text(json.dumps(meta, indent=2))
        tmp.chmod(0o755)  # mkdtemp makes it private, and so is the weights' file
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


if __name__ == "__main__":
    print(json.dumps(train_adapter(), indent=2))
    sys.exit(0)
