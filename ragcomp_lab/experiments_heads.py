"""Which output head the shipped student decodes with: `ragcomp-lab experiments heads`.

A layer-dropped SmolLM2 student keeps the teacher's tied 49,152 x 576 head, as many weights as 8 of
its layers, and reads all of them at every generated token: the head bounds a small student's speed.
Three designs on one student shape (the speed depends on the shape, not on the weights, so the
student is not trained):

- "tied": the teacher's full head.
- "fixed": a `heads.FixedHead` over the ids the training pool's prompts and answers use, plus
  `heads.general_ids`. Built from the training corpus, it cannot produce the tokens of a new
  domain's answers (names, units, attributes no training row has).
- "per_prompt": a `heads.PromptHead`, each prompt's own ids plus the general set. An extractive
  answer is in its prompt, so it is covered by construction in any domain, and a token reads a few
  hundred head rows instead of 49,152.

Per design: its head's size, the share of each held-out split's answers it can produce
(`heads.coverage`), the bound its shape sets (`models.weights_per_token`'s ratio) and the decoding
speed-up measured against the FP32 teacher, all timed side by side in one `decode_costs` run.
"""
from __future__ import annotations

import statistics

from . import experiments as ex
from . import heads, layer_choice, models
from .experiments_student import SPLITS

DESIGNS = ("tied", "fixed", "per_prompt")


def typical_prompt(tok, prompts) -> str:
    """The prompt of median token count (the lower middle one for an even count)."""
    if not len(prompts):
        raise ValueError("typical_prompt needs at least one prompt")
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    return prompts[order[(len(order) - 1) // 2]]


def head_designs(bed: ex.Bed, n_layers: int = 8, splits=None, pool=None, layers=None,
                 timing: dict | None = None) -> tuple[list[dict], dict]:
    """(one row per design of DESIGNS, info) on a student keeping `layers` of the teacher's (default
    `layer_choice.evenly_spaced` n_layers; given, n_layers is len(layers)). `splits`: the held-out
    splits of SPLITS (default rag_splits(seed=0)); `pool`: the rows the fixed head is built from
    (default the train pool); `timing`: keyword arguments for decode_costs (default threads=thread_counts())."""
    from .bench_models import decode_costs, thread_counts
    from .data import rag_splits, train_pool
    from .data.encode import answer_text

    splits = rag_splits(seed=0) if splits is None else splits
    pool = train_pool() if pool is None else pool
    missing = [name for name in SPLITS if name not in splits]
    if missing:
        raise ValueError(f"splits lack {missing}: give every held-out split of {list(SPLITS)}")
    if not len(pool["prompt"]):
        raise ValueError("pool has no rows: the fixed head is built from its prompts and answers")
    tok, teacher = bed.tok, bed.teacher
    layers = layer_choice.evenly_spaced(teacher.config.num_hidden_layers, n_layers) if layers is None else list(layers)
    general = heads.general_ids(tok)
    corpus = list(pool["prompt"]) + [answer_text(a) for a in pool["answer"]]  # answers as they are generated
    fixed = sorted(set(general) | set(heads.token_ids(tok, corpus)))
    prompt = typical_prompt(tok, list(splits["test"]["prompt"]))
    students = {name: models.make_student(teacher, keep_layers=layers) for name in DESIGNS}
    heads.use_fixed_head(students["fixed"], fixed)
    heads.use_prompt_head(students["per_prompt"], general)
    timing = {"threads": thread_counts()} | (timing or {})
    cost = decode_costs({"teacher": teacher} | students, tok, prompt, **timing)
    # the per-prompt head's size is the timed prompt's: set it explicitly, not by the last generate call
    timed_ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    students["per_prompt"].get_output_embeddings().set_prompt(students["per_prompt"].get_input_embeddings(), timed_ids)
    allowed = {"tied": range(teacher.config.vocab_size), "fixed": fixed, "per_prompt": general}
    held_out_prompts = [p for name in SPLITS for p in splits[name]["prompt"]]
    rows = []
    for name, student in students.items():
        own = name == "per_prompt"  # its coverage is given each row's own prompt
        row = {"design": name, "n_layers": len(layers), "head_ids": student.get_output_embeddings().out_features,
               "general_ids": len(general) if name != "tied" else None,
               **{f"coverage_{s}": heads.coverage(allowed[name], tok, list(splits[s]["answer"]),
                                                  list(splits[s]["prompt"]) if own else None)
                  for s in SPLITS},
               "weights_per_token": models.weights_per_token(student),
               "decode_speedup_bound": models.weights_per_token(teacher) / models.weights_per_token(student),
               "decode_ms_per_token": cost[name]["ms_per_token"], "decode_threads": cost[name]["threads"],
               "teacher_decode_ms_per_token": cost["teacher"]["ms_per_token"],
               "teacher_decode_threads": cost["teacher"]["threads"],
               "decode_speedup": cost["teacher"]["ms_per_token"] / cost[name]["ms_per_token"]}
        if own:
            row["head_ids_mean_held_out"] = statistics.mean(len(set(general) | set(heads.token_ids(tok, [p])))
                                                            for p in held_out_prompts)
        rows.append(row)
    info = {"layers": layers, "general_ids": len(general), "fixed_ids": len(fixed), "pool_rows": len(pool["prompt"]),
            "prompt_tokens": cost["teacher"]["prompt_tokens"], "prompt": prompt,
            "threads": sorted(cost["teacher"]["ms_per_token_by_threads"]),
            "teacher_weights_per_token": models.weights_per_token(teacher),
            "measured": {
                "head_ids": "rows of the head one generated token multiplies: the vocabulary (tied), the fixed set, "
                            "or the timed prompt's own ids plus the general set (per_prompt; head_ids_mean_held_out "
                            "averages it over every held-out prompt)",
                "coverage": "share of a held-out split's gold answers whose every token the head can produce "
                            "(heads.coverage; per_prompt with each row's own prompt)",
                "decode_speedup_bound": "the teacher's weights_per_token over the design's: the speed-up its "
                                        "shape allows",
                "decode_speedup": "the FP32 teacher's ms per generated token over the design's, the prompt's forward "
                                  "excluded, all timed side by side in one decode_costs run on the same test prompt "
                                  "of median length, each on its fastest thread count; the student is untrained"}}
    return rows, info
