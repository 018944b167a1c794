"""Adapt the teacher to the test bed's answer format with a small LoRA adapter, trained once.

SmolLM2-135M-Instruct reads the retrieved passages but answers in rambling sentences, loops on
"The answer is:", and never refuses (measured in the chapter "RAG distillation data"). One epoch
of LoRA on the train split's gold answers teaches it the format: a short answer copied from the
context, or the refusal. The adapter ships with the package (a few MB, FP16); the base weights
never change. Rebuild it with:

    python -m ragcomp_lab.teacher_adapter        # about 15 minutes on 2 CPU cores
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
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPE = dict(r=8, lora_alpha=16, epochs=1, batch_size=4, lr=1e-3, warmup_steps=10, seed=0)


def answer_loss(model, batch) -> torch.Tensor:
    """Cross-entropy on the answer tokens only (the LM head runs only there)."""
    from .data.encode import IGNORE
    from .distill import answer_logits

    labels = batch["labels"][:, 1:]
    logits, _ = answer_logits(model, batch)  # (n_answer_tokens, V)
    return F.cross_entropy(logits.float(), labels[labels != IGNORE])


def train_adapter(out_dir: Path = ADAPTER_DIR, progress: bool = True) -> dict:
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    from . import data, models
    from .data.encode import collate, encode_pair

    r = RECIPE
    torch.manual_seed(r["seed"])
    teacher, tok = models.load_teacher(adapter=False)
    train = data.rag_splits(seed=0)["train"]
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
        loss = answer_loss(model, batch)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    meta = {"recipe": r, "targets": TARGETS, "steps": steps, "train_rows": len(train), "seconds": round(time.time() - start),
            "first_losses": losses[:5], "last_losses": losses[-5:], "torch": torch.__version__,
            "command": "python -m ragcomp_lab.teacher_adapter"}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out_dir.parent))
    try:
        model.half().save_pretrained(tmp)  # FP16 halves the shipped file; it is merged in FP32
        (tmp / "README.md").unlink(missing_ok=True)  # peft's blank model card
        tmp.chmod(0o755)  # mkdtemp makes it private        (tmp / "training.json").write_text(json.dumps(meta, indent=2))
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
