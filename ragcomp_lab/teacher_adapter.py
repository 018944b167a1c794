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

import hashlib
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

from . import models
from .models import ADAPTER_DIR, FIRST_ADAPTER_DIR  # noqa: F401  (read as teacher_adapter.<name> too)

CHECKPOINT_EVERY = 25  # steps; a checkpoint is the LoRA weights and the optimizer, a few tens of MB
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# extra_rows: rows of the train splits of the test beds of extra_seeds (other entities, the same wordings),
# a third of them unanswerable (a quarter in a split): the first adapter on this test bed answered most
# unanswerable questions with a distractor's value. autocast: BF16 matmuls, 1.5x faster per step on a
# CPU with AVX-512 BF16; on one without, BF16 is several times slower than FP32 (set it to None there).
RECIPE = dict(r=16, lora_alpha=32, epochs=1, batch_size=4, lr=1e-3, warmup_steps=10, seed=0,
              extra_seeds=[1, 2, 3, 4, 5], extra_rows=2400, extra_unanswerable=750, autocast="bfloat16")
# Attempt 4 (measured, not shipped: results/teacher_adapter_attempts.md), a second stage on RECIPE's
# adapter (init): fresh entities only (seeds 6-10, not seed 0's train split again), a third of the rows
# refusals, most of them an answerable row's twin with its fact removed (data.augment), and longer
# values; a lower learning rate, as it starts from a trained adapter.
ATTEMPT4 = dict(RECIPE, init=RECIPE, seed0=False, lr=5e-4, extra_seeds=[6, 7], extra_rows=800,
                extra_unanswerable=200, derived_seeds=[8, 9, 10], without_fact=350, longer_values=300)


def training_rows(recipe: dict = RECIPE):
    """The adapter's training rows: the train split of seed 0 (unless `seed0` is False), then
    `extra_rows` of the extra seeds' train splits (`extra_unanswerable` of them unanswerable), then
    rows derived from the `derived_seeds`' train splits (data.augment): `without_fact` answerable rows
    each beside its copy with the fact removed (answer: the refusal), and `longer_values` rows whose
    value was made longer. No row names an entity of seed 0's held-out splits."""
    from datasets import Dataset, concatenate_datasets

    from . import data
    from .data import augment

    held = {e for split in ("validation", "test", "test_new_wording", "test_new_domain")
            for es in data.rag_splits(seed=0)[split]["entities"] for e in es}
    columns = ["prompt", "answer", "kind"]
    parts = [data.rag_splits(seed=0)["train"].select_columns(columns)] if recipe.get("seed0", True) else []
    if recipe["extra_rows"]:
        extra = concatenate_datasets([data.rag_splits(seed=s)["train"] for s in recipe["extra_seeds"]])
        extra = extra.filter(lambda r: not held.intersection(r["entities"]))  # seed 0's held-out stay held out
        refusals = [i for i, k in enumerate(extra["kind"]) if k == "unanswerable"][:recipe["extra_unanswerable"]]
        answers = [i for i, k in enumerate(extra["kind"]) if k != "unanswerable"][:recipe["extra_rows"] - len(refusals)]
        parts.append(extra.select(sorted(refusals + answers)).select_columns(columns))
    derived, pairs, longer = [], recipe.get("without_fact", 0), recipe.get("longer_values", 0)
    rng = random.Random(f"derived-{recipe['seed']}")
    for s in recipe.get("derived_seeds", []):
        for row in data.rag_splits(seed=s)["train"]:
            if held.intersection(row["entities"]) or row["kind"] == "unanswerable":
                continue
            if pairs and (without := augment.without_fact(row, s)) is not None:
                derived += [row, without]
                pairs -= 1
            elif longer and (made := augment.longer_value(row, s, rng)) is not None:
                derived.append(made)
                longer -= 1
    if pairs or longer:
        raise ValueError(f"the derived seeds {recipe.get('derived_seeds')} give {pairs} too few rows without "
                         f"their fact and {longer} too few longer values: add a seed")
    if derived:
        parts.append(Dataset.from_list([{c: r[c] for c in columns} for r in derived]))
    return concatenate_datasets(parts)


def recipe_key(recipe: dict) -> str:
    """A short digest of a recipe: it names the folders of that recipe's checkpoints and adapter."""
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_folder(recipe: dict) -> Path:
    """Where the resumable checkpoints of `recipe`'s training live, under the user cache."""
    return models.cache_dir() / f"adapter-checkpoint-{recipe_key(recipe)}"


