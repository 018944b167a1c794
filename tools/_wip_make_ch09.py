import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# PTQ vs QAT

Chapter 8 built quantization-aware training; this one measures what it buys. The question is the
one a practitioner has after distilling a student: *round its weights now (PTQ), or spend more
training so that the weights learn the grid (QAT)?* The answer depends on the bit-width, so the
experiment asks it at 8, 4, 3 and 2 bits.

The setup (`ragcomp_lab.experiments_quant`):

- **float**: the 6-layer student (`experiments.LAYERS[6]`) distilled with the base recipe
  (`experiments.BASE`: T = 2, alpha = 0.5, 60 steps) from the teacher's top-32 cache;
- **PTQ**: its weights rounded to nearest, weight-only, every `nn.Linear` including the LM head
  (tied to the input embedding, so the embedding too: most of this model's weights);
  per-channel scales at 8 bits, one float16 scale per group of 64 inputs at 4, 3 and 2 bits;
- **QAT**: prepare → the same distillation (same T, alpha, batch size, top-k cache) for a fixed
  number of extra steps at a lower peak learning rate, warm-up then cosine → convert;
- **float + steps**: the control. QAT trains the student longer than PTQ does, so part of any
  gain could be the extra training alone. The float student gets the same extra steps, with the
  same schedule, without fake quantization; then it is rounded too (**PTQ of float + steps**).

Every model is scored on the held-out test questions (chapter 4): the perplexity of the gold
answers of all 113 answerable ones among the 150, and its agreement with the float student there,
teacher-forced: the mean KL per token and the share of answer positions where both pick the same
next token (top-1). Greedy answers, and the F1, faithfulness and hallucination rate computed from
them, come from the first 48 test questions only (28 single-fact, 9 two-hop, 11 unanswerable):
generating is most of a model's scoring time, and the experiment scores 14 models."""),
code("""import pandas as pd

from ragcomp_lab import experiments, viz


def read_if_run(name):  # the results the experiment wrote, or None and the command to run
    try:
        doc = experiments.read(name)
    except FileNotFoundError as err:
        print(f"Not measured yet: {err}")
        return None
    print(f"{doc['command']}  |  {doc['date']}  |  {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
          f"torch {doc['machine']['torch']}  |  {doc['seconds'] / 60:.0f} min")
    return doc

doc = read_if_run("ptq_vs_qat")"""),
md("""The experiment runs apart from the book (about half an hour on 2 cores) and writes
`results/ptq_vs_qat.json` and `.csv`:

```bash
ragcomp-lab experiments ptq_vs_qat      # or: make experiments
```

The extra distillation of QAT and of the control, and the quantization schemes:"""),
code("""if doc:
    extra = {k: doc["extra_config"][k] for k in ("T", "alpha", "steps", "batch_size", "lr", "warmup_steps", "seed")}
    display(pd.DataFrame({"base (float student)": {k: doc["base_config"][k] for k in extra}, "extra (QAT, control)": extra}).T)
    display(pd.DataFrame(doc["schemes"]).T[["mode", "bits", "symmetric", "granularity", "group_size", "scale_dtype"]])"""),
md("""## The measurements

Answer perplexity is the perplexity of the gold answers given the prompts (lower is better): it
moves smoothly where F1 is all or nothing per answer, and this small student, after 60 steps,
answers few questions right in the first place (chapter 4). Read it first; F1 is shown for
completeness."""),
code("""if doc:
    rows = doc["rows"]
    table = pd.DataFrame(rows)
    ppl = table[table["bits"].notna()].pivot_table(index="bits", columns="method", values="answer_perplexity")
    ppl = ppl.sort_index(ascending=False)[["PTQ", "QAT", "PTQ of float + steps"]]
    ppl.index = [f"{int(b)}-bit" for b in ppl.index]
    for method in ("float", "float + steps"):
        ppl.loc[method] = table.loc[table["method"] == method, "answer_perplexity"].item()
    display(ppl.map("{:.4g}".format).rename_axis("answer perplexity"))"""),
code("""if doc:
    display(viz.ptq_vs_qat(rows))"""),
code("""if doc:
    cols = ["model", "answer_perplexity", "top1", "token_kl", "f1", "faithfulness", "saved_bytes", "train_seconds"]
    full = table[cols].set_index("model")
    full["saved_bytes"] = (full["saved_bytes"] / 1e6).round(1).astype(str) + " MB"
    display(full.rename(columns={"saved_bytes": "saved"}).round(3))"""),
md("""## The share of the PTQ loss that QAT recovers

torchao measures QAT by how much of the degradation PTQ causes it wins back:
$(\\text{PTQ} - \\text{QAT}) / (\\text{PTQ} - \\text{float})$, on a metric where lower is better.
On Llama3-8B (int4 grouped weights, int8 dynamic activations) it reports 96% of the accuracy
lost on hellaswag and 68% of the perplexity lost on wikitext recovered, at a training cost about
34% above plain fine-tuning. Here the metric is the answer perplexity, and the share is given
twice:

- **vs float**: torchao's definition, against the float student PTQ started from;
- **vs float + steps**: against the control, $(\\text{PTQ}' - \\text{QAT}) / (\\text{PTQ}' - \\text{float}')$,
  where the primes are the float student trained as long as QAT and its PTQ. This is the share
  due to training *against the grid*, with the extra training itself taken out.

A share above 100% means QAT beat the float model it was measured against; a negative one, that it
did worse than PTQ. Perplexities that explode (in the millions) make any share of their loss close
to 100%, so the table also gives it on the cross-entropy (the log of the perplexity, nats per answer
token), which is less dominated by the blow-ups."""),
code("""if doc:
    shares = pd.concat({metric: pd.DataFrame(doc["recovered"][metric]).T
                        for metric in ("answer_perplexity", "answer_cross_entropy")}, axis=1)
    shares.index = [f"{b}-bit" for b in shares.index]
    display((100 * shares.astype(float)).round(1).map("{:g}%".format))
    display(viz.recovered_share(doc["recovered"]["answer_perplexity"]))"""),
md("""## What the extra training cost

QAT's price is training time: the steps themselves, each a little dearer than a float step because
every weight matrix is fake-quantized on every forward pass (the 49,152 x 576 tied embedding
included). Measured in this run (wall time on a shared machine, so read the ratio loosely):"""),
code("""if doc:
    steps = doc["extra_config"]["steps"]
    control = table.loc[table["method"] == "float + steps", "train_seconds"].item()
    qat = table[table["method"] == "QAT"].set_index("bits")["train_seconds"]
    cost = pd.DataFrame({"s per step": (qat / steps).round(2), "vs a float step": (qat / control).round(2)})
    cost.index = [f"QAT {int(b)}-bit" for b in cost.index]
    cost.loc["float + steps"] = [round(control / steps, 2), 1.0]
    display(cost)"""),
md("""## When each is worth it

The numbers above, width by width, turned into the decision they support. "PTQ loss" is the rise
of the answer perplexity over the float student; "QAT gain" the share recovered against the
control (the fair one)."""),
code("""def verdict(bits):
    by = {r["method"]: r for r in rows if r["bits"] in (None, bits)}
    loss = by["PTQ"]["answer_perplexity"] / by["float"]["answer_perplexity"] - 1
    fair = doc["recovered"]["answer_perplexity"][str(bits)].get("vs float + steps")
    ce = doc["recovered"]["answer_cross_entropy"][str(bits)].get("vs float + steps")
    if loss < 0.05:
        advice = "PTQ: rounding costs little, nothing left for QAT to win"
    elif fair is not None and fair > 0.5:
        advice = "QAT: it wins back most of what rounding costs, beyond what the extra steps give"
    elif fair is not None and fair > 0:
        advice = "QAT helps, but the extra steps alone give much of the gain"
    else:
        advice = "QAT does not beat PTQ of a student trained as long"
    quality = by["QAT"]["answer_perplexity"] / by["float"]["answer_perplexity"] - 1
    return {"PTQ loss": f"{loss:+.1%}", "QAT vs float": f"{quality:+.1%}",
            "QAT gain (ppl, vs float + steps)": "n/a" if fair is None else f"{fair:.0%}",
            "QAT gain (cross-entropy)": "n/a" if ce is None else f"{ce:.0%}", "verdict": advice}

if doc:
    display(pd.DataFrame({f"{b}-bit": verdict(b) for b in doc["bits"]}).T)"""),
md("""How to read the table:

- **8 bits**: round-to-nearest with one scale per output row keeps this student within a hair of
  its float self (the PTQ column of the first table, and its top-1 agreement). There is little
  loss to recover, so the share QAT recovers is a ratio of two small differences: noise. PTQ is
  the answer; QAT's training buys nothing it could not buy in float.
- **4 bits**: the first width where PTQ costs a visible share of perplexity. This is where QAT
  pays in published results, and where the control matters most here: compare QAT with *PTQ of
  float + steps*, not with PTQ. If the fair share is small, the extra steps are better spent in
  float and the model rounded afterwards; if it is large, training against the grid is worth
  its cost (each step about the price of a float step, above).
- **3 and 2 bits**: PTQ of every weight, the tied 49,152 x 576 embedding and LM head included,
  damages the model so much that its perplexity is no longer a useful number; QAT starts from that
  damaged grid and has only a few dozen steps to adapt. Whatever it recovers, compare its
  perplexity with the float student's before calling the model usable: recovering most of a
  catastrophic loss can still leave a model much worse than the float one.

Two limits of this measurement. It is one seed and one budget of extra steps: small differences
between QAT and the control are within what a second seed could move. And the student is small and
briefly trained, so it answers few questions right in float already (chapter 4): F1 cannot show a
difference here, which is why the perplexity and the agreement with the float student carry the
comparison."""),
md("""## Try this

- `experiments_quant.EXTRA_STEPS` sets the extra budget of QAT and of the control. Double it and
  rerun: does QAT's lead over the control grow with training, or is it paid once?
- Keep the tied embedding and LM head in float (`skip=("lm_head",)` in `experiments_quant.scheme`)
  and rerun 2 bits: how much of the 2-bit collapse is the vocabulary matrix?
- Chapter 8's `RoundSTE` passes the gradient straight through. Replace its backward by 0 (no
  STE): what happens to a QAT run's loss?"""),
]
nb = nbf.v4.new_notebook(cells=cells)
nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
               "language_info": {"name": "python"}}
nbf.write(nb, "/work/main/book/09_ptq_vs_qat.ipynb")
