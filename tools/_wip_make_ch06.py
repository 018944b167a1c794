import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md(r"""# Numbers, scales and zero-points

A weight of the teacher is a 32-bit float. Quantization stores it as a small integer *code*
instead, plus a few floats shared by many weights. With $b$ bits there are $2^b$ codes, and a
uniform grid maps them back to real numbers:

$$X_q = \mathrm{clamp}\big(\mathrm{round}(X/S + Z),\ q_{\min},\ q_{\max}\big), \qquad \hat X = (X_q - Z)\, S$$

- $S$, the **scale**, is the step between two neighbouring grid points; the rounding error of a
  value inside the grid is at most $S/2$.
- $Z$, the **zero-point**, is the code of the real number 0. Zero is always on the grid
  (padding and ReLU outputs stay exactly 0).
- **Symmetric**: $Z = 0$, codes $[-2^{b-1}, 2^{b-1}-1]$ and $S = 2 \max|X| / (2^b - 1)$;
  the grid is centred on 0 whether the values are or not.
- **Affine**: codes $[0, 2^b - 1]$, $S = (\max X - \min X) / (2^b - 1)$ and
  $Z = -\mathrm{round}(\min X / S)$: the grid covers exactly $[\min, \max]$.

*Granularity* says how many values share one $(S, Z)$: the whole tensor (`per_tensor`), one
output channel, i.e. one row of $W$ (`per_channel`), or a run of `group_size` consecutive
inputs of a row (`per_group`, typically 32 to 128). This chapter measures what each choice
costs on the real teacher."""),
code("""import pandas as pd
import torch

import ragcomp_lab as rl
from ragcomp_lab import data, models, viz, widgets

teacher, tok = models.load_teacher()
test = data.rag_splits(seed=0)["test"]
LAYER = "model.layers.9.mlp.down_proj"
W = teacher.get_submodule(LAYER).weight.detach()  # (576, 1536): out_features x in_features
print(f"{LAYER}: {tuple(W.shape)}, min {W.min():.3f}, max {W.max():.3f}, std {W.std():.4f}")"""),
md(r"""## From scratch, in six lines

One $(S, Z)$ for the whole tensor. The range is widened to hold 0, and the code multiplies by
$1/S$ (as PyTorch's kernels do) rather than dividing, so that it matches the library bit for bit."""),
code("""def quantize_from_scratch(x, bits, symmetric=True):
    q_min, q_max = (-2 ** (bits - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)  # the grid must hold 0
    S = torch.maximum(-lo, hi) / ((q_max - q_min) / 2) if symmetric else (hi - lo) / (q_max - q_min)
    Z = torch.zeros((), dtype=torch.int32) if symmetric else (q_min - torch.round(lo / S)).to(torch.int32)
    X_q = torch.clamp(torch.round(x * (1 / S)) + Z, q_min, q_max)  # X_q = round(X/S + Z), clamped
    return X_q, S, Z, (X_q - Z) * S  # codes, scale, zero-point, dequantized"""),
md(r"""The library's `rl.quant` splits the same thing into `qparams` (scale and zero-point),
`quantize` (the codes), `dequantize` ($(X_q - Z) S$) and `fake_quant` (both at once, with a
straight-through gradient for quantization-aware training). The assert checks all four on the
real weight, at 8, 4 and 2 bits, symmetric and affine; from here on the chapter calls `rl.*`."""),
code("""for bits in (8, 4, 2):
    for symmetric in (True, False):
        X_q, S, Z, X_hat = quantize_from_scratch(W, bits, symmetric)
        scale, zero_point = rl.quant.qparams(W, bits, symmetric)
        assert torch.equal(S, scale) and torch.equal(Z, zero_point)
        codes = rl.quant.quantize(W, scale, zero_point, bits, symmetric)
        assert torch.equal(X_q.to(torch.int32), codes.to(torch.int32))
        assert torch.equal(X_hat, rl.quant.dequantize(codes, scale, zero_point))
        assert torch.equal(X_hat, rl.quant.fake_quant(W, bits, symmetric))
"quantize_from_scratch equals rl.quant's qparams, quantize, dequantize and fake_quant at 8, 4 and 2 bits\""""),
md(r"""Six real weights of the first row, at 4 bits per tensor. The scale is set by the largest
weight of the whole matrix, so these ordinary weights land on a handful of codes near 0:"""),
code("""X_q, S, Z, X_hat = quantize_from_scratch(W, 4, symmetric=True)
print(f"4-bit symmetric per-tensor: S = {S:.5f} (max|W| = {W.abs().max():.3f} over 7.5 codes), Z = {Z}")
w = W[0, :6]
pd.DataFrame({"weight": w, "weight / S": w / S, "code X_q": X_q[0, :6].int(), "(X_q - Z) S": X_hat[0, :6],
              "error": X_hat[0, :6] - w}).round(4)"""),
md(r"""## Symmetric or affine; per tensor, per channel or per group

The error that matters is not the weights' but the layer's **output** on the inputs it really
reads. A forward pre-hook (`widgets.layer_input`) records what `down_proj` receives while the
teacher reads a test-bed prompt: one row per token. `viz.scheme_errors` then quantizes the
weight every way at 4 bits and measures, for each scheme:

- the SQNR (signal-to-quantization-noise ratio, $10 \log_{10} \sum x^2 / \sum (x - \hat x)^2$,
  in dB: higher is better; each extra bit adds about 6 dB) of the weight and of the output
  $X W^\top$;
- `zeroed`: the share of non-zero weights rounded to exactly 0;
- `bits_per_weight`: what storage really costs, codes plus the float16 scales (and uint8
  zero-points when affine) that `rl.QuantLinear` keeps."""),