def first_stage(init, progress: bool = True) -> Path:
    """The folder of the adapter a second stage starts from: `init` names a folder beside the shipped
    adapter, or is a recipe, whose adapter is trained (once, resumably) under the user cache."""
    if isinstance(init, str):
        return ADAPTER_DIR.parent / init
    folder = models.cache_dir() / f"adapter-{recipe_key(init)}"
    if not (folder / "adapter_model.safetensors").is_file():
        train_adapter(folder, progress, recipe=init, checkpoint_dir=checkpoint_folder(init))
    return folder


def answer_loss(model, batch) -> torch.Tensor:
    """Cross-entropy on the answer tokens only (the LM head runs only there)."""
    from .data.encode import IGNORE
    from .distill import answer_logits

    labels = batch["labels"][:, 1:]
    logits, _ = answer_logits(model, batch)  # (n_answer_tokens, V)
    return F.cross_entropy(logits.float(), labels[labels != IGNORE])


def train_adapter(out_dir: Path = ADAPTER_DIR, progress: bool = True, recipe: dict | None = None,
                  checkpoint_dir: Path | None = None) -> dict:
    """Train the adapter with `recipe` (default RECIPE; another one for an attempt written elsewhere)
    and write it with its training.json into out_dir atomically. With `checkpoint_dir`, the LoRA
    weights and the optimizer are saved there every CHECKPOINT_EVERY steps, and a run started
    again with the same recipe resumes from them (an hour-long run can span sittings)."""
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    from . import checkpoint
    from .data.encode import collate, encode_pair
    from .data.splits import TESTBED

    r = RECIPE if recipe is None else {**RECIPE, **recipe}
    torch.manual_seed(r["seed"])
    teacher, tok = models.load_teacher(adapter=False)
    train = training_rows(r)
    if r.get("init"):  # a second stage: go on training the adapter of another recipe
        from peft import PeftModel

        model = PeftModel.from_pretrained(teacher, first_stage(r["init"], progress), is_trainable=True)
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # shipped in FP16; trained in FP32
    else:
        model = get_peft_model(teacher, LoraConfig(r=r["r"], lora_alpha=r["lora_alpha"], target_modules=TARGETS,
                                                   lora_dropout=0.0))
    lora = torch.nn.ParameterDict({n.replace(".", "__"): p for n, p in model.named_parameters() if p.requires_grad})
    opt = torch.optim.AdamW(list(lora.values()), lr=r["lr"], weight_decay=0.0)
    order = list(range(len(train))) * r["epochs"]
    random.Random(r["seed"]).shuffle(order)
    steps = math.ceil(len(order) / r["batch_size"])
    losses, first, before = [], 0, 0.0
    if checkpoint_dir is not None and (Path(checkpoint_dir) / checkpoint.LATEST).is_dir():
        info = checkpoint.load(checkpoint_dir, lora, opt)
        if info["recipe"] != json.loads(json.dumps(r)):
            raise ValueError(f"the checkpoint in {checkpoint_dir} was made with another recipe: {info['recipe']}")
        first, losses, before = info["step"], info["losses"], info["seconds"]

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 0 at the last step
        return min(1.0, (step + 1) / r["warmup_steps"]) * 0.5 * (1 + math.cos(math.pi * step / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at, last_epoch=first - 1)  # resumed: lr_at(first) next
    model.train()
    start = time.time()
    for s in tqdm(range(first, steps), desc="teacher adapter", disable=not progress, initial=first, total=steps):
        rows = train.select(order[s * r["batch_size"]:(s + 1) * r["batch_size"]])
        batch = collate([encode_pair(tok, p, a) for p, a in zip(rows["prompt"], rows["answer"])], tok.pad_token_id)
        with torch.autocast("cpu", dtype=getattr(torch, r["autocast"] or "float32"), enabled=bool(r["autocast"])):
            loss = answer_loss(model, batch)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if checkpoint_dir is not None and ((s + 1) % CHECKPOINT_EVERY == 0 or s + 1 == steps):
            checkpoint.save(checkpoint_dir, lora, opt, s + 1,
                            {"recipe": r, "losses": losses, "seconds": before + time.time() - start})
    meta = {"recipe": r, "targets": TARGETS, "steps": steps, "train_rows": len(train),
            "seconds": round(before + time.time() - start),
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
    print(json.dumps(train_adapter(checkpoint_dir=checkpoint_folder(RECIPE)), indent=2))
    sys.exit(0)