code("""prompt = test[1]["prompt"]
X = widgets.layer_input(teacher, tok, LAYER, prompt)  # (tokens, 1536): what down_proj reads
print(f"{X.shape[0]} tokens of a test prompt; input max|x| / rms(x) = {(X.abs().max() / X.pow(2).mean().sqrt()):.0f}")
schemes = viz.scheme_errors(W, 4, X, group_sizes=(128, 64, 32))
pd.DataFrame(schemes).drop(columns="bits").set_index(["scheme", "symmetric"]).round(4)"""),
code("""viz.scheme_bars(schemes)"""),
md(r"""Affine buys a little over symmetric (its grid does not waste codes on the side of 0 that
holds no values, at the price of a zero-point), but granularity is what matters: one scale for
the whole matrix is set by its single largest weight, and most of the other weights fall
within one step of 0. The same comparison at every bit-width, symmetric, as output SQNR in dB:"""),
code("""pd.DataFrame({bits: {r["scheme"]: r["output_sqnr_db"] for r in viz.scheme_errors(W, bits, X) if r["symmetric"]}
              for bits in range(2, 9)}).rename_axis(columns="bits").round(1)"""),
md(r"""## Outliers make per-tensor bad

Is this layer unusual? `viz.outlier_scan` measures every Linear layer of the teacher's 30 decoder
blocks: how far its largest weight stands out ($\max|w| / \mathrm{std}(w)$), and the weight SQNR
at 4 bits per tensor, per channel and per group of 64. Per-tensor falls as the outlier grows;
per-channel and per-group hardly notice, because an outlier only widens the grid of its own row
or group."""),
code("""scan = viz.outlier_scan(teacher.model.layers, bits=4, group_size=64)
frame = pd.DataFrame(scan).set_index("layer")
print(frame.corr(method="spearman")["max_over_std"].drop("max_over_std").round(2).to_string())
viz.outlier_figure(scan)"""),
md(r"""## Move the bits yourself: one layer

**Live** (in JupyterLab, `make lab`): bits from 2 to 8, granularity, group size and symmetric.
Left, the histogram of all the layer's weights (log counts) under the grid they are rounded
to: per tensor one grid; per channel or per group, the grid of the median slice and that of the
widest one (the row or group holding the largest weight). Right, the layer's output on the real
prompt's tokens, FP32 against quantized weights: on the diagonal, no error. The static page
shows only the code of this cell, since a widget needs a running kernel."""),
code("""widgets.layer_quant_panel(W, X, bits=4, granularity="per_channel")""", metadata={"tags": ["remove-output"]}),
md(r"""**Static twin**: the same figure, per channel and symmetric, with Plotly's own slider over
the bit-width. It works on this page with no kernel."""),
code("""viz.layer_quant_slider(W, X, range(2, 9), granularity="per_channel")"""),
md(r"""## The whole teacher

`rl.quantize(teacher, rl.QuantConfig(bits=b, mode="weight_only", granularity="per_group",
group_size=64))` replaces every Linear layer (the tied LM head and embedding too) by a
`QuantLinear` holding round-to-nearest codes: no data, no training, seconds.
`widgets.bits_effect` does that and measures the copy: its greedy answer to one test question,
and its answer perplexity (the exponential of the mean cross-entropy of the gold answers, 1 is
perfect) on six test questions. Here at 8, 4, 3 and 2 bits, next to the unquantized teacher.
The question is one the passages cannot answer: the right answer is a refusal."""),
code("""rows = test.select(range(6))
effects = [widgets.bits_effect(teacher, tok, rows, bits, group_size=64, question=0) for bits in (None, 8, 4, 3, 2)]  # 6 rows: a few seconds per width
print("whole-teacher quantization took " + ", ".join(f"{r['quantize_seconds']:.1f} s" for r in effects[1:])
      + " at 8, 4, 3 and 2 bits")
print(f"Q: {effects[0]['question']}   gold: {effects[0]['gold']}")
table = pd.DataFrame(effects).set_index("model")[["answer", "answer_perplexity", "weight_mb"]]
table.assign(answer_perplexity=table.answer_perplexity.map("{:.4g}".format), weight_mb=table.weight_mb.round(1))"""),
md(r"""Eight bits changes nothing visible. Four bits keeps the perplexity of the gold answers close,
and yet the answer can change: a small shift of the logits is enough to turn a refusal into a
confident, invented fact, the hallucination a RAG system is built to avoid. Three bits loses the
answers, two bits loses the language. The chapter {doc}`10_evaluation` measures these variants on
every metric, faithfulness and hallucination included.

**Live**: choose the bits, the group size (those dividing every layer's inputs: 576 and 1536)
and a question, then press the button; the unquantized answer is computed once per question."""),
code("""widgets.teacher_bits_panel(teacher, tok, rows, bits=4, group_size=64)""", metadata={"tags": ["remove-output"]}),
md(r"""## Try this

- In the layer panel, switch to `per_tensor` and drag the bits: at which bit-width does the
  output SQNR reach that of 4-bit `per_group 64`? What do the two cost in bits per weight?
- Pick another layer (`model.layers.24.mlp.down_proj` has a strong outlier,
  `model.layers.24.self_attn.q_proj` hardly any) and compare per-tensor with per-channel.
- Why is the output SQNR of a scheme different from its weight SQNR? (Look at the input's
  `max|x| / rms(x)`: some input features are hundreds of times larger than the others.)
- In the whole-teacher panel, find the lowest bit-width whose answer to the unanswerable
  question is still a refusal, with group size 32 and with 64.
- Prove that with symmetric codes the error of any value inside the grid is at most $S/2$,
  and find the values for which it is larger."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                                "name": "python3"},
                                                  "language_info": {"name": "python"}})
nbf.write(nb, "/work/main/book/06_quant_numbers.ipynb")
print("written")
